"""Download counts per release and hour, and recent failures, shared by every worker.

Each Sanic worker is its own process, so the numbers live in one SQLite file
(``Settings.stats_path``). A worker counts in memory and ``flush`` adds its counts
to the file in one transaction every few seconds and at shutdown; a reader sees the
file plus its own unflushed counts, so another worker's last few seconds may be
missing, never counted twice. Only the last ``HOURS`` hourly buckets and the last
``MAX_FAILURES`` failures are kept.

Statistics must never break a download: every SQLite or OS error is logged (once
per run of failures) and the counts stay in memory, bounded, until the file works
again. No Sanic here; ``flush_periodically`` is the loop the web layer runs.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sanic_ota.accounting import Kind, Outcome, RequestRecord
from sanic_ota.shared_file import SharedFile

logger = logging.getLogger("sanic_ota.stats")

HOURS = 24
MAX_FAILURES = 50
FLUSH_SECONDS = 2.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS downloads (
    hour INTEGER NOT NULL, version TEXT NOT NULL, file TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (hour, version, file));
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, time TEXT NOT NULL, kind TEXT NOT NULL,
    client TEXT NOT NULL, key TEXT, version TEXT, file TEXT, status INTEGER NOT NULL, reason TEXT NOT NULL);
"""
_FAILURE_COLUMNS = "at, time, kind, client, key, version, file, status, reason"


@dataclass(frozen=True)
class Failure:
    """A request that went wrong in a way an operator should see."""

    at: float  # Unix time, for order and pruning
    time: str  # as the audit log wrote it
    kind: str
    client: str
    key: str | None
    version: str | None
    file: str | None
    status: int
    reason: str  # ``RequestRecord.failure``: the outcome, or "auth: " and the auth failure


@dataclass(frozen=True)
class Snapshot:
    """What the status page shows: ``downloads[(version, file)]`` holds one count per
    hour, oldest first, the last being the current hour (``HOURS`` in all)."""

    hour: int  # the current hour, as Unix time // 3600
    downloads: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)  # newest first

    def per_release(self) -> dict[str, list[int]]:
        totals: dict[str, list[int]] = {}
        for (version, _), counts in self.downloads.items():
            row = totals.setdefault(version, [0] * HOURS)
            for i, n in enumerate(counts):
                row[i] += n
        return totals


def failure_of(record: RequestRecord) -> Failure | None:
    """The failure a closed ``record`` stands for, or None for a request that went as it should;
    listed at the time the request began, which its line shows."""
    reason = record.failure
    if reason is None:
        return None
    return Failure(record.at, record.time, str(record.kind), record.client, record.key, record.version, record.file,
                   record.status, reason)


