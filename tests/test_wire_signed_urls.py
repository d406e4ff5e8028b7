"""Signed URLs on a real server process, asked the way AT+USEROTA asks: a plain GET
with only ``User-Agent`` and ``Host`` (esp_http_client), no Authorization header."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import OTHER_TOKEN, REPO, TOKEN, VERSION, env_for, settings_for
from server_process import ServerProcess, eventually

from sanic_ota import signed_urls
from sanic_ota.keys import Key, load_keys, save_keys

ADMIN = "a" * 40


def esp_get(proc: ServerProcess, url: str, extra: str = "") -> tuple[int, bytes, bytes]:
    """One request as esp_http_client writes it; the status, raw header block and body."""
    parts = urlsplit(url)
    target = f"{parts.path}?{parts.query}" if parts.query else parts.path
    request = (f"GET {target} HTTP/1.1\r\nUser-Agent: ESP32 HTTP Client/1.0\r\n"
               f"Host: {proc.host}:{proc.port}\r\n{extra}\r\n")
    with socket.create_connection((proc.host, proc.port), timeout=10) as sock:
        sock.sendall(request.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, "connection closed before the headers"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.split(b"\r\nContent-Length: ", 1)[1].split(b"\r\n", 1)[0])  # the module's exact case
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed before the end of the body"
            body += chunk
    return int(head.split(b" ", 2)[1]), head, body[:length]


def sign_with_tool(proc: ServerProcess, workdir: Path, *args: str) -> str:
    """``tools/sign_url.py``'s whole stdout, which must be one line: the URL."""
    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "sign_url.py"), *args, "--keys", str(workdir / "keys.json"),
         "--base", f"http://{proc.host}:{proc.port}"],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"},
    ).stdout
    assert out.endswith("\n") and out.count("\n") == 1
    return out.strip()


def url_for(proc: ServerProcess, key: Key, filename: str = "ota.bin", expires: int | None = None,
            version: str = VERSION) -> str:
    expires = int(time.time()) + 600 if expires is None else expires
    return signed_urls.url(f"http://{proc.host}:{proc.port}", key, version, filename, expires)


@pytest.fixture
def with_admin(workdir: Path) -> Path:
    save_keys(workdir / "keys.json", load_keys(workdir / "keys.json") + [Key("ops", ADMIN, {"Role": "admin"})])
    return workdir


def test_at_userota_get_downloads_exact_bytes_and_no_signature_is_ever_logged(with_admin: Path) -> None:
    workdir = with_admin
    sigs = []
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir, extra=["--access-logs"]) as proc:
        url = sign_with_tool(proc, workdir, "device-1", VERSION, "ota.bin")
        sigs.append(url.rsplit("sig=", 1)[1])
        status, head, body = esp_get(proc, url)
        assert status == 200
        assert body == (workdir / "partitions" / VERSION / "ota.bin").read_bytes()
        refused = [  # each a different refusal, each logged by us and by Sanic's access log
            url.replace("filename=ota.bin", "filename=mqtt_ca.bin"),
            url_for(proc, Key("device-1", TOKEN), expires=int(time.time()) - 1),
            url_for(proc, Key("nobody", TOKEN)),
        ]
        for bad in refused:
            sigs.append(bad.rsplit("sig=", 1)[1])
            status, head, body = esp_get(proc, bad)
            assert status == 403, body
            assert json.loads(body)["status"] == 403
            assert sigs[-1].encode() not in body
        status, _, page = esp_get(proc, "/status", f"Authorization: token {ADMIN}\r\n")
        assert status == 200
        status, _, metrics = esp_get(proc, "/metrics", f"Authorization: token {ADMIN}\r\n")
        assert status == 200 and b'reason="signed_url"' in metrics
        eventually(lambda: "kind=metrics key=ops" in proc.log())
    log = proc.log()
    assert "GET http://" in log  # Sanic's access log did write the URLs, query and all
    assert f"kind=download key=device-1 version={VERSION} file=ota.bin range=- status=200" in log
    for sig in sigs:
        assert sig not in log and sig.encode() not in page and sig.encode() not in metrics
    assert log.count("sig=REDACTED") == 4
    assert "auth failed from 127.0.0.1: signed URL of key 'device-1' expired" in log


def test_a_removed_or_replaced_key_loses_its_urls_at_once(workdir: Path) -> None:
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        one, two = url_for(proc, Key("device-1", TOKEN)), url_for(proc, Key("device-2", OTHER_TOKEN))
        assert esp_get(proc, one)[0] == 200 and esp_get(proc, two)[0] == 200
        save_keys(workdir / "keys.json", [Key("device-2", "c" * 40)])  # device-1 removed, device-2 new token
        eventually(lambda: esp_get(proc, one)[0] == 403)
        assert esp_get(proc, two)[0] == 403
        assert esp_get(proc, url_for(proc, Key("device-2", "c" * 40)))[0] == 200  # the new token signs anew
    assert proc.logged("signed URL for an unknown key")


def test_other_version_and_a_header_keep_todays_rules(workdir: Path) -> None:
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        url = url_for(proc, Key("device-1", TOKEN))
        assert esp_get(proc, url.replace(f"version={VERSION}", "version=v1.0.1"))[0] == 403
        # a header decides on its own: a wrong token is refused even with a good signature
        assert esp_get(proc, url, f"Authorization: token {'9' * 40}\r\n")[0] == 403
        assert esp_get(proc, url, f"Authorization: token {OTHER_TOKEN}\r\n")[0] == 200
        # no header and no signature is still 401
        assert esp_get(proc, url.split("&key=")[0])[0] == 401


def test_failed_signed_urls_count_toward_the_failure_limit(workdir: Path) -> None:
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        bad = url_for(proc, Key("device-1", "e" * 40))
        statuses = [esp_get(proc, bad)[0] for _ in range(21)]
        assert statuses[:20] == [403] * 20 and statuses[20] == 429
        assert esp_get(proc, url_for(proc, Key("device-1", TOKEN)))[0] == 200  # a valid URL is never limited
