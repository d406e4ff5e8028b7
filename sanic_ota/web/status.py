"""``GET /status``: one HTML page for an operator's browser (admin key, HTTP Basic).

Server-rendered with inline CSS and inline SVG, no script and nothing fetched from
elsewhere, so it works offline and under a strict Content-Security-Policy. Every
string that comes from a file (release and file names, what an image says about
itself, failure reasons) goes through ``html.escape``. ``render_status`` is a pure
function of plain data; the handler only gathers that data.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from html import escape
from typing import Any

from sanic import Blueprint, HTTPResponse, Request
from sanic.response import html

from sanic_ota.accounting import Kind
from sanic_ota.errors import OtaError
from sanic_ota.fleet import Group
from sanic_ota.keys import KeysFileStatus
from sanic_ota.manifest import FileEntry, utc_now
from sanic_ota.mirror_status import StoreStatus
from sanic_ota.releases import Index, Release, summary
from sanic_ota.stats import HOURS, Failure, Snapshot
from sanic_ota.versions import newest_first
from sanic_ota.web.accountant import begin
from sanic_ota.web.admin import channel_listing, rollouts
from sanic_ota.web.auth import authenticate_admin
from sanic_ota.web.routes import GET_AND_HEAD

bp = Blueprint("status")

#: No script, no frames, nothing from elsewhere: only the page's own inline styles.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:80em}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.4em 0}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right}
code{font:12px ui-monospace,monospace;word-break:break-all}
.ok{color:#176117}.bad{color:#a01010;font-weight:bold}.muted{color:#777}
svg rect.bar{fill:#3b6fb6}svg line{stroke:#999}
"""


@bp.route("/status", methods=GET_AND_HEAD, strict_slashes=True)
async def status_page(request: Request) -> HTTPResponse:
    record = begin(request, Kind.STATUS)
    state = request.app.ctx.state
    record.key = authenticate_admin(request, state.keyring, state.limiter).name
    request.app.ctx.accountant.settle()  # this worker's latest requests count too
    snapshot = await asyncio.to_thread(state.stats.snapshot)
    store = await asyncio.to_thread(state.store_status.read) if state.store_status is not None else None
    groups = await asyncio.to_thread(state.fleet.snapshot)
    now = time.time()
    page = render_status(state.index, state.verifier.keyid, snapshot, utc_now(), state.keys_file, store,
                         groups, rollouts(state, groups, now), channel_listing(state, now)["channels"])
    return html(page, headers=HEADERS)


def render_status(
    index: Index, keyid: str, snapshot: Snapshot, generated: str, keys_file: KeysFileStatus | None = None,
    store: StoreStatus | None = None,
    fleet: list[Group] | None = None, rollout_rows: list[dict[str, Any]] | None = None,
    channel_rows: list[dict[str, Any]] | None = None,
) -> str:
    """The whole page: the keys file if it is not applied, a replica's store, what plain
    AT+CIUPDATE gets, downloads, releases, failures."""
    parts = [
        f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>sanic_ota status</title>"
        f"<style>{CSS}</style></head><body><h1>sanic_ota status</h1>",
        f"<p class=muted>Generated {escape(generated)}. Manifest signing key <code>{escape(keyid)}</code>.</p>",
        _keys_file(keys_file or KeysFileStatus()),
        _store(store) if store is not None else "",
        _latest(index),
        _unversioned(index),
        _downloads(index, snapshot),
        _channels(channel_rows or []),
        _rollouts(rollout_rows or []),
        _fleet(fleet or []),
    ]
    counts = {key: sum(row) for key, row in snapshot.downloads.items()}
    for version in index.versions():
        parts.append(_release(index.releases[version], keyid, counts))
    for version in newest_first(index.problems):
        parts.append(f"<h2 id='r-{escape(version)}'>{escape(version)} <span class=bad>NOT served</span></h2>"
                     f"<p class=bad>{escape(index.problems[version])}</p>")
    if index.pending:
        parts.append(f"<p class=muted id=pending>{len(index.pending)} release(s) present, not checked yet "
                     f"(they are being read; downloads of them answer 503 until then): "
                     f"{escape(summary(newest_first(index.pending)))}</p>")
    parts.append(_failures(snapshot.failures))
    parts.append("</body></html>")
    return "\n".join(parts)


def _keys_file(status: KeysFileStatus) -> str:
    if status.ok:
        return "<p id=keys-file>Keys file: <span class=ok>applied</span></p>"
    return (f"<p id=keys-file>Keys file: <span class=bad>NOT (fully) applied ({escape(status.problem or '')}): "
            f"{escape(status.message)}</span></p>")