class Stats:
    """One worker's view: counts in memory, flushed into the shared file (None: memory only)."""

    def __init__(self, path: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._file = SharedFile(path, _SCHEMA, "statistics file", logger) if path is not None else None
        self._counts: Counter[tuple[int, str, str]] = Counter()
        #: failed requests not flushed yet, in the order they were told
        self._failures: list[RequestRecord] = []
        self._buffer_lock = threading.Lock()  # held briefly, on the event loop too
        self._io_lock = threading.Lock()  # flush and read never interleave
        self._pruned_hour = 0  # the buffer holds no bucket older than this hour allows

    # -- recording (event loop, never blocks on I/O) ----------------------------

    def observe(self, group: Sequence[RequestRecord]) -> None:
        """Count closed requests that say the same (``Accountant.settle``'s groups): completed
        downloads, or failures, each listed with its own time.

        A failure is kept as its record and made into a ``Failure`` only when read or
        flushed: a flood of refusals (a fleet with a wrong token) is mostly never listed,
        the list keeping the newest ``MAX_FAILURES``, so no more of a group are kept.
        """
        record = group[-1]
        completed = record.kind == Kind.DOWNLOAD and record.outcome == Outcome.COMPLETED
        failed = not completed and record.failure is not None
        if not (completed or failed):
            return  # most requests: nothing to count here
        hour = int(self.clock() // 3600)
        with self._buffer_lock:
            if completed and record.version and record.file:
                self._counts[(hour, record.version, record.file)] += len(group)
            if failed:
                self._failures += group[-MAX_FAILURES:]
                del self._failures[:-MAX_FAILURES]
            if hour != self._pruned_hour:  # walk the buckets once an hour, not per request
                self._prune_buffer(hour)

    def _prune_buffer(self, hour: int) -> None:
        for bucket in [b for b in self._counts if b[0] <= hour - HOURS]:
            del self._counts[bucket]
        del self._failures[:-MAX_FAILURES]
        self._pruned_hour = hour

    # -- the shared file (worker threads) -----------------------------------------

    def flush(self) -> bool:
        """Add the buffered counts to the file; True if the buffer is now empty. Never raises."""
        if self._file is None:
            return False
        with self._io_lock:
            with self._buffer_lock:
                counts, failures = self._counts, self._failures
                self._counts, self._failures = Counter(), []
            if not counts and not failures:
                return True
            try:
                self._write(counts, _made(failures), int(self.clock() // 3600))
            except (sqlite3.Error, OSError) as e:
                with self._buffer_lock:  # keep them, in order, for the next try
                    self._counts.update(counts)
                    self._failures[:0] = failures
                    self._prune_buffer(int(self.clock() // 3600))
                self._file.trouble("cannot write", e)
                return False
            self._file.works()
            return True

    def _write(self, counts: Counter[tuple[int, str, str]], failures: list[Failure], hour: int) -> None:
        assert self._file is not None  # flush checked
        with closing(self._file.connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT INTO downloads VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (hour, version, file) DO UPDATE SET count = count + excluded.count",
                    [(*bucket, n) for bucket, n in counts.items()],
                )
                db.executemany(
                    f"INSERT INTO failures ({_FAILURE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(f.at, f.time, f.kind, f.client, f.key, f.version, f.file, f.status, f.reason)
                     for f in failures],
                )
                db.execute("DELETE FROM downloads WHERE hour <= ?", (hour - HOURS,))
                db.execute("DELETE FROM failures WHERE id NOT IN "
                           "(SELECT id FROM failures ORDER BY at DESC, id DESC LIMIT ?)", (MAX_FAILURES,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _read(self, hour: int) -> tuple[list[tuple[int, str, str, int]], list[Failure]]:
        if self._file is None or not self._file.path.exists():
            return [], []
        try:
            with closing(self._file.connect()) as db:
                db.execute("BEGIN")  # one consistent view of both tables
                rows = db.execute("SELECT hour, version, file, count FROM downloads WHERE hour > ?",
                                  (hour - HOURS,)).fetchall()
                failures = [Failure(*row) for row in db.execute(
                    f"SELECT {_FAILURE_COLUMNS} FROM failures ORDER BY at DESC, id DESC LIMIT ?",
                    (MAX_FAILURES,))]
                db.execute("COMMIT")
        except (sqlite3.Error, OSError) as e:
            self._file.trouble("cannot read", e)
            return [], []
        return rows, failures

    # -- reading ------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The file's counts plus this worker's unflushed ones. Blocking: run in a thread."""
        hour = int(self.clock() // 3600)
        with self._io_lock:
            rows, failures = self._read(hour)
            with self._buffer_lock:
                rows += [(*bucket, n) for bucket, n in self._counts.items()]
                failures += _made(self._failures)
        return Snapshot(hour, _hourly(rows, hour), sorted(failures, key=lambda f: -f.at)[:MAX_FAILURES])


def _made(pending: list[RequestRecord]) -> list[Failure]:
    return [failure for record in pending if (failure := failure_of(record)) is not None]


def _hourly(rows: Iterable[tuple[int, str, str, int]], hour: int) -> dict[tuple[str, str], list[int]]:
    downloads: dict[tuple[str, str], list[int]] = {}
    for bucket, version, file, count in rows:
        age = hour - bucket
        if 0 <= age < HOURS:
            downloads.setdefault((version, file), [0] * HOURS)[HOURS - 1 - age] += count
    return downloads


class Flushable(Protocol):
    def flush(self) -> bool: ...


async def flush_periodically(stats: Flushable, stop: asyncio.Event, every: float = FLUSH_SECONDS,
                             also: Callable[[], None] | None = None) -> None:
    """Flush every ``every`` seconds until ``stop`` is set, then once more.

    ``also`` runs on the event loop at each flush (the app's metrics).

    Sanic cancels background tasks on SIGTERM; ending is then the point, and the
    web layer flushes once more after the server stops.
    """
    try:
        while True:
            try:
                await asyncio.wait_for(stop.wait(), every)
            except TimeoutError:
                pass
            stopping = stop.is_set()  # seen before this flush: it is the last, and has all
            if also is not None:
                also()
            await asyncio.to_thread(stats.flush)
            if stopping:
                return
    except asyncio.CancelledError:
        return
