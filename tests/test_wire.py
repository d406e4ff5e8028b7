"""The server as a process on a real socket, spoken to the way a module speaks."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from conftest import TOKEN, VERSION, env_for, settings_for, write_release
from esp_client import ModuleError, download, list_versions, version_query
from server_process import ServerProcess


def test_plain_ciupdate_installs_every_partition_byte_exact(server: ServerProcess, workdir: Path) -> None:
    version = version_query(server.host, server.port, TOKEN)
    assert version == VERSION
    for partition in ("ota", "mqtt_ca"):
        body = download(server.host, server.port, TOKEN, version, partition)
        assert body == (workdir / "partitions" / version / f"{partition}.bin").read_bytes()


def test_newest_is_version_order_and_listing_parses(workdir: Path) -> None:
    for version in ("v1.9.2", "v1.10.0", "v1.2.0"):
        write_release(workdir / "partitions", version)
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        assert version_query(proc.host, proc.port, TOKEN) == "v1.10.0"
        assert list_versions(proc.host, proc.port, TOKEN) == ["v1.10.0", "v1.9.2", "v1.2.0", "v1.0.0"]


def test_pin_holds_a_release_back(workdir: Path) -> None:
    write_release(workdir / "partitions", "v2.0.0")
    (workdir / "partitions" / "LATEST").write_text("v1.0.0\n")
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        assert version_query(proc.host, proc.port, TOKEN) == "v1.0.0"
        assert list_versions(proc.host, proc.port, TOKEN)[0] == "v2.0.0"


def test_listing_of_many_versions_fits_the_module_buffer(workdir: Path) -> None:
    image = (workdir / "partitions" / VERSION / "ota.bin").read_bytes()
    for n in range(150):
        directory = workdir / "partitions" / f"v3.{n}.0-release-candidate-with-a-long-name"
        directory.mkdir()
        (directory / "ota.bin").write_bytes(image)
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        versions = list_versions(proc.host, proc.port, TOKEN)
        assert versions[0] == "v3.149.0-release-candidate-with-a-long-name"
        assert 50 < len(versions) < 151
        request = urllib.request.Request(f"http://{proc.host}:{proc.port}/v1/device/rom",
                                         headers={"Authorization": f"token {TOKEN}"})
        body = json.load(urllib.request.urlopen(request))
        assert body["omitted"] == 151 - len(versions)


def test_an_error_is_never_mistaken_for_an_image(server: ServerProcess) -> None:
    with pytest.raises(ModuleError, match="invalid magic|Content-Length"):
        download(server.host, server.port, TOKEN, "v9.9.9", "ota")
    with pytest.raises(ModuleError):
        download(server.host, server.port, "0" * 40, VERSION, "ota")


def test_https_mode_1(workdir: Path, tmp_path: Path) -> None:
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    # Sanic requires a subjectAltName in the certificate
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    settings = settings_for(workdir)
    with ServerProcess(env_for(settings), cwd=workdir, extra=["--cert", str(cert), "--key", str(key)]) as proc:
        assert version_query(proc.host, proc.port, TOKEN, tls=True) == VERSION
        body = download(proc.host, proc.port, TOKEN, VERSION, "ota", tls=True)
        assert body == (workdir / "partitions" / VERSION / "ota.bin").read_bytes()
        assert list_versions(proc.host, proc.port, TOKEN, tls=True) == [VERSION]
