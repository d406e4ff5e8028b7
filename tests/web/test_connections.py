"""Slow and crowded clients: the header deadline and the per-address cap, on a real process."""

from __future__ import annotations

import contextlib
import resource
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TOKEN, VERSION, env_for, settings_for
from esp_client import HEADERS
from server_process import ServerProcess

from sanic_ota.web.connections import AddressSlots

#: What the service gets without LimitNOFILE. ~990 trickling connections took it down;
#: as many as the limit takes it down whatever else the worker has open.
NOFILE = 1024
TRICKLERS = NOFILE
HEADER_TIMEOUT = 3.0


@contextlib.contextmanager
def nofile_limit(soft: int) -> Iterator[None]:
    """Children started inside inherit ``soft`` open files; this process gets its own back."""
    old_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (old_soft, hard))


def _module_version_query(proc: ServerProcess, source: str) -> bytes:
    """The module's plain ``AT+CIUPDATE`` query, from another loopback address."""
    with socket.create_connection((proc.host, proc.port), timeout=5, source_address=(source, 0)) as sock:
        request = f"GET /v1/device/rom/?is_format_simple=true HTTP/1.0\r\nHost: {proc.host}:{proc.port}\r\n"
        sock.sendall((request + HEADERS.format(token=TOKEN)).encode())
        return sock.recv(1024)


class Tricklers:
    """Connections from 127.0.0.1 that send one byte of a never-ending header each second."""

    def __init__(self, proc: ServerProcess, count: int) -> None:
        self.head = b"GET /v1/device/rom/ HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
        self.sockets: list[socket.socket] = []
        self.sent: dict[socket.socket, int] = {}
        self.answers: dict[socket.socket, bytes] = {}
        self.closed: set[socket.socket] = set()
        failures = 0
        for _ in range(count):
            try:
                sock = socket.create_connection((proc.host, proc.port), timeout=2)
            except OSError:  # the server no longer accepts
                failures += 1
                if failures > 5:
                    break
                continue
            sock.setblocking(False)
            self.sockets.append(sock)
            self.sent[sock] = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for sock in self.sockets:
                if sock in self.closed:
                    continue
                try:
                    sock.send(self.head[self.sent[sock] : self.sent[sock] + 1])
                    self.sent[sock] += 1
                except OSError:
                    pass  # closed by the server; reading notices
            self.stop.wait(1.0)

    def read(self) -> None:
        """Collect answers and closes without blocking."""
        for sock in [s for s in self.sockets if s not in self.closed]:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            if data:
                self.answers[sock] = self.answers.get(sock, b"") + data
            else:
                self.closed.add(sock)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for sock in self.sockets:
            sock.close()


def test_trickling_connections_cannot_exhaust_1024_files_and_are_cut_at_the_deadline(workdir: Path) -> None:
    """The slowloris that took the service down: one address, 990 connections, a byte a second."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < TRICKLERS + 200:
        pytest.skip(f"this test process needs {TRICKLERS + 200} open files, ulimit -n is {soft}")
    env = dict(env_for(settings_for(workdir)), SANIC_OTA_HEADER_TIMEOUT=str(HEADER_TIMEOUT))
    proc = ServerProcess(env, cwd=workdir)
    with nofile_limit(NOFILE):
        proc.start()
    try:
        limits = Path(f"/proc/{proc.proc.pid}/limits").read_text()
        assert any(line.startswith("Max open files") and f" {NOFILE} " in line for line in limits.splitlines())
        tricklers = Tricklers(proc, TRICKLERS)
        tricklers.thread.start()  # each connection's first byte goes out now
        started = time.monotonic()
        try:
            assert len(tricklers.sockets) > NOFILE // 2
            time.sleep(1.5)  # every trickler has sent a byte or two; the deadline has not come
            assert b'"rom_version": "' + VERSION.encode() in _module_version_query(proc, "127.0.0.2")
            tricklers.read()
            held = [s for s in tricklers.sockets if s not in tricklers.closed]
            assert held, "connections within the cap are held until their deadline"
            deadline = started + HEADER_TIMEOUT + 2.5
            while time.monotonic() < deadline and len(tricklers.closed) < len(tricklers.sockets):
                time.sleep(0.2)
                tricklers.read()
            assert len(tricklers.closed) == len(tricklers.sockets), "trickling connections outlived the deadline"
            assert any(b" 408 " in answer.split(b"\r\n", 1)[0] for answer in tricklers.answers.values())
        finally:
            tricklers.close()
        assert b'"rom_version": "' in _module_version_query(proc, "127.0.0.1")  # the address is not banned
    finally:
        proc.stop()


def test_a_silent_tls_connection_is_closed_at_the_header_deadline(workdir: Path, tls_args: list[str]) -> None:
    """The handshake precedes the protocol: it gets the header deadline, not asyncio's 60 s."""
    env = dict(env_for(settings_for(workdir)), SANIC_OTA_HEADER_TIMEOUT="1")
    with ServerProcess(env, cwd=workdir, extra=tls_args) as proc:
        with socket.create_connection((proc.host, proc.port), timeout=5) as sock:
            started = time.monotonic()
            sock.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello, and no more
            try:
                assert sock.recv(1024) == b""
            except ConnectionResetError:
                pass
            assert time.monotonic() - started < 4


