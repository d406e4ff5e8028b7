"""Follow ``partitions/``, the pin, the channel files, the keys file (and, offline, ``manifests/``) live.

Each kind of change waits for its own quiet: a release is re-indexed once it has
been quiet for ``quiet_seconds``, so a release copied file by file is not signed
half-way, while the keys file and the pin apply after a short quiet of their own, so
a slow upload never delays a revocation. The new ``Index`` and ``Keyring`` replace
the old ones whole.

Nothing may end the watcher: a step that fails is logged and the loop goes on; a
watch that ends is started again, with back-off; a watched directory that is
replaced (renamed away and made anew, a re-pointed symlink, ``manifests/`` created
after start) is watched anew. A stat-only re-scan every ``rescan_seconds`` catches
whatever file events missed. A release that failed for a transient reason (an
``OSError``: a full disk, an I/O error) is retried on a timer with back-off; one that
failed for a permanent reason (a bad image or signature) waits for its files to
change. Started by the web layer with ``app.add_task`` and stopped through ``stop``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import stat
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from watchfiles import awatch

from sanic_ota import keys
from sanic_ota.changes import Layout, Plan, diff, layout_of, merge, plan, snapshot
from sanic_ota.releases import Index, summary
from sanic_ota.state import State
from sanic_ota.versions import newest_first

logger = logging.getLogger("sanic_ota.watcher")

#: How often the loop wakes without events to act on what went quiet.
TICK_SECONDS = 0.1
#: Quiet before a changed keys file or pin is re-read: enough for an editor's save.
SHORT_QUIET_SECONDS = 0.2
#: How often the watched directories are checked for having been replaced.
ROOT_CHECK_SECONDS = 1.0
#: Transient failures are retried after 1 s, then 2, 4, ... up to 60 s.
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0
#: A watch that keeps ending is restarted after 1 s, 2, 4, ... up to 30 s; one that
#: ran this long before it ended starts again from 1 s.
PUMP_RESTART_MAX_SECONDS = 30.0
PUMP_HEALTHY_SECONDS = 60.0


@dataclass
class _Pump:
    """One watchfiles watch, and the directory it was started on."""

    path: Path
    identity: tuple[int, int]
    stop: asyncio.Event
    task: asyncio.Task[None]
    started: float


@dataclass
class _Retry:
    at: float
    delay: float


def _identity(path: Path) -> tuple[int, int] | None:
    """Which directory ``path`` is now (device, inode); None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


