"""The module's three requests, the auditor's manifest endpoints, and /metrics.

Handlers only translate: parameters in, core objects out, bytes on the wire through
``responses``. Every failure is an ``OtaError`` that ``responses.handle_exception``
turns into the one JSON error shape. Each handler names its request kind on the
request's record (``accountant.begin``), which is counted once the answer is complete.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
from urllib.parse import parse_qsl

from sanic import Blueprint, HTTPResponse, Request
from sanic.request import RequestParameters
from sanic.response import raw

from sanic_ota import channels, signed_urls
from sanic_ota.accounting import Kind, RequestRecord
from sanic_ota.channels import DEFAULT_CHANNEL
from sanic_ota.errors import BadRequest, NotFound, Unavailable
from sanic_ota.filecache import VerifiedCopy
from sanic_ota.keys import Key
from sanic_ota.mirror_status import NOT_LISTED, StoreStatus, want
from sanic_ota.releases import Index, Release
from sanic_ota.state import State
from sanic_ota.versions import check_name, is_plain_name
from sanic_ota.web.accountant import Accountant, begin
from sanic_ota.web.auth import authenticate, authenticate_admin, authenticate_signed
from sanic_ota.web.responses import (
    SMALL_FILE_SIZE,
    Answers,
    Prepared,
    PreparedAnswer,
    byte_range,
    entity_tag,
    esp_json,
    image_head,
    none_match,
    prepare_download,
    range_applies,
    send_image,
)

bp = Blueprint("ota")
logger = logging.getLogger("sanic_ota.auth")

#: ``AT+CIPFWVER?`` copies the body into an 8192-byte buffer with no bound check.
LISTING_LIMIT = 8192 - 512

DOWNLOAD_ACTION = "download_rom"

#: Every route answers HEAD like its GET, without the body (esp_https_ota asks HEAD
#: first for the image length). Sanic sends a complete answer's real length on HEAD.
GET_AND_HEAD = ["GET", "HEAD"]

#: Query strings that are a version query as they stand (what AT+CIUPDATE sends, and
#: none): answered without parsing them.
PLAIN_QUERIES = frozenset(("is_format_simple=true", ""))


def _state(request: Request) -> State:
    return request.app.ctx.state


def _answers(request: Request) -> Answers:
    return request.app.ctx.answers


def _device(request: Request, kind: Kind) -> tuple[Key, RequestRecord]:
    """Authenticate a module (or auditor) token, naming the request kind for the log; the
    key, and the request's record."""
    record = begin(request, kind)
    state = _state(request)
    key = authenticate(request, state.keyring, state.limiter)
    record.key, record.channel = key.name, key.channel
    return key, record


@functools.lru_cache(maxsize=1024)
def module_download(query: str) -> tuple[str, str] | None:
    """``(version, filename)`` if ``query`` is exactly what AT+CIUPDATE sends for a file
    (``action=download_rom``, ``version``, ``filename``, each once, both plain names),
    else None: ``device_rom`` then reads the query in full, with its errors.

    Kept per query string: a fleet asks for the same few files again and again.
    Parsed as Sanic parses a query (UTF-8, undecodable bytes replaced).
    """
    pairs = parse_qsl(query, keep_blank_values=True)
    found = dict(pairs)
    if len(pairs) != 3 or found.keys() != {"action", "version", "filename"} or found["action"] != DOWNLOAD_ACTION:
        return None
    if not (is_plain_name(found["version"]) and is_plain_name(found["filename"])):
        return None
    return found["version"], found["filename"]


def _single(args: RequestParameters, name: str) -> str | None:
    values = args.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"parameter {name} given {len(values)} times")
    return values[0]


def as_response(answer: Prepared | HTTPResponse | None) -> HTTPResponse | None:
    """What Sanic sends for a handler's answer: a ``Prepared`` one as its ``PreparedAnswer``.

    The handlers give prepared answers as they are, so that the fast lane writes their
    bytes without making a response object for each (``web.fast_lane``).
    """
    return PreparedAnswer(answer) if isinstance(answer, Prepared) else answer


@bp.route("/v1/device/rom/", methods=GET_AND_HEAD, strict_slashes=True)
async def device_rom(request: Request) -> HTTPResponse | None:
    """Download (``action=download_rom``) or, with no parameters, the version query."""
    return as_response(await device_rom_answer(request))


