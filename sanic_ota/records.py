"""What this server remembers between index builds, and the lock its writers share.

Beside the manifests, in the server's own directory (``Settings.state_dir``):
- ``.serials.json``: the highest manifest serial seen per release. A manifest older
  than that is a replay and is refused (offline) or replaced (signing here).
- ``.identities.json``: what each release file was when last hashed (``identities``),
  so that a restart need not hash it again.
- ``.lock``: held by whichever worker (or ``sanic-ota-manifest``) writes manifests or
  these records, so that they never write at the same time.

These are the server's local state, not the store's: rollback protection only works
if whoever can write the releases cannot also reset the serials the server has seen
(python-tuf's clients keep their trusted metadata locally for the same reason), and
identities describe files as this machine saw them. So they stay on the server's own
disk whatever store the releases come from.

``Batch`` is one build's view of them: read once, changed in memory, written once
at the build's end (per release, 5,000 releases took minutes).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from sanic_ota import identities
from sanic_ota.files import locked, write_atomic
from sanic_ota.identities import IDENTITIES_FILE, Hashed

logger = logging.getLogger("sanic_ota.records")

SERIALS_FILE = ".serials.json"
LOCK_FILE = ".lock"


class Records:
    """The records files in one directory: read, written atomically, and the writers' lock."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def read_serials(self) -> dict[str, int]:
        """Highest serial seen per release; a record that cannot be read counts as empty."""
        try:
            data = json.loads((self.directory / SERIALS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, int) and not isinstance(v, bool)}

    def write_serials(self, serials: Mapping[str, int]) -> None:
        try:
            write_atomic(self.directory / SERIALS_FILE, json.dumps(serials, indent=1).encode())
        except OSError as e:  # offline mode may run with a read-only manifests/
            logger.warning("cannot record serials in %s: %s", self.directory, e.strerror)

    def read_hashed(self) -> identities.Records:
        try:
            return identities.parse((self.directory / IDENTITIES_FILE).read_bytes())
        except OSError:
            return {}

    def write_hashed(self, hashed: identities.Records) -> None:
        try:
            write_atomic(self.directory / IDENTITIES_FILE, identities.encode(hashed))
        except OSError as e:  # only costs hashing again at the next start
            logger.warning("cannot record file identities in %s: %s", self.directory, e.strerror)

    def writable(self) -> bool:
        return os.access(self.directory, os.W_OK)

    @contextmanager
    def lock(self, needed: bool = True) -> Iterator[None]:
        """The writers' lock; none when not ``needed`` (a read-only directory, nothing to guard)."""
        with locked(self.directory / LOCK_FILE) if needed else nullcontext():
            yield


@dataclass
class Batch:
    """What one build reads once and writes once, what it changed, and what it did."""

    serials: dict[str, int]  # highest serial seen per release, on disk or in this batch
    hashed: identities.Records  # file identities as last hashed, on disk or in this batch
    stack: ExitStack  # holds the lock once taken
    locked: bool = False
    raised: set[str] = field(default_factory=set)  # releases whose highest serial this batch raised
    changes: dict[str, dict[str, Hashed] | None] = field(default_factory=dict)  # None: forgotten
    written: list[str] = field(default_factory=list)  # releases whose manifest was written, made durable at the end
    unchanged: int = 0  # releases taken as they were, no file read
    files_hashed: int = 0

    @property
    def dirty(self) -> bool:
        """Whether the records on disk need writing."""
        return bool(self.raised or self.changes)

    def saw_serial(self, version: str, serial: int) -> None:
        if serial > self.serials.get(version, 0):
            self.serials[version] = serial
            self.raised.add(version)

    def record(self, version: str, files: dict[str, Hashed] | None) -> None:
        """The identities of a release's files as just hashed (None: nothing to trust)."""
        files = files or None
        if self.hashed.get(version) != files:
            self.changes[version] = files
            if files:
                self.hashed[version] = files
            else:
                self.hashed.pop(version, None)

    def keep_only(self, versions: set[str]) -> None:
        """Forget the identities of releases no longer present."""
        for version in self.hashed.keys() - versions:
            self.record(version, None)

    def merge(self, serials: Mapping[str, int], hashed: identities.Records) -> None:
        """Take in records another writer made, keeping this batch's own changes."""
        for version, serial in serials.items():
            self.serials[version] = max(serial, self.serials.get(version, 0))
        self.hashed = dict(hashed)
        for version, files in self.changes.items():
            if files:
                self.hashed[version] = files
            else:
                self.hashed.pop(version, None)