def _store(status: StoreStatus) -> str:
    """A replica's store: up or down, when last listed, objects not mirrored, releases left out."""
    state = ("<span class=ok>up</span>" if status.up
             else f"<span class=bad>DOWN ({escape(status.message)})</span>")
    synced = ("never since start" if status.last_sync is None
              else datetime.fromtimestamp(status.last_sync, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
    parts = [f"<h2>Store</h2><p id=store>Store <code>{escape(status.store)}</code>: {state}; last listed "
             f"{synced}; {len(status.mirrored)} release(s) in this replica's cache.</p>"]
    if status.failures:
        rows = "".join(f"<tr><td>{escape(v)}</td><td>{escape(name)}</td><td class=bad>{escape(why)}</td></tr>"
                       for v in newest_first(status.failures) for name, why in sorted(status.failures[v].items()))
        parts.append("<p class=bad>Not mirrored as signed (fetched again with back-off):</p>"
                     f"<table id=store-failures><tr><th>release</th><th>object</th><th>why</th></tr>{rows}</table>")
    if status.left_out:
        names = ", ".join(f"<code>{escape(v)}</code>" for v in status.left_out)
        parts.append(f"<p id=store-left-out>Left out of the cache (over SANIC_OTA_CACHE_DIR_BYTES), not offered "
                     f"by this replica: {names}</p>")
    return "".join(parts)


def _latest(index: Index) -> str:
    try:
        release = index.latest()
    except OtaError as e:
        return f"<p>Plain <code>AT+CIUPDATE</code> gets: <span class=bad>nothing ({escape(e.message)})</span></p>"
    why = "pinned in partitions/LATEST" if index.pinned is not None else "the newest release"
    return f"<p>Plain <code>AT+CIUPDATE</code> gets: <b class=ok>{escape(release.version)}</b> ({why})</p>"


def _unversioned(index: Index) -> str:
    if not index.unversioned:
        return ""
    names = ", ".join(f"<code>{escape(name)}</code>" for name in index.unversioned)
    return (f"<p>Never offered as the newest, since the name is not a version (README, Releases); "
            f"downloadable by name: {names}</p>")


def _downloads(index: Index, snapshot: Snapshot) -> str:
    per_release = snapshot.per_release()
    versions = newest_first(set(index.releases) | set(per_release))
    if not versions:
        return "<h2>Downloads, last 24 hours</h2><p class=muted>No release.</p>"
    peak = max((n for row in per_release.values() for n in row), default=0)
    first = datetime.fromtimestamp((snapshot.hour - HOURS + 1) * 3600, UTC).strftime("%H:00")
    rows = "".join(
        f"<tr><td>{escape(v)}</td><td>{_chart(per_release.get(v, [0] * HOURS), peak, snapshot.hour)}</td>"
        f"<td class=n id='d-{escape(v)}'>{sum(per_release.get(v, []))}</td></tr>"
        for v in versions
    )
    return (f"<h2>Downloads, last 24 hours</h2><table><tr><th>release</th>"
            f"<th>per hour (UTC), oldest ({first}) on the left</th><th>completed</th></tr>{rows}</table>")


def _chart(counts: list[int], peak: int, hour: int, bar: int = 10, height: int = 36) -> str:
    """24 bars, one per hour, scaled to the busiest hour of any release; hover for numbers."""
    bars = []
    for i, n in enumerate(counts):
        start = datetime.fromtimestamp((hour - HOURS + 1 + i) * 3600, UTC).strftime("%H:00")
        h = max(1, round(n / peak * (height - 2))) if n and peak else 0
        bars.append(f"<rect class=bar x={i * bar} y={height - 1 - h} width={bar - 2} height={h}>"
                    f"<title>{start} UTC: {n}</title></rect>")
    width = bar * len(counts)
    return (f"<svg width={width} height={height} viewBox='0 0 {width} {height}' role=img "
            f"aria-label='{sum(counts)} downloads'>{''.join(bars)}"
            f"<line x1=0 y1={height - 0.5} x2={width} y2={height - 0.5} /></svg>")


def _release(release: Release, keyid: str, counts: dict[tuple[str, str], int]) -> str:
    m = release.manifest
    v = escape(release.version)
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td class=n>{_size(entry.length)}</td><td><code>{escape(entry.sha256)}"
        f"</code></td><td>{_image(entry)}</td><td class=n>{counts.get((release.version, name), 0)}</td></tr>"
        for name, entry in sorted(m.files.items())
    )
    return (
        f"<h2 id='r-{v}'>{v} <span class=ok>served</span></h2>"
        f"<p>Manifest serial {m.serial}, created {escape(m.created)}, signature "
        f"<span class=ok>verified with key {escape(keyid[:16])}</span>; manifest file SHA-256 "
        f"<code>{escape(release.document_sha256)}</code></p>"
        f"<table><tr><th>file</th><th>size</th><th>SHA-256</th><th>image</th><th>downloads (24 h)</th></tr>"
        f"{rows}</table>"
    )


def _image(entry: FileEntry) -> str:
    image = entry.info.get("image")
    if not isinstance(image, dict):
        return "<span class=muted>data partition</span>"
    fields = (("project", "project_name"), ("app", "app_version"), ("IDF", "idf_version"), ("chip", "chip"))
    return "<br>".join(f"{label} {escape(str(image.get(key, '?')))}" for label, key in fields)


def _size(length: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if length >= scale:
            return f"{length:,} B ({length / scale:.1f} {unit})"
    return f"{length:,} B"


def _failures(failures: list[Failure]) -> str:
    if not failures:
        return "<h2>Recent failures</h2><p class=muted>None recorded.</p>"
    rows = "".join(
        f"<tr><td>{escape(f.time)}</td><td>{escape(f.kind)}</td><td>{escape(f.client)}</td>"
        f"<td>{escape(f.key or '-')}</td><td>{escape(f.version or '-')}</td><td>{escape(f.file or '-')}</td>"
        f"<td class=n>{f.status}</td><td class=bad>{escape(f.reason)}</td></tr>"
        for f in failures
    )
    return (f"<h2>Recent failures</h2><table><tr><th>time (UTC)</th><th>request</th><th>client</th><th>key</th>"
            f"<th>release</th><th>file</th><th>status</th><th>what</th></tr>{rows}</table>")


def _channels(rows: list[dict[str, Any]]) -> str:
    """Shown once a channel other than stable exists (a key's field or a channel file)."""
    if [r["name"] for r in rows] in ([], ["stable"]):
        return ""
    body = "".join(
        f"<tr id='channel-{escape(r['name'])}'><td>{escape(r['name'])}</td>"
        f"<td>{escape(', '.join(r.get('keys', [])) or '-')}</td><td>{escape(r.get('pin') or 'newest')}</td>"
        f"<td>{_offers(r)}</td></tr>"
        for r in rows
    )
    return ("<h2>Channels</h2><table><tr><th>channel</th><th>keys</th><th>pinned to</th>"
            f"<th>version query answers (before any rollout)</th></tr>{body}</table>")


def _offers(row: dict[str, Any]) -> str:
    if row.get("problem"):
        return f"<span class=bad>nothing ({escape(row['problem'])})</span>"
    return f"<b class=ok>{escape(row.get('offers') or '-')}</b>"


def _rollouts(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<h2>Rollouts</h2><p class=muted>No rollout.</p>"
    body = "".join(
        f"<tr id='rollout-{escape(r['channel'])}'><td>{escape(r['channel'])}</td><td>{escape(r['version'])}</td>"
        f"<td class=n>{r['percent_now']:g}%</td>"
        f"<td>{'<span class=bad>halted</span>' if r['halted'] else '<span class=ok>rolling</span>'}</td>"
        f"<td class=n>{r['offered']}</td><td class=n>{r['downloaded']}</td><td>{escape(r['started'])}</td></tr>"
        for r in rows
    )
    return ("<h2>Rollouts</h2><table><tr><th>channel</th><th>release</th><th>offered to</th><th>state</th>"
            f"<th>offers</th><th>full downloads</th><th>started (UTC)</th></tr>{body}</table>")


def _counts(by_release: dict[str, int]) -> str:
    return "<br>".join(f"{escape(v)}: {n}" for v, n in sorted(by_release.items())) or "-"


def _fleet(groups: list[Group]) -> str:
    """Per key and channel: counts since the statistics file was made, not a 24 h window."""
    if not groups:
        return "<h2>Fleet</h2><p class=muted>No key seen yet.</p>"
    body = "".join(
        f"<tr><td>{escape(g.key)}</td><td>{escape(g.channel)}</td><td>{_counts(g.offered)}</td>"
        f"<td>{_counts(g.downloaded)}</td><td>{escape(str(g.to_dict()['last_seen'] or '-'))}</td>"
        f"<td class=n>{'&ge;' if g.addresses_capped else ''}{g.addresses}</td><td>{_counts(g.failures)}</td></tr>"
        for g in groups
    )
    return ("<h2>Fleet</h2><p class=muted>Per key and channel since counting began; JSON for scripts: "
            "<code>/v1/admin/fleet</code>. Addresses are approximate: modules behind one NAT or proxy share one."
            "</p><table><tr><th>key</th><th>channel</th><th>offered (version query)</th><th>full downloads</th>"
            f"<th>last seen (UTC)</th><th>addresses</th><th>failures</th></tr>{body}</table>")