async def device_rom_answer(request: Request) -> Prepared | HTTPResponse | None:
    """``device_rom``'s answer; a prepared one as it is (``as_response``)."""
    query = request.query_string  # decoded each time it is asked
    if query in PLAIN_QUERIES:
        args = None
    elif (target := module_download(query)) is not None and "authorization" in request.headers:
        _, record = _device(request, Kind.DOWNLOAD)
        record.version, record.file = target  # plain names, safe to log
        return await download(request, *target, record)
    else:
        args = request.get_args(keep_blank_values=True)
    if args is None or not any(name in args for name in ("action", "version", "filename")):
        return version_query(request)
    # A request without an Authorization header may carry a signed URL instead; one
    # with the header is authenticated by it as always, whatever its parameters.
    signed = "authorization" not in request.headers and signed_urls.is_signed(args)
    record = begin(request, Kind.DOWNLOAD) if signed else _device(request, Kind.DOWNLOAD)[1]
    action = _single(args, "action")
    if action is None:
        raise BadRequest(f"missing action={DOWNLOAD_ACTION}")
    if action != DOWNLOAD_ACTION:
        raise BadRequest(f'unknown action; the only action is "{DOWNLOAD_ACTION}"')
    version = check_name(_single(args, "version"), "version")
    filename = check_name(_single(args, "filename"), "filename")
    record.version, record.file = version, filename  # plain names, safe to log
    if signed:
        state = _state(request)
        key = authenticate_signed(request, state.keyring, state.limiter, version, filename)
        record.key, record.channel = key.name, key.channel
    return await download(request, version, filename, record)


async def download(request: Request, version: str, filename: str,
                   record: RequestRecord) -> Prepared | HTTPResponse | None:
    """Send a file of a release, whole or one byte range, from its verified bytes.

    ``ETag`` (the manifest's SHA-256) and ``Accept-Ranges`` go on every download;
    ``If-None-Match`` with that tag answers 304, ``Range`` answers 206 (see
    ``responses.byte_range``) unless ``If-Range`` names another file. AT+CIUPDATE
    sends none of these headers and gets the 200 it always got.
    """
    state = _state(request)
    index = state.index  # the one the entry comes from, whatever the watcher swaps in meanwhile
    release = await _release(state, index, version)
    entry = release.manifest.files.get(filename)
    if entry is None:
        raise NotFound(f"release {version} has no file {filename}")
    etag = entity_tag(entry.sha256)
    headers = {"ETag": etag, "Accept-Ranges": "bytes"}
    asked = request.headers
    span = None
    if "if-none-match" in asked or "range" in asked:  # a cache, or esp_https_ota resuming
        if none_match(asked.get("if-none-match"), etag):
            record.kind = Kind.HEAD if request.method == "HEAD" else Kind.NOT_MODIFIED
            return HTTPResponse(status=304, headers={"ETag": etag})
        if range_applies(asked.get("if-range"), etag):
            span = byte_range(asked.get("range"), entry.length)
        if span is not None:
            record.range = f"{span[0]}-{span[1] - 1}/{entry.length}"
            if span[1] < entry.length and record.kind == Kind.DOWNLOAD:
                record.kind = Kind.PARTIAL  # a window; the one that sends the last byte is the download
    image = await state.files.image(version, filename, entry)  # a HEAD too: its status is the GET's
    try:
        if request.method == "HEAD":
            return image_head(entry.length, span, headers)
        if span is None and isinstance(image, bytes) and len(image) <= SMALL_FILE_SIZE:
            # verified bytes, which the manifest's SHA-256 pins for as long as this index
            return _answers(request).prepared(
                index, ("small file", version, filename), lambda: prepare_download(entry.length, headers, image))
        accountant: Accountant = request.app.ctx.accountant
        status, length = (206, span[1] - span[0]) if span is not None else (200, entry.length)
        prepared = None
        if span is None:
            prepared = _answers(request).prepared(index, ("download", version, filename),
                                                  lambda: prepare_download(entry.length, headers))
        with accountant.sending(record, length, status):  # the record is closed once the body is sent
            await send_image(request, image, record, span, headers, prepared)
    finally:
        if isinstance(image, VerifiedCopy):
            image.close()  # this download's handle; the copy lives on while others read it
    return None


