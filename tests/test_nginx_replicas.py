"""deploy/nginx-replicas.conf, as shipped (only its ports changed), in front of two real servers.

The module's rules through the proxy (exact ``Content-Length: ``, headers with the first
body bytes, an error to the HTTP/1.0 version query closed at once), a replica gone while
the other keeps serving, and the device's address reaching the replica's audit log. The
servers here read local directories: where a replica's releases come from changes
nothing in front of it.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import esp_client
import esp_idf_client
import pytest
from conftest import REPO, TOKEN, VERSION, env_for, example, settings_for
from server_process import ServerProcess, free_port

from sanic_ota.settings import Settings

CONFIG = REPO / "deploy" / "nginx-replicas.conf"
#: What a replica behind the proxy runs with (the README says the same).
BEHIND_PROXY = {"SANIC_PROXIES_COUNT": "1", "SANIC_OTA_MAX_UNAUTHENTICATED_CONNECTIONS": "0"}
IMAGE_SIZE = 1_600_000


def config_for(listen: int, replicas: list[int]) -> str:
    """The shipped configuration with its three ports replaced, and nothing else."""
    text = CONFIG.read_text()
    assert text.count("listen 127.0.0.1:8080;") == 1
    text = text.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{listen};")
    for shipped, port in zip(("8001", "8002"), replicas, strict=True):
        assert text.count(f"server 127.0.0.1:{shipped} ") == 1
        text = text.replace(f"server 127.0.0.1:{shipped} ", f"server 127.0.0.1:{port} ")
    return text


class Nginx:
    def __init__(self, prefix: Path, listen: int, replicas: list[int]) -> None:
        self.binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.prefix, self.port = prefix, listen
        prefix.mkdir(parents=True, exist_ok=True)
        self.config = prefix / "nginx.conf"
        self.config.write_text(config_for(listen, replicas))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.binary, "-p", str(self.prefix), "-c", str(self.config), *args],
                              capture_output=True, text=True, timeout=30)

    def start(self) -> Nginx:
        started = self.run()
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                assert time.monotonic() < deadline, (self.prefix / "error.log").read_text()
                time.sleep(0.05)

    def stop(self) -> None:
        self.run("-s", "stop")


@pytest.fixture
def replicas(settings: Settings, workdir: Path) -> Iterator[list[ServerProcess]]:
    """Two servers on one release, each with its own state directory, as two replicas have."""
    (workdir / "partitions" / VERSION / "ota.bin").write_bytes(example.build_app_image(VERSION, size=IMAGE_SIZE))
    servers = []
    try:
        for name in ("a", "b"):
            own = settings_for(workdir, manifests_dir=workdir / f"manifests-{name}")
            servers.append(ServerProcess(env_for(own) | BEHIND_PROXY, cwd=workdir).start())
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def nginx(replicas: list[ServerProcess], tmp_path: Path) -> Iterator[Nginx]:
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        pytest.fail("nginx is not installed: make system-tools installs it")
    proxy = Nginx(tmp_path / "nginx", free_port(), [server.port for server in replicas]).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def test_the_shipped_configuration_is_valid(tmp_path: Path) -> None:
    checked = Nginx(tmp_path / "nginx", free_port(), [free_port(), free_port()]).run("-t")
    assert checked.returncode == 0, checked.stderr


def test_the_module_is_served_through_the_proxy(nginx: Nginx, workdir: Path) -> None:
    assert esp_client.version_query("127.0.0.1", nginx.port, TOKEN) == VERSION
    image = (workdir / "partitions" / VERSION / "ota.bin").read_bytes()
    for _ in range(2):  # the same replica each time: nginx keeps a device's address on one
        assert esp_client.download("127.0.0.1", nginx.port, TOKEN, VERSION, "ota") == image
    assert esp_client.download("127.0.0.1", nginx.port, TOKEN, VERSION, "mqtt_ca") == \
        (workdir / "partitions" / VERSION / "mqtt_ca.bin").read_bytes()
    assert esp_client.list_versions("127.0.0.1", nginx.port, TOKEN) == [VERSION]


def test_esp_https_ota_through_the_proxy(nginx: Nginx, workdir: Path) -> None:
    """HEAD, then range windows, and a resumed download: nginx passes ranges on and answers
    each window with the replica's 206 (it closes after every answer: the client reconnects)."""
    image = (workdir / "partitions" / VERSION / "ota.bin").read_bytes()
    path = f"/v1/device/rom/?action=download_rom&version={VERSION}&filename=ota.bin"
    auth = {"Authorization": f"token {TOKEN}"}
    got, client = esp_idf_client.partial_download("127.0.0.1", nginx.port, path, auth)
    assert got == image
    assert {answer.status for answer in client.answers} == {206}
    resumed, client = esp_idf_client.resumed_download("127.0.0.1", nginx.port, path, auth, offset=700_001)
    assert resumed == image and [answer.status for answer in client.answers] == [206]


def test_an_error_to_the_version_query_reaches_the_module_at_once(nginx: Nginx) -> None:
    """HTTP/1.0 with keep-alive: without ``keepalive_timeout 0`` nginx keeps it open and
    the module sits out its socket timeout."""
    started = time.monotonic()
    with pytest.raises(esp_client.ModuleError, match="rom_version error"):
        esp_client.version_query("127.0.0.1", nginx.port, "0" * 40, timeout=5)
    assert time.monotonic() - started < 2
    with socket.create_connection(("127.0.0.1", nginx.port), timeout=5) as sock:  # the answer's own bytes
        sock.sendall(b"GET /v1/device/rom/?is_format_simple=true HTTP/1.0\r\nConnection: keep-alive\r\n"
                     b"Accept-Encoding: gzip\r\nAuthorization: token " + b"0" * 40 + b"\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b" 403 " in head.split(b"\r\n")[0] and b"Content-Encoding" not in head
    length = re.search(rb"\r\nContent-Length: (\d+)\r\n", head + b"\r\n")
    assert length is not None and int(length.group(1)) == len(body)


def test_a_replica_gone_the_other_serves(nginx: Nginx, replicas: list[ServerProcess], workdir: Path) -> None:
    replicas[0].stop()
    image = (workdir / "partitions" / VERSION / "ota.bin").read_bytes()
    for _ in range(4):
        assert esp_client.version_query("127.0.0.1", nginx.port, TOKEN) == VERSION
        assert esp_client.download("127.0.0.1", nginx.port, TOKEN, VERSION, "ota") == image


def test_the_device_address_reaches_the_audit_log(nginx: Nginx, replicas: list[ServerProcess]) -> None:
    """A device at 127.0.0.7 (the proxy talks to replicas from 127.0.0.1), lying in its own
    X-Forwarded-For: the replica logs the address nginx saw."""
    for _ in range(2):  # round robin: one request reaches each replica
        with socket.create_connection(("127.0.0.1", nginx.port), timeout=5, source_address=("127.0.0.7", 0)) as sock:
            sock.sendall(b"GET /v1/device/rom HTTP/1.1\r\nHost: ota\r\nX-Forwarded-For: 203.0.113.9\r\n"
                         b"Authorization: token " + TOKEN.encode() + b"\r\nConnection: close\r\n\r\n")
            while sock.recv(4096):
                pass
    assert any(server.logged("client=127.0.0.7", timeout=5) for server in replicas)
    assert not any("203.0.113.9" in server.log() for server in replicas)