def test_slots_count_per_address_up_to_the_cap() -> None:
    slots = AddressSlots(2)
    assert slots.take("10.0.0.1") and slots.take("10.0.0.1")
    assert not slots.take("10.0.0.1")  # a third is refused, and not counted
    assert slots.take("10.0.0.2")  # other addresses have their own count
    assert slots.first_refusal("10.0.0.1") and not slots.first_refusal("10.0.0.1")
    slots.give_back("10.0.0.1")
    assert slots.count("10.0.0.1") == 1 and slots.take("10.0.0.1")
    assert not slots.take("10.0.0.1") and slots.first_refusal("10.0.0.1")  # reported again: a new episode
    for address in ("10.0.0.1", "10.0.0.1", "10.0.0.2"):
        slots.give_back(address)
    assert slots.count("10.0.0.1") == slots.count("10.0.0.2") == 0 and not slots._open  # nothing kept


def test_cap_zero_means_no_cap() -> None:
    slots = AddressSlots(0)
    assert all(slots.take("10.0.0.1") for _ in range(10_000))


def _closed_at_once(sock: socket.socket) -> bool:
    sock.settimeout(1.0)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_only_connections_not_yet_authenticated_count(workdir: Path) -> None:
    """Cap 2: authenticated keep-alive connections leave the count, failed ones stay in it."""
    env = dict(env_for(settings_for(workdir)), SANIC_OTA_MAX_UNAUTHENTICATED_CONNECTIONS="2")
    query = "GET /v1/device/rom/ HTTP/1.1\r\nHost: x\r\nAuthorization: token {}\r\n\r\n"
    with ServerProcess(env, cwd=workdir) as proc:
        modules = []
        for _ in range(3):  # one after the other: each is counted until its request passes
            sock = socket.create_connection((proc.host, proc.port), timeout=5)
            sock.sendall(query.format(TOKEN).encode())
            assert b" 200 " in sock.recv(4096).split(b"\r\n", 1)[0]
            modules.append(sock)  # kept open: an authenticated keep-alive connection
        wrong = socket.create_connection((proc.host, proc.port), timeout=5)
        wrong.sendall(query.format("9" * 40).encode())
        assert b" 403 " in wrong.recv(4096).split(b"\r\n", 1)[0]
        idle = socket.create_connection((proc.host, proc.port), timeout=5)
        extra = socket.create_connection((proc.host, proc.port), timeout=5)
        assert _closed_at_once(extra)  # the failed one and the idle one fill the cap
        assert not _closed_at_once(idle)
        modules[0].sendall(query.format(TOKEN).encode())  # authenticated connections keep working
        assert b" 200 " in modules[0].recv(4096).split(b"\r\n", 1)[0]
        wrong.close()
        time.sleep(0.2)
        again = socket.create_connection((proc.host, proc.port), timeout=5)
        again.sendall(query.format(TOKEN).encode())
        assert b" 200 " in again.recv(4096).split(b"\r\n", 1)[0]
        assert proc.logged("127.0.0.1 holds 2 connections that have not authenticated")
        for sock in [*modules, idle, extra, again]:
            sock.close()


def test_the_header_deadline_holds_for_a_later_request_on_a_kept_alive_connection(workdir: Path) -> None:
    """The deadline's timer is made per connection, not per request: a second request
    whose headers trickle in after a quick first one is still cut at its own deadline."""
    timeout = 1.0
    env = dict(env_for(settings_for(workdir)), SANIC_OTA_HEADER_TIMEOUT=str(timeout))
    with ServerProcess(env, cwd=workdir) as proc, socket.create_connection((proc.host, proc.port), timeout=5) as sock:
        request = f"GET /v1/device/rom/?is_format_simple=true HTTP/1.1\r\nHost: {proc.host}:{proc.port}\r\n"
        sock.sendall((request + HEADERS.format(token=TOKEN)).encode())
        first = sock.recv(4096)
        assert first.startswith(b"HTTP/1.1 200") and b"connection: keep-alive" in first.lower()
        time.sleep(0.6)  # more than half the deadline: the first request's timer is due before the second's
        started = time.monotonic()
        answer = b""
        for byte in b"GET /v1/device/rom/ HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaa":
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)
            with contextlib.suppress(BlockingIOError):
                sock.setblocking(False)
                try:
                    data = sock.recv(4096)
                finally:
                    sock.setblocking(True)
                if not data:
                    break
                answer += data
        elapsed = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert timeout * 0.9 <= elapsed < timeout + 2.0, elapsed
