"""Follow ``partitions/``, the pin, the keys file (and, offline, ``manifests/``) live.

Each release is re-indexed once it has been quiet for ``quiet_seconds``, so a
release copied file by file is not signed half-way; the new ``Index`` and
``Keyring`` replace the old ones whole. Started by the web layer with
``app.add_task`` and stopped through ``stop``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from watchfiles import awatch

from sanic_ota.changes import Layout, Plan, plan
from sanic_ota.errors import OtaError
from sanic_ota.releases import Index
from sanic_ota.state import State, load_keyring

logger = logging.getLogger("sanic_ota.watcher")

#: How often the loop wakes without events to act on releases that went quiet.
TICK_SECONDS = 0.1


def layout_of(state: State) -> Layout:
    settings = state.settings
    return Layout(
        partitions=Path(settings.partitions_dir).resolve(),
        manifests=Path(settings.manifests_dir).resolve(),
        keys_file=Path(settings.keys_file).resolve(),
        watch_manifests=not settings.sign_manifests,
    )


class Watcher:
    def __init__(self, state: State, on_index: Callable[[Index], None] | None = None) -> None:
        self.state = state
        self.on_index = on_index or (lambda index: None)
        self.layout = layout_of(state)
        self.stop_event = asyncio.Event()
        self.queue: asyncio.Queue[Plan] = asyncio.Queue()
        #: what is waiting to be applied, and when it last changed
        self.pending = Plan()
        self.last_change = 0.0

    def stop(self) -> None:
        self.stop_event.set()

    async def run(self) -> None:
        self.layout.partitions.mkdir(parents=True, exist_ok=True)
        sources = [self._pump([self.layout.partitions], recursive=True),
                   self._pump([self.layout.keys_file.parent], recursive=False)]
        if self.layout.watch_manifests and self.layout.manifests.is_dir():
            sources.append(self._pump([self.layout.manifests], recursive=False))
        pumps = [asyncio.create_task(source) for source in sources]
        try:
            await self._consume()
        except asyncio.CancelledError:
            pass  # shutdown: Sanic cancels background tasks on SIGTERM; ending is the point
        finally:
            self.stop_event.set()
            try:
                await asyncio.gather(*pumps, return_exceptions=True)
            except asyncio.CancelledError:  # cancelled again while the pumps wind down
                for pump in pumps:
                    pump.cancel()

    async def _pump(self, paths: list[Path], recursive: bool) -> None:
        async for changes in awatch(*paths, recursive=recursive, stop_event=self.stop_event,
                                    debounce=400, step=50, rust_timeout=500, yield_on_timeout=True):
            found = plan(changes, self.layout)
            if found:
                await self.queue.put(found)

    async def _consume(self) -> None:
        quiet = self.state.settings.quiet_seconds
        while not self.stop_event.is_set():
            try:
                found = await asyncio.wait_for(self.queue.get(), TICK_SECONDS)
                self.pending = self.pending | found
                self.last_change = time.monotonic()
                continue
            except TimeoutError:
                pass
            if self.pending and time.monotonic() - self.last_change >= quiet:
                todo, self.pending = self.pending, Plan()
                await self.apply(todo)

    async def apply(self, todo: Plan) -> None:
        """Re-read what ``todo`` names and swap the results in; never raise."""
        state = self.state
        if todo.keys:
            try:
                state.keyring = await asyncio.to_thread(load_keyring, state.settings)
                logger.info("keys reloaded: %d key(s)", len(state.keyring))
            except OtaError as e:
                logger.error("keys file not reloaded, previous keys stay in force: %s", e.message)
        if todo.versions:
            state.index = await asyncio.to_thread(state.indexer.build, state.index, todo.versions)
            logger.info("re-indexed %s; serving %s", ", ".join(sorted(todo.versions)),
                        ", ".join(state.index.versions()) or "(none)")
            self.on_index(state.index)
        if todo.pin:
            state.index = replace(state.index, pinned=state.indexer.read_pin())
            logger.info("pin is now %s", state.index.pinned or "(none: newest)")
