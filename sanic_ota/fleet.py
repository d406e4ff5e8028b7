"""The fleet view: per key and channel, what was offered and downloaded, shared by workers.

Counts, not rows per request: one row per (key, channel, release, event), one per
(key, channel) for when it was last seen, failures counted per reason, and the
distinct client addresses of a (key, channel) up to ``MAX_ADDRESSES`` (beyond that the
view says "at least"). Addresses are kept as a hash, never as text. So memory and
the file grow with keys, channels and releases, never with requests or devices.

Rollouts need one more thing from here: which callers a rollout was offered to, so
that a halted rollout keeps offering its release to them (and to nobody new). That
is a set of hashes (``channels.caller_id``), at most ``MAX_REMEMBERED``: when it is
full the oldest offers are forgotten first (rollouts long done), and a caller whose
offer was forgotten gets the channel's base after a halt (the README says so).

Like ``stats`` (whose SQLite file this shares, ``Settings.stats_path``): each worker
counts in memory and ``flush`` adds its counts to the file in one transaction every
few seconds, then reads back the offers every worker remembered. A reader sees the
file plus its own unflushed counts. Every SQLite or OS error is logged once per run
of failures, and the counts stay in memory, bounded, until the file works again.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from sanic_ota.accounting import Kind, Outcome, RequestRecord
from sanic_ota.channels import utc_text
from sanic_ota.shared_file import SharedFile

logger = logging.getLogger("sanic_ota.fleet")

#: Distinct addresses counted per (key, channel); more are "at least" this many.
MAX_ADDRESSES = 10_000
#: Callers remembered as offered a rollout (32 hex characters each, ~5 MB at most).
MAX_REMEMBERED = 100_000
OFFERED, DOWNLOADED = "offered", "downloaded"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fleet_counts (
    key TEXT NOT NULL, channel TEXT NOT NULL, version TEXT NOT NULL, event TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (key, channel, version, event));
CREATE TABLE IF NOT EXISTS fleet_seen (
    key TEXT NOT NULL, channel TEXT NOT NULL, last REAL NOT NULL, PRIMARY KEY (key, channel));
CREATE TABLE IF NOT EXISTS fleet_addresses (
    key TEXT NOT NULL, channel TEXT NOT NULL, address TEXT NOT NULL, PRIMARY KEY (key, channel, address));
CREATE TABLE IF NOT EXISTS fleet_failures (
    key TEXT NOT NULL, channel TEXT NOT NULL, reason TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (key, channel, reason));
CREATE TABLE IF NOT EXISTS rollout_offers (caller TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS rollout_offers_at ON rollout_offers (at);
"""

Pair = tuple[str, str]  # (key, channel)


@functools.lru_cache(maxsize=4096)
def address_hash(address: str) -> str:
    """A short digest of a client address: the view counts distinct ones without keeping them.
    Kept for the addresses seen last: a fleet asks again and again from the same ones."""
    return hashlib.sha256(address.encode("utf-8", "surrogateescape")).hexdigest()[:16]


@dataclass
class Group:
    """One key on one channel, as the view shows it."""

    key: str
    channel: str
    offered: dict[str, int] = field(default_factory=dict)  # by release
    downloaded: dict[str, int] = field(default_factory=dict)
    last_seen: float = 0.0
    addresses: int = 0
    addresses_capped: bool = False
    failures: dict[str, int] = field(default_factory=dict)  # by reason

    def to_dict(self) -> dict[str, object]:
        return {"key": self.key, "channel": self.channel, "offered": self.offered, "downloaded": self.downloaded,
                "last_seen": utc_text(self.last_seen) if self.last_seen else None,
                "addresses": self.addresses, "addresses_at_least": self.addresses_capped,
                "failures": self.failures}


@dataclass
class _Buffer:
    counts: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    seen: dict[Pair, float] = field(default_factory=dict)
    addresses: dict[Pair, set[str]] = field(default_factory=dict)
    failures: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    offers: dict[str, float] = field(default_factory=dict)  # caller id: when offered

    def __bool__(self) -> bool:
        return bool(self.counts or self.seen or self.addresses or self.failures or self.offers)

    def add(self, other: _Buffer) -> None:
        self.counts.update(other.counts)
        for pair, at in other.seen.items():
            self.seen[pair] = max(at, self.seen.get(pair, 0.0))
        for pair, found in other.addresses.items():
            mine = self.addresses.setdefault(pair, set())
            mine |= set(list(found)[: max(0, MAX_ADDRESSES - len(mine))])
        self.failures.update(other.failures)
        for caller, at in other.offers.items():
            if len(self.offers) < MAX_REMEMBERED:
                self.offers.setdefault(caller, at)


