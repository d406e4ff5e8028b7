"""Memory under many connections: slow downloads, and idle keep-alive connections.

RSS is the workers' summed VmRSS (``Service.rss_mb``), sampled every 0.2 s; the
growth is its peak minus its value before the first connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from servers import Service
from wire import first_read_problem, request_bytes
from workspace import HOST


@dataclass
class MemoryResult:
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    baseline_mb: float = 0.0
    peak_mb: float = 0.0
    seconds: float = 0.0

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.baseline_mb


async def slow_download(port: int, request: bytes, expected: bytes, read_size: int, interval: float,
                        budget: float) -> str | None:
    """One module on slow Wi-Fi: ``read_size`` bytes every ``interval`` seconds.

    A small receive buffer stands in for the module's small TCP window (lwIP's is a
    few KiB); without it the loopback kernel would swallow the whole image into
    socket buffers and the server's own memory would never be exercised.
    Returns None when the body arrived byte-exact, else what went wrong.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, read_size)
    sock.setblocking(False)
    deadline = loop.time() + budget
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (HOST, port)), 30)
        await loop.sock_sendall(sock, request)
        first = await asyncio.wait_for(loop.sock_recv(sock, 1024), 30)
        if problem := first_read_problem(first, expected[:1], None):
            return problem
        head, _, body = first.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        if length != len(expected):
            return f"Content-Length {length}, expected {len(expected)}"
        digest = hashlib.sha256(body)
        got = len(body)
        while got < length:
            if loop.time() > deadline:
                return f"timed out after {got} of {length} bytes"
            await asyncio.sleep(interval)
            tick = 0
            while tick < read_size and got < length:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, min(read_size - tick, length - got)), 60)
                if not chunk:
                    return f"closed after {got} of {length} bytes"
                digest.update(chunk)
                got += len(chunk)
                tick += len(chunk)
        return None if digest.digest() == hashlib.sha256(expected).digest() else "body differs from the image"
    except (TimeoutError, OSError) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        sock.close()


async def idle_connection(port: int, request: bytes, hold: asyncio.Event, opened: asyncio.Semaphore,
                          answered: list[int]) -> str | None:
    """One module that asked its version and keeps the connection open, idle, until ``hold`` is set."""
    try:
        try:
            async with opened:  # a few hundred handshakes at a time: the listen backlog is finite
                reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 30)
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
                await asyncio.wait_for(reader.readexactly(length), 30)
        finally:
            answered[0] += 1
        await hold.wait()
        closed = reader.at_eof()
        writer.close()
        return "closed by the server while idle" if closed else None
    except (TimeoutError, OSError, asyncio.IncompleteReadError, AttributeError) as e:
        return f"{type(e).__name__}: {e}"


async def _measure(service: Service, start_all: Callable[[], list[Awaitable[str | None]]],
                   until: Callable[[], Awaitable[None]] | None = None) -> MemoryResult:
    result = MemoryResult(baseline_mb=service.rss_mb())
    result.peak_mb = result.baseline_mb
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            result.peak_mb = max(result.peak_mb, service.rss_mb())
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    start = time.monotonic()
    tasks = start_all()
    if until is not None:
        await until()
    outcomes = await asyncio.gather(*tasks)
    result.seconds = time.monotonic() - start
    done.set()
    await sampler
    for problem in outcomes:
        if problem is None:
            result.ok += 1
        else:
            result.failed.append(problem)
    return result


async def slow_downloads(service: Service, path: str, token: str, expected: bytes, clients: int,
                         read_size: int, interval: float, budget: float) -> MemoryResult:
    request = request_bytes(path, token)

    def start_all() -> list[Awaitable[str | None]]:
        return [asyncio.create_task(_ramped(i * 2.0 / clients, slow_download(
            service.port, request, expected, read_size, interval, budget))) for i in range(clients)]

    return await _measure(service, start_all)


async def idle_connections(service: Service, path: str, token: str, clients: int, hold_s: float) -> MemoryResult:
    """``clients`` keep-alive connections, each after one answered request, all held idle for
    ``hold_s`` once the last one is open."""
    request = request_bytes(path, token)
    hold = asyncio.Event()
    opened = asyncio.Semaphore(200)
    answered = [0]

    def start_all() -> list[Awaitable[str | None]]:
        return [asyncio.create_task(idle_connection(service.port, request, hold, opened, answered))
                for _ in range(clients)]

    async def until() -> None:
        while answered[0] < clients:
            await asyncio.sleep(0.1)
        await asyncio.sleep(hold_s)
        hold.set()

    return await _measure(service, start_all, until)


async def _ramped(delay: float, work: Awaitable[str | None]) -> str | None:
    await asyncio.sleep(delay)  # ramp: don't overflow the listen backlog
    return await work


def run(coroutine: Awaitable[MemoryResult]) -> MemoryResult:
    try:
        import uvloop  # the client side must not be the bottleneck

        return uvloop.run(coroutine)  # type: ignore[arg-type]
    except ImportError:
        return asyncio.run(coroutine)  # type: ignore[arg-type]
