"""Response bodies and bytes on the wire, shaped for the ESP-AT client.

The module parses responses by searching bytes (see ``shared/esp-at-client.md``):
- JSON must use ``": "`` and ``", "`` separators (Sanic's default JSON is compact,
  which breaks the module's ``rom_version": `` and ``"version": "X", `` searches);
- a download must carry the exact bytes ``Content-Length: ``, never be chunked or
  compressed, and leave its headers and first body bytes in ONE write;
- so must every error, or the module takes "no length" for an empty image: a
  certificate partition is erased and reported OK;
- the version query is HTTP/1.0 with ``Connection: keep-alive`` and waits for the
  version or the close, so an answer without a version must close the connection.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

from sanic import HTTPResponse, Request
from sanic.compat import Header
from sanic.exceptions import RequestCancelled, SanicException
from sanic.headers import format_http1_response
from sanic.http import Http
from sanic.response import json as json_response

from sanic_ota.accounting import CLIENT_CLOSED, RequestRecord
from sanic_ota.errors import OtaError, RangeNotSatisfiable
from sanic_ota.filecache import Image
from sanic_ota.web import sendfile
from sanic_ota.web.accountant import client_gone

logger = logging.getLogger("sanic_ota.web")

#: Bytes handed to the transport per write, for a body that does not go by
#: ``sendfile`` (``web.sendfile``: a small file kept as ``bytes``, or any file over
#: TLS). Sanic's flow control waits for the socket to drain between writes, so a slow
#: module holds at most about this much plus the transport's 64 KiB high-water mark.
#: With uvloop (Sanic's default) the slices are shared, not copied; asyncio's own loop
#: (Python 3.11) copies what the socket did not take, so this is also the
#: per-connection worst case there. Measured before sendfile (bench/, quiet machine):
#: 1 MiB gave 0.95-1.04x nginx on the 1.6 MB image against 0.81-0.87x for 256 KiB.
CHUNK_SIZE = 1024 * 1024

#: The last write through the transport is this small on purpose. ``send`` waits for
#: the transport to drain to its low-water mark (16 KiB) before writing, so when the
#: handler returns at most about 32 KiB is still queued in user space. That matters
#: because the keep-alive timeout (10 s) starts when the handler returns, and Sanic
#: then aborts a connection whose buffer has not drained within
#: GRACEFUL_TCP_CLOSE_TIMEOUT (5 s): with a large last write a module on slow Wi-Fi
#: lost the end of its image (bench/, figure 4). A body sent by ``sendfile`` leaves
#: nothing in user space: its handler returns once the kernel holds every byte.
LAST_CHUNK_SIZE = 16 * 1024

#: Bytes read per step from a ``VerifiedCopy`` where ``sendfile`` cannot be used (TLS).
#: The read result is a new ``bytes`` that lives until the transport has sent it, so
#: this, plus the transport's buffer, is what a slow module costs per connection;
#: smaller than ``CHUNK_SIZE`` because here every chunk is a fresh allocation.
COPY_READ_SIZE = 256 * 1024

#: Body bytes in the first write. Sanic joins the header block and the first ``send``
#: into one new ``bytes`` (a copy that lives until the slow module has read it), so
#: it is kept small: the module needs only its first 1024-byte read to hold the
#: headers and the magic bytes.
FIRST_CHUNK_SIZE = 16 * 1024

#: A whole file this small, held in memory, is answered as one complete answer (header
#: block and body in one write, like the JSON answers) rather than streamed: the
#: certificate and key partitions a module fetches. Streaming would send it in one
#: write as well, through more steps.
SMALL_FILE_SIZE = FIRST_CHUNK_SIZE


class WireHeaders(Header):
    """Response headers that leave as ``Content-Length: ``, however they were set.

    Sanic writes the length of every complete response itself, in lower case
    (``headers["content-length"] = size``), after all middleware has run; the names
    are only turned into bytes through ``items()``, so the spelling is fixed there.
    """

    def items(self) -> Iterator[tuple[str, str]]:  # type: ignore[override]
        for name, value in super().items():
            yield ("Content-Length" if name.lower() == "content-length" else name), value


JSON_TYPE = "application/json"
OCTETS_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class Prepared:
    """An answer's status, body and header block but ``connection``, encoded once.

    The block starts with the exact-case ``Content-Length: `` and ends with
    ``content-type``. Sanic adds only
    ``connection`` (keep-alive or close, decided per request), which
    ``PreparedAnswer.processed_headers`` puts in. A download's block has no body
    here: its bytes are streamed by ``send_image``.
    """

    status: int
    body: bytes
    block: tuple[tuple[bytes, bytes], ...]
    length: int
    content_type: str = JSON_TYPE

    def wire(self, keep_alive: bool) -> bytes:
        """The whole answer as it leaves, status line to body: what ``fast_lane`` writes.

        The same bytes Sanic writes for a ``PreparedAnswer`` (its status line, the block,
        ``connection``, ``content-type``); encoded on first use, then kept.
        """
        return self._wire[keep_alive]

    @functools.cached_property
    def _wire(self) -> tuple[bytes, bytes]:
        *block, content_type = self.block
        return tuple(  # type: ignore[return-value]
            format_http1_response(self.status, (*block, (b"connection", b"keep-alive" if keep else b"close"),
                                                content_type)) + self.body
            for keep in (False, True))


def prepare(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Prepared:
    data = json.dumps(body).encode()
    return Prepared(status, data, _block(len(data), {**(headers or {}), "content-type": JSON_TYPE}), len(data))


def prepare_download(length: int, headers: dict[str, str], body: bytes = b"") -> Prepared:
    """A whole file's 200 block: the headers ``image_headers`` gives it, encoded once.

    With ``body`` (a file small enough for one write, ``SMALL_FILE_SIZE``) it is the
    whole answer; without, ``send_image`` streams the file after the block.
    """
    return Prepared(200, body, _block(length, {**headers, "content-type": OCTETS_TYPE}), length, OCTETS_TYPE)


def _block(length: int, headers: dict[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    return ((b"Content-Length", str(length).encode()),
            *((name.encode("ascii"), value.encode("ascii")) for name, value in headers.items()))


#: What Sanic itself puts in an answer's headers before encoding them.
_SANIC_OWN = frozenset(("content-length", "connection"))


class PreparedAnswer(HTTPResponse):
    """An answer sent with its ``Prepared`` header block instead of encoding it again.

    If anything added a header after it was made (an error's ``Retry-After``), the
    block is not the whole answer: its headers are then encoded as for any answer,
    spelled by ``WireHeaders``.
    """

    __slots__ = ("prepared",)

    def __init__(self, prepared: Prepared) -> None:
        super().__init__(prepared.body, status=prepared.status, content_type=prepared.content_type)
        self.prepared = prepared
        if not prepared.body:  # streamed: Sanic counts the body against this length
            self.headers["content-length"] = str(prepared.length)

    @property
    def processed_headers(self) -> Iterator[tuple[bytes, bytes]]:
        headers = self.headers
        if len(headers) == 2 and _SANIC_OWN.issuperset(headers):
            close = headers["connection"] != "keep-alive"
            # in Sanic's own order: length and the handler's headers, connection, type
            *block, content_type = self.prepared.block
            return iter((*block, (b"connection", b"close" if close else b"keep-alive"), content_type))
        for name, value in self.prepared.block[1:]:
            headers.setdefault(name.decode(), value.decode())
        self.headers = WireHeaders(headers)
        return super().processed_headers


class Answers:
    """Prepared answers that depend only on the index: the version query, the listing, and
    each file's download header block.

    Built on first use and kept until the index is replaced (the watcher swaps a new
    one in whole), so each is encoded once per index and ``key``. A key names
    everything the answer depends on besides the index (e.g. the release answered),
    so answers that differ per caller fit as more keys.
    """

    def __init__(self) -> None:
        self._index: object = None
        self._answers: dict[Hashable, Prepared] = {}

    def prepared(self, index: object, key: Hashable, build: Callable[[], Prepared]) -> Prepared:
        if index is not self._index:
            self._index, self._answers = index, {}
        prepared = self._answers.get(key)
        if prepared is None:
            prepared = self._answers[key] = build()
        return prepared

    def json(self, index: object, key: Hashable, build: Callable[[], dict[str, Any]]) -> Prepared:
        """A JSON answer, whole."""
        return self.prepared(index, key, lambda: prepare(build()))


def for_the_module(request: Request, response: HTTPResponse) -> None:
    """Shape any answer, ours or Sanic's, before its header block is written.

    Called from the response middleware, which Sanic runs for handler answers,
    errors and streamed downloads alike. An error answer to an HTTP/1.0 request (the
    version query) closes the connection: Sanic would keep it open because the
    module asks for keep-alive, and the module would wait for its socket timeout.
    """
    if not isinstance(response, PreparedAnswer):  # a prepared block is spelled already
        response.headers = WireHeaders(response.headers)
    close_after_an_error(request, response.status)


def close_after_an_error(request: Request, status: int) -> None:
    """An error answer to an HTTP/1.0 request closes its connection (``for_the_module``);
    also what the fast lane does for the errors it writes itself."""
    if status >= 400 and request.version == "1.0" and isinstance(request.stream, Http):
        request.stream.keep_alive = False


def esp_json(body: dict[str, Any], status: int = 200) -> HTTPResponse:
    return json_response(body, status=status, dumps=json.dumps)


@functools.lru_cache(maxsize=256)
def _prepared_error(status: int, message: str, *headers: tuple[str, str]) -> Prepared:
    """Most errors are a few fixed messages (a fleet with a wrong token gets the same 403,
    an address over its limit a 429 with one of 60 ``Retry-After`` values)."""
    return prepare({"status": status, "message": message}, status, dict(headers))


def handle_exception(request: Request, exception: BaseException) -> HTTPResponse:
    """Every error, ours or Sanic's, leaves through here as the same JSON shape.

    A client that closed the connection before its answer (``RequestCancelled``, a
    ``CancelledError`` that Sanic hands here) is not an error: nothing failed here
    and nobody is left to answer. Its record is marked, so that it is counted as
    aborted; the response returned is never sent.
    """
    if isinstance(exception, RequestCancelled):
        client_gone(request)
        return HTTPResponse(status=CLIENT_CLOSED)
    return PreparedAnswer(prepared_error(request, exception))


def prepared_error(request: Request, exception: BaseException) -> Prepared:
    """The JSON error for ``exception``; one the server did not expect is logged with its traceback."""
    if isinstance(exception, OtaError):
        status, message, headers = exception.status, exception.message, exception.headers
    elif isinstance(exception, SanicException):
        status, message = exception.status_code or 500, str(exception) or "error"
        headers = {name: str(value) for name, value in (exception.headers or {}).items()}
    else:
        logger.exception("unexpected error on %s %s", request.method, request.path)
        return _prepared_error(500, "internal server error")
    if status >= 500:
        logger.error("%s %s: %s", request.method, request.path, message)
    return _prepared_error(status, message, *headers.items())


#: One byte range: ``first-last``, ``first-`` or ``-suffix`` (RFC 9110 14.1.2), ASCII digits only.
#: At most 19 digits each (any file length fits): a longer number is not a range we
#: use, and int() of thousands of digits would raise.
_RANGE = re.compile(r"(\d{0,19})-(\d{0,19})", re.ASCII)


def byte_range(header: str | None, length: int) -> tuple[int, int] | None:
    """The (start, stop) of the bytes a ``Range`` header asks for, or None for the whole file.

    RFC 9110 14.2 lets a server ignore a ``Range`` it does not use, so a header that is
    not one well-formed byte range (another unit, ``bytes=abc``, ``bytes=99-0``) is
    ignored and the whole file is sent with 200; so are several ranges, which no OTA
    client asks for (a multipart answer would only add a format for them to parse).
    A last byte past the end is clamped to the end (``bytes=N-L`` with L the length:
    esp_https_ota asks for it). A range that is well-formed but starts at or past the
    end, or an empty suffix, raises ``RangeNotSatisfiable`` (416).
    """
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _RANGE.fullmatch(spec.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":
        suffix = int(last)
        if suffix == 0 or length == 0:
            raise _not_satisfiable(length)
        return max(0, length - suffix), length
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= length:
        raise _not_satisfiable(length)
    return start, length if last == "" else min(int(last) + 1, length)


def _not_satisfiable(length: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(f"range not satisfiable: the file has {length} bytes",
                               headers={"Content-Range": f"bytes */{length}"})


def entity_tag(sha256: str) -> str:
    """The strong ``ETag`` of a file: its SHA-256 from the signed manifest, quoted."""
    return f'"{sha256}"'


def none_match(header: str | None, etag: str) -> bool:
    """True if ``If-None-Match`` names ``etag`` (or is ``*``): the client has these bytes.

    The comparison is weak (RFC 9110 13.1.2): ``W/"x"`` matches ``"x"``.
    """
    if header is None:
        return False
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or etag in (tag.removeprefix("W/") for tag in tags)


def range_applies(if_range: str | None, etag: str) -> bool:
    """``If-Range`` lets the ``Range`` count only if it is our strong ETag exactly (13.1.5).

    A date or any other tag means the client's bytes may be of another file: it gets
    the whole file with 200.
    """
    return if_range is None or if_range.strip() == etag


def body_spans(length: int, chunk_size: int) -> list[tuple[int, int]]:
    """The (start, stop) of each write: a small first, ``chunk_size`` middles, a small last."""
    if not length:
        return []
    first = min(length, FIRST_CHUNK_SIZE)
    last = max(first, length - LAST_CHUNK_SIZE)
    spans = [(0, first)]
    spans += [(start, min(start + chunk_size, last)) for start in range(first, last, chunk_size)]
    if last < length:
        spans.append((last, length))
    return spans


def image_headers(total: int, span: tuple[int, int] | None, extra: dict[str, str] | None) -> dict[str, str]:
    """The header block of a download, whole or one span: the same for its GET and its HEAD."""
    start, stop = span or (0, total)
    wire = {"Content-Length": str(stop - start), **(extra or {})}
    if span is not None:
        wire["Content-Range"] = f"bytes {start}-{stop - 1}/{total}"
    return wire


def image_head(total: int, span: tuple[int, int] | None, extra: dict[str, str] | None) -> HTTPResponse:
    """A download's HEAD: the GET's status and headers, its ``Content-Length`` included, no body.

    A complete response, not a stream: Sanic keeps an explicit length on a HEAD, and
    its streaming path for HEAD would fail on the closing write.
    """
    return HTTPResponse(status=206 if span is not None else 200, headers=image_headers(total, span, extra),
                        content_type=OCTETS_TYPE)


async def send_image(
    request: Request,
    image: Image,
    record: RequestRecord,
    span: tuple[int, int] | None = None,
    headers: dict[str, str] | None = None,
    prepared: Prepared | None = None,
) -> None:
    """Stream ``image`` (or its bytes ``span``, with 206) with exact-case ``Content-Length: ``.

    Sanic writes the header block and the first ``send`` (``FIRST_CHUNK_SIZE`` bytes)
    in one transport write, which gives the module headers plus magic bytes in its
    first 1024-byte read. The rest of a ``VerifiedCopy`` (a sealed memfd, or a
    verified copy on disk) then goes by the kernel's ``sendfile`` (``web.sendfile``):
    no copy through user space, no buffer held per connection. Where that cannot be
    (TLS), and for small files held as ``bytes``, the rest goes through the
    transport: ``bytes`` as ``memoryview`` slices, shared instead of copied per
    request; a copy read ``COPY_READ_SIZE`` at a time (in a thread when it is on
    disk, so the loop never waits on the disk). The first read happens before the
    headers are sent: if it fails, the module gets a JSON error, not half an image.
    From then on the record is streaming (its handler closes it) and ``record.sent``
    counts what was handed to the transport or the socket. A span is a slice of the
    same verified bytes. (A HEAD does not come here: see ``image_head``.)
    ``prepared``: the whole file's header block, encoded once per index
    (``Answers``); used when no span is asked.
    """
    total = len(image) if isinstance(image, bytes) else image.length
    start, stop = span or (0, total)
    if isinstance(image, bytes):
        view = memoryview(image)
        spans = body_spans(stop - start, CHUNK_SIZE)

        async def read(start: int, stop: int) -> bytes | memoryview:
            return view[start:stop]
    else:
        spans = body_spans(stop - start, COPY_READ_SIZE)
        copy = image

        async def read(start: int, stop: int) -> bytes | memoryview:
            return copy.read(start, stop) if copy.in_memory else await asyncio.to_thread(copy.read, start, stop)

    spans = [(start + a, start + b) for a, b in spans]
    first = await read(*spans[0]) if spans else b""
    record.streaming = True
    out = None if isinstance(image, bytes) or len(spans) < 2 else sendfile.socket_of(request)
    try:
        if out is not None:
            sendfile.cork(out, True)  # uncorked below, once the body is sent
        if prepared is not None and span is None:
            response = await request.respond(PreparedAnswer(prepared))
        else:
            response = await request.respond(
                status=206 if span is not None else 200,
                headers=image_headers(total, span, headers),
                content_type=OCTETS_TYPE,
            )
        if not spans:
            await response.send(b"", end_stream=True)
            return
        await response.send(first)
        record.sent += len(first)
        del first  # read from a copy, it is a fresh bytes: not held for the rest of a slow download
        if out is not None:
            assert not isinstance(image, bytes)
            await sendfile.send_file(request, out, image.fd, spans[0][1], stop, record)
            await response.send(b"", end_stream=True)
            return
    finally:
        if out is not None:
            sendfile.cork(out, False)
            out.close()
    for start, stop in spans[1:]:
        chunk = await read(start, stop)
        await response.send(chunk)
        record.sent += len(chunk)