class Fleet:
    """One worker's fleet counts, flushed into the shared file (None: memory only)."""

    def __init__(self, path: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._file = SharedFile(path, _SCHEMA, "fleet counts in", logger) if path is not None else None
        self._buffer = _Buffer()
        #: callers offered a rollout, by any worker, as of the last flush, plus this worker's since
        self._remembered: set[str] = set()
        self._buffer_lock = threading.Lock()
        self._io_lock = threading.Lock()

    # -- recording (event loop, never blocks on I/O) --------------------------------

    def _touch(self, buffer: _Buffer, pair: Pair, clients: Iterable[str]) -> None:
        buffer.seen[pair] = self.clock()
        found = buffer.addresses.get(pair)
        if found is None:
            found = buffer.addresses[pair] = set()
        for client in clients:
            if len(found) >= MAX_ADDRESSES:
                break
            found.add(address_hash(client))

    def offered(self, key: str, channel: str, version: str, client: str) -> None:
        """``client`` was offered ``version`` other than by a version query (a signed URL
        minted for a device); a version query's offer is counted from its record (``observe``)."""
        with self._buffer_lock:
            self._buffer.counts[(key, channel, version, OFFERED)] += 1
            self._touch(self._buffer, (key, channel), (client,))

    def remember(self, remembered: str) -> None:
        """A rollout was offered to the caller whose id (``channels.caller_id``) is ``remembered``.

        At once, not with the counts: the caller's next version query, maybe a moment
        later, must find it (``was_offered``) if the rollout halts.
        """
        if remembered in self._remembered:
            return
        with self._buffer_lock:
            if len(self._buffer.offers) < MAX_REMEMBERED:
                self._remembered.add(remembered)
                self._buffer.offers[remembered] = self.clock()

    def was_offered(self, remembered: str) -> bool:
        return remembered in self._remembered

    def observe(self, record: RequestRecord, n: int = 1, clients: Iterable[str] = ()) -> None:
        """A closed request of a known key: what a version query offered, a completed
        download, a failure, when it was seen.

        Or ``n`` requests that said the same but for their client addresses, ``clients``
        (by default the record's own).
        """
        key, channel = record.key, record.channel
        if key is None or channel is None:
            return
        with self._buffer_lock:
            buffer = self._buffer
            if record.offered is not None:
                buffer.counts[(key, channel, record.offered, OFFERED)] += n
            if record.kind == Kind.DOWNLOAD and record.outcome == Outcome.COMPLETED and record.version:
                buffer.counts[(key, channel, record.version, DOWNLOADED)] += n
            reason = record.failure
            if reason is not None:
                buffer.failures[(key, channel, reason)] += n
            self._touch(buffer, (key, channel), clients or (record.client,))

    # -- the shared file (worker threads) --------------------------------------------

    def flush(self) -> bool:
        """Add the buffered counts to the file and read back every worker's offers. Never raises."""
        if self._file is None:
            return False
        with self._io_lock:
            with self._buffer_lock:
                buffer, self._buffer = self._buffer, _Buffer()
            try:
                remembered = self._write(buffer)
            except (sqlite3.Error, OSError) as e:
                with self._buffer_lock:
                    buffer.add(self._buffer)
                    self._buffer = buffer
                self._file.trouble("cannot write", e)
                return False
            with self._buffer_lock:
                self._remembered = remembered | set(self._buffer.offers)
            self._file.works()
            return True

    def _write(self, buffer: _Buffer) -> set[str]:
        """Add ``buffer`` (if anything is in it) in one write transaction, then read every
        worker's rollout offers outside it: the write lock is held only while writing."""
        assert self._file is not None  # flush checked
        with closing(self._file.connect()) as db:
            if buffer:
                self._add(db, buffer)
            return {row[0] for row in db.execute("SELECT caller FROM rollout_offers")}

    @staticmethod
    def _add(db: sqlite3.Connection, buffer: _Buffer) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO fleet_counts VALUES (?, ?, ?, ?, ?) ON CONFLICT (key, channel, version, event) "
                "DO UPDATE SET count = count + excluded.count",
                [(*k, n) for k, n in buffer.counts.items()])
            db.executemany(
                "INSERT INTO fleet_seen VALUES (?, ?, ?) ON CONFLICT (key, channel) "
                "DO UPDATE SET last = max(last, excluded.last)",
                [(*pair, at) for pair, at in buffer.seen.items()])
            for (key, channel), found in buffer.addresses.items():
                (have,) = db.execute("SELECT count(*) FROM fleet_addresses WHERE key = ? AND channel = ?",
                                     (key, channel)).fetchone()
                db.executemany("INSERT OR IGNORE INTO fleet_addresses VALUES (?, ?, ?)",
                               [(key, channel, a) for a in sorted(found)[: max(0, MAX_ADDRESSES - have)]])
            db.executemany(
                "INSERT INTO fleet_failures VALUES (?, ?, ?, ?) ON CONFLICT (key, channel, reason) "
                "DO UPDATE SET count = count + excluded.count",
                [(*k, n) for k, n in buffer.failures.items()])
            db.executemany("INSERT OR IGNORE INTO rollout_offers VALUES (?, ?)", buffer.offers.items())
            (have,) = db.execute("SELECT count(*) FROM rollout_offers").fetchone()
            if have > MAX_REMEMBERED:  # the oldest offers go first: rollouts long done
                db.execute("DELETE FROM rollout_offers WHERE caller IN "
                           "(SELECT caller FROM rollout_offers ORDER BY at, caller LIMIT ?)",
                           (have - MAX_REMEMBERED,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- reading ------------------------------------------------------------------------

    def snapshot(self) -> list[Group]:
        """Every (key, channel) seen: the file plus this worker's unflushed counts. Blocking."""
        groups: dict[Pair, Group] = {}
        addresses: dict[Pair, int] = {}

        def group(key: str, channel: str) -> Group:
            return groups.setdefault((key, channel), Group(key, channel))

        with self._io_lock:
            with self._buffer_lock:
                buffer = self._buffer
                counts = list(buffer.counts.items())
                seen = list(buffer.seen.items())
                failures = list(buffer.failures.items())
                mine = {pair: set(found) for pair, found in buffer.addresses.items()}
            rows, known = self._read(mine)
        for (key, channel, version, event), n in [((k, c, v, e), n) for k, c, v, e, n in rows[0]] + counts:
            target = group(key, channel).offered if event == OFFERED else group(key, channel).downloaded
            target[version] = target.get(version, 0) + n
        for (key, channel), at in [((k, c), at) for k, c, at in rows[1]] + seen:
            g = group(key, channel)
            g.last_seen = max(g.last_seen, at)
        for key, channel, stored in rows[2]:
            addresses[(key, channel)] = stored
        for pair, found in mine.items():
            addresses[pair] = addresses.get(pair, 0) + len(found - known.get(pair, set()))
        for (key, channel), n in addresses.items():
            g = group(key, channel)
            g.addresses = min(n, MAX_ADDRESSES)
            g.addresses_capped = n >= MAX_ADDRESSES
        for (key, channel, reason), n in [((k, c, r), n) for k, c, r, n in rows[3]] + failures:
            g = group(key, channel)
            g.failures[reason] = g.failures.get(reason, 0) + n
        return [groups[pair] for pair in sorted(groups)]

    def _read(self, mine: dict[Pair, set[str]]) -> tuple[_Rows, dict[Pair, set[str]]]:
        """The file's counts, with distinct addresses counted in SQL, and which of this
        worker's unflushed addresses the file already has (so none counts twice)."""
        if self._file is None or not self._file.path.exists():
            return ([], [], [], []), {}
        known: dict[Pair, set[str]] = {}
        try:
            with closing(self._file.connect()) as db:
                db.execute("BEGIN")
                found: _Rows = (
                    db.execute("SELECT key, channel, version, event, count FROM fleet_counts").fetchall(),
                    db.execute("SELECT key, channel, last FROM fleet_seen").fetchall(),
                    db.execute("SELECT key, channel, count(*) FROM fleet_addresses GROUP BY key, channel").fetchall(),
                    db.execute("SELECT key, channel, reason, count FROM fleet_failures").fetchall())
                for (key, channel), hashes in mine.items():
                    ordered = sorted(hashes)
                    for start in range(0, len(ordered), 500):
                        part = ordered[start:start + 500]
                        known.setdefault((key, channel), set()).update(row[0] for row in db.execute(
                            f"SELECT address FROM fleet_addresses WHERE key = ? AND channel = ? "
                            f"AND address IN ({', '.join('?' * len(part))})", (key, channel, *part)))
                db.execute("COMMIT")
        except (sqlite3.Error, OSError) as e:
            self._file.trouble("cannot read", e)
            return ([], [], [], []), {}
        return found, known


_Rows = tuple[list[tuple[str, str, str, str, int]], list[tuple[str, str, float]],
              list[tuple[str, str, int]], list[tuple[str, str, str, int]]]