class Watcher:
    def __init__(
        self,
        state: State,
        on_index: Callable[[Index], None] | None = None,
        on_keys: Callable[[keys.KeysFileStatus], None] | None = None,
    ) -> None:
        self.state = state
        self.on_index = on_index or (lambda index: None)
        self.on_keys = on_keys or (lambda status: None)
        self.layout: Layout = layout_of(state.store, state.settings)
        self.stop_event = asyncio.Event()
        self.queue: asyncio.Queue[Plan] = asyncio.Queue()
        #: what waits for its quiet, and when it last changed (None: nothing waits)
        self.pending_versions: set[str] = set()
        self.versions_changed = 0.0
        self.keys_changed: float | None = None
        self.pin_changed: float | None = None
        self.pin_reads = 0  # counts pin re-reads, so a build that raced one re-reads it
        self.retries: dict[str, _Retry] = {}
        self.pumps: dict[str, _Pump] = {}
        self.pump_failures: dict[str, int] = {}
        self.pump_restart_at: dict[str, float] = {}
        self.seen = dict(state.seen)
        self.building: asyncio.Task[None] | None = None
        self.next_rescan = 0.0  # a first re-scan at once catches changes made during start-up
        self.next_root_check = 0.0

    def stop(self) -> None:
        self.stop_event.set()

    async def run(self) -> None:
        try:
            self.state.store.ensure_partitions()
        except OSError as e:
            logger.error("cannot create %s: %s", e.filename, e.strerror)
        transient = set(self.state.indexer.transient)
        self._schedule_retries(transient, transient)
        if self.state.index.pending:  # a large start read only what a version query names
            self.pending_versions |= self.state.index.pending
            self.versions_changed = -math.inf  # due at once: nothing is being copied
        try:
            while not self.stop_event.is_set():
                try:
                    await self._step()
                except Exception:  # the watcher outlives any bad file and any bug
                    logger.exception("watcher step failed; carrying on")
                    await asyncio.sleep(TICK_SECONDS)
        except asyncio.CancelledError:
            pass  # shutdown: Sanic cancels background tasks on SIGTERM; ending is the point
        finally:
            self.stop_event.set()
            for role in list(self.pumps):
                self.pumps[role].stop.set()
            tasks = [p.task for p in self.pumps.values()]
            if self.building is not None:
                self.building.cancel()  # a build in its thread finishes on its own
            try:
                await asyncio.gather(*tasks, return_exceptions=True)
            except asyncio.CancelledError:  # cancelled again while the pumps wind down
                for task in tasks:
                    task.cancel()

    async def _step(self) -> None:
        found = Plan()
        try:
            found = await asyncio.wait_for(self.queue.get(), TICK_SECONDS)
        except TimeoutError:
            pass
        while not self.queue.empty():  # a steady stream of events must not hold back the rest
            found = found | self.queue.get_nowait()
        self._note(found, time.monotonic())
        now = time.monotonic()
        if now >= self.next_root_check:
            self.next_root_check = now + ROOT_CHECK_SECONDS
            await self._survive("checking the watched directories", self.check_watches)
        if time.monotonic() >= self.next_rescan:
            self.next_rescan = time.monotonic() + self.state.settings.rescan_seconds
            await self._survive("re-scanning", self.rescan)
        await self._apply_due(time.monotonic())

    async def _survive(self, what: str, action: Callable[[], Awaitable[None]]) -> None:
        try:
            await action()
        except Exception:
            logger.exception("watcher: %s failed; carrying on", what)

    def _note(self, found: Plan, now: float) -> None:
        if found.versions:
            self.pending_versions |= found.versions
            self.versions_changed = now
        if found.keys:
            self.keys_changed = now
        if found.pin:
            self.pin_changed = now

    async def _apply_due(self, now: float) -> None:
        if self.keys_changed is not None and now - self.keys_changed >= SHORT_QUIET_SECONDS:
            self.keys_changed = None
            await self._survive("reloading the keys file", self.reload_keys)
        if self.pin_changed is not None and now - self.pin_changed >= SHORT_QUIET_SECONDS:
            self.pin_changed = None
            await self._survive("re-reading the pin", self.reread_pin)
        if self.building is not None and not self.building.done():
            return  # one build at a time; keys and the pin never wait for it
        due: set[str] = set()
        if self.pending_versions and now - self.versions_changed >= self.state.settings.quiet_seconds:
            due, self.pending_versions = self.pending_versions, set()
        # a retry never catches a release mid-copy: one that is changing waits for its quiet
        due |= {v for v, retry in self.retries.items() if retry.at <= now and v not in self.pending_versions}
        if due:
            self.building = asyncio.create_task(
                self._survive(f"re-indexing {summary(newest_first(due))}", lambda: self.reindex(due))
            )

    async def reindex(self, versions: set[str]) -> None:
        """Re-read ``versions`` into a new index; transient failures get a retry."""
        state = self.state
        pin_reads = self.pin_reads
        merge(self.seen, await asyncio.to_thread(snapshot, self.layout, Plan(frozenset(versions))))
        try:
            index = await asyncio.to_thread(state.indexer.build, state.index, versions)
        except Exception:  # not a failure build reports per release: try them all again later
            self._schedule_retries(versions, versions)
            raise
        state.index = index
        if pin_reads != self.pin_reads:  # the pin changed during the build: read it again
            self.pin_changed = time.monotonic()
        self._schedule_retries(versions, versions & state.indexer.transient)
        logger.info("re-indexed %s; serving %s", summary(newest_first(versions)), summary(index.versions()))
        self.on_index(index)

    def _schedule_retries(self, built: Iterable[str], failed: set[str]) -> None:
        now = time.monotonic()
        for version in built:
            if version not in failed:
                self.retries.pop(version, None)
                continue
            previous = self.retries.get(version)
            delay = RETRY_FIRST_SECONDS if previous is None else min(previous.delay * 2, RETRY_MAX_SECONDS)
            self.retries[version] = _Retry(now + delay, delay)
            logger.warning("release %s failed for a transient reason; retrying in %g s", version, delay)

    async def reload_keys(self) -> None:
        state = self.state
        before = state.keys_file
        merge(self.seen, await asyncio.to_thread(snapshot, self.layout, Plan(keys=True)))
        keyring, status = await asyncio.to_thread(keys.reload, state.keyring, Path(state.settings.keys_file))
        state.keyring, state.keys_file = keyring, status
        if status.ok:
            logger.info("keys reloaded: %d key(s)%s", len(keyring), "" if before.ok else "; keys file applied again")
            if not keyring:
                logger.warning("keys file %s holds no key: every request will be refused", state.settings.keys_file)
        else:
            logger.error("KEYS FILE NOT (FULLY) APPLIED (%s): %s; %d device key(s) in force",
                         status.problem, status.message, len(keyring))
        self.on_keys(status)

    async def reread_pin(self) -> None:
        state = self.state
        self.pin_reads += 1
        merge(self.seen, await asyncio.to_thread(snapshot, self.layout, Plan(pin=True)))
        pinned = await asyncio.to_thread(state.indexer.read_pin)
        channels = await asyncio.to_thread(state.indexer.read_channels)
        before = state.index.channels
        state.index = replace(state.index, pinned=pinned, channels=channels)
        logger.info("pin is now %s", "(none: newest)" if pinned is None else pinned or "(unusable: refused)")
        if channels != before:
            logger.info("channels are now: %s", ", ".join(
                f"{c.name} ({'pin ' + c.pin if c.pin else 'newest'}"
                f"{', rollout ' + c.rollout.version if c.rollout else ''})" for c in channels.channels.values())
                or "(no channel file)")

    async def rescan(self) -> None:
        """Compare a stat signature of everything followed with the last one."""
        current = await asyncio.to_thread(snapshot, self.layout)
        found = diff(self.seen, current)
        self.seen = current
        missed = Plan(
            frozenset(found.versions - self.pending_versions),
            found.keys and self.keys_changed is None,
            found.pin and self.pin_changed is None,
        )
        if missed:
            logger.info("re-scan: changed without a file event: %s", _describe(missed))
            self._note(missed, time.monotonic())

    # -- the watches -----------------------------------------------------------------

    def _wanted(self) -> dict[str, tuple[Path, bool]]:
        """The directories to watch now, by role, and whether recursively."""
        wanted = self.layout.roots.directories(manifests=self.layout.watch_manifests)
        wanted["keys file"] = (self.layout.keys_file.parent, False)
        return wanted

    async def check_watches(self) -> None:
        """Start, restart or move each watch to the directory its path names now."""
        self.layout = await asyncio.to_thread(layout_of, self.state.store, self.state.settings)
        wanted = self._wanted()
        identities = await asyncio.to_thread(lambda: {role: _identity(p) for role, (p, _) in wanted.items()})
        for role, (path, recursive) in wanted.items():
            identity = identities[role]
            pump = self.pumps.get(role)
            if pump is not None and pump.task.done():
                self._ended(role, pump)
                pump = None
            if pump is not None:
                if (pump.path, pump.identity) == (path, identity):
                    continue
                logger.warning("%s directory %s was replaced or re-linked; watching it anew", role, path)
                await self._stop_pump(role)
            if identity is None or time.monotonic() < self.pump_restart_at.get(role, 0.0):
                continue  # nothing there to watch yet, or waiting out a back-off
            self._start_pump(role, path, recursive, identity)
            self.next_rescan = 0.0  # what changed while nobody watched is re-read now
        for role in set(self.pumps) - set(wanted):
            await self._stop_pump(role)

    def _start_pump(self, role: str, path: Path, recursive: bool, identity: tuple[int, int]) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(self._pump(path, recursive, stop), name=f"sanic_ota.watch.{role}")
        self.pumps[role] = _Pump(path, identity, stop, task, time.monotonic())
        logger.info("watching %s (%s)", path, role)

    def _ended(self, role: str, pump: _Pump) -> None:
        """A watch that ended by itself: say why, and start it again after a back-off."""
        del self.pumps[role]
        if time.monotonic() - pump.started >= PUMP_HEALTHY_SECONDS:
            self.pump_failures[role] = 0
        failures = self.pump_failures[role] = self.pump_failures.get(role, 0) + 1
        delay = min(2.0 ** (failures - 1), PUMP_RESTART_MAX_SECONDS)
        self.pump_restart_at[role] = time.monotonic() + delay
        error = None if pump.task.cancelled() else pump.task.exception()
        logger.error("watch on %s (%s) ended (%s); restarting in %g s", pump.path, role,
                     f"{type(error).__name__}: {error}" if error else "no error", delay, exc_info=error)

    async def _stop_pump(self, role: str) -> None:
        pump = self.pumps.pop(role)
        pump.stop.set()
        await asyncio.wait({pump.task}, timeout=2.0)
        if not pump.task.done():
            pump.task.cancel()
        self.pump_failures.pop(role, None)
        self.pump_restart_at.pop(role, None)

    async def _pump(self, path: Path, recursive: bool, stop: asyncio.Event) -> None:
        async for changes in awatch(path, recursive=recursive, stop_event=stop, debounce=400, step=50,
                                    rust_timeout=500, yield_on_timeout=True, ignore_permission_denied=True):
            found = plan(changes, self.layout)
            if found:
                self.queue.put_nowait(found)


def _describe(found: Plan) -> str:
    parts = sorted(found.versions) + ["keys file"] * found.keys + ["pin"] * found.pin
    return ", ".join(parts)
