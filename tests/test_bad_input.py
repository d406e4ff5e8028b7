"""Whatever arrives on the socket: a defined JSON answer or a clean close, never a crash.

One real server process for the module; after every bad request, a valid one must
still be served, so no input leaves the server broken.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TOKEN, VERSION, env_for, settings_for, write_release
from esp_client import download
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_process import ServerProcess

from sanic_ota.keys import Key, save_keys

ROUTES = ["/v1/device/rom/", "/v1/device/rom", "/v1/manifest/", f"/v1/manifest/{VERSION}", "/metrics"]
DOWNLOAD = f"/v1/device/rom/?action=download_rom&version={VERSION}&filename=ota.bin"
SECRET = secrets.token_bytes(64)  # lives next to partitions/, must never be served


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    workdir = tmp_path_factory.mktemp("bad_input")
    write_release(workdir / "partitions", VERSION)
    save_keys(workdir / "keys.json", [Key("device-1", TOKEN)])
    (workdir / "secret.bin").write_bytes(b"\xe9" + SECRET)
    (workdir / "partitions" / "secret.bin").write_bytes(b"\xe9" + SECRET)
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        yield proc, workdir


def exchange(proc: ServerProcess, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes or goes quiet."""
    with socket.create_connection((proc.host, proc.port), timeout=timeout) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return data


def status_of(response: bytes) -> int | None:
    if not response.startswith(b"HTTP/1."):
        return None
    return int(response.split(b" ", 2)[1])


def request(path: str, method: str = "GET", auth: list[str] | None = None, version: str = "1.1",
            extra: str = "") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: ota"]
    lines += [f"Authorization: {value}" for value in (auth if auth is not None else [f"token {TOKEN}"])]
    return ("\r\n".join(lines) + "\r\n" + extra + "Connection: close\r\n\r\n").encode("latin-1")


def still_serves(proc: ServerProcess, workdir: Path) -> None:
    assert download(proc.host, proc.port, TOKEN, VERSION, "ota") == (
        workdir / "partitions" / VERSION / "ota.bin").read_bytes()


def _json_error(response: bytes, status: int) -> None:
    import json

    assert status_of(response) == status, response[:300]
    body = json.loads(response.partition(b"\r\n\r\n")[2])
    assert body["status"] == status and body["message"]
    assert TOKEN.encode() not in response


CASES: list[tuple[str, bytes, int]] = [
    ("no header", request(DOWNLOAD, auth=[]), 401),
    ("token without value", request(DOWNLOAD, auth=["token"]), 401),
    ("Bearer", request(DOWNLOAD, auth=[f"Bearer {TOKEN}"]), 401),
    ("Basic", request(DOWNLOAD, auth=[f"Basic {TOKEN}"]), 401),
    ("two headers", request(DOWNLOAD, auth=[f"token {TOKEN}", f"token {TOKEN}"]), 401),
    ("unknown token", request(DOWNLOAD, auth=["token " + "f" * 40]), 403),
    ("header over the limit", request(DOWNLOAD, extra="X-Pad: " + "a" * 20000 + "\r\n"), 413),
    ("URL over the limit", request(DOWNLOAD + "&pad=" + "a" * 9000), 413),
    ("NUL in the query", request(DOWNLOAD.replace("ota.bin", "ota.bin%00")), 400),
    ("raw non-UTF-8 in the query", request(DOWNLOAD.replace("v1.0.0", "v1\xff\xfe")), 400),
    ("parameter twice", request(DOWNLOAD + f"&version={VERSION}"), 400),
    ("empty version", request(DOWNLOAD.replace(f"version={VERSION}", "version=")), 400),
    ("empty filename", request(DOWNLOAD.replace("filename=ota.bin", "filename=")), 400),
    ("no action", request(f"/v1/device/rom/?version={VERSION}&filename=ota.bin"), 400),
    ("unknown action", request("/v1/device/rom/?action=delete_rom"), 400),
]
TRAVERSALS = ["..", "../secret.bin", "..%2fsecret.bin", "%2e%2e%2fsecret.bin", "%2E%2E/secret.bin",
              "..%5csecret.bin", "%252e%252e%252fsecret.bin", "%c0%ae%c0%ae%2fsecret.bin",
              "/etc/passwd", "%2fetc%2fpasswd", "....//secret.bin", ".%2e/secret.bin", "..;/secret.bin"]
for t in TRAVERSALS:
    CASES.append((f"version {t}", request(DOWNLOAD.replace(f"version={VERSION}", f"version={t}")), 400))
    CASES.append((f"filename {t}", request(DOWNLOAD.replace("filename=ota.bin", f"filename={t}")), 400))
for route in ROUTES:
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        CASES.append((f"{method} {route}", request(route, method=method), 405))
    # HEAD answers as GET does: a device key may read all but /metrics
    CASES.append((f"HEAD {route}", request(route, method="HEAD"), 403 if route == "/metrics" else 200))


@pytest.mark.parametrize(("raw", "status"), [(raw, status) for _, raw, status in CASES],
                         ids=[name for name, _, _ in CASES])
def test_bad_request_gets_its_defined_json_answer(served, raw: bytes, status: int) -> None:
    proc, workdir = served
    response = exchange(proc, raw)
    if raw.startswith(b"HEAD"):
        assert status_of(response) == status  # no body to a HEAD
    else:
        _json_error(response, status)
    assert SECRET not in response
    still_serves(proc, workdir)


def test_http_1_0_without_host_is_answered(served) -> None:
    proc, _ = served
    raw = f"GET /v1/device/rom/?is_format_simple=true HTTP/1.0\r\nAuthorization: token {TOKEN}\r\n\r\n"
    response = exchange(proc, raw.encode())
    assert status_of(response) == 200 and b'"rom_version": "v1.0.0", ' in response


@pytest.mark.parametrize("raw", [b"HELLO THERE\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                                 b"GET / SPDY/9\r\n\r\n", b"\r\n\r\n", b"\x00" * 100])
def test_what_is_not_http_gets_a_clean_close(served, raw: bytes) -> None:
    proc, workdir = served
    response = exchange(proc, raw)
    assert response == b"" or status_of(response) in (400, 505), response[:200]
    still_serves(proc, workdir)


query_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)
names = st.sampled_from(["action", "version", "filename", "is_format_simple", "x"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.lists(st.tuples(names, query_text), max_size=5), path=st.sampled_from(ROUTES),
       header=st.one_of(st.none(), st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)))
def test_fuzzed_queries_and_headers_never_5xx_or_leak(served, params, path, header) -> None:
    from urllib.parse import quote

    proc, workdir = served
    query = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in params)
    auth = [f"token {TOKEN}"] if header is None else [header]
    response = exchange(proc, request(f"{path}?{query}" if query else path, auth=auth))
    status = status_of(response)
    assert status is not None and status < 500, response[:300]
    assert SECRET not in response
    if status == 200 and path == "/v1/device/rom/" and "download_rom" in query:
        body = response.partition(b"\r\n\r\n")[2]
        served_files = [p.read_bytes() for p in (workdir / "partitions").rglob("*.bin")]
        assert body in served_files
