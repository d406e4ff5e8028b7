"""Download bodies sent by the kernel's sendfile (sanic_ota.web.sendfile).

Real server processes on loopback, on uvloop (Sanic's default) and on asyncio's own
loop, with the image in a sealed memfd (the cache) or in a verified copy on disk (a
cache smaller than the file); one test in process, to see which writes carry what.
The images are random bytes, so a body sent from a wrong offset cannot pass.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import signal
import socket
import stat
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvloop
from conftest import TOKEN, VERSION, env_for, settings_for, write_release
from esp_client import download
from server_process import ServerProcess, eventually

from sanic_ota.keys import Key, save_keys
from sanic_ota.web.responses import FIRST_CHUNK_SIZE

MAGIC = b"\xfc\xfc"  # factory_param: a partition the firmware knows, any bytes after its magic
IMAGE = "v9.0.0"  # factory_param.bin: 1.6 MB, the bench's image size
BIG = "v9.1.0"  # factory_param.bin: 8 MiB, more than loopback's socket buffers take at once
SMALL = "v9.2.0"  # factory_param.bin: 60 kB, kept as bytes and written through the transport
ADMIN = "a" * 40


def random_image(size: int) -> bytes:
    return MAGIC + os.urandom(size - len(MAGIC))


@dataclass
class Served:
    proc: ServerProcess
    image: bytes
    big: bytes

    def path(self, version: str) -> Path:
        return self.proc.cwd / "partitions" / version / "factory_param.bin"


def make_workdir(root: Path) -> tuple[Path, bytes, bytes]:
    image, big = random_image(1_600_000), random_image(8 * 1024 * 1024)
    for version, data in ((IMAGE, image), (BIG, big), (SMALL, image[:60_000])):
        (root / "partitions" / version).mkdir(parents=True)
        (root / "partitions" / version / "factory_param.bin").write_bytes(data)
    write_release(root / "partitions", VERSION)
    save_keys(root / "keys.json", [Key("device-1", TOKEN), Key("ops", ADMIN, {"Role": "admin"})])
    return root, image, big


def server_env(workdir: Path, loop: str, cache_bytes: int | None = None) -> dict[str, str]:
    env = dict(env_for(settings_for(workdir)), SANIC_OTA_LOG_FORMAT="json",
               SANIC_RESPONSE_TIMEOUT="2")  # a download must not need one write per second through Sanic
    if loop == "asyncio":
        env["SANIC_USE_UVLOOP"] = "false"
    if cache_bytes is not None:
        env["SANIC_OTA_CACHE_BYTES"] = str(cache_bytes)
    return env


@pytest.fixture(scope="module", params=["uvloop-memfd", "asyncio-memfd", "uvloop-copy"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    loop, kind = request.param.split("-")
    workdir, image, big = make_workdir(tmp_path_factory.mktemp(request.param))
    env = server_env(workdir, loop, 100_000 if kind == "copy" else None)
    with ServerProcess(env, cwd=workdir) as proc:
        yield Served(proc, image, big)


def request_bytes(version: str, method: str = "GET", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} /v1/device/rom/?action=download_rom&version={version}&filename=factory_param.bin HTTP/1.1",
             "Host: x", f"Authorization: token {TOKEN}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_answer(sock: socket.socket, buffered: bytes | bytearray = b"", head_only: bool = False,
                leftover: bytearray | None = None) -> tuple[bytes, bytes]:
    """One answer on a keep-alive connection: its header block and its body, by Content-Length.

    Bytes read past it (the next pipelined answer) go to ``leftover``; without one, there must be none.
    """
    data = bytearray(buffered)
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the headers: {bytes(data)!r}"
        data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    length = 0 if head_only else int(re.search(rb"\r\nContent-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    rest = bytearray(body)
    while len(rest) < length:
        chunk = sock.recv(1 << 20)
        assert chunk, f"closed after {len(rest)} of {length} body bytes"
        rest += chunk
    if leftover is not None:
        leftover[:] = rest[length:]
    assert len(rest) == length or leftover is not None, "more bytes than Content-Length"
    return head, bytes(rest[:length])


def test_a_whole_image_is_exact_and_the_connection_serves_the_next_request(served: Served) -> None:
    proc = served.proc
    assert download(proc.host, proc.port, TOKEN, IMAGE, "factory_param") == served.image  # the module's rules
    with socket.create_connection((proc.host, proc.port), timeout=10) as sock:
        sock.sendall(request_bytes(IMAGE))
        first = sock.recv(1024)
        assert b"\r\nContent-Length: 1600000\r\n" in first and b"\r\n\r\n" + MAGIC in first
        head, body = read_answer(sock, first)
        assert head.startswith(b"HTTP/1.1 200") and b"keep-alive" in head and body == served.image
        sock.sendall(request_bytes(IMAGE, "HEAD"))
        head, _ = read_answer(sock, head_only=True)
        assert head.startswith(b"HTTP/1.1 200") and b"\r\nContent-Length: 1600000\r\n" in head
        sock.sendall(request_bytes(IMAGE))  # after a HEAD, nothing stray is left on the connection
        assert read_answer(sock)[1] == served.image
        sock.sendall(("GET /v1/device/rom/?is_format_simple=true HTTP/1.1\r\nHost: x\r\n"
                      f"Authorization: token {TOKEN}\r\n\r\n").encode())
        assert b'"rom_version": "' in read_answer(sock)[1]
    records = proc.records_when(lambda rs: len([r for r in rs if r["version"] == IMAGE]) >= 4)
    done = [r for r in records if r["version"] == IMAGE and r["kind"] == "download"]
    assert {(r["outcome"], r["bytes"]) for r in done} == {("completed", 1_600_000)}


@pytest.mark.parametrize("header, span", [
    ("bytes=0-99", (0, 100)),  # all within the first write
    ("bytes=1000-1599999", (1000, 1_600_000)),  # the first write, then sendfile from an offset
    ("bytes=800000-", (800_000, 1_600_000)),
    ("bytes=-300001", (1_299_999, 1_600_000)),
    ("bytes=16383-16385", (16383, 16386)),  # across the end of the first write
    ("bytes=5-1000000", (5, 1_000_001)),  # ends before the end of the file
])
def test_a_range_is_exact(served: Served, header: str, span: tuple[int, int]) -> None:
    start, stop = span
    with socket.create_connection((served.proc.host, served.proc.port), timeout=10) as sock:
        sock.sendall(request_bytes(IMAGE, headers={"Range": header}))
        head, body = read_answer(sock)
        assert head.startswith(b"HTTP/1.1 206")
        assert f"\r\nContent-Range: bytes {start}-{stop - 1}/1600000\r\n".encode() in head
        assert body == served.image[start:stop]
        sock.sendall(request_bytes(IMAGE))  # and the connection is still in step
        assert read_answer(sock)[1] == served.image


def test_pipelined_downloads_come_back_whole_and_in_order(served: Served) -> None:
    """Answers sent through the transport (a small file) and by sendfile, one after the
    other on one connection, each whole and where it belongs."""
    with socket.create_connection((served.proc.host, served.proc.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        asked = [(SMALL, 0), (IMAGE, 0), (SMALL, 7), (IMAGE, 1), (SMALL, 0), (IMAGE, 2)]
        sock.sendall(b"".join(request_bytes(version, headers={"Range": f"bytes={skip}-"}) for version, skip in asked))
        time.sleep(0.3)  # the server fills the socket
        leftover = bytearray()
        for version, skip in asked:
            head, body = read_answer(sock, leftover, leftover=leftover)
            whole = served.image if version == IMAGE else served.image[:60_000]
            assert head.startswith(b"HTTP/1.1 206") and body == whole[skip:]


def stalled_download(proc: ServerProcess, version: str) -> tuple[socket.socket, bytes]:
    """A download whose reader takes its first 1024 bytes and then stops reading."""
    sock = socket.create_connection((proc.host, proc.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.sendall(request_bytes(version))
    return sock, sock.recv(1024)


def test_a_reader_gone_mid_download_is_aborted_and_the_worker_carries_on(served: Served) -> None:
    proc = served.proc
    sock, first = stalled_download(proc, BIG)
    assert b"\r\n\r\n" + MAGIC in first
    time.sleep(0.5)  # the server has filled the socket and waits for room
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close = reset
    sock.close()
    records = proc.records_when(lambda rs: any(r["version"] == BIG for r in rs))
    gone = next(r for r in records if r["version"] == BIG)
    assert gone["outcome"] == "aborted" and 0 < gone["bytes"] < len(served.big)
    assert download(proc.host, proc.port, TOKEN, IMAGE, "factory_param") == served.image
    assert len(re.findall(r"Starting worker \[", proc.log())) == 1, "the worker was replaced"
    assert "Traceback" not in proc.log() and "unexpected error" not in proc.log()

    def none_in_flight() -> bool:
        asked = urllib.request.Request(f"http://{proc.host}:{proc.port}/metrics",
                                       headers={"Authorization": f"token {ADMIN}"})
        with urllib.request.urlopen(asked, timeout=10) as answer:
            return b"sanic_ota_downloads_in_flight 0.0" in answer.read()

    assert eventually(none_in_flight, timeout=5)


def test_a_slow_reader_is_not_cut_off_by_the_response_timeout(served: Served) -> None:
    """The server's response timeout is 2 s here; this download takes about 4 s.

    Sanic counts the timeout from the last write it knows of, so sendfile must tell it
    of each: otherwise the download is cancelled two seconds after its first write.
    """
    proc = served.proc
    with socket.create_connection((proc.host, proc.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.sendall(request_bytes(BIG))
        data = bytearray()
        started = time.monotonic()
        while True:
            chunk = sock.recv(256 * 1024)
            if not chunk:
                break
            data += chunk
            if data.find(b"\r\n\r\n") >= 0 and len(data) - data.find(b"\r\n\r\n") - 4 >= len(served.big):
                break
            time.sleep(0.02)
        assert time.monotonic() - started > 3, "too fast to show anything: slow the reader down"
    assert bytes(data).partition(b"\r\n\r\n")[2] == served.big


def test_many_slow_readers_each_get_the_exact_image(served: Served) -> None:
    proc = served.proc

    def slow() -> bytes:
        with socket.create_connection((proc.host, proc.port), timeout=20) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            sock.sendall(request_bytes(IMAGE))
            data = bytearray()
            while (end := data.find(b"\r\n\r\n")) < 0 or len(data) - end - 4 < len(served.image):
                chunk = sock.recv(32768)
                if not chunk:
                    break
                data += chunk
                time.sleep(0.01)
            return bytes(data).partition(b"\r\n\r\n")[2]

    with ThreadPoolExecutor(40) as pool:
        bodies = list(pool.map(lambda _: slow(), range(40)))
    assert all(body == served.image for body in bodies)


def test_bytes_overwritten_in_place_after_verification_are_never_sent(served: Served) -> None:
    """A download in flight when the file is rewritten in place keeps the verified bytes.

    sendfile from the release file itself would send the new bytes from then on: a
    mix no manifest signed. The memfd is sealed, the copy is private.
    """
    proc = served.proc
    path = served.path(BIG)
    sock, first = stalled_download(proc, BIG)
    with sock:
        time.sleep(0.3)
        with open(path, "r+b") as handle:
            handle.write(random_image(len(served.big)))
        _, body = read_answer(sock, first)
    assert body == served.big
    with open(path, "r+b") as handle:  # put back: the other tests use it
        handle.write(served.big)


def test_the_body_after_the_first_write_goes_by_sendfile(settings, workdir: Path, monkeypatch) -> None:
    """In process: headers and the first bytes through Sanic's writes, the rest by sendfile,
    with the socket corked while it is sent and uncorked once it is."""
    from sanic_ota.web.server import create_app

    image = random_image(300_000)
    (workdir / "partitions" / IMAGE).mkdir()
    (workdir / "partitions" / IMAGE / "factory_param.bin").write_bytes(image)
    app = create_app(settings)
    writes: list[bytes] = []
    sent: list[int] = []
    sockets: list[socket.socket] = []  # the connection's socket, as sendfile got it
    real = os.sendfile

    @app.signal("http.lifecycle.send")
    async def record(data: bytes) -> None:
        writes.append(bytes(data))

    def counting(out: int, fd: int, offset: int, count: int) -> int:
        sockets.append(socket.socket(fileno=os.dup(out)))
        assert sockets[-1].getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 1
        n = real(out, fd, offset, count)
        sent.append(n)
        return n

    monkeypatch.setattr(os, "sendfile", counting)
    url = f"/v1/device/rom/?action=download_rom&version={IMAGE}&filename=factory_param.bin"
    _, response = app.test_client.get(url, headers={"Authorization": f"token {TOKEN}"})
    assert response.status == 200 and response.body == image
    body_written = b"".join(writes).partition(b"\r\n\r\n")[2]
    assert body_written == image[:FIRST_CHUNK_SIZE]
    assert sum(sent) == len(image) - FIRST_CHUNK_SIZE
    assert sockets and all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0 for s in sockets)
    for sock in sockets:
        sock.close()

    writes.clear()
    sent.clear()
    _, response = app.test_client.get(url, headers={"Authorization": f"token {TOKEN}", "Range": "bytes=100-"})
    assert response.status == 206 and response.body == image[100:]
    assert sum(sent) == len(image) - 100 - FIRST_CHUNK_SIZE


def test_without_a_descriptor_for_the_socket_the_body_goes_through_the_transport(
        settings, workdir: Path, monkeypatch) -> None:
    image = random_image(300_000)
    (workdir / "partitions" / IMAGE).mkdir()
    (workdir / "partitions" / IMAGE / "factory_param.bin").write_bytes(image)
    from sanic_ota.web.server import create_app

    app = create_app(settings)
    real_dup = os.dup

    def no_socket_dup(fd: int) -> int:
        if stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise OSError(errno.EMFILE, "Too many open files")
        return real_dup(fd)

    @app.after_server_start  # not a request middleware: the fast lane runs none
    async def out_of_descriptors(app) -> None:
        monkeypatch.setattr(os, "dup", no_socket_dup)
        monkeypatch.setattr(os, "sendfile", lambda *args: pytest.fail("sendfile without a socket descriptor"))

    url = f"/v1/device/rom/?action=download_rom&version={IMAGE}&filename=factory_param.bin"
    _, response = app.test_client.get(url, headers={"Authorization": f"token {TOKEN}"})
    assert response.status == 200 and response.body == image


def test_over_tls_the_body_goes_through_the_transport(tmp_path: Path, tls_args: list[str]) -> None:
    """sendfile would put plain bytes on a TLS connection: there the transport encrypts them."""
    workdir, image, _ = make_workdir(tmp_path / "tls")
    with ServerProcess(server_env(workdir, "uvloop"), cwd=workdir, extra=tls_args) as proc:
        assert download(proc.host, proc.port, TOKEN, IMAGE, "factory_param", tls=True) == image


def test_a_download_in_flight_at_sigterm_is_finished(tmp_path: Path) -> None:
    workdir, _, big = make_workdir(tmp_path)
    with ServerProcess(server_env(workdir, "uvloop"), cwd=workdir) as proc:
        assert proc.proc is not None
        sock, first = stalled_download(proc, BIG)
        with sock:
            time.sleep(0.3)
            os.kill(proc.proc.pid, signal.SIGTERM)
            time.sleep(0.5)
            _, body = read_answer(sock, first)
        assert body == big
        assert proc.proc.wait(30) == 0


@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_sendfile_starts_only_once_the_transport_has_written_everything(new_loop) -> None:
    """Bytes the transport still holds (a header block the socket had no room for) must
    reach the socket before any byte sendfile writes beside it, or they would be
    overtaken. Over a socket pair, with Sanic's own protocol."""
    from sanic.server.protocols.base_protocol import SanicProtocol

    from sanic_ota.web import sendfile

    held = b"h" * 60_000  # below Sanic's high-water mark: the protocol is not paused for it
    file_bytes = os.urandom(100_000)

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        theirs.setblocking(True)
        transport, protocol = await loop.create_connection(lambda: SanicProtocol(loop=loop, app=None), sock=ours)
        transport.write(held)  # more than the socket pair takes
        assert 0 < transport.get_write_buffer_size() < 65536
        received = bytearray()

        def read_later() -> None:
            time.sleep(0.3)
            while len(received) < len(held) + len(file_bytes):
                received.extend(theirs.recv(1 << 20))

        reader = loop.run_in_executor(None, read_later)
        started = time.monotonic()
        await sendfile._drained(transport, protocol)  # type: ignore[arg-type]
        assert time.monotonic() - started > 0.2 and transport.get_write_buffer_size() == 0
        assert transport.get_write_buffer_limits() == (16384, 65536)  # Sanic's marks, put back
        with tempfile.TemporaryFile() as f:
            f.write(file_bytes)
            f.flush()
            out = os.dup(ours.fileno())
            try:
                sent = 0
                while sent < len(file_bytes):
                    try:
                        sent += os.sendfile(out, f.fileno(), sent, len(file_bytes) - sent)
                    except BlockingIOError:
                        await asyncio.sleep(0.01)
            finally:
                os.close(out)
        await reader
        transport.close()
        theirs.close()
        return bytes(received)

    loop = new_loop()
    try:
        assert loop.run_until_complete(main()) == held + file_bytes
    finally:
        loop.close()
