"""The module's three requests and the auditor's manifest endpoints.

Handlers only translate: parameters in, core objects out, bytes on the wire through
``responses``. Every failure is an ``OtaError`` that ``responses.handle_exception``
turns into the one JSON error shape.
"""

from __future__ import annotations

import asyncio
import json
import logging

from sanic import Blueprint, HTTPResponse, Request
from sanic.request import RequestParameters
from sanic.response import raw

from sanic_ota.errors import BadRequest, NotFound
from sanic_ota.releases import Index
from sanic_ota.state import State
from sanic_ota.versions import check_name
from sanic_ota.web.auth import authenticate
from sanic_ota.web.responses import esp_json, send_image

logger = logging.getLogger("sanic_ota.web")

bp = Blueprint("ota")

#: ``AT+CIPFWVER?`` copies the body into an 8192-byte buffer with no bound check.
LISTING_LIMIT = 8192 - 512

DOWNLOAD_ACTION = "download_rom"


def _state(request: Request) -> State:
    return request.app.ctx.state


def _single(args: RequestParameters, name: str) -> str | None:
    values = args.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"parameter {name} given {len(values)} times")
    return values[0]


@bp.get("/v1/device/rom/", strict_slashes=True)
async def device_rom(request: Request) -> HTTPResponse | None:
    """Download (``action=download_rom``) or, with no action, the version query."""
    state = _state(request)
    key = authenticate(request, state.keyring)
    args = request.get_args(keep_blank_values=True)
    action = _single(args, "action")
    if action is None and "version" not in args and "filename" not in args:
        return version_query(state.index)
    if action is None:
        raise BadRequest(f"missing action={DOWNLOAD_ACTION}")
    if action != DOWNLOAD_ACTION:
        raise BadRequest(f'unknown action; the only action is "{DOWNLOAD_ACTION}"')
    version = check_name(_single(args, "version"), "version")
    filename = check_name(_single(args, "filename"), "filename")
    release = state.index.release(version)
    entry = release.manifest.files.get(filename)
    if entry is None:
        raise NotFound(f"release {version} has no file {filename}")
    path = state.settings.partitions_dir / version / filename
    data = state.files.cached(path, entry)
    if data is None:
        data = await asyncio.to_thread(state.files.load, path, entry)
    logger.info("download %s/%s (%d bytes) by %s", version, filename, len(data), key.name)
    await send_image(request, data)
    return None


def version_query(index: Index) -> HTTPResponse:
    """Espressif's answer shape; ``rom_version`` comes first so it is in the module's one read."""
    release = index.latest()
    return esp_json({"status": 200, "rom_version": release.version, "pinned": index.pinned is not None})


@bp.get("/v1/device/rom", strict_slashes=True)
async def listing(request: Request) -> HTTPResponse:
    state = _state(request)
    authenticate(request, state.keyring)
    return esp_json(listing_body(state.index))


def listing_body(index: Index, limit: int = LISTING_LIMIT) -> dict[str, object]:
    """Every version newest first, as ``"version": "X", `` items, cut to fit ``limit`` bytes.

    Each item has a field after ``version`` because the module crashes on a
    ``"version": "X"`` not followed by ``", ``. The oldest are cut first and
    ``omitted`` says how many.
    """
    items = [
        {"version": v, "serial": index.releases[v].manifest.serial, "files": len(index.releases[v].manifest.files)}
        for v in index.versions()
    ]
    body: dict[str, object] = {"status": 200, "versions": items, "omitted": 0}
    size = len(json.dumps(body))
    while size > limit and items:
        dropped = items.pop()
        body["omitted"] = int(body["omitted"]) + 1  # type: ignore[call-overload]
        size -= len(json.dumps(dropped)) + 2
    return body


@bp.get("/v1/manifest/", strict_slashes=True)
async def manifest_index(request: Request) -> HTTPResponse:
    state = _state(request)
    authenticate(request, state.keyring)
    index = state.index
    versions = [
        {"version": v, "serial": index.releases[v].manifest.serial, "sha256": index.releases[v].document_sha256}
        for v in index.versions()
    ]
    return esp_json(
        {"keyid": state.verifier.keyid, "public_key": state.verifier.pem, "versions": versions}
    )


@bp.get("/v1/manifest/<version:str>", strict_slashes=True)
async def manifest_file(request: Request, version: str) -> HTTPResponse:
    state = _state(request)
    authenticate(request, state.keyring)
    release = state.index.release(check_name(version, "version"))
    return raw(release.document, content_type="application/json")
