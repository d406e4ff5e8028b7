"""Connections that hold the server without asking for anything (slowloris).

Sanic restarts its request timeout on every byte received, so a client sending one
header byte a second keeps a connection, and a file descriptor, for as long as it
likes; a thousand of them from one address exhausted the worker's descriptors. Two
rules close that, both per worker process:

- **Header deadline:** a request's headers must be complete within
  ``header_timeout`` seconds of their first byte, however steadily bytes arrive.
  A late one gets Sanic's 408 and the connection is closed. (A connection that
  sends nothing at all is closed by ``SANIC_KEEP_ALIVE_TIMEOUT``, which no byte
  resets.)
- **Per-address cap:** a connection is unauthenticated from the moment it is
  accepted until a request on it passes authentication. One client address may
  hold ``max_unauthenticated_connections`` of them; more are closed as soon as
  they are accepted, before any byte is read. Modules authenticate with their
  first request, so a NAT full of modules counts only the connections that have
  not yet sent it.

Both live in the protocol, outside the request path: the deadline costs a clock read
per request and at most one timer per connection every ``header_timeout`` seconds
(a timer made and cancelled for every request was a measurable part of a small
answer's time, bench/), the cap a dictionary update per connection; sending an image
is untouched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from sanic import Request
from sanic.exceptions import RequestTimeout
from sanic.http import Http
from sanic.server.protocols.http_protocol import HttpProtocol

from sanic_ota.web.metrics import Metrics

logger = logging.getLogger("sanic_ota.connections")


class AddressSlots:
    """Unauthenticated connections open per client address, up to ``cap`` (0: no cap).

    Only addresses with a connection open are kept, so memory follows the open
    connections, which the cap and the file limit bound.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: dict[str, int] = {}
        self._reported: set[str] = set()

    def count(self, address: str) -> int:
        return self._open.get(address, 0)

    def take(self, address: str) -> bool:
        """Count one more connection from ``address``; False (and nothing counted) at the cap."""
        held = self._open.get(address, 0)
        if self.cap and held >= self.cap:
            return False
        self._open[address] = held + 1
        return True

    def give_back(self, address: str) -> None:
        held = self._open[address] - 1
        if held:
            self._open[address] = held
        else:
            del self._open[address]
        self._reported.discard(address)  # below the cap again (take never goes past it)

    def first_refusal(self, address: str) -> bool:
        """True once each time ``address`` reaches the cap: one log line, not one per connection."""
        if address in self._reported:
            return False
        self._reported.add(address)
        return True


class GuardedHttp(Http):
    """Sanic's HTTP/1.1 handler with a deadline on reading each request's headers."""

    __slots__ = ()

    async def http1_request_header(self) -> None:
        # Called when the request's first bytes are in the buffer; returns once
        # the whole header block has been read and parsed.
        protocol = cast("GuardedProtocol", self.protocol)  # the only protocol that uses this class
        protocol.header_started()
        try:
            await super().http1_request_header()
        finally:
            protocol.header_finished()


class GuardedProtocol(HttpProtocol):
    """Sanic's HTTP protocol with the header deadline and the per-address cap."""

    HTTP_CLASS = GuardedHttp
    __slots__ = ("_address", "_deadline", "_fast_lane", "_header_since", "_header_timeout", "_metrics", "_refused",
                 "_slots")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        settings = self.app.ctx.settings
        self._slots: AddressSlots = self.app.ctx.connection_slots
        self._metrics: Metrics = self.app.ctx.metrics
        self._header_timeout: float = settings.header_timeout
        self._address: str | None = None  # set while this connection counts as unauthenticated
        self._deadline: asyncio.TimerHandle | None = None  # the check of the header deadline
        self._header_since: float | None = None  # loop time the headers being read began
        self._refused = False
        self._fast_lane: Callable[[Request], Awaitable[bool]] = self.app.ctx.fast_lane
        self.request_handler = self._handle

    async def _handle(self, request: Request) -> None:
        """A module's GET by the fast lane (``app.ctx.fast_lane``: ``web.fast_lane.answer``,
        given by the app so that this module needs no routes); the rest by Sanic."""
        if not await self._fast_lane(request):
            await self.app.handle_request(request)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else None  # None: a Unix socket
        if address is not None and not self._slots.take(address):
            self._refused = True
            transport.close()
            self._metrics.connections_closed.labels("unauthenticated_cap").inc()
            if self._slots.first_refusal(address):
                logger.warning(
                    "%s holds %d connections that have not authenticated; closing new ones from it "
                    "until some finish (SANIC_OTA_MAX_UNAUTHENTICATED_CONNECTIONS)",
                    address, self._slots.count(address),
                )
            return
        self._address = address
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return  # never set up: Sanic has nothing to clean up
        self._header_since = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._uncount()
        super().connection_lost(exc)

    def authenticated(self) -> None:
        """A request on this connection passed authentication: it leaves the cap's count."""
        self._uncount()

    def _uncount(self) -> None:
        if self._address is not None:
            self._slots.give_back(self._address)
            self._address = None

    def header_started(self) -> None:
        self._header_since = now = self.loop.time()
        if self._deadline is None:
            self._deadline = self.loop.call_at(now + self._header_timeout, self._check_header)

    def header_finished(self) -> None:
        self._header_since = None  # the pending check finds nothing to do, or a later request

    def _check_header(self) -> None:
        """The timer: the headers being read are late, or the check moves to their deadline."""
        self._deadline = None
        since = self._header_since
        if since is None:
            return
        deadline = since + self._header_timeout
        if self.loop.time() >= deadline:
            self._header_late()
        else:
            self._deadline = self.loop.call_at(deadline, self._check_header)

    def _header_late(self) -> None:
        """As Sanic's own request timeout does: answer 408 and close."""
        self._header_since = None
        if self._task is None or self._http is None:
            return
        peer = self.transport.get_extra_info("peername") if self.transport else None
        logger.info("closing a connection from %s: request headers not complete within %g s",
                    peer[0] if isinstance(peer, tuple) and peer else "-", self._header_timeout)
        self._metrics.connections_closed.labels("header_timeout").inc()
        self._http.exception = RequestTimeout(f"request headers not complete within {self._header_timeout:g} s")
        self._task.cancel()


def authenticated(request: Request) -> None:
    """Tell the connection ``request`` came on that it passed authentication."""
    protocol = request.protocol
    if isinstance(protocol, GuardedProtocol):
        protocol.authenticated()

