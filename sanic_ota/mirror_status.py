"""What a replica's mirror last saw of its store, shared by every worker through one file.

Only the worker that holds the mirror's lock talks to the bucket (``mirror``); it
writes ``<cache>/.store-status.json`` atomically after every poll. Every worker reads
that file for ``/status``, ``/metrics`` and the version query's answer while nothing is
mirrored yet, through a ``StatusReader`` that reads it at most once a second.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sanic_ota.files import write_atomic

STATUS_FILE = ".store-status.json"
#: Releases left out of a full cache that a device asked for: one empty file each,
#: touched at every request, so the mirror fetches them back (see ``want``).
WANTED_DIR = ".wanted"
#: How long a release fetched back on demand is held after the last request for it.
WANTED_SECONDS = 3600.0
#: The status before the mirror's first listing.
NOT_LISTED = "not listed yet"
#: How long a worker keeps the status it read before reading the file again.
READ_EVERY_SECONDS = 1.0
#: Far above any real status file (a line per failing object), far below memory trouble.
STATUS_LIMIT = 4 * 1024 * 1024


@dataclass
class StoreStatus:
    """The store as the mirror last saw it. Times are seconds since the epoch."""

    store: str
    up: bool = False
    #: why the store is down (no secret, no signature: ``store.s3.classify``'s words)
    message: str = NOT_LISTED
    #: the last listing that succeeded and was acted on; None: never since start
    last_sync: float | None = None
    #: release → object (``manifest`` or a file name) → why it is not (yet) mirrored
    failures: dict[str, dict[str, str]] = field(default_factory=dict)
    #: releases in the bucket this replica does not hold: over SANIC_OTA_CACHE_DIR_BYTES
    left_out: list[str] = field(default_factory=list)
    #: releases the cache holds, as mirrored (verified or not: the index decides)
    mirrored: list[str] = field(default_factory=list)

    @property
    def synced(self) -> bool:
        """Up, and listed at least once: an empty index then means an empty bucket."""
        return self.up and self.last_sync is not None

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> StoreStatus | None:
        """The status a file holds; None for anything that is not one (never raises)."""
        try:
            raw = json.loads(data)
            status = cls(
                store=str(raw["store"]), up=bool(raw["up"]), message=str(raw["message"]),
                last_sync=None if raw["last_sync"] is None else float(raw["last_sync"]),
                failures={str(v): {str(o): str(r) for o, r in objects.items()}
                          for v, objects in raw["failures"].items()},
                left_out=[str(v) for v in raw["left_out"]], mirrored=[str(v) for v in raw["mirrored"]],
            )
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return None
        return status


def write_status(cache_dir: Path, status: StoreStatus) -> None:
    """Replace the status file atomically; it is rewritten every poll, so not fsynced."""
    write_atomic(Path(cache_dir) / STATUS_FILE, status.to_bytes(), durable=False)


def read_status(cache_dir: Path) -> StoreStatus | None:
    """The status file's content; None when there is none yet or it cannot be read."""
    try:
        with open(Path(cache_dir) / STATUS_FILE, "rb") as f:
            data = f.read(STATUS_LIMIT + 1)
    except OSError:
        return None
    return None if len(data) > STATUS_LIMIT else StoreStatus.from_bytes(data)


def want(cache_dir: Path, version: str) -> None:
    """Ask the mirror (in whichever worker holds it) for a release left out of the cache.

    ``version`` must be one the status lists as left out: a name from the bucket, so
    requests cannot make more files here than the bucket has releases.
    """
    directory = Path(cache_dir) / WANTED_DIR
    directory.mkdir(exist_ok=True)
    (directory / version).touch()


def wanted(cache_dir: Path, now: float, hold: float = WANTED_SECONDS) -> set[str]:
    """Releases asked for within ``hold`` seconds of ``now`` (wall clock); older requests are forgotten."""
    directory = Path(cache_dir) / WANTED_DIR
    found: set[str] = set()
    try:
        names = os.listdir(directory)
    except OSError:
        return found
    for name in names:
        try:
            if now - os.stat(directory / name).st_mtime <= hold:
                found.add(name)
            else:
                os.unlink(directory / name)
        except OSError:
            continue
    return found


class StatusReader:
    """A worker's view of the status file, read again at most every ``READ_EVERY_SECONDS``.

    Before the mirror wrote one, the status is "not listed yet" for ``store``.
    """

    def __init__(self, cache_dir: Path, store: str, every: float = READ_EVERY_SECONDS) -> None:
        self.cache_dir, self.store, self.every = Path(cache_dir), store, every
        self._read_at = -float("inf")
        self._status = StoreStatus(store)

    def read(self) -> StoreStatus:
        now = time.monotonic()
        if now - self._read_at >= self.every:
            self._read_at = now
            self._status = read_status(self.cache_dir) or StoreStatus(self.store)
        return self._status