async def _release(state: State, index: Index, version: str) -> Release:
    """The release a download names. One a replica left out of its full cache is asked
    for from its mirror, and the device is told to ask again (503 with Retry-After)."""
    try:
        return index.release(version)
    except NotFound:
        if state.store_status is None or version not in state.store_status.read().left_out:
            raise
    await asyncio.to_thread(want, state.settings.cache_dir, version)
    retry = max(1, math.ceil(2 * state.settings.poll_seconds))
    raise Unavailable(f"release {version} is not in this replica's cache (over its size bound); "
                      f"it is being fetched from the store: ask again in {retry} s",
                      headers={"Retry-After": str(retry)})


def nothing_to_offer(error: NotFound, store: StoreStatus | None) -> NotFound | Unavailable:
    """The answer when no release can be offered: 404, unless this is a replica that holds
    nothing while it has not listed its store; it is not sure there is none: 503, ask again."""
    if store is None or store.synced:
        return error
    why = "its store has not been listed yet" if store.message == NOT_LISTED else f"its store is down: {store.message}"
    return Unavailable(f"{error.message}: this replica holds no release yet, and {why}")


def version_query(request: Request) -> Prepared:
    """Espressif's answer shape; ``rom_version`` comes first so it is in the module's one read.

    The release is the key's channel's (``channels.offer``: its base, or its rollout's
    release for a caller in the rollout); the fleet view counts the offer. The bytes are
    encoded once per index and answer (``Answers``).
    """
    key, record = _device(request, Kind.VERSION_QUERY)
    state = _state(request)
    caller = record.client
    index = state.index
    try:
        release = _offer(state, index, key, caller)
    except NotFound as e:
        raise nothing_to_offer(e, state.store_status.read() if state.store_status else None) from None
    record.offered = release.version  # the fleet view counts it with the record (``Accountant.settle``)
    pinned = index.pin_of(key.channel) is not None
    return _answers(request).json(index, ("version query", release.version, pinned), lambda: {
        "status": 200, "rom_version": release.version, "pinned": pinned})


@bp.route("/v1/device/rom", methods=GET_AND_HEAD, strict_slashes=True)
async def listing(request: Request) -> HTTPResponse:
    """Every version for ``stable``; for another channel, none newer than what it is offered."""
    return PreparedAnswer(await listing_answer(request))


async def listing_answer(request: Request) -> Prepared:
    """``listing``'s answer, prepared: the route sends it as its ``PreparedAnswer``, the
    fast lane as its bytes."""
    key, record = _device(request, Kind.LISTING)
    state = _state(request)
    index = state.index
    newest = None
    if key.channel != DEFAULT_CHANNEL:
        caller = record.client
        newest = channels.offer(index, key.name, key.channel, caller, time.time(), state.fleet.was_offered)[0].version
    return _answers(request).json(index, ("listing", newest), lambda: listing_body(index, newest=newest))


def listing_body(index: Index, limit: int = LISTING_LIMIT, newest: str | None = None) -> dict[str, object]:
    """Every version newest first, as ``"version": "X", `` items, cut to fit ``limit`` bytes.

    Each item has a field after ``version`` because the module crashes on a
    ``"version": "X"`` not followed by ``", ``. A version present but not servable
    is listed too, marked ``"servable": false``, so the first entry is never older
    than what the version query counts as newest: a host that takes the first entry
    would otherwise be led to an older release. The oldest are cut first and
    ``omitted`` says how many. ``newest``: a channel's caller sees no version newer
    than the one it is offered.
    """
    items = [
        {"version": v, "serial": index.releases[v].manifest.serial, "files": len(index.releases[v].manifest.files)}
        if v in index.releases else {"version": v, "servable": False}
        for v in index.listed
        if newest is None or not channels.is_newer(v, newest)
    ]
    body: dict[str, object] = {"status": 200, "versions": items, "omitted": 0}
    size = len(json.dumps(body))
    while size > limit and items:
        dropped = items.pop()
        body["omitted"] = int(body["omitted"]) + 1  # type: ignore[call-overload]
        size -= len(json.dumps(dropped)) + 2
    return body


@bp.route("/v1/manifest/", methods=GET_AND_HEAD, strict_slashes=True)
async def manifest_index(request: Request) -> HTTPResponse:
    _device(request, Kind.MANIFEST)
    state = _state(request)
    index = state.index
    versions = [
        {"version": v, "serial": index.releases[v].manifest.serial, "sha256": index.releases[v].document_sha256}
        for v in index.versions()
    ]
    return esp_json({"keyid": state.verifier.keyid, "public_key": state.verifier.pem, "versions": versions})


