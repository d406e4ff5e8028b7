"""The module's requests, handed to their handlers without Sanic's routing.

A fleet that wakes together (a power cut, a scheduled check) sends version queries,
listings and certificate downloads: small answers, most of them prepared bytes
(``responses.Answers``) that only change with the index. For each, Sanic would still
route the request, dispatch its lifecycle signals, build the response, run the
response middleware and encode the header block again, which cost more than
everything we do ourselves (bench/).

So ``GuardedProtocol`` hands every request here first. A ``GET`` of ``/v1/device/rom/``
or ``/v1/device/rom`` without a body (what a module sends) goes straight to what its
route's handler answers, ``routes.device_rom_answer`` or ``routes.listing_answer``: the
functions the routes call, with the same authentication, limiter, log lines and record.
A prepared answer (a ``Prepared``, which the route would send as its ``PreparedAnswer``)
is written here as its bytes (``Prepared.wire``, the block Sanic writes for it) and
counted once by the ``Accountant``, as the response middleware would; so is an ``OtaError`` raised before
anything was sent (``responses.prepared_error``), closing the connection of an
HTTP/1.0 request as ``responses.for_the_module`` does (``close_after_an_error``). Any other answer goes through
Sanic's own ``respond`` (response middleware included) as in ``Sanic.handle_request``;
a download that streamed itself is ended by Sanic; any other exception is Sanic's to
answer. Everything else (HEAD, other paths, a body) returns False: Sanic answers it;
so does every request while Sanic's own access log is on (``SANIC_ACCESS_LOG``), which
Sanic writes from its response path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast

from sanic import HTTPResponse, Request
from sanic.http import Http, Stage
from sanic.server.protocols.http_protocol import HttpProtocol

from sanic_ota.errors import OtaError
from sanic_ota.web import routes
from sanic_ota.web.accountant import Accountant, record_of
from sanic_ota.web.responses import Prepared, close_after_an_error, prepared_error

#: The module's paths and their route handlers' answers (a ``Prepared`` one as it is).
LANES: dict[str, Callable[[Request], Awaitable[Prepared | HTTPResponse | None]]] = {
    "/v1/device/rom/": routes.device_rom_answer,
    "/v1/device/rom": routes.listing_answer,
}


async def answer(request: Request) -> bool:
    """Answer ``request`` if it is a module's ``GET``; False: Sanic routes it."""
    http = request.stream
    handler = LANES.get(request.path)
    if (handler is None or request.method != "GET" or not isinstance(http, Http)
            or http.request_body or http.expecting_continue or http.protocol.access_log):
        return False
    try:
        answer = await handler(request)
    except OtaError as e:
        if request.responded:  # the download had begun: only Sanic can end the connection
            raise
        prepared = prepared_error(request, e)
        close_after_an_error(request, prepared.status)
    else:
        if request.responded:  # a download that streamed itself; Sanic ends its stream
            return True
        assert answer is not None  # a handler that did not stream returns its answer
        if not isinstance(answer, Prepared):
            sent = await request.respond(answer)
            await sent.send(end_stream=True)
            return True
        prepared = answer
    accountant: Accountant = request.app.ctx.accountant
    size = len(prepared.body)
    accountant.close(record_of(request), prepared.status, size, size)
    await cast(HttpProtocol, request.protocol).send(prepared.wire(http.keep_alive))
    http.stage = Stage.IDLE  # as Sanic leaves a connection whose answer was sent whole
    return True
