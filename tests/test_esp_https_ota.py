"""esp_https_ota's two sequences against the server process on a real socket.

The client is ``esp_idf_client``, a model of ESP-IDF's esp_https_ota: it never checks
that a window came back 206, so these tests fail on any range the server gets wrong.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TOKEN, VERSION, env_for, settings_for
from esp_idf_client import USER_AGENT, partial_download, resumed_download
from server_process import ServerProcess

AUTH = {"Authorization": f"token {TOKEN}"}

#: Custom partitions (no magic check): one an exact multiple of both windows, one not.
FILES = {"exact.bin": 2 * 65536, "odd.bin": 3 * 65536 + 4321}


def path_of(filename: str) -> str:
    return f"/v1/device/rom/?action=download_rom&version={VERSION}&filename={filename}"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, bytes]]]:
    from conftest import write_release

    from sanic_ota.keys import Key, save_keys

    workdir = tmp_path_factory.mktemp("esp_https_ota")
    write_release(workdir / "partitions", VERSION)
    save_keys(workdir / "keys.json", [Key("device-1", TOKEN)])
    files = {name: os.urandom(size) for name, size in FILES.items()}
    for name, data in files.items():
        (workdir / "partitions" / VERSION / name).write_bytes(data)
    files["ota.bin"] = (workdir / "partitions" / VERSION / "ota.bin").read_bytes()
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        yield proc, files


@pytest.mark.parametrize("window", [4096, 65536])
@pytest.mark.parametrize("filename", ["exact.bin", "odd.bin", "ota.bin"])
def test_partial_download_reassembles_the_file(release, window: int, filename: str) -> None:
    proc, files = release
    data = files[filename]
    image, client = partial_download(proc.host, proc.port, path_of(filename), AUTH, window=window)
    assert image == data
    assert client.connects == 1  # every window on one keep-alive connection
    assert all(request.startswith(f"GET {path_of(filename)} HTTP/1.1\r\nUser-Agent: {USER_AGENT}\r\n")
               for request in client.requests)
    if len(data) <= window:
        assert [a.status for a in client.answers] == [200]
    else:
        assert {a.status for a in client.answers} == {206}
        assert client.requests[-1].endswith(f"Range: bytes={len(data) - (len(data) - 1) % window - 1}-\r\n\r\n")


@pytest.mark.parametrize("filename", ["exact.bin", "odd.bin"])
def test_a_resumed_partial_download_clamps_the_window_one_past_the_end(release, filename: str) -> None:
    proc, files = release
    data = files[filename]
    start = len(data) - 1000
    image, client = partial_download(proc.host, proc.port, path_of(filename), AUTH, window=65536, start=start)
    assert client.requests[0].endswith(f"Range: bytes={start}-{len(data)}\r\n\r\n")  # L, one byte past the end
    assert client.answers[0].status == 206
    assert client.answers[0].headers["content-range"] == f"bytes {start}-{len(data) - 1}/{len(data)}"
    assert image == data


@pytest.mark.parametrize("where", ["start", "middle", "last byte"])
def test_resumption_continues_with_206(release, where: str) -> None:
    proc, files = release
    data = files["odd.bin"]
    offset = {"start": 0, "middle": len(data) // 2, "last byte": len(data) - 1}[where]
    image, client = resumed_download(proc.host, proc.port, path_of("odd.bin"), AUTH, offset)
    assert [a.status for a in client.answers] == [206]
    assert client.answers[0].headers["etag"] and client.answers[0].headers["accept-ranges"] == "bytes"
    assert image == data


def test_without_the_token_the_head_is_refused(release) -> None:
    proc, _ = release
    with pytest.raises(AssertionError, match="HEAD answered 401"):
        partial_download(proc.host, proc.port, path_of("odd.bin"), {})


def test_the_log_counts_one_download_per_file_fetched_in_windows(workdir: Path) -> None:
    data = os.urandom(3 * 4096 + 5)
    (workdir / "partitions" / VERSION / "win.bin").write_bytes(data)
    env = dict(env_for(settings_for(workdir)), SANIC_OTA_LOG_FORMAT="json")
    with ServerProcess(env, cwd=workdir) as proc:
        image, _ = partial_download(proc.host, proc.port, path_of("win.bin"), AUTH, window=4096)
        records = proc.records_when(lambda rs: sum(r["file"] == "win.bin" for r in rs) >= 5)
    assert image == data
    mine = [r for r in records if r["file"] == "win.bin"]
    assert [r["kind"] for r in mine] == ["head", "partial", "partial", "partial", "download"]
    assert [r["status"] for r in mine] == [200, 206, 206, 206, 206]
    assert [r["range"] for r in mine] == [None, "0-4095/12293", "4096-8191/12293", "8192-12287/12293",
                                          "12288-12292/12293"]
    assert sum(r["bytes"] for r in mine) == len(data)
    assert all(r["outcome"] == "completed" for r in mine)


def signed_path(filename: str) -> str:
    """What AT+USEROTA or an esp_https_ota product is handed: a URL that needs no header."""
    from urllib.parse import urlsplit

    from sanic_ota import signed_urls
    from sanic_ota.keys import Key

    url = signed_urls.url("http://127.0.0.1", Key("device-1", TOKEN), VERSION, filename, int(time.time()) + 600)
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


@pytest.mark.parametrize("window", [4096, 65536])
def test_partial_download_through_a_signed_url_needs_no_header(release, window: int) -> None:
    proc, files = release
    image, client = partial_download(proc.host, proc.port, signed_path("odd.bin"), {}, window=window)
    assert image == files["odd.bin"]
    assert not any("Authorization" in request for request in client.requests)


@pytest.mark.parametrize("where", ["start", "middle", "last byte"])
def test_resumption_through_a_signed_url_needs_no_header(release, where: str) -> None:
    proc, files = release
    data = files["ota.bin"]
    offset = {"start": 0, "middle": len(data) // 2, "last byte": len(data) - 1}[where]
    image, client = resumed_download(proc.host, proc.port, signed_path("ota.bin"), {}, offset)
    assert [a.status for a in client.answers] == [206]
    assert image == data


def test_a_signed_url_for_another_file_is_refused_on_head(release) -> None:
    proc, _ = release
    path = signed_path("odd.bin").replace("filename=odd.bin", "filename=exact.bin")
    with pytest.raises(AssertionError, match="HEAD answered 403"):
        partial_download(proc.host, proc.port, path, {})


def test_a_head_leaves_no_error_in_the_log(release) -> None:
    """Sanic's streaming path fails on a HEAD's closing write: a download's HEAD is a whole answer."""
    proc, files = release
    image, _ = partial_download(proc.host, proc.port, path_of("odd.bin"), AUTH, window=65536)  # HEAD first
    assert image == files["odd.bin"]
    time.sleep(0.3)  # log lines are written by a thread
    assert "ERROR" not in proc.log()  # Sanic's own lines say "ERROR:", ours " ERROR "
