"""``SANIC_OTA_EXTRA_PORTS``: one ``sanic sanic_ota.app`` process on the module's port and on 80.

``AT+CIPFWVER?`` always connects to port 80 (443 with TLS). The test uses two free
high ports, so it needs no privilege; binding 80 needs ``CAP_NET_BIND_SERVICE`` (see
the README and ``deploy/sanic-ota.service``).
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest
from conftest import TOKEN, VERSION, env_for, example, settings_for
from esp_client import download, list_versions, version_query
from server_process import ServerProcess, free_port

from sanic_ota.errors import ConfigurationError
from sanic_ota.settings import Settings


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return True
    return False


def test_one_process_serves_the_module_on_every_port(workdir: Path) -> None:
    extra = [free_port(), free_port()]
    env = dict(env_for(settings_for(workdir)), SANIC_OTA_EXTRA_PORTS=f"{extra[0]}, {extra[1]}")
    image = (workdir / "partitions" / VERSION / "ota.bin").read_bytes()
    with ServerProcess(env, cwd=workdir, workers=2) as proc:
        for port in (proc.port, *extra):
            assert version_query(proc.host, port, TOKEN) == VERSION
            assert download(proc.host, port, TOKEN, VERSION, "ota") == image
            assert list_versions(proc.host, port, TOKEN) == [VERSION]
        assert f"port(s) {extra[0]}, {extra[1]} too" in proc.log()


def test_sigterm_finishes_downloads_on_the_extra_port_and_refuses_both(workdir: Path) -> None:
    image = example.build_app_image("v8.0.0", size=8 * 1024 * 1024)  # more than the socket buffers take
    (workdir / "partitions" / "v8.0.0").mkdir()
    (workdir / "partitions" / "v8.0.0" / "ota.bin").write_bytes(image)
    extra = free_port()
    proc = ServerProcess(dict(env_for(settings_for(workdir)), SANIC_OTA_EXTRA_PORTS=str(extra)), cwd=workdir).start()
    try:
        with socket.create_connection((proc.host, extra), timeout=30) as sock:
            sock.sendall(b"GET /v1/device/rom/?action=download_rom&version=v8.0.0&filename=ota.bin HTTP/1.1\r\n"
                         + f"Host: x\r\nAuthorization: token {TOKEN}\r\n\r\n".encode())
            data = sock.recv(1024)
            time.sleep(1.0)  # past Sanic's start-up acknowledgement window (see test_faults)
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while not (refused(proc.host, proc.port) and refused(proc.host, extra)):
                assert time.monotonic() < deadline, "new connections still accepted 10 s after SIGTERM"
                time.sleep(0.1)
            while len(data.partition(b"\r\n\r\n")[2]) < len(image) and (chunk := sock.recv(65536)):
                data += chunk
        assert data.partition(b"\r\n\r\n")[2] == image
        assert proc.proc.wait(40) == 0
    finally:
        proc.stop(signal.SIGKILL)


@pytest.mark.parametrize("how", [["--single-process"], ["--unix", "ota.sock"]], ids=["single-process", "unix"])
def test_extra_ports_it_cannot_serve_stop_the_start(workdir: Path, how: list[str]) -> None:
    env = dict(env_for(settings_for(workdir)), SANIC_OTA_EXTRA_PORTS=str(free_port()))
    proc = ServerProcess(env, cwd=workdir, extra=how)
    try:
        with pytest.raises(RuntimeError, match="SANIC_OTA_EXTRA_PORTS needs"):
            proc.start()
    finally:
        proc.stop(signal.SIGKILL)


@pytest.mark.parametrize(("value", "ports"), [("", ()), ("80", (80,)), (" 80, 8080 ", (80, 8080)), (80, (80,))])
def test_extra_ports_setting(value: object, ports: tuple[int, ...]) -> None:
    assert Settings.from_config({"OTA_EXTRA_PORTS": value}).extra_ports == ports


@pytest.mark.parametrize("value", ["http", "0", "65536", "80;81", "-1"])
def test_bad_extra_ports_name_the_variable(value: str) -> None:
    with pytest.raises(ConfigurationError, match="SANIC_OTA_EXTRA_PORTS="):
        Settings.from_config({"OTA_EXTRA_PORTS": value})