@bp.route("/v1/manifest/<version:str>", methods=GET_AND_HEAD, strict_slashes=True)
async def manifest_file(request: Request, version: str) -> HTTPResponse:
    _, record = _device(request, Kind.MANIFEST)
    release = _state(request).index.release(check_name(version, "version"))
    record.version = release.version
    return raw(release.document, content_type="application/json")


@bp.route("/v1/admin/url", methods=GET_AND_HEAD, strict_slashes=True)
async def sign_url(request: Request) -> HTTPResponse:
    """Mint a signed download URL for a named key (admin keys only), for a product's backend.

    ``key`` and ``filename`` are required, and ``version``, unless ``device`` names the
    device the URL is for: then the key's channel chooses the release (its rollout
    buckets by the device instead of an address); ``expires`` is the lifetime in
    seconds (default 7 days). The URL's base is the address this request reached
    (scheme and Host). The audit line names the admin key, release and file; the
    key the URL is for goes to the ``sanic_ota.auth`` log, and the URL only to the
    admin who asked.
    """
    record = begin(request, Kind.SIGN_URL)
    state = _state(request)
    admin = authenticate_admin(request, state.keyring, state.limiter)
    record.key = admin.name
    args = request.get_args(keep_blank_values=True)
    name = _single(args, "key")
    if not name:
        raise BadRequest("missing key (the name of the key the URL is for)")
    found = [k for k in state.keyring.keys if k.name == name]
    if len(found) != 1:
        raise NotFound(f"no key named {name!r}" if not found else f"more than one key named {name!r}")
    device = _single(args, "device")
    if device is not None:
        device = check_name(device, "device")
    if _single(args, "version") is None and device is not None:
        caller = f"device:{device}"
        version = _offer(state, state.index, found[0], caller).version
        state.fleet.offered(found[0].name, found[0].channel, version, caller)
    else:
        version = check_name(_single(args, "version"), "version")
    filename = check_name(_single(args, "filename"), "filename")
    record.version, record.file = version, filename
    lifetime_text = _single(args, "expires")
    if lifetime_text is None:
        lifetime = signed_urls.DEFAULT_LIFETIME
    elif lifetime_text.isascii() and lifetime_text.isdigit() and 0 < int(lifetime_text) <= signed_urls.MAX_LIFETIME:
        lifetime = int(lifetime_text)
    else:
        raise BadRequest(f"expires must be a number of seconds from 1 to {signed_urls.MAX_LIFETIME}")
    if filename not in state.index.release(version).manifest.files:
        raise NotFound(f"release {version} has no file {filename}")
    expires = int(time.time()) + lifetime
    logger.info("admin %r signed a URL for key %r: %s/%s until %d", admin.name, name, version, filename, expires)
    base = f"{request.scheme}://{request.host}"
    return esp_json({"status": 200, "url": signed_urls.url(base, found[0], version, filename, expires),
                     "key": name, "version": version, "filename": filename, "expires": expires, "device": device})


def _offer(state: State, index: Index, key: Key, caller: str) -> Release:
    """The release the key's channel offers this caller (``channels.offer``): for the version
    query, and for a signed URL minted for a device (the device's id, supplied by the
    product's backend, stands in for the address). A caller offered a rollout is
    remembered at once (``Fleet.remember``); the offer is counted by the caller: the version
    query on its record (``RequestRecord.offered``), ``sign_url`` at once."""
    release, rollout = channels.offer(index, key.name, key.channel, caller, time.time(), state.fleet.was_offered)
    if rollout is not None:
        state.fleet.remember(channels.caller_id(rollout.id, key.name, caller))
    return release


@bp.route("/metrics", methods=GET_AND_HEAD, strict_slashes=True)
async def prometheus(request: Request) -> HTTPResponse:
    record = begin(request, Kind.METRICS)
    state = _state(request)
    record.key = authenticate_admin(request, state.keyring, state.limiter).name
    if state.store_status is not None:
        request.app.ctx.metrics.store(state.store_status.read())
    request.app.ctx.accountant.settle()  # this worker's latest requests count too
    body, content_type = request.app.ctx.metrics.exposition()
    return raw(body, content_type=content_type)
