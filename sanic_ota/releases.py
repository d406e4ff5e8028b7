"""The release index: which releases may be served, each with its checked manifest.

``Indexer`` reads ``partitions/`` and ``manifests/`` (only through ``containment``,
so no symlink or hard link can make it read, sign or serve a file from elsewhere)
and produces an ``Index``, an immutable snapshot the web layer swaps in whole, so a
request never sees half of a re-index. In server-signs mode the indexer writes a new manifest (serial + 1) when
a release's files changed; in offline mode it only verifies what was copied in.

Writes happen under an exclusive lock on ``manifests/.lock``, taken at a build's
first write and held to its end, so several workers (or a worker and
``tools/build_manifest.py``) never write at the same time, and a manifest is
written once: the second worker finds it already up to date, and takes the files
the first one hashed as they are (see ``identities``). Reading needs no lock
(every file is replaced by a rename), so workers restarting with nothing to write
never wait for each other. The records beside the manifests (highest serial seen
per release, file identities) are read once and written once per build, and the
manifests it signed are flushed to disk together at its end: once per release,
5,000 releases took minutes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sanic_ota import identities
from sanic_ota import manifest as manifests
from sanic_ota.containment import ReleaseTree
from sanic_ota.errors import (
    ContainmentError,
    IntegrityError,
    ManifestError,
    NotFound,
    OtaError,
    Unavailable,
)
from sanic_ota.files import locked, make_durable, write_atomic
from sanic_ota.identities import IDENTITIES_FILE, Hashed, Records
from sanic_ota.manifest import FileEntry, Manifest
from sanic_ota.settings import Settings
from sanic_ota.signing import Signer, Verifier
from sanic_ota.versions import check_name, is_plain_name, is_version, newest, newest_first

logger = logging.getLogger("sanic_ota.releases")

SERIALS_FILE = ".serials.json"

#: Told ("signed" | "failed", release) as the indexer works, for metrics.
EventHook = Callable[[str, str], None]
LOCK_FILE = ".lock"


def is_release_file(name: str) -> bool:
    """Files that belong in a manifest: ``<partition>.bin``, never temp or hidden ones."""
    return name.endswith(".bin") and is_plain_name(name)


@dataclass(frozen=True)
class Release:
    version: str
    manifest: Manifest
    document: bytes  # the manifest file, byte for byte, as auditors fetch it

    @property
    def document_sha256(self) -> str:
        return hashlib.sha256(self.document).hexdigest()


@dataclass(frozen=True)
class Index:
    """One consistent view of what is served; replaced whole, never edited."""

    releases: Mapping[str, Release] = field(default_factory=dict)
    problems: Mapping[str, str] = field(default_factory=dict)
    pinned: str | None = None
    #: every release directory found on disk, servable or not; always holds
    #: ``releases`` and ``problems``, and may hold directories not indexed yet
    present: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        present = frozenset(self.present) | self.releases.keys() | self.problems.keys()
        object.__setattr__(self, "present", present)

    @cached_property
    def _newest_first(self) -> tuple[str, ...]:
        return tuple(newest_first(self.releases))  # the index never changes: sort once

    def versions(self) -> list[str]:
        """Servable releases, versions newest first, then names that are not versions."""
        return list(self._newest_first)

    @cached_property
    def unversioned(self) -> tuple[str, ...]:
        """Directories present whose names are not versions: never offered as the newest."""
        return tuple(sorted(name for name in self.present if not is_version(name)))

    @cached_property
    def listed(self) -> tuple[str, ...]:
        """What ``AT+CIPFWVER?`` lists: every version present, servable or not, newest first,
        then servable names that are not versions; so its first entry is never older than
        what the version query treats as newest."""
        return tuple(newest_first({v for v in self.present if is_version(v)} | self.releases.keys()))

    def release(self, version: str) -> Release:
        try:
            return self.releases[version]
        except KeyError:
            if version in self.present:  # why is in the log and /status, not in a device's answer
                raise Unavailable(f"release {version} is not servable; the server log and /status say why") from None
            raise NotFound(f"no release {version}") from None

    def latest(self) -> Release:
        """What plain ``AT+CIUPDATE`` installs: the pinned release, else the newest present.

        Never an older release in place of a newer one that is present but not servable
        (being copied, truncated, unsigned for a full disk): a module already on the
        newer one would install the older one. Such a moment answers 503 instead.
        """
        if self.pinned == "":  # a LATEST that cannot be used; the log says why, never its text
            raise Unavailable("the pin in LATEST cannot be used; fix or remove it")
        if self.pinned is not None:
            if self.pinned not in self.releases:
                raise Unavailable(
                    f"LATEST pins release {self.pinned}, which is not servable; "
                    "fix the pin or the release"
                )
            return self.releases[self.pinned]
        candidates = self._newest
        if not candidates and self.unversioned:
            raise NotFound("no release has a version name; the others are downloadable by name only")
        if not candidates:
            raise NotFound("no release is available")
        if len(candidates) > 1:
            raise Unavailable(f"releases {' and '.join(candidates)} are the same version; "
                              "the newest is ambiguous until one is removed")
        version = candidates[0]
        if version not in self.releases:
            raise Unavailable(f"the newest release, {version}, is not servable now; "
                              "no older release is offered in its place")
        return self.releases[version]

    @cached_property
    def _newest(self) -> list[str]:
        return newest(self.present)


class Indexer:
    """Reads releases from disk into checked ``Release`` objects."""

    def __init__(
        self, settings: Settings, verifier: Verifier, signer: Signer | None, events: EventHook | None = None
    ) -> None:
        self.events = events or (lambda result, version: None)
        self.partitions = Path(settings.partitions_dir)
        self.manifests = Path(settings.manifests_dir)
        self.latest_file = settings.latest_file
        self.tree = ReleaseTree(self.partitions, self.manifests)
        self.verifier = verifier
        self.signer = signer
        #: releases whose last failure was an OSError (full disk, I/O error): the watcher
        #: retries them on a timer; other failures wait for the files to change
        self.transient: set[str] = set()

    # -- whole index -------------------------------------------------------------

    def scan(self) -> set[str]:
        """Release directories present now: real directories with plain names.

        ``.v2.tmp`` is not one, and neither is a symlink (``ReleaseTree.versions`` logs it).
        """
        return self.tree.versions()

    def build(self, previous: Index | None = None, versions: Iterable[str] | None = None) -> Index:
        """A new index: ``versions`` re-read (all if None), the rest kept from ``previous``."""
        started = time.monotonic()
        with self._batch() as batch:
            index = self._build(previous, versions, batch)
        if index.unversioned and (previous is None or previous.unversioned != index.unversioned):
            logger.warning("not offered as the newest release, since their names are not versions "
                           "(still downloadable by name): %s", ", ".join(index.unversioned))
        if previous is None:  # the start: what it cost, and why
            logger.info("indexed %d release(s) in %.2f s: %d unchanged since last hashed, %d file(s) hashed, "
                        "%d manifest(s) signed", len(index.present), time.monotonic() - started,
                        batch.unchanged, batch.files_hashed, len(batch.written))
        return index

    def _build(self, previous: Index | None, versions: Iterable[str] | None, batch: _Batch) -> Index:
        on_disk = self.scan()
        batch.keep_only(on_disk)
        todo = on_disk if versions is None or previous is None else set(versions) & on_disk
        releases = {v: r for v, r in (previous.releases if previous else {}).items() if v in on_disk}
        problems = {v: p for v, p in (previous.problems if previous else {}).items() if v in on_disk}
        for version in sorted(todo):
            releases.pop(version, None)
            problems.pop(version, None)
            try:
                releases[version] = self._index_release(version, batch)
            except (OtaError, OSError) as e:  # OSError: a full disk or an unwritable manifests/
                problems[version] = e.message if isinstance(e, OtaError) else f"{e.strerror}: {e.filename}"
                self.events("failed", version)
                logger.error("release %s is NOT served: %s", version, problems[version])
                if isinstance(e, OSError) or isinstance(e.__cause__, OSError):
                    self.transient.add(version)
            else:
                self.transient.discard(version)
        self.transient &= on_disk
        return Index(releases=releases, problems=problems, pinned=self.read_pin(), present=frozenset(on_disk))

    def read_pin(self) -> str | None:
        """The pinned version, None without a pin, ``""`` for a pin that cannot be used.

        ``""`` names no release, so the version query fails closed (503) rather than
        guess. The log says why, never with the pin's text: only a plain version
        name is ever repeated.
        """
        try:
            return self.tree.read_pin()
        except ContainmentError as e:
            logger.error("pin refused, plain AT+CIUPDATE gets 503 until it is fixed: %s", e.message)
        except OSError as e:
            logger.error("cannot read %s: %s; plain AT+CIUPDATE gets 503 until it is fixed",
                         self.latest_file, e.strerror)
        return ""

    # -- one release -------------------------------------------------------------

    def index_release(self, version: str) -> Release:
        """Index one release on its own (``tools/build_manifest.py``); raises if it is refused."""
        with self._batch() as batch:
            return self._index_release(version, batch)

    def _index_release(self, version: str, batch: _Batch) -> Release:
        check_name(version, "release name")
        highest = batch.serials.get(version, 0)
        existing = self._load_manifest(version, highest)
        files = self._unchanged_files(version, existing, batch)
        if files is None:
            files = self._hash_files(version, batch)
        if not files:
            raise ManifestError(f"partitions/{version}/ holds no .bin file")
        if self.signer is not None:
            if existing is None or not existing.manifest.same_files(files):
                if self._lock_for_writing(batch):  # another worker may have signed it while this one hashed
                    highest = batch.serials.get(version, 0)
                    existing = self._load_manifest(version, highest)
            release = self._signed_release(version, files, existing, highest, batch)
        else:
            release = self._verified_release(version, files, existing)
        batch.saw_serial(version, release.manifest.serial)
        return release

    def _unchanged_files(self, version: str, existing: Release | None, batch: _Batch) -> dict[str, FileEntry] | None:
        """The release's files as its manifest lists them, if none changed since they were hashed.

        None (hash them) unless every ``.bin`` of the release still has the identity
        recorded when it was hashed, no file came or went, and the manifest on disk
        agrees with the recorded hashes. Reads no file; ``stat``s each once.
        """
        known = batch.hashed.get(version)
        if existing is None or not known:
            return None
        directory = self.partitions / version
        try:
            names = [name for name in os.listdir(directory) if is_release_file(name)]
        except OSError:
            return None
        found = identities.stat_files(directory, names) if set(names) == known.keys() else None
        if found is None or any(found[name] != known[name].identity for name in names):
            return None
        recorded = {name: FileEntry(known[name].length, known[name].sha256) for name in names}
        if self.signer is not None and not existing.manifest.same_files(recorded):
            return None
        if self.signer is None and existing.manifest.mismatches(recorded):
            return None
        batch.unchanged += 1
        return {name: existing.manifest.files.get(name, entry) for name, entry in recorded.items()}

    def _hash_files(self, version: str, batch: _Batch) -> dict[str, FileEntry]:
        """``describe_files``, recording each file's identity if it did not change meanwhile."""
        directory = self.partitions / version
        try:
            before = identities.stat_files(directory, [n for n in os.listdir(directory) if is_release_file(n)])
        except OSError:
            before = None
        files = self.describe_files(version)
        batch.files_hashed += len(files)
        after = identities.stat_files(directory, files)
        now = time.time_ns()
        if after is None or after != before or not all(identities.settled(i, now) for i in after.values()):
            batch.record(version, None)  # changed while read, or too recently: hash it again next time
        else:
            batch.record(version, {name: Hashed(after[name], files[name].sha256) for name in files})
        return files

    def describe_files(self, version: str) -> dict[str, FileEntry]:
        """Hash and inspect every ``.bin`` of a release; raises if one would be rejected."""
        entries: dict[str, FileEntry] = {}
        try:
            with self.tree.release(version) as release:
                for name in release.names():
                    if not is_release_file(name):
                        continue
                    try:
                        data = release.read(name)  # refuses symlinks, hard links, non-regular files
                    except OSError as e:
                        raise IntegrityError(f"cannot read {name}: {e.strerror}") from e
                    entries[name] = FileEntry.describe(name, data)
        except OSError as e:
            raise NotFound(f"cannot list partitions/{version}/: {e.strerror}") from e
        return entries

    def _load_manifest(self, version: str, highest: int) -> Release | None:
        """The manifest on disk if it verifies, None if absent; raises if it is bad."""
        path = self.manifest_path(version)
        try:
            document = self.tree.read_manifest(version)  # never through a symlink
            if document is None:
                return None
            manifest = manifests.verify(document, self.verifier, version)
            if manifest.serial < highest:
                raise ManifestError(
                    f"manifest serial {manifest.serial} is older than serial {highest} "
                    "already seen for this release (replayed manifest?)"
                )
        except OSError as e:
            raise ManifestError(f"cannot read {path}: {e.strerror}") from e
        except (ManifestError, ContainmentError) as e:  # a symlink or a directory is no manifest either
            if self.signer is None:
                raise
            logger.warning("replacing manifest of %s: %s", version, e.message)
            return None
        return Release(version, manifest, document)

    def _signed_release(
        self, version: str, files: dict[str, FileEntry], existing: Release | None, highest: int, batch: _Batch
    ) -> Release:
        assert self.signer is not None
        if existing is not None and existing.manifest.same_files(files):
            return existing
        serial = max(highest, existing.manifest.serial if existing else 0) + 1
        manifest = Manifest(version=version, serial=serial, created=manifests.utc_now(), files=files)
        document = manifests.sign(manifest, self.signer)
        self.manifests.mkdir(parents=True, exist_ok=True)
        write_atomic(self.manifest_path(version), document, durable=False)
        batch.written.append(self.manifest_path(version))  # flushed together when the batch ends
        self.events("signed", version)
        logger.info("signed manifest for %s (serial %d, %d files)", version, serial, len(files))
        return Release(version, manifest, document)

    def _verified_release(
        self, version: str, files: dict[str, FileEntry], existing: Release | None
    ) -> Release:
        if existing is None:
            raise ManifestError(
                f"no manifest {self.manifest_path(version)}; sign one with "
                f"`make manifest VERSION={version}` where the private key lives"
            )
        problems = existing.manifest.mismatches(files)
        if problems:
            raise IntegrityError("; ".join(problems))
        for name in existing.manifest.unlisted(files):
            logger.warning("%s/%s is not in the manifest and will not be served", version, name)
        return existing

    # -- files under manifests/ ----------------------------------------------------

    def manifest_path(self, version: str) -> Path:
        return self.manifests / f"{version}.json"

    @contextmanager
    def _batch(self) -> Iterator[_Batch]:
        """The records a build reads once and writes once (at its end, under the lock)."""
        with ExitStack() as stack:
            batch = _Batch(self._read_serials(), self._read_hashed(), stack)
            try:
                yield batch
            finally:
                self._save(batch)

    def _lock_for_writing(self, batch: _Batch) -> bool:
        """Hold the lock from now to the end of ``batch``; True if it was taken just now.

        Then the batch takes in what another writer recorded since it read the records.
        """
        if batch.locked:
            return False
        batch.stack.enter_context(self._lock())
        batch.locked = True
        batch.merge(self._read_serials(), self._read_hashed())
        return True

    def _save(self, batch: _Batch) -> None:
        """Flush the manifests written, then the records; all before the lock is released,
        so nothing signed is served or read by another worker before it is on disk."""
        try:
            make_durable(batch.written)
        except OSError as e:
            logger.error("manifests written to %s may not be on disk: %s", self.manifests, e.strerror)
        if not batch.raised and not batch.changes:
            return
        try:
            self._lock_for_writing(batch)
        except OSError as e:
            logger.warning("cannot lock %s to record serials and file identities: %s", self.manifests, e.strerror)
            return
        serials, hashed = self._read_serials(), self._read_hashed()
        batch.merge(serials, hashed)
        if batch.serials != serials:
            self._write_serials(batch.serials)
        if batch.hashed != hashed and self._writable():
            try:
                write_atomic(self.manifests / IDENTITIES_FILE, identities.encode(batch.hashed))
            except OSError as e:  # only costs hashing again at the next start
                logger.warning("cannot record file identities in %s: %s", self.manifests, e.strerror)

    def _read_hashed(self) -> Records:
        try:
            return identities.parse((self.manifests / IDENTITIES_FILE).read_bytes())
        except OSError:
            return {}

    def _read_serials(self) -> dict[str, int]:
        try:
            data = json.loads((self.manifests / SERIALS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, int) and not isinstance(v, bool)}

    def _write_serials(self, serials: dict[str, int]) -> None:
        try:
            write_atomic(self.manifests / SERIALS_FILE, json.dumps(serials, indent=1).encode())
        except OSError as e:  # offline mode may run with a read-only manifests/
            logger.warning("cannot record serials in %s: %s", self.manifests, e.strerror)

    def _writable(self) -> bool:
        return self.signer is not None or os.access(self.manifests, os.W_OK)

    def _lock(self) -> AbstractContextManager[None]:
        if not self._writable():
            return nullcontext()  # offline, read-only manifests/: nothing to write, nothing to guard
        return locked(self.manifests / LOCK_FILE)


@dataclass
class _Batch:
    """What one build reads once and writes once, what it changed, and what it did."""

    serials: dict[str, int]  # highest serial seen per release, on disk or in this batch
    hashed: Records  # file identities as last hashed, on disk or in this batch
    stack: ExitStack  # holds the lock once taken
    locked: bool = False
    raised: set[str] = field(default_factory=set)  # releases whose highest serial this batch raised
    changes: dict[str, dict[str, Hashed] | None] = field(default_factory=dict)  # None: forgotten
    written: list[Path] = field(default_factory=list)  # manifests, flushed to disk together at the end
    unchanged: int = 0  # releases taken as they were, no file read
    files_hashed: int = 0

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
        """Forget the identities of releases no longer on disk."""
        for version in self.hashed.keys() - versions:
            self.record(version, None)

    def merge(self, serials: Mapping[str, int], hashed: Records) -> None:
        """Take in records another writer made, keeping this batch's own changes."""
        for version, serial in serials.items():
            self.serials[version] = max(serial, self.serials.get(version, 0))
        self.hashed = dict(hashed)
        for version, files in self.changes.items():
            if files:
                self.hashed[version] = files
            else:
                self.hashed.pop(version, None)
