"""The release index: which releases may be served, each with its checked manifest.

``Indexer`` reads releases from a ``ReleaseStore`` (on a local disk only through
``store.local``, so no symlink or hard link can make it read, sign or serve a file
from elsewhere), asks ``trust.decide`` whether each may be served, and produces an
``Index``, an immutable snapshot the web layer swaps in whole, so a request never
sees half of a re-index. In server-signs mode the indexer writes a new manifest
(serial + 1) when a release's files changed; in offline mode it only verifies what
was copied in.

Writes happen under the records' exclusive lock (``records``), taken at a build's
first write and held to its end, so several workers (or a worker and
``tools/build_manifest.py``) never write at the same time, and a manifest is
written once: the second worker finds it already up to date, and takes the files
the first one hashed as they are (see ``identities``). Reading needs no lock
(every file is replaced by a rename), so workers restarting with nothing to write
never wait for each other. The records (highest serial seen per release, file
identities) are read once and written once per build, and the manifests it signed
are flushed to disk together at its end: once per release, 5,000 releases took minutes.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property

from sanic_ota import identities
from sanic_ota import manifest as manifests
from sanic_ota.channels import DEFAULT_CHANNEL, Channel, ChannelError, Channels
from sanic_ota.channels import parse as parse_channel
from sanic_ota.errors import (
    ContainmentError,
    IntegrityError,
    ManifestError,
    NotFound,
    OtaError,
    Unavailable,
)
from sanic_ota.identities import Hashed
from sanic_ota.manifest import FileEntry, Manifest
from sanic_ota.records import Batch, Records
from sanic_ota.signing import Signer, Verifier
from sanic_ota.store import FileInfo, ReleaseStore, ReleaseView
from sanic_ota.trust import MANIFEST_REASONS, Observed, Reason, Verdict, decide
from sanic_ota.versions import check_name, is_version, newest, newest_first

logger = logging.getLogger("sanic_ota.releases")

#: Told ("signed" | "failed", release) as the indexer works, for metrics.
EventHook = Callable[[str, str], None]


@dataclass(frozen=True)
class Release:
    version: str
    manifest: Manifest
    document: bytes  # the manifest file, byte for byte, as auditors fetch it

    @cached_property  # the auditor's /v1/manifest/ lists it for every release, on every request
    def document_sha256(self) -> str:
        return hashlib.sha256(self.document).hexdigest()


#: Releases a start reads before serving at most; beyond, see ``Indexer.start``.
READ_FIRST = 100

#: What a download of a release not read yet is told to wait (``Index.pending``).
PENDING_RETRY_SECONDS = 5


def summary(versions: list[str], most: int = 10) -> str:
    """The newest ``most`` of ``versions`` (newest first) and how many more: for log lines."""
    if not versions:
        return "(none)"
    more = len(versions) - most
    return ", ".join(versions[:most]) + (f" and {more} older" if more > 0 else "")


@dataclass(frozen=True)
class Index:
    """One consistent view of what is served; replaced whole, never edited."""

    releases: Mapping[str, Release] = field(default_factory=dict)
    problems: Mapping[str, str] = field(default_factory=dict)
    pinned: str | None = None
    #: every release directory found on disk, servable or not; always holds
    #: ``releases`` and ``problems``, and may hold directories not indexed yet
    present: frozenset[str] = frozenset()
    #: every channel file as last read (``channels``); ``stable``'s pin stays ``pinned``
    channels: Channels = field(default_factory=Channels)

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

    @cached_property
    def pending(self) -> frozenset[str]:
        """Releases present that this index has not read yet: after a large start
        (``Indexer.start``), or a directory that appeared since the last build."""
        return self.present - self.releases.keys() - self.problems.keys()

    def release(self, version: str) -> Release:
        try:
            return self.releases[version]
        except KeyError:
            if version in self.pending:
                raise Unavailable(f"release {version} has not been checked yet; ask again in a few seconds",
                                  headers={"Retry-After": str(PENDING_RETRY_SECONDS)}) from None
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
        return self._newest_release()

    def pin_of(self, channel: str) -> str | None:
        """The version a channel is pinned to: ``stable``'s is ``LATEST`` (``""``: unusable),
        another channel's is in its channel file; None without a pin."""
        return self.pinned if channel == DEFAULT_CHANNEL else self.channels.get(channel).pin

    def base(self, channel: str) -> Release:
        """What a channel offers before any rollout: ``stable`` exactly as ``latest``; another
        channel its pin (from its channel file), else the newest release."""
        if channel == DEFAULT_CHANNEL:
            return self.latest()
        pin = self.pin_of(channel)
        if pin is None:
            return self._newest_release()
        if pin not in self.releases:
            raise Unavailable(f"channel {channel} pins release {pin}, which is not servable; "
                              "fix the pin or the release")
        return self.releases[pin]

    def _newest_release(self) -> Release:
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
    """Reads releases from a store into checked ``Release`` objects, keeping the records."""

    def __init__(
        self,
        store: ReleaseStore,
        records: Records,
        verifier: Verifier,
        signer: Signer | None,
        events: EventHook | None = None,
    ) -> None:
        self.store = store
        self.records = records
        self.events = events or (lambda result, version: None)
        self.verifier = verifier
        self.signer = signer
        #: releases whose last failure was an OSError (full disk, I/O error): the watcher
        #: retries them on a timer; other failures wait for the files to change
        self.transient: set[str] = set()

    # -- whole index -------------------------------------------------------------

    def scan(self) -> set[str]:
        """The releases present now (``ReleaseStore.list_releases``)."""
        return self.store.list_releases()

    def start(self, read_first: int = READ_FIRST) -> Index:
        """The index a server starts serving with.

        With more than ``read_first`` releases present, only those a version query can
        name are read before serving: the newest (all candidates, if ambiguous), the
        pinned one, and those a channel file pins or rolls out. The others are
        ``pending``: a download of one answers 503 with ``Retry-After`` until the
        watcher has read them (``Watcher.run`` does so at once), and the listing marks
        them not servable meanwhile. Nothing is served before it is checked, and no
        version query answers anything but what the full index would: 5,000 releases
        took seconds to read, and a fleet waiting on a restarted server asks for the
        newest. With fewer, everything is read first, as before.
        """
        present = self.scan()
        if len(present) <= read_first:
            return self.build(present=present)
        wanted = set(newest(present)) | {self.read_pin() or ""}
        for channel in self.read_channels().channels.values():
            wanted |= channel.named
        index = self.build(Index(), wanted - {""}, present)
        logger.info("read %d of %d release(s) first (the newest, the pins); the other %d are checked next",
                    len(index.releases) + len(index.problems), len(index.present), len(index.pending))
        return index

    def build(self, previous: Index | None = None, versions: Iterable[str] | None = None,
              present: set[str] | None = None) -> Index:
        """A new index: ``versions`` re-read (all if None), the rest kept from ``previous``;
        ``present``: the releases the caller has just listed (None: list them here)."""
        started = time.monotonic()
        with self._batch() as batch:
            index = self._build(previous, versions, batch, present)
        if index.unversioned and (previous is None or previous.unversioned != index.unversioned):
            logger.warning("not offered as the newest release, since their names are not versions "
                           "(still downloadable by name): %s", ", ".join(index.unversioned))
        if previous is None:  # the start: what it cost, and why
            logger.info("indexed %d release(s) in %.2f s: %d unchanged since last hashed, %d file(s) hashed, "
                        "%d manifest(s) signed", len(index.present), time.monotonic() - started,
                        batch.unchanged, batch.files_hashed, len(batch.written))
        return index

    def _build(self, previous: Index | None, versions: Iterable[str] | None, batch: Batch,
               present: set[str] | None) -> Index:
        on_disk = self.scan() if present is None else present
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
        return Index(releases=releases, problems=problems, pinned=self.read_pin(), present=frozenset(on_disk),
                     channels=self.read_channels())

    def read_pin(self) -> str | None:
        """The pinned version, None without a pin, ``""`` for a pin that cannot be used.

        ``""`` names no release, so the version query fails closed (503) rather than
        guess. The log says why, never with the pin's text: only a plain version
        name is ever repeated.
        """
        try:
            return self.store.read_pin()
        except ContainmentError as e:
            logger.error("pin refused, plain AT+CIUPDATE gets 503 until it is fixed: %s", e.message)
        except OSError as e:
            logger.error("cannot read %s: %s; plain AT+CIUPDATE gets 503 until it is fixed",
                         self.store.where_pin(), e.strerror)
        return ""

    def read_channels(self) -> Channels:
        """Every channel file; one that cannot be used is a problem for its channel alone
        (its callers get 503), logged without its text."""
        found: dict[str, Channel] = {}
        problems: dict[str, str] = {}
        try:
            names = self.store.list_channels()
        except OSError as e:
            logger.error("cannot list the channel files: %s", e.strerror)
            names = set()
        for name in sorted(names):
            try:
                data = self.store.read_channel(name)
                if data is not None:
                    found[name] = parse_channel(name, data)
            except (ContainmentError, ChannelError) as e:
                problems[name] = e.message
            except OSError as e:
                problems[name] = f"cannot read its channel file: {e.strerror}"
            if name in problems:
                logger.error("channel %s refused, its callers get 503 until it is fixed: %s", name, problems[name])
        return Channels(found, problems)

    # -- one release -------------------------------------------------------------

    def index_release(self, version: str) -> Release:
        """Index one release on its own (``tools/build_manifest.py``); raises if it is refused."""
        with self._batch() as batch:
            return self._index_release(version, batch)

    def _index_release(self, version: str, batch: Batch) -> Release:
        check_name(version, "release name")
        document = self._read_manifest(version)
        verdict, files = self._check(version, document, batch)
        if verdict.reason is Reason.NO_FILES:  # never signed, never served
            raise ManifestError(verdict.message)
        if self.signer is None:
            release = self._verified_release(version, verdict, document)
        else:
            if not verdict.exact and self._lock_for_writing(batch):
                # another worker may have signed it while this one hashed: decide on what is there now
                document = self._read_manifest(version)
                verdict = self._decide(version, document, files, batch)
            release = self._signed_release(version, files, verdict, document, batch)
        batch.saw_serial(version, release.manifest.serial)
        return release

    def _decide(self, version: str, document: bytes | None, files: Mapping[str, FileEntry], batch: Batch) -> Verdict:
        observed = {name: Observed(entry.length, entry.sha256) for name, entry in files.items()}
        return decide(document, self.verifier, version, observed, batch.serials.get(version, 0))

    def _check(self, version: str, document: bytes | None, batch: Batch) -> tuple[Verdict, dict[str, FileEntry]]:
        """The verdict on the release's files as recorded when they were last hashed, if none
        changed since and the manifest vouches for them as they are (no file read); else the
        verdict on its files hashed now."""
        recorded = self._unchanged_files(version, batch)
        if recorded is not None:
            verdict = self._decide(version, document, recorded, batch)
            if verdict.manifest is not None and (verdict.exact if self.signer else verdict.servable):
                batch.unchanged += 1
                return verdict, {name: verdict.manifest.files.get(name, entry) for name, entry in recorded.items()}
        files = self._hash_files(version, batch)
        return self._decide(version, document, files, batch), files

    def _unchanged_files(self, version: str, batch: Batch) -> dict[str, FileEntry] | None:
        """The release's files as recorded when they were hashed, if none changed since.

        None (hash them) unless every file of the release still has the identity
        recorded when it was hashed and no file came or went. Reads no file; ``stat``s each once.
        """
        known = batch.hashed.get(version)
        if not known:
            return None
        try:
            with self.store.release(version) as release:
                names = release.names()
                if set(names) != known.keys():
                    return None
                found = _stat_files(release, names)
        except (OSError, ContainmentError):
            return None
        if found is None or any(found[name].identity != known[name].identity for name in names):
            return None
        return {name: FileEntry(found[name].length, known[name].sha256) for name in names}

    def _hash_files(self, version: str, batch: Batch) -> dict[str, FileEntry]:
        """``describe_files``, recording each file's identity if it did not change meanwhile:
        as opened (before its first byte is read) and as ``stat`` sees it after all were read."""
        try:
            with self.store.release(version) as release:
                files, opened = _describe(release)
                after = _stat_files(release, files)
        except OSError as e:
            raise NotFound(f"cannot list {self.store.where(version)}: {e.strerror}") from e
        batch.files_hashed += len(files)
        now = time.time_ns()
        if after is None or after != opened or not all(identities.settled(i.changed_ns, now) for i in after.values()):
            batch.record(version, None)  # changed while read, or too recently: hash it again next time
        else:
            batch.record(version, {name: Hashed(after[name].identity, files[name].sha256) for name in files})
        return files

    def _read_manifest(self, version: str) -> bytes | None:
        """The manifest's bytes as stored, None if there is none (or, signing here, one not to be read)."""
        try:
            return self.store.read_manifest(version)  # never through a symlink
        except OSError as e:
            raise ManifestError(f"cannot read {self.store.where_manifest(version)}: {e.strerror}") from e
        except ContainmentError as e:  # a symlink or a directory is no manifest either
            if self.signer is None:
                raise
            logger.warning("replacing manifest of %s: %s", version, e.message)
            return None

    def _signed_release(
        self, version: str, files: dict[str, FileEntry], verdict: Verdict, document: bytes | None, batch: Batch
    ) -> Release:
        assert self.signer is not None
        if verdict.exact and verdict.manifest is not None and document is not None:
            return Release(version, verdict.manifest, document)
        existing = verdict.manifest  # trusted, but its files differ; None: not to be trusted at all
        if existing is None and document is not None:
            logger.warning("replacing manifest of %s: %s", version, verdict.message)
        serial = max(batch.serials.get(version, 0), existing.serial if existing else 0) + 1
        manifest = Manifest(version=version, serial=serial, created=manifests.utc_now(), files=files)
        document = manifests.sign(manifest, self.signer)
        self.store.write_manifest(version, document, durable=False)
        batch.written.append(version)  # made durable together when the batch ends
        self.events("signed", version)
        logger.info("signed manifest for %s (serial %d, %d files)", version, serial, len(files))
        return Release(version, manifest, document)

    def _verified_release(self, version: str, verdict: Verdict, document: bytes | None) -> Release:
        if verdict.servable and verdict.manifest is not None and document is not None:
            for name in verdict.unlisted:
                logger.warning("%s/%s is not in the manifest and will not be served", version, name)
            return Release(version, verdict.manifest, document)
        if verdict.reason is Reason.NO_MANIFEST:
            raise ManifestError(
                f"no manifest {self.store.where_manifest(version)}; sign one with "
                f"`make manifest VERSION={version}` where the private key lives"
            )
        raise (ManifestError if verdict.reason in MANIFEST_REASONS else IntegrityError)(verdict.message)

    # -- the records ---------------------------------------------------------------

    @contextmanager
    def _batch(self) -> Iterator[Batch]:
        """The records a build reads once and writes once (at its end, under the lock)."""
        with ExitStack() as stack:
            batch = Batch(self.records.read_serials(), self.records.read_hashed(), stack)
            try:
                yield batch
            finally:
                self._save(batch)

    def _lock_for_writing(self, batch: Batch) -> bool:
        """Hold the lock from now to the end of ``batch``; True if it was taken just now.

        Then the batch takes in what another writer recorded since it read the records.
        """
        if batch.locked:
            return False
        batch.stack.enter_context(self.records.lock(needed=self._writable()))
        batch.locked = True
        batch.merge(self.records.read_serials(), self.records.read_hashed())
        return True

    def _save(self, batch: Batch) -> None:
        """Flush the manifests written, then the records; all before the lock is released,
        so nothing signed is served or read by another worker before it is on disk."""
        try:
            self.store.sync_manifests(batch.written)
        except OSError as e:
            logger.error("manifests written may not be on disk: %s (%s)", e.strerror, e.filename)
        if not batch.dirty:
            return
        try:
            self._lock_for_writing(batch)
        except OSError as e:
            logger.warning("cannot lock %s to record serials and file identities: %s",
                           self.records.directory, e.strerror)
            return
        serials, hashed = self.records.read_serials(), self.records.read_hashed()
        batch.merge(serials, hashed)
        if batch.serials != serials:
            self.records.write_serials(batch.serials)
        if batch.hashed != hashed and self._writable():
            self.records.write_hashed(batch.hashed)

    def _writable(self) -> bool:
        """Offline, ``manifests/`` may be read-only: nothing to write, nothing to guard."""
        return self.signer is not None or self.records.writable()


def describe_files(release: ReleaseView) -> dict[str, FileEntry]:
    """Hash and inspect every file of a release; raises if one would be rejected."""
    return _describe(release)[0]


def _describe(release: ReleaseView) -> tuple[dict[str, FileEntry], dict[str, FileInfo]]:
    """``describe_files``, and each file's ``FileInfo`` as it was opened (from the open
    descriptor: no ``stat`` of its own)."""
    entries: dict[str, FileEntry] = {}
    opened_as: dict[str, FileInfo] = {}
    for name in release.names():
        try:
            with release.open(name) as opened:  # refuses symlinks, hard links, non-regular files
                opened_as[name] = opened.info
                data = opened.read()
        except OSError as e:
            raise IntegrityError(f"cannot read {name}: {e.strerror}") from e
        entries[name] = FileEntry.describe(name, data)
    return entries, opened_as


def _stat_files(release: ReleaseView, names: Iterable[str]) -> dict[str, FileInfo] | None:
    """Each named file's ``FileInfo``; None if one cannot be had."""
    try:
        return {name: release.stat(name) for name in names}
    except (OSError, ContainmentError):
        return None
