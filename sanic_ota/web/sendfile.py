"""A download's body sent by the kernel's ``sendfile``, in step with Sanic's own writes.

Sending a 1.6 MB image through the transport copies it through user space and runs
Sanic's flow control per chunk; nginx hands the file to the kernel. uvloop (Sanic's
loop) has no ``loop.sendfile`` (MagicStack/uvloop#228: not implemented), and
asyncio's own swaps the connection's protocol while it runs and, for any transport
it does not know, copies through user space anyway. So the body is sent here, with
``os.sendfile`` from a file whose bytes cannot change (``filecache.VerifiedCopy``:
a sealed memfd or a private unlinked copy), under these rules:

- only a plain socket: over TLS the bytes must be encrypted in user space
  (``socket_of`` says None and the caller writes them through the transport);
- only once the transport's own buffer is empty (the header block and first bytes
  go through Sanic, in one write): bytes written beside it would overtake it;
- the socket corked (``TCP_CORK``, what nginx's ``tcp_nopush`` does) from before the
  header block until the body is sent: the kernel sends full segments only, so the
  header block never leaves in a small segment of its own (for a real network; on
  loopback it measured no faster, bench/README.md "The fourth pass");
- on our own duplicate of the connection's descriptor, never the transport's: a
  descriptor the transport closes can be given to another connection while we wait,
  and uvloop refuses ``add_writer`` on a descriptor its transport owns;
- a full socket is waited for with ``add_writer`` on that duplicate (no polling),
  removed before the duplicate is closed (epoll keeps a registration until every
  descriptor of the socket is closed);
- Sanic is told what went: ``Http.response_bytes_left`` (which it checks against
  ``Content-Length`` when the stream ends) and the time of the last write (its
  response timeout counts from there, as it does for its own ``send``);
- a connection reset or broken under us is the client gone (``RequestCancelled``, a
  download counted aborted); any other failure is the server's.
"""

from __future__ import annotations

import asyncio
import os
import socket
from time import monotonic
from typing import cast

from sanic import Request
from sanic.exceptions import RequestCancelled, ServerError
from sanic.http import Http
from sanic.server.protocols.http_protocol import HttpProtocol

from sanic_ota.accounting import RequestRecord


def socket_of(request: Request) -> socket.socket | None:
    """A duplicate of the connection's socket, or None if a body cannot go there by
    ``sendfile`` (TLS, a connection closing, a transport without a socket, no
    descriptor left).

    The caller closes it.
    """
    transport = request.transport
    if transport is None or transport.is_closing() or transport.get_extra_info("sslcontext") is not None:
        return None
    if not isinstance(request.stream, Http) or not isinstance(transport.get_protocol(), HttpProtocol):
        return None
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        # family, type and protocol given: the socket module does not ask the kernel for them
        return socket.socket(sock.family, sock.type, sock.proto, os.dup(sock.fileno()))
    except OSError:  # out of descriptors: the transport can still send it
        return None


def cork(out: socket.socket, on: bool) -> None:
    """Hold back partial segments on a TCP connection (on) until the body is sent (off).

    Never raises: a connection gone meanwhile has nothing left to send, and a Unix
    socket has no segments.
    """
    if out.family in (socket.AF_INET, socket.AF_INET6):
        try:
            out.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, on)
        except OSError:
            pass


async def send_file(request: Request, out: socket.socket, fd: int, start: int, stop: int,
                    record: RequestRecord) -> None:
    """Send bytes ``start`` to ``stop`` of ``fd`` on ``out`` (from ``socket_of``), the
    rest of a body Sanic has started; each byte sent is counted in ``record.sent``.

    Returns when the last byte is in the kernel's socket buffer; the caller then ends
    Sanic's stream.
    """
    http = request.stream
    transport = cast(asyncio.WriteTransport, request.transport)  # uvloop's has the methods, not the class
    protocol = transport.get_protocol()
    assert isinstance(http, Http) and isinstance(protocol, HttpProtocol)  # socket_of checked
    if http.response_bytes_left != stop - start:
        raise ServerError(f"{http.response_bytes_left} body bytes left to send, not {stop - start}")
    await _drained(transport, protocol)
    descriptor = out.fileno()
    sender = _Sender(transport, protocol, http, descriptor, fd, start, stop, record)
    sender.step()
    if not sender.done.done():
        loop = asyncio.get_running_loop()
        loop.add_writer(descriptor, sender.step)
        try:
            await sender.done
        finally:
            loop.remove_writer(descriptor)
    error = sender.done.result()
    if error is not None:
        raise error


class _Sender:
    """One body's sendfile, stepped from the loop whenever the socket has room.

    A callback rather than a task woken per step: a slow module frees room in small
    steps (a few KiB per read), and the step is then a ``sendfile`` and a few
    counters, not a task switch; the writer stays registered until the body is sent.
    Each step sends until the socket is full, so a level-triggered readiness never
    finds it with room to spare (no busy loop). ``done`` holds the error that ended it
    (None: all sent), raised by ``send_file`` in the handler.
    """

    __slots__ = ("transport", "protocol", "http", "out", "fd", "start", "stop", "record", "done")

    def __init__(self, transport: asyncio.WriteTransport, protocol: HttpProtocol, http: Http,
                 out: int, fd: int, start: int, stop: int, record: RequestRecord) -> None:
        self.transport, self.protocol, self.http, self.record = transport, protocol, http, record
        self.out, self.fd, self.start, self.stop = out, fd, start, stop
        self.done: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def step(self) -> None:
        if self.done.done():
            return  # ended; the handler removes the writer when it resumes
        try:
            while self.start < self.stop:
                if self.transport.is_closing():
                    raise RequestCancelled
                try:
                    sent = os.sendfile(self.out, self.fd, self.start, self.stop - self.start)
                except BlockingIOError:
                    return
                if not sent:
                    raise OSError(f"the verified file ends at {self.start} of {self.stop} bytes")
                self.start += sent
                self.record.sent += sent
                self.http.response_bytes_left -= sent
                self.protocol._time = monotonic()
                if self.start < self.stop:
                    return  # the socket took what it had room for: the next step comes with more
        except ConnectionError as e:  # reset, broken pipe: the client is gone
            cancelled = RequestCancelled()
            cancelled.__cause__ = e
            self.done.set_result(cancelled)
        except Exception as e:
            self.done.set_result(e)
        else:
            self.done.set_result(None)


async def _drained(transport: asyncio.WriteTransport, protocol: HttpProtocol) -> None:
    """Wait until the transport has written everything it holds to the socket.

    With both water marks at 0 the transport pauses the protocol while it holds any
    byte and resumes it when it holds none; Sanic's ``send`` waits for that resume
    (and raises ``RequestCancelled`` if the connection closes). The marks Sanic set
    are put back afterwards.
    """
    if not transport.get_write_buffer_size():
        return
    low, high = transport.get_write_buffer_limits()
    transport.set_write_buffer_limits(high=0, low=0)
    try:
        await protocol.send(b"")
    finally:
        if not transport.is_closing():
            transport.set_write_buffer_limits(high=high, low=low)
