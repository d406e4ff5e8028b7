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
#: plus the transport's 64 KiB high-water mark; the image itself is shared, not copied.
CHUNK_SIZE = 4 * 1024 * 1024

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
    await response.send(view[:first])
    audit.bytes += first
    for start in range(first, len(view), CHUNK_SIZE):
        chunk = view[start : start + CHUNK_SIZE]
        await response.send(chunk)
        audit.bytes += len(chunk)
