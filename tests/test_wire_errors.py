"""The module's error path, byte for byte, on a real server process.

What the firmware does with an answer that is not an image or a version
(``shared/esp-at-client.md``): it finds the body's end only through the exact bytes
``Content-Length: `` (else a certificate partition is erased and reported OK), and
it waits for the version query's socket to close (else it sits out its timeout).
"""

from __future__ import annotations

import base64
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import OTHER_TOKEN, TOKEN, VERSION, env_for, example, settings_for, write_release
from esp_client import ModuleError, download, version_query
from server_process import ServerProcess, eventually

from sanic_ota.keys import Key, save_keys

ADMIN = "a" * 40
BROKEN = "v0.9.0"  # present but not servable: its ota.bin is not an image
BAD_TOKEN = "0" * 40
DOWNLOAD = f"/v1/device/rom/?action=download_rom&version={VERSION}&filename=ota.bin"
VERSION_QUERY = "/v1/device/rom/?is_format_simple=true"


def add_broken_release(workdir: Path) -> None:
    (workdir / "partitions" / BROKEN).mkdir()
    (workdir / "partitions" / BROKEN / "ota.bin").write_bytes(b"this is not an ESP32 image" * 100)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("wire_errors")
    write_release(workdir / "partitions", VERSION)
    add_broken_release(workdir)
    save_keys(workdir / "keys.json", [Key("device-1", TOKEN), Key("ops", ADMIN, {"Role": "admin"})])
    # a short request timeout, so that a 408 comes within the test's patience
    env = dict(env_for(settings_for(workdir)), SANIC_REQUEST_TIMEOUT="1", SANIC_OTA_LOG_FORMAT="json")
    with ServerProcess(env, cwd=workdir) as proc:
        yield proc


