"""The record of one request, and the one place its outcome is decided.

A request is told four times: the audit log line, the Prometheus counters, the
download counts and the failure list of the status page. They all read the same
``RequestRecord``, and only ``RequestRecord.close`` (through ``decide``) says how it
ended, so a download cannot be "completed" in one and "aborted" in another. The web
layer fills the record as the request goes (``sanic_ota.web.accountant``) and closes
it once; nothing here knows Sanic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from time import monotonic, time


class Kind(StrEnum):
    """What a request was, as the log and the metrics name it."""

    VERSION_QUERY = "version_query"
    LISTING = "listing"
    DOWNLOAD = "download"  # a whole file, or the byte range that ends with its last byte
    PARTIAL = "partial"  # a byte range that stops before the file's last byte: one window
    NOT_MODIFIED = "not_modified"  # a 304: the client has the file (If-None-Match)
    HEAD = "head"  # a HEAD on any route: headers only, never a download
    MANIFEST = "manifest"
    METRICS = "metrics"
    STATUS = "status"
    SIGN_URL = "sign_url"  # an admin mints a signed download URL
    ADMIN = "admin"  # the admin API: channels, rollouts, the fleet view, uploads
    OTHER = "other"  # no handler named it: an unknown path, a refused method


class Outcome(StrEnum):
    """How a request ended."""

    COMPLETED = "completed"  # the whole answer was handed over
    ABORTED = "aborted"  # the client went away before the end of the answer
    REFUSED = "refused"  # a 4xx answer
    ERROR = "error"  # a 5xx answer, or a download the server could not finish


class AuthFailure(StrEnum):
    """Why authentication failed; the ``reason`` label of ``sanic_ota_auth_failures_total``."""

    MALFORMED = "malformed"  # no Authorization header, or not one we can read
    UNKNOWN_TOKEN = "unknown_token"
    NOT_ADMIN = "not_admin"  # a device key on an admin page
    SIGNED_URL = "signed_url"  # a signed URL that is malformed, altered, expired, or of an unknown key
    RATE_LIMITED = "rate_limited"


#: The pages an operator's browser logs in to with HTTP Basic.
ADMIN_KINDS = frozenset({Kind.STATUS, Kind.METRICS})

#: The status recorded for a request whose client closed the connection before it was
#: answered (nginx's "client closed request"); never sent.
CLIENT_CLOSED = 499


def decide(status: int, sent: int, length: int, client_gone: bool) -> Outcome:
    """How a request ended: its status, the body bytes handed over of ``length``, and
    whether the client closed the connection.

    An answer cut short is ``aborted`` if the client left and ``error`` if the server
    stopped sending (a read that failed half-way). A complete answer is judged by its
    status alone: the client leaving after the last byte was handed over changes nothing.
    """
    if status == CLIENT_CLOSED:
        return Outcome.ABORTED
    if sent < length:
        return Outcome.ABORTED if client_gone else Outcome.ERROR
    if status >= 500:
        return Outcome.ERROR
    if status >= 400:
        return Outcome.REFUSED
    return Outcome.COMPLETED


#: The last second ``iso_time`` formatted, and its text: most lines share it with the one before.
_second: tuple[int, str] = (-1, "")
#: The millisecond and zone of a time, by millisecond: looked up, not formatted, per line.
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))


def iso_time(at: float) -> str:
    """``at`` in ISO 8601 UTC with milliseconds; the date and time of day formatted once a second."""
    global _second
    whole = int(at)
    if whole != _second[0]:
        _second = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return _second[1] + _MILLIS[int((at - whole) * 1000)]


@dataclass(slots=True)
class RequestRecord:
    """Everything said about one request; filled while it runs, closed once.

    Only names that are safe to log go in: the key's Name, never its token; a version
    or file name only once it passed ``versions.check_name``.
    """

    client: str
    #: The request carried an Authorization header (see ``failure``).
    credentials: bool = False
    kind: Kind = Kind.OTHER
    #: A handler took the request up (``kind`` is then its own).
    handled: bool = False
    key: str | None = None
    #: the key's channel (``Key.channel``), for the fleet view; never logged
    channel: str | None = None
    version: str | None = None
    file: str | None = None
    #: The release a version query offered, for the fleet view (counted when it is told,
    #: ``Accountant.settle``); never logged: the audit line's ``version`` is a download's
    offered: str | None = None
    #: The bytes a 206 answer sent, as ``first-last/length``.
    range: str | None = None
    auth_failure: AuthFailure | None = None
    #: What an admin request changed (``channels.Change.what``, an upload): plain names only.
    change: str | None = None
    #: The body is being sent by its handler, which closes the record when it is done.
    streaming: bool = False
    client_gone: bool = False
    #: Body bytes handed to the transport.
    sent: int = 0
    status: int = 0
    outcome: Outcome | None = None
    #: When the request began (Unix time); ``time`` is its text, made only when a line is written.
    at: float = field(default_factory=time)
    started: float = field(default_factory=monotonic, repr=False)
    #: ``monotonic()`` when it was closed; ``duration_ms`` is made from it when a line is written.
    ended: float | None = field(default=None, repr=False)

    @property
    def time(self) -> str:
        """When the request began, in ISO 8601 UTC with milliseconds."""
        return iso_time(self.at)

    @property
    def is_request(self) -> bool:
        """False for a connection closed before a handler took its request up.

        Half a request is no request: it is not logged, counted or listed.
        """
        return self.handled or not self.client_gone

    def close(self, status: int, sent: int, length: int) -> bool:
        """Decide the outcome: ``sent`` of ``length`` body bytes went out with ``status``.

        True the first time for a request; False if it was closed already, or is no
        request at all, so that it is counted once or not at all.
        """
        if self.outcome is not None or not self.is_request:
            return False
        self.status, self.sent = status, sent
        self.outcome = decide(status, sent, length, self.client_gone)
        self.ended = monotonic()
        return True

    @property
    def duration_ms(self) -> float:
        """From its start to its close (0 while open), in milliseconds to a tenth."""
        return 0.0 if self.ended is None else round((self.ended - self.started) * 1000, 1)

    @property
    def failure(self) -> str | None:
        """Why the status page lists this request, or None for one that went as it should.

        A browser asks an admin page once without credentials, gets 401 with the Basic
        challenge, then asks again: that first request is how Basic works, not a failure.
        An auditor asking for a manifest that is not there is not one either; a module
        refused a download is.
        """
        if self.auth_failure is not None:
            if self.kind in ADMIN_KINDS and not self.credentials:
                return None
            return f"auth: {self.auth_failure}"
        if self.outcome is None:
            return None
        if self.outcome in (Outcome.ABORTED, Outcome.ERROR) or (
            self.kind == Kind.DOWNLOAD and self.outcome == Outcome.REFUSED
        ):
            return self.outcome.value
        return None
