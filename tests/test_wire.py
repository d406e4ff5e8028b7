"""The server as a process on a real socket, spoken to the way a module speaks."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import TOKEN, VERSION, env_for, example, settings_for, write_release
from esp_client import ModuleError, download, list_versions, version_query
from server_process import ServerProcess, eventually

from sanic_ota.keys import Key, load_keys, save_keys
from sanic_ota.stats import FLUSH_SECONDS


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


def test_names_that_are_not_versions_never_win_and_release_candidates_come_before_releases(workdir: Path) -> None:
    for name in ("old", "backup-2019", "v2.0.0rc1", "v2.0.0"):
        write_release(workdir / "partitions", name)
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        assert version_query(proc.host, proc.port, TOKEN) == "v2.0.0"
        assert list_versions(proc.host, proc.port, TOKEN) == ["v2.0.0", "v2.0.0rc1", VERSION, "backup-2019", "old"]
        assert download(proc.host, proc.port, TOKEN, "old", "ota")  # still downloadable by name
        shutil.rmtree(workdir / "partitions" / "v2.0.0")
        eventually(lambda: version_query(proc.host, proc.port, TOKEN) == "v2.0.0rc1")
        shutil.rmtree(workdir / "partitions" / "v2.0.0rc1")
        eventually(lambda: version_query(proc.host, proc.port, TOKEN) == VERSION)
    assert proc.log().count("names are not versions (still downloadable by name): backup-2019, old") == 1


VERSION_QUERY = "/v1/device/rom/?is_format_simple=true"


def test_a_newest_release_that_breaks_is_never_replaced_by_an_older_one(workdir: Path) -> None:
    write_release(workdir / "partitions", "v2.0.0")
    auth = {"Authorization": f"token {TOKEN}"}
    refusal = {"status": 503, "message": "the newest release, v2.0.0, is not servable now; "
                                         "no older release is offered in its place"}
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        assert version_query(proc.host, proc.port, TOKEN) == "v2.0.0"
        ota = workdir / "partitions" / "v2.0.0" / "ota.bin"
        ota.write_bytes(ota.read_bytes()[:-100])  # in place, as an interrupted copy leaves it
        answers: list[object] = []

        def refused() -> bool:
            status, _, body = _get(proc, VERSION_QUERY, auth)
            answers.append(json.loads(body).get("rom_version", status))
            return status == 503

        eventually(refused)
        assert set(answers) <= {"v2.0.0", 503}  # until the re-index, the newest; then nothing
        status, _, body = _get(proc, VERSION_QUERY, auth)
        assert (status, json.loads(body)) == (503, refusal)
        assert list_versions(proc.host, proc.port, TOKEN) == ["v2.0.0", VERSION]  # the newest still first
        assert download(proc.host, proc.port, TOKEN, VERSION, "ota")  # an older one only when asked by name
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:  # and so from the start
        status, _, body = _get(proc, VERSION_QUERY, auth)
        assert (status, json.loads(body)) == (503, refusal)


def test_pin_holds_a_release_back(workdir: Path) -> None:
    write_release(workdir / "partitions", "v2.0.0")
    (workdir / "partitions" / "LATEST").write_text("v1.0.0\n")
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        assert version_query(proc.host, proc.port, TOKEN) == "v1.0.0"
        assert list_versions(proc.host, proc.port, TOKEN)[0] == "v2.0.0"


def test_listing_of_many_versions_fits_the_module_buffer(workdir: Path) -> None:
    image = (workdir / "partitions" / VERSION / "ota.bin").read_bytes()
    for n in range(150):
        directory = workdir / "partitions" / f"v3.{n}.0-preview.{n:032d}"
        directory.mkdir()
        (directory / "ota.bin").write_bytes(image)
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        versions = list_versions(proc.host, proc.port, TOKEN)
        assert versions[0] == f"v3.149.0-preview.{149:032d}"
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


def test_https_mode_1(workdir: Path, tls_args: list[str]) -> None:
    settings = settings_for(workdir)
    with ServerProcess(env_for(settings), cwd=workdir, extra=tls_args) as proc:
        assert version_query(proc.host, proc.port, TOKEN, tls=True) == VERSION
        body = download(proc.host, proc.port, TOKEN, VERSION, "ota", tls=True)
        assert body == (workdir / "partitions" / VERSION / "ota.bin").read_bytes()
        assert list_versions(proc.host, proc.port, TOKEN, tls=True) == [VERSION]


def test_audit_log_records_completed_and_aborted_downloads(workdir: Path) -> None:
    big = example.build_app_image("v5.0.0", size=8 * 1024 * 1024)
    (workdir / "partitions" / "v5.0.0").mkdir()
    (workdir / "partitions" / "v5.0.0" / "ota.bin").write_bytes(big)
    env = dict(env_for(settings_for(workdir)), SANIC_OTA_LOG_FORMAT="json")
    with ServerProcess(env, cwd=workdir) as proc:
        download(proc.host, proc.port, TOKEN, VERSION, "ota")
        with socket.create_connection((proc.host, proc.port)) as sock:
            sock.sendall(f"GET /v1/device/rom/?action=download_rom&version=v5.0.0&filename=ota.bin HTTP/1.1\r\n"
                         f"Host: x\r\nAuthorization: token {TOKEN}\r\n\r\n".encode())
            sock.recv(1024)
        records = proc.records_when(lambda rs: any(r["version"] == "v5.0.0" for r in rs))
    done = next(r for r in records if r["version"] == VERSION)
    assert done["outcome"] == "completed" and done["key"] == "device-1" and done["kind"] == "download"
    assert done["bytes"] == (workdir / "partitions" / VERSION / "ota.bin").stat().st_size
    aborted = next(r for r in records if r["version"] == "v5.0.0")
    assert aborted["outcome"] == "aborted" and aborted["bytes"] < len(big)
    assert TOKEN not in proc.log()


def _get(proc: ServerProcess, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://{proc.host}:{proc.port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_metrics_need_an_admin_key_and_sum_workers(workdir: Path) -> None:
    admin = "b" * 40
    keys = load_keys(workdir / "keys.json") + [Key("ops", admin, {"Role": "admin"})]
    save_keys(workdir / "keys.json", keys)
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir, workers=2) as proc:
        for _ in range(4):
            download(proc.host, proc.port, TOKEN, VERSION, "ota")
        status, headers, _ = _get(proc, "/metrics", {})
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
        assert _get(proc, "/metrics", {"Authorization": f"token {TOKEN}"})[0] == 403
        basic = base64.b64encode(f"ops:{admin}".encode()).decode()
        assert _get(proc, "/metrics", {"Authorization": f"Basic {basic}"})[0] == 200
        wrong = base64.b64encode(f"device-1:{admin}".encode()).decode()
        assert _get(proc, "/metrics", {"Authorization": f"Basic {wrong}"})[0] == 401
        # four downloads, spread over two workers, counted once each: the worker that
        # answers adds its own counts at once, the other within its flush interval
        line = f'sanic_ota_downloads_total{{file="ota.bin",outcome="completed",version="{VERSION}"}} 4.0'
        deadline = time.monotonic() + 3 * FLUSH_SECONDS
        while True:
            status, _, body = _get(proc, "/metrics", {"Authorization": f"token {admin}"})
            assert status == 200
            text = body.decode()
            if line in text or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert line in text
    assert 'sanic_ota_auth_failures_total{reason="not_admin"}' in text
    assert "sanic_ota_releases_served 1.0" in text


def test_repeated_failures_are_slowed_but_valid_tokens_pass(server: ServerProcess) -> None:
    statuses = [_get(server, "/v1/device/rom", {"Authorization": "token " + "9" * 40})[0] for _ in range(21)]
    assert statuses[:20] == [403] * 20
    status, headers, body = _get(server, "/v1/device/rom", {"Authorization": "token " + "9" * 40})
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert json.loads(body)["status"] == 429
    assert version_query(server.host, server.port, TOKEN) == VERSION  # same address, valid token
    for _ in range(10):  # still failing: refused, and no longer logged one warning each
        assert _get(server, "/v1/device/rom", {"Authorization": "token " + "9" * 40})[0] == 429
    assert server.logged("no longer logged here one by one")  # written after the 20 before it
    assert server.log().count("auth failed from 127.0.0.1: unknown token") == 21  # 20, and the one over
    refused = "kind=listing key=- version=- file=- range=- status=429"
    eventually(lambda: server.log().count(refused) >= 12)  # each refusal is in the audit log, a moment later
    time.sleep(0.2)  # and no more than that
    assert server.log().count(refused) == 12  # the 21st failure, the one after it and these 10


def test_the_module_download_head_only_gains_etag_and_accept_ranges(server: ServerProcess, workdir: Path) -> None:
    data = (workdir / "partitions" / VERSION / "ota.bin").read_bytes()
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(f"GET /v1/device/rom/?action=download_rom&version={VERSION}&filename=ota.bin HTTP/1.1\r\n"
                     f"Host: {server.host}:{server.port}\r\nAuthorization: token {TOKEN}\r\n"
                     "Accept-Encoding: gzip,deflate,sdch\r\n\r\n".encode())
        first = sock.recv(1024)
    head, _, body = first.partition(b"\r\n\r\n")
    assert len(head) < 512 and body and data.startswith(body)
    lines = head.decode().split("\r\n")
    assert lines == [
        "HTTP/1.1 200 OK",
        f"Content-Length: {len(data)}",
        f'ETag: "{hashlib.sha256(data).hexdigest()}"',
        "Accept-Ranges: bytes",
        "connection: keep-alive",
        "content-type: application/octet-stream",
    ]
