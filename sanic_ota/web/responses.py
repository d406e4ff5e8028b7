"""Response bodies and bytes on the wire, shaped for the ESP-AT client.

The module parses responses by searching bytes (see ``shared/esp-at-client.md``):
- JSON must use ``": "`` and ``", "`` separators (Sanic's default JSON is compact,
  which breaks the module's ``rom_version": `` and ``"version": "X", `` searches);
- a download must carry the exact bytes ``Content-Length: ``, never be chunked or
  compressed, and leave its headers and first body bytes in ONE write.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sanic import HTTPResponse, Request
from sanic.exceptions import SanicException
from sanic.response import json as json_response

from sanic_ota.audit import AuditRecord
from sanic_ota.errors import OtaError

logger = logging.getLogger("sanic_ota.web")

#: Bytes handed to the transport per write. Sanic's flow control waits for the
#: socket to drain between writes, so a slow module holds at most about this much
#: plus the transport's 64 KiB high-water mark. With uvloop (Sanic's default) the
#: slices are shared, not copied; asyncio's own loop (Python 3.11) copies what the
#: socket did not take, so this is also the per-connection worst case there.
#: Measured (bench/, quiet machine): 1 MiB gave 0.95-1.04x nginx on the 1.6 MB image
#: against 0.81-0.87x for 256 KiB, and the same memory for 2,000 slow modules with
#: uvloop (+27.5 MB); on asyncio's loop it costs more (+235 MB against +200 MB).
CHUNK_SIZE = 1024 * 1024

#: The last write is this small on purpose. ``send`` waits for the transport to drain
#: to its low-water mark (16 KiB) before writing, so when the handler returns at most
#: about 32 KiB is still queued in user space. That matters because the keep-alive
#: timeout (10 s) starts when the handler returns, and Sanic then aborts a connection
#: whose buffer has not drained within GRACEFUL_TCP_CLOSE_TIMEOUT (5 s): with a large
#: last write a module on slow Wi-Fi lost the end of its image (bench/, figure 4).
LAST_CHUNK_SIZE = 16 * 1024

#: Body bytes in the first write. Sanic joins the header block and the first ``send``
#: into one new ``bytes`` (a copy that lives until the slow module has read it), so
#: it is kept small: the module needs only its first 1024-byte read to hold the
#: headers and the magic bytes.
FIRST_CHUNK_SIZE = 16 * 1024


def esp_json(body: dict[str, Any], status: int = 200) -> HTTPResponse:
    return json_response(body, status=status, dumps=json.dumps)


def error_response(status: int, message: str) -> HTTPResponse:
    """The one error shape: ``{"status": N, "message": "..."}``."""
    return esp_json({"status": status, "message": message}, status=status)


def handle_exception(request: Request, exception: Exception) -> HTTPResponse:
    """Every error, ours or Sanic's, leaves through here as the same JSON shape."""
    if isinstance(exception, OtaError):
        if exception.status >= 500:
            logger.error("%s %s: %s", request.method, request.path, exception.message)
        response = error_response(exception.status, exception.message)
        response.headers.update(exception.headers)
        return response
    if isinstance(exception, SanicException):
        status = exception.status_code or 500
        message = str(exception) or "error"
        if status >= 500:
            logger.error("%s %s: %s", request.method, request.path, message)
        response = error_response(status, message)
        for name, value in (exception.headers or {}).items():
            response.headers[name] = value
        return response
    logger.exception("unexpected error on %s %s", request.method, request.path)
    return error_response(500, "internal server error")


async def send_image(request: Request, data: bytes, audit: AuditRecord) -> None:
    """Stream ``data`` with exact-case ``Content-Length: `` and bounded memory.

    Sanic writes the header block and the first ``send`` in one transport write,
    which gives the module headers plus magic bytes in its first 1024-byte read.
    ``memoryview`` slices share the cached image instead of copying it per request.
    ``audit.bytes`` counts what was handed to the transport, for the audit log.
    """
    response = await request.respond(
        headers={"Content-Length": str(len(data))},
        content_type="application/octet-stream",
    )
    if not data:
        await response.send(b"", end_stream=True)
        return
    view = memoryview(data)
    first = min(len(view), FIRST_CHUNK_SIZE)
    last = max(first, len(view) - LAST_CHUNK_SIZE)
    await response.send(view[:first])
    audit.bytes += first
    for start in range(first, last, CHUNK_SIZE):
        chunk = view[start : min(start + CHUNK_SIZE, last)]
        await response.send(chunk)
        audit.bytes += len(chunk)
    if last < len(view):
        await response.send(view[last:])
        audit.bytes += len(view) - last