def exchange(proc: ServerProcess, raw: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send ``raw``, read until the server closes (True) or stays silent for ``timeout`` s (False)."""
    with socket.create_connection((proc.host, proc.port), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            return data, False
    return data, True


def get(path: str, token: str | None = TOKEN, method: str = "GET", version: str = "1.1",
        connection: str | None = "close", extra: str = "") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: ota"]
    if token is not None:
        lines.append(f"Authorization: token {token}")
    if connection is not None:
        lines.append(f"Connection: {connection}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def module_query(token: str, connection: str | None = "keep-alive") -> bytes:
    """The version query as the firmware sends it: HTTP/1.0, ``Connection: keep-alive``."""
    return get(VERSION_QUERY, token, version="1.0", connection=connection)


def split(response: bytes) -> tuple[int, bytes, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), response[:200]
    return int(head.split(b" ", 2)[1]), head, body


# --- Content-Length: on every answer ---------------------------------------------

ANSWERS = [
    ("download", get(DOWNLOAD), 200),
    ("download, no action", get(f"/v1/device/rom/?version={VERSION}&filename=ota.bin"), 400),
    ("download, name not plain", get("/v1/device/rom/?action=download_rom&version=..&filename=ota.bin"), 400),
    ("download, no Authorization", get(DOWNLOAD, token=None), 401),
    ("download, unknown token", get(DOWNLOAD, token=BAD_TOKEN), 403),
    ("download, no such release", get(DOWNLOAD.replace(VERSION, "v9.9.9")), 404),
    ("download, no such file", get(DOWNLOAD.replace("ota.bin", "nvs.bin")), 404),
    ("download, wrong method", get(DOWNLOAD, method="POST", extra="Content-Length: 0\r\n"), 405),
    ("download, HEAD", get(DOWNLOAD, method="HEAD"), 200),
    ("download, HEAD, no such file", get(DOWNLOAD.replace("ota.bin", "nvs.bin"), method="HEAD"), 404),
    ("download, range", get(DOWNLOAD, extra="Range: bytes=1-10\r\n"), 206),
    ("download, range past the end", get(DOWNLOAD, extra="Range: bytes=99999999-\r\n"), 416),
    ("download, header too large", get(DOWNLOAD, extra=f"X-Pad: {'x' * 20000}\r\n"), 413),
    ("download, release not servable", get(DOWNLOAD.replace(VERSION, BROKEN)), 503),
    ("version query", get(VERSION_QUERY), 200),
    ("version query, unknown token", get(VERSION_QUERY, token=BAD_TOKEN), 403),
    ("listing", get("/v1/device/rom"), 200),
    ("listing, no Authorization", get("/v1/device/rom", token=None), 401),
    ("manifest", get(f"/v1/manifest/{VERSION}"), 200),
    ("manifest, no such release", get("/v1/manifest/v9.9.9"), 404),
    ("metrics, no credentials", get("/metrics", token=None), 401),
    ("metrics, device key", get("/metrics"), 403),
    ("metrics", get("/metrics", token=ADMIN), 200),
    ("status page, device key", get("/status"), 403),
    ("no such route", get("/v2/firmware"), 404),
    ("not HTTP", b"HELLO\r\n\r\n", 400),
]


@pytest.mark.parametrize(("raw", "status"), [a[1:] for a in ANSWERS], ids=[a[0] for a in ANSWERS])
def test_every_answer_carries_the_exact_bytes_content_length(served: ServerProcess, raw: bytes, status: int) -> None:
    response, closed = exchange(served, raw)
    got, head, body = split(response)
    assert got == status, response[:300]
    assert b"\r\nContent-Length: " in head, head  # capital C and L, one space: the firmware's strstr
    assert b"content-length" not in head, head
    length = int(re.search(rb"\r\nContent-Length: (\d+)\r\n", head)[1])
    assert length == len(body) or (raw.startswith(b"HEAD ") and length and not body)
    assert closed


def test_request_timeout_carries_content_length(served: ServerProcess) -> None:
    response, closed = exchange(served, b"GET /v1/device/rom/ HTTP/1.1\r\nHost: ota\r\n")  # never finished
    got, head, body = split(response)
    assert got == 408 and closed
    assert b"\r\nContent-Length: " in head and int(re.search(rb"Content-Length: (\d+)", head)[1]) == len(body)


@pytest.mark.parametrize("partition", ["mqtt_ca", "client_cert", "factory_param"])
def test_an_error_answer_makes_the_module_report_error_not_an_erased_ok(served: ServerProcess, partition: str) -> None:
    # Given no Content-Length: the firmware stops reading and, for any partition but
    # the application, reports OK with the partition it erased beforehand left empty.
    with pytest.raises(ModuleError, match="invalid magic byte: 7b22"):  # the JSON's {"
        download(served.host, served.port, BAD_TOKEN, VERSION, partition)  # 403
    with pytest.raises(ModuleError, match="invalid magic byte: 7b22"):
        download(served.host, served.port, TOKEN, "v9.9.9", partition)  # 404
    with pytest.raises(ModuleError, match="invalid magic byte: 7b22"):
        download(served.host, served.port, TOKEN, BROKEN, partition)  # 503: present, not servable


# --- the version query closes when it has no version -----------------------------


def test_a_version_query_without_a_version_closes_at_once(served: ServerProcess) -> None:
    for raw, status in [
        (module_query(BAD_TOKEN), 403),
        (get(VERSION_QUERY, token=None, version="1.0", connection="keep-alive"), 401),
        (get("/v1/device/rom/?is_format_simple=true&version=v1", version="1.0", connection="keep-alive"), 400),
        (get("/v1/device/ro/?is_format_simple=true", version="1.0", connection="keep-alive"), 404),
    ]:
        started = time.monotonic()
        response, closed = exchange(served, raw, timeout=2.0)
        got, head, _ = split(response)
        assert got == status and closed, (status, response[:300])  # recv returned b"" within 2 s
        assert time.monotonic() - started < 2.0
        assert b"\r\nconnection: close\r\n" in head.lower(), head


def test_the_module_reports_a_refused_version_query_without_waiting(served: ServerProcess) -> None:
    started = time.monotonic()
    with pytest.raises(ModuleError, match="rom_version error"):
        version_query(served.host, served.port, BAD_TOKEN, timeout=5.0)
    assert time.monotonic() - started < 2.0


def test_a_successful_version_query_keeps_the_connection_as_asked(served: ServerProcess) -> None:
    response, closed = exchange(served, module_query(TOKEN), timeout=0.5)
    got, head, body = split(response)
    assert got == 200 and b'"rom_version": "' in body
    assert b"\r\nconnection: keep-alive\r\n" in head.lower() and not closed  # the module closes it itself
    assert version_query(served.host, served.port, TOKEN) == VERSION


def test_http_1_0_without_keep_alive_is_closed_after_any_answer(served: ServerProcess) -> None:
    for token, status in [(TOKEN, 200), (BAD_TOKEN, 403)]:
        response, closed = exchange(served, module_query(token, connection=None), timeout=2.0)
        got, head, _ = split(response)
        assert got == status and closed
        assert b"\r\nconnection: close\r\n" in head.lower()


def test_a_pinned_release_that_is_not_servable_closes_the_version_query(workdir: Path) -> None:
    add_broken_release(workdir)
    (workdir / "partitions" / "LATEST").write_text(f"{BROKEN}\n")
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        response, closed = exchange(proc, module_query(TOKEN), timeout=2.0)
        got, head, _ = split(response)
        assert got == 503 and closed
        assert b"\r\nconnection: close\r\n" in head.lower() and b"\r\nContent-Length: " in head


def test_rate_limited_version_queries_are_closed(workdir: Path) -> None:
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        statuses = []
        for _ in range(25):
            response, closed = exchange(proc, module_query(BAD_TOKEN), timeout=2.0)
            statuses.append(split(response)[0])
            assert closed, response[:300]
        assert statuses[0] == 403 and statuses[-1] == 429
        with pytest.raises(ModuleError, match="invalid magic byte: 7b22"):  # the 429, as a download reads it
            download(proc.host, proc.port, BAD_TOKEN, VERSION, "mqtt_ca")
        assert proc.logged("kind=download key=- version=- file=- range=- status=429")
        # a valid key from the same address is still served
        assert version_query(proc.host, proc.port, OTHER_TOKEN) == VERSION


# --- a request cut off half-way is not a server error ----------------------------


def test_a_half_sent_request_is_not_a_500(workdir: Path) -> None:
    save_keys(workdir / "keys.json", [Key("device-1", TOKEN), Key("ops", ADMIN, {"Role": "admin"})])
    env = dict(env_for(settings_for(workdir)), SANIC_OTA_LOG_FORMAT="json")
    with ServerProcess(env, cwd=workdir) as proc:
        for partial in (b"GET /v1/device/rom/ HTTP/1.1\r\nHost: x", b"GET /v1/dev", b"G"):
            with socket.create_connection((proc.host, proc.port)) as sock:
                sock.sendall(partial)
                time.sleep(0.05)
        time.sleep(0.3)
        basic = base64.b64encode(f"ops:{ADMIN}".encode()).decode()
        page, _ = exchange(proc, get("/status", token=None, extra=f"Authorization: Basic {basic}\r\n"))
        metrics, _ = exchange(proc, get("/metrics", token=ADMIN))
        assert split(page)[0] == 200 and split(metrics)[0] == 200
        assert b"None recorded." in page  # the status page's failure list
        assert b'status="500"' not in metrics
        eventually(lambda: len(proc.records()) >= 2)  # audit lines are written by a thread, just after the answer
        time.sleep(0.2)  # and nothing more comes
        assert [r["kind"] for r in proc.records()] == ["status", "metrics"]  # a half request is no request
        assert " ERROR " not in proc.log() and "Traceback" not in proc.log()


def test_a_module_gone_before_its_answer_is_an_abort_not_a_500(workdir: Path) -> None:
    big = "v5.0.0"
    (workdir / "partitions" / big).mkdir()
    (workdir / "partitions" / big / "ota.bin").write_bytes(example.build_app_image(big, size=15 * 1024 * 1024))
    env = dict(env_for(settings_for(workdir, cache_bytes=1024)), SANIC_OTA_LOG_FORMAT="json")
    with ServerProcess(env, cwd=workdir) as proc:
        with socket.create_connection((proc.host, proc.port)) as sock:  # gone while the file is read
            sock.sendall(get(DOWNLOAD.replace(VERSION, big), connection=None))
        done = eventually(lambda: [r for r in proc.records() if r["version"] == big])
    assert [(r["status"], r["outcome"]) for r in done] in ([(499, "aborted")], [(200, "aborted")]), done
    assert " ERROR " not in proc.log()
