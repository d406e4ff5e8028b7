"""The fast lane answers a module's requests byte for byte as Sanic's own path does.

Two real servers on the same directory: one as shipped, where a module's GET takes
the fast lane, and one with Sanic's access log on, where every request goes through
Sanic's router and response path. Every answer, headers and body, must be the same
bytes, keep or close the connection alike, and be told alike in the audit log.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

from conftest import TOKEN, VERSION, env_for, settings_for
from server_process import ServerProcess, eventually

WRONG = "f" * 40
MODULE = "Connection: keep-alive\r\nAuthorization: token {token}\r\n\r\n"

#: (request line, token): what a module (HTTP/1.0 version query) and a host send.
ASKED = [
    ("GET /v1/device/rom/?is_format_simple=true HTTP/1.0", TOKEN),
    ("GET /v1/device/rom/ HTTP/1.1", TOKEN),
    ("GET /v1/device/rom HTTP/1.1", TOKEN),
    (f"GET /v1/device/rom/?action=download_rom&version={VERSION}&filename=mqtt_ca.bin HTTP/1.1", TOKEN),
    (f"GET /v1/device/rom/?action=download_rom&version={VERSION}&filename=ota.bin HTTP/1.1", TOKEN),
    (f"GET /v1/device/rom/?action=download_rom&version={VERSION}&filename=nothing.bin HTTP/1.1", TOKEN),
    ("GET /v1/device/rom/?version=v1.0.0 HTTP/1.1", TOKEN),
    ("GET /v1/device/rom/?is_format_simple=true HTTP/1.0", WRONG),
    ("GET /v1/device/rom HTTP/1.1", WRONG),
]


def exchange(proc: ServerProcess, line: str, token: str) -> tuple[bytes, bool]:
    """The whole answer (by its ``Content-Length: ``), and whether the server then closed."""
    with socket.create_connection((proc.host, proc.port), timeout=10) as sock:
        sock.sendall(f"{line}\r\nHost: x\r\n{MODULE.format(token=token)}".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"\r\nContent-Length: (\d+)\r\n", head).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            body += sock.recv(65536)
        sock.settimeout(0.2)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
    return head + b"\r\n\r\n" + body, closed


def audit(proc: ServerProcess) -> list[dict[str, object]]:
    return [{k: v for k, v in line.items() if k not in ("time", "duration_ms")} for line in proc.records()]


def test_a_module_gets_the_same_bytes_by_the_fast_lane_as_through_sanic(workdir: Path) -> None:
    env = dict(env_for(settings_for(workdir)), SANIC_OTA_LOG_FORMAT="json")
    answers, told = {}, {}
    for path, extra in (("fast lane", {}), ("sanic", {"SANIC_ACCESS_LOG": "true"})):
        with ServerProcess({**env, **extra}, cwd=workdir) as proc:
            answers[path] = [exchange(proc, line, token) for line, token in ASKED]
            told[path] = eventually(lambda: lines if len(lines := audit(proc)) >= len(ASKED) else [])
    for (line, _), fast, routed in zip(ASKED, answers["fast lane"], answers["sanic"], strict=True):
        assert fast == routed, line
    statuses = [int(answer.split(b" ", 2)[1]) for answer, _ in answers["fast lane"]]
    assert statuses == [200, 200, 200, 200, 200, 404, 400, 403, 403]
    assert [closed for _, closed in answers["fast lane"]] == [False] * 7 + [True, False]  # an HTTP/1.0 error closes
    assert told["fast lane"] == told["sanic"] and len(told["sanic"]) == len(ASKED)
