"""The release index: which releases may be served, each with its checked manifest.

``Indexer`` reads ``partitions/`` and ``manifests/`` and produces an ``Index``, an
immutable snapshot the web layer swaps in whole, so a request never sees half of a
re-index. In server-signs mode the indexer writes a new manifest (serial + 1) when
a release's files changed; in offline mode it only verifies what was copied in.

Manifest writes and the record of the highest serial seen per release happen under
an exclusive lock on ``manifests/.lock``, so several workers (or a worker and
``tools/build_manifest.py``) never write at the same time, and a manifest is
written once: the second worker finds it already up to date.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sanic_ota import manifest as manifests
from sanic_ota.errors import (
    IntegrityError,
    ManifestError,
    NotFound,
    OtaError,
    Unavailable,
)
from sanic_ota.files import locked, write_atomic
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
                raise Unavailable(f"release {version} is not servable now") from None
            raise NotFound(f"no release {version}") from None

    def latest(self) -> Release:
        """What plain ``AT+CIUPDATE`` installs: the pinned release, else the newest present.

        Never an older release in place of a newer one that is present but not servable
        (being copied, truncated, unsigned for a full disk): a module already on the
        newer one would install the older one. Such a moment answers 503 instead.
        """
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
        self.verifier = verifier
        self.signer = signer

    # -- whole index -------------------------------------------------------------

    def scan(self) -> set[str]:
        """Release directories present now (plain names only; ``.v2.tmp`` is not one)."""
        try:
            entries = list(os.scandir(self.partitions))
        except FileNotFoundError:
            return set()
        return {e.name for e in entries if is_plain_name(e.name) and e.is_dir()}

    def build(self, previous: Index | None = None, versions: Iterable[str] | None = None) -> Index:
        """A new index: ``versions`` re-read (all if None), the rest kept from ``previous``."""
        index = self._build(previous, versions)
        if index.unversioned and (previous is None or previous.unversioned != index.unversioned):
            logger.warning("not offered as the newest release, since their names are not versions "
                           "(still downloadable by name): %s", ", ".join(index.unversioned))
        return index

    def _build(self, previous: Index | None, versions: Iterable[str] | None) -> Index:
        on_disk = self.scan()
        todo = on_disk if versions is None or previous is None else set(versions) & on_disk
        releases = {v: r for v, r in (previous.releases if previous else {}).items() if v in on_disk}
        problems = {v: p for v, p in (previous.problems if previous else {}).items() if v in on_disk}
        for version in sorted(todo):
            releases.pop(version, None)
            problems.pop(version, None)
            try:
                releases[version] = self.index_release(version)
            except (OtaError, OSError) as e:  # OSError: a full disk or an unwritable manifests/
                problems[version] = e.message if isinstance(e, OtaError) else f"{e.strerror}: {e.filename}"
                self.events("failed", version)
                logger.error("release %s is NOT served: %s", version, problems[version])
        return Index(releases=releases, problems=problems, pinned=self.read_pin(), present=frozenset(on_disk))

    def read_pin(self) -> str | None:
        try:
            text = self.latest_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            logger.error("cannot read %s: %s", self.latest_file, e)
            return ""  # a pin that names nothing: refuse rather than guess
        return text or None

    # -- one release -------------------------------------------------------------

    def index_release(self, version: str) -> Release:
        check_name(version, "release name")
        files = self.describe_files(version)
        if not files:
            raise ManifestError(f"partitions/{version}/ holds no .bin file")
        with self._lock():
            serials = self._read_serials()
            highest = serials.get(version, 0)
            existing = self._load_manifest(version, highest)
            if self.signer is not None:
                release = self._signed_release(version, files, existing, highest)
            else:
                release = self._verified_release(version, files, existing)
            if release.manifest.serial > highest:
                serials[version] = release.manifest.serial
                self._write_serials(serials)
        return release

    def describe_files(self, version: str) -> dict[str, FileEntry]:
        """Hash and inspect every ``.bin`` of a release; raises if one would be rejected."""
        directory = self.partitions / version
        try:
            names = sorted(os.listdir(directory))
        except OSError as e:
            raise NotFound(f"cannot list partitions/{version}/: {e.strerror}") from e
        entries: dict[str, FileEntry] = {}
        for name in names:
            if not is_release_file(name):
                continue
            path = directory / name
            try:
                if not path.is_file():  # a dangling symlink, a directory, a device
                    raise IntegrityError(f"{name} is not a regular file")
                data = path.read_bytes()
            except OSError as e:
                raise IntegrityError(f"cannot read {name}: {e.strerror}") from e
            entries[name] = FileEntry.describe(name, data)
        return entries

    def _load_manifest(self, version: str, highest: int) -> Release | None:
        """The manifest on disk if it verifies, None if absent; raises if it is bad."""
        path = self.manifest_path(version)
        try:
            document = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ManifestError(f"cannot read {path}: {e.strerror}") from e
        try:
            manifest = manifests.verify(document, self.verifier, version)
            if manifest.serial < highest:
                raise ManifestError(
                    f"manifest serial {manifest.serial} is older than serial {highest} "
                    "already seen for this release (replayed manifest?)"
                )
        except ManifestError as e:
            if self.signer is None:
                raise
            logger.warning("replacing manifest of %s: %s", version, e.message)
            return None
        return Release(version, manifest, document)

    def _signed_release(
        self, version: str, files: dict[str, FileEntry], existing: Release | None, highest: int
    ) -> Release:
        assert self.signer is not None
        if existing is not None and existing.manifest.same_files(files):
            return existing
        serial = max(highest, existing.manifest.serial if existing else 0) + 1
        manifest = Manifest(version=version, serial=serial, created=manifests.utc_now(), files=files)
        document = manifests.sign(manifest, self.signer)
        self.manifests.mkdir(parents=True, exist_ok=True)
        write_atomic(self.manifest_path(version), document)
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

    def _read_serials(self) -> dict[str, int]:
        try:
            data = json.loads((self.manifests / SERIALS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, int) and not isinstance(v, bool)}

    def _write_serials(self, serials: dict[str, int]) -> None:
        try:
            write_atomic(self.manifests / SERIALS_FILE, json.dumps(serials, indent=1).encode())
        except OSError as e:  # offline mode may run with a read-only manifests/
            logger.warning("cannot record serials in %s: %s", self.manifests, e.strerror)

    def _lock(self) -> AbstractContextManager[None]:
        if self.signer is None and not os.access(self.manifests, os.W_OK):
            return nullcontext()  # offline, read-only manifests/: nothing to write, nothing to guard
        return locked(self.manifests / LOCK_FILE)
