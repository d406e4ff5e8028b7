"""Each request's ``RequestRecord`` (``request.ctx.record``) and the ``Accountant`` that
closes it once and tells the audit log (at once), the metrics, the statistics and the
fleet view (in batches, ``Accountant.settle``).

Who writes what on the record: a handler names its request (``begin``); ``auth``
notes why authentication failed; ``responses.handle_exception`` notes a client gone
(``client_gone``); ``responses.send_image`` marks a download streaming and counts its
bytes (those ``sendfile`` sends, in ``web.sendfile``). It is closed in one of three places: the response middleware
(``Accountant.answered``) for every answer Sanic sends built whole, the fast lane
(``web.fast_lane``) for the module's answers it writes itself, and
``Accountant.sending`` for a download, once its body is sent or abandoned. How it ended is decided by the record
itself (``sanic_ota.accounting.decide``), never here.
"""

from __future__ import annotations

import asyncio

from sanic import HTTPResponse, Request
from sanic.config import Config

from sanic_ota.accounting import Kind, RequestRecord
from sanic_ota.fleet import Fleet
from sanic_ota.logs import LogWriter
from sanic_ota.stats import Stats
from sanic_ota.web.metrics import Metrics


def record_of(request: Request) -> RequestRecord:
    """The request's record, made on first use.

    The client is the proxy's word for it when Sanic is told to trust one
    (``behind_proxy``), else the peer's address.
    """
    record: RequestRecord | None = getattr(request.ctx, "record", None)
    if record is None:
        proxied = getattr(request.app.ctx, "behind_proxy", True)  # unknown before the server starts
        client = (request.remote_addr if proxied else "") or request.ip or "-"
        record = request.ctx.record = RequestRecord(client=client, credentials="authorization" in request.headers)
    return record


def behind_proxy(config: Config) -> bool:
    """Whether Sanic's settings name a proxy whose headers say who the client is.

    Without one, Sanic's ``remote_addr`` is always empty; asking it parses the
    forwarding headers per request for nothing.
    """
    return bool(config.FORWARDED_SECRET or config.REAL_IP_HEADER or config.PROXIES_COUNT)


def begin(request: Request, kind: Kind) -> RequestRecord:
    """A handler takes the request up and names what it is; a HEAD is always ``Kind.HEAD``."""
    record = record_of(request)
    record.kind, record.handled = Kind.HEAD if request.method == "HEAD" else kind, True
    return record


def client_gone(request: Request) -> None:
    """The client closed the connection before its answer."""
    record_of(request).client_gone = True


#: Closed records held for the counters before they are told anyway (about 1 MB).
SETTLE_AT = 4096


class Accountant:
    """Closes records; the audit log is told at once, the three places that count them
    (the metrics, the statistics, the fleet view) in batches (``settle``).

    The fourth reader, the status page's failure list, reads the statistics.

    Why in batches: a fleet asks the same few things again and again, so most closed
    records say the same to the counters (same kind, status, key, file) but for the
    client address, which only the fleet view keeps (as the set of a group's addresses).
    ``settle`` tells each counter once per group of records that say the same, with
    their number, instead of once per request; the failure list still gets every
    failed request. It runs before each periodic flush, before anything reads the
    counters (``/metrics``, ``/status``, the fleet view) and every ``SETTLE_AT``
    records, on the event loop like ``close``.
    """

    def __init__(self, log_format: str, log: LogWriter, metrics: Metrics, stats: Stats, fleet: Fleet) -> None:
        self.log_format = log_format
        self.log = log
        self.metrics = metrics
        self.stats = stats
        self.fleet = fleet
        self._closed: list[RequestRecord] = []

    def close(self, record: RequestRecord, status: int, sent: int, length: int) -> None:
        if record.close(status, sent, length):
            self.log.audit_record(record, self.log_format)
            closed = self._closed
            closed.append(record)
            if len(closed) >= SETTLE_AT:
                self.settle()

    def settle(self) -> None:
        """Tell the counters about every request closed since the last time (counted in the
        hour, and seen at the time, of this call: at most a flush period after the close)."""
        closed, self._closed = self._closed, []
        groups: dict[tuple[object, ...], list[RequestRecord]] = {}
        for record in closed:
            said = (record.kind, record.status, record.sent, record.outcome, record.auth_failure,
                    record.credentials, record.key, record.channel, record.version, record.file, record.offered)
            group = groups.get(said)
            if group is None:
                groups[said] = [record]
            else:
                group.append(record)
        for group in groups.values():
            record, n = group[-1], len(group)
            self.metrics.observe(record, n)
            self.fleet.observe(record, n, {member.client for member in group})
            self.stats.observe(group)  # which lists each failure, with its time

    def answered(self, request: Request, response: HTTPResponse) -> None:
        """From the response middleware, for every answer, before it is written.

        A download's answer is only its header here; ``sending`` closes its record.
        An answer to a client that is gone is ``CLIENT_CLOSED`` with no body.
        """
        record = record_of(request)
        if not record.streaming:
            body = len(response.body or b"")
            self.close(record, response.status, body, body)

    def sending(self, record: RequestRecord, length: int, status: int) -> Sending:
        """Around sending a download's ``length`` bytes with ``status`` (200, or 206 for a
        range): in flight, then closed as it ended (see ``Sending``)."""
        return Sending(self, record, length, status)


class Sending:
    """A download in flight, closed as it ended.

    Sanic cancels the handler when the connection is lost; any other exception while
    the body is sent is the server's own failure. Until ``send_image`` marks the record
    streaming, an exception still becomes an error answer, closed by ``answered``.
    A class rather than a generator-based context manager: this runs for every download.
    """

    __slots__ = ("accountant", "record", "length", "status")

    def __init__(self, accountant: Accountant, record: RequestRecord, length: int, status: int) -> None:
        self.accountant, self.record, self.length, self.status = accountant, record, length, status

    def __enter__(self) -> None:
        self.accountant.metrics.downloads_in_flight += 1

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        record = self.record
        if kind is not None and issubclass(kind, asyncio.CancelledError):
            record.client_gone = True
        self.accountant.metrics.downloads_in_flight -= 1
        if record.streaming:
            self.accountant.close(record, self.status, record.sent, self.length)
