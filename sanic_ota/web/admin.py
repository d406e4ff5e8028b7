"""The admin API under ``/v1/admin/``: channels, rollouts, uploads and the fleet view.

Admin keys only (``"Role": "admin"``, ``Authorization: token <T>``; never the
admin-pages-only keys kept after the keys file disappeared). Every change is audited:
the request's audit line names the admin key and, in ``change``, what changed
(``channels.Change.what``; ``upload:<version>``). The core decides (``channels``,
``uploads``); handlers only translate, write through the store in a thread, and
re-read the pin and channels into this worker's index at once (other workers'
watchers see the file within about a second). Errors are the house JSON shape.

Writes go through ``state.writer`` (``channel_writer``): the local store, or on a
replica the bucket first (then this replica's copy; other replicas follow within one
poll). A replica takes no upload: releases are published to the bucket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from dataclasses import replace
from typing import Any

from sanic import Blueprint, HTTPResponse, Request

from sanic_ota import channels, uploads
from sanic_ota.accounting import Kind
from sanic_ota.channels import DEFAULT_CHANNEL, Change, Channel
from sanic_ota.errors import BadRequest, Conflict, NotFound, OtaError, TooLarge
from sanic_ota.keys import Key
from sanic_ota.state import State
from sanic_ota.versions import check_name
from sanic_ota.web.accountant import begin, record_of
from sanic_ota.web.auth import authenticate, require_admin
from sanic_ota.web.responses import esp_json

bp = Blueprint("admin")
logger = logging.getLogger("sanic_ota.admin")

#: Bodies of the channel calls are a few fields of JSON.
JSON_LIMIT = 64 * 1024
#: How long an upload's answer waits, beyond the quiet period, for the watcher to index it.
INDEX_WAIT_SECONDS = 5.0


def _admin(request: Request) -> tuple[State, Key]:
    record = begin(request, Kind.ADMIN)
    state: State = request.app.ctx.state
    key = require_admin(request, authenticate(request, state.keyring, state.limiter))
    record.key = key.name
    return state, key


def _body(request: Request) -> dict[str, Any]:
    raw = request.body or b""
    if len(raw) > JSON_LIMIT:
        raise TooLarge(f"the request body is over {JSON_LIMIT} bytes")
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest("the request body must be a JSON object") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def channel_listing(state: State, now: float) -> dict[str, Any]:
    """Every channel the server knows (files, keys' channels, ``stable``): pin, rollout, answer, keys."""
    index = state.index
    names = {DEFAULT_CHANNEL} | set(index.channels.channels) | set(index.channels.problems) | {
        k.channel for k in state.keyring.keys}
    found = []
    for name in sorted(names):
        item: dict[str, Any] = {"name": name, "keys": sorted(k.name for k in state.keyring.keys if k.channel == name)}
        if name in index.channels.problems:
            item["problem"] = index.channels.problems[name]
        else:
            item.update(index.channels.get(name).to_dict(now))
            item["pin"] = index.pin_of(name) or None  # stable: partitions/LATEST ("": unusable)
            try:
                item["offers"] = index.base(name).version
            except OtaError as e:
                item["offers"] = None
                item["problem"] = e.message
        found.append(item)
    return {"status": 200, "channels": found}


@bp.route("/v1/admin/channels", methods=["GET", "HEAD"], strict_slashes=True)
async def list_channels(request: Request) -> HTTPResponse:
    state, _ = _admin(request)
    return esp_json(channel_listing(state, time.time()))


async def _apply(request: Request, state: State, name: str, change: Change) -> HTTPResponse:
    """Write the changed channel file, re-read it here, audit what changed."""
    await state.writer.write_channel(name, None if change.channel is None else channels.dump(change.channel))
    await _reread(state)
    return _changed(request, state, change.what)


async def _reread(state: State) -> None:
    pinned = await asyncio.to_thread(state.indexer.read_pin)
    found = await asyncio.to_thread(state.indexer.read_channels)
    state.index = replace(state.index, pinned=pinned, channels=found)


def _changed(request: Request, state: State, what: str) -> HTTPResponse:
    record = record_of(request)
    record.change = what
    logger.info("admin %r: %s", record.key, what)
    body = channel_listing(state, time.time())
    body["changed"] = what
    return esp_json(body)


async def _current(state: State, name: str) -> Channel:
    """The channel as its file holds it now (not as this worker last read it)."""
    data = await state.writer.read_channel(name)
    return Channel(name) if data is None else channels.parse(name, data)


def _servable(state: State, version: object) -> str:
    if not isinstance(version, str):
        raise BadRequest('missing "version"')
    name = check_name(version, "version")
    state.index.release(name)  # 404 or 503, as a download would get
    return name


@bp.route("/v1/admin/channels/<name:str>/pin", methods=["PUT", "DELETE"], strict_slashes=True)
async def pin(request: Request, name: str) -> HTTPResponse:
    """PUT ``{"version": "v1.3.0"}`` pins the channel; DELETE: it follows the newest again.

    ``stable``'s pin is ``partitions/LATEST``, so that file is what this writes for it.
    """
    state, admin = _admin(request)
    name = channels.check_channel(name)
    version = None if request.method == "DELETE" else _servable(state, _body(request).get("version"))
    record_of(request).version = version
    if name == DEFAULT_CHANNEL:
        await state.writer.write_pin(version)
        await _reread(state)
        return _changed(request, state, f"pin:{name}={version}" if version else f"unpin:{name}")
    change = channels.set_pin(await _current(state, name), version, admin.name, time.time())
    return await _apply(request, state, name, change)


@bp.route("/v1/admin/channels/<name:str>/rollout", methods=["POST"], strict_slashes=True)
async def rollout_start(request: Request, name: str) -> HTTPResponse:
    """``{"version": ..., "percent": N, "steps": [{"at": TIME, "percent": N}, ...]}``."""
    state, admin = _admin(request)
    name = channels.check_channel(name)
    body = _body(request)
    version = _servable(state, body.get("version"))
    record_of(request).version = version
    base = state.index.base(name).version
    if not channels.is_newer(version, base):
        raise BadRequest(f"a rollout offers a release newer than the channel's ({base}); {version} is not")
    change = channels.start_rollout(await _current(state, name), version, body.get("percent"), body.get("steps"),
                                    admin.name, time.time())
    return await _apply(request, state, name, change)


@bp.route("/v1/admin/channels/<name:str>/rollout/<action:str>", methods=["POST"], strict_slashes=True)
async def rollout_change(request: Request, name: str, action: str) -> HTTPResponse:
    """``advance`` with ``{"percent": N}`` (only upwards), or ``halt``."""
    state, admin = _admin(request)
    name = channels.check_channel(name)
    current = await _current(state, name)
    if action == "advance":
        change = channels.advance_rollout(current, _body(request).get("percent"), admin.name, time.time())
    elif action == "halt":
        change = channels.halt_rollout(current, admin.name, time.time())
    else:
        raise NotFound("the rollout actions are advance and halt")
    return await _apply(request, state, name, change)


@bp.route("/v1/admin/fleet", methods=["GET", "HEAD"], strict_slashes=True)
async def fleet(request: Request) -> HTTPResponse:
    """Per key and channel: offered and downloaded per release, last seen, addresses, failures;
    and each rollout's progress."""
    state, _ = _admin(request)
    request.app.ctx.accountant.settle()  # this worker's latest requests count too
    groups = await asyncio.to_thread(state.fleet.snapshot)
    return esp_json({"status": 200, "groups": [g.to_dict() for g in groups],
                     "rollouts": rollouts(state, groups, time.time())})


def rollouts(state: State, groups: list[Any], now: float) -> list[dict[str, Any]]:
    """Each channel's rollout with the offers and full downloads of its release so far."""
    found = []
    for channel in state.index.channels.channels.values():
        if channel.rollout is None:
            continue
        version = channel.rollout.version
        mine = [g for g in groups if g.channel == channel.name]
        found.append({"channel": channel.name, **channel.rollout.to_dict(now),
                      "offered": sum(g.offered.get(version, 0) for g in mine),
                      "downloaded": sum(g.downloaded.get(version, 0) for g in mine)})
    return found


@bp.route("/v1/admin/releases/<version:str>", methods=["PUT"], strict_slashes=True, stream=True)
async def upload(request: Request, version: str) -> HTTPResponse:
    """A tar of the release's files (and optionally its signed ``manifest.json``) as the body.

    Spooled to an unlinked temporary file in the server's own directory, up to
    ``SANIC_OTA_UPLOAD_MAX_BYTES``; then checked and moved in whole (``uploads``).
    """
    state, _ = _admin(request)
    version = check_name(version, "version")
    record = record_of(request)
    record.version = version
    if not state.writer.takes_uploads:
        raise Conflict(f"this server is a replica of {state.settings.store}: releases are published to the "
                       "bucket (tools/publish.py VERSION --to STORE, or make publish), not uploaded here")
    limit = state.settings.upload_max_bytes
    state.settings.state_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=state.settings.state_dir) as spool:
        size = 0
        while (chunk := await request.stream.read()) is not None:  # type: ignore[union-attr]
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"the upload is over {limit} bytes (SANIC_OTA_UPLOAD_MAX_BYTES)")
            await asyncio.to_thread(spool.write, chunk)
        spool.seek(0)
        done = await asyncio.to_thread(uploads.unpack, state.store, version, spool, state.verifier,
                                       state.settings.sign_manifests)
    record.change = f"upload:{version}"
    logger.info("admin %r uploaded release %s (%d file(s))", record.key, version, len(done.files))
    # The watcher indexes (and signs) it as any new release, after its quiet; wait for that
    # rather than build here beside the watcher's own build.
    deadline = time.monotonic() + state.settings.quiet_seconds + INDEX_WAIT_SECONDS
    while version not in (index := state.index).present and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    problem = index.problems.get(version) if version in index.present else "not indexed yet; see /status"
    return esp_json({"status": 201, "version": version, "files": {n: e.to_dict() for n, e in done.files.items()},
                     "served": version in index.releases, "problem": problem}, status=201)
