"""Releases on a local disk: ``partitions/`` and ``manifests/``, read without ever leaving them.

``LocalStore`` is the only code that knows this layout::

    partitions/<version>/<partition>.bin     a release: its files
    partitions/LATEST                        the pin (optional)
    manifests/<version>.json                 each release's signed manifest
    channels/<name>.json                     a channel's pin and rollout (``channels``)

and the only code that opens anything in it. Every release file, the pin and every
manifest is opened through a chain of directory descriptors, each step with
``O_NOFOLLOW``, and checked on the opened descriptor (``fstat``), so no symlink, and
no swap of a name between a check and an open, can make the server read a file from
elsewhere: the private signing key, the keys file, ``/etc/passwd``.

The rules (the README's "Releases" section says the same to operators):
- ``partitions/`` itself is the configured path and may be a symlink; nothing below it may.
- A release directory is a real directory directly in ``partitions/``; a symlinked one
  is not a release (logged once, naming the path, never what it points to).
- A release file, and ``partitions/LATEST``, must be a regular file on the same
  filesystem as ``partitions/`` with exactly one link. A hard link is refused because
  it can make any file of that filesystem look like a release file; copies made with
  ``cp -al`` or ``rsync --link-dest`` are therefore refused too.
- Every name is a plain name (no ``/``, no ``..``), checked before any open.
- ``partitions/LATEST`` holds at most ``PIN_LIMIT`` bytes and its text is used only if
  it is a plain name; otherwise it is an invalid pin, and the error says so without
  repeating the text.
- ``manifests/<version>.json`` is opened without following a symlink and must be a
  regular file of at most ``MANIFEST_LIMIT`` bytes. (Its bytes are used only once its
  signature verifies, so a link cannot smuggle anything out.)
- ``channels/<name>.json`` likewise: no symlink, a regular file of at most
  ``CHANNEL_LIMIT`` bytes, a plain name; its text never reaches a log.
- An uploaded release is written into a dot-directory in ``partitions/`` (never
  indexed, same filesystem), each file created new (``O_EXCL``, no symlink followed),
  and renamed into place whole once checked.

Failures of these rules raise ``ContainmentError``; plain I/O errors stay ``OSError``
for the caller to report.

``Roots`` gives the watcher (local disks only) the directories to watch and what a
changed path means, and the stat signatures its re-scan compares; so the watcher
needs no path of its own either.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sanic_ota.errors import ContainmentError
from sanic_ota.files import make_durable, write_atomic
from sanic_ota.settings import Settings
from sanic_ota.store import FileInfo, Identity
from sanic_ota.versions import is_plain_name, is_release_file

_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

logger = logging.getLogger("sanic_ota.store.local")

PIN_FILE = "LATEST"
#: A pin is one version name (at most 64 characters) and some whitespace.
PIN_LIMIT = 1024
#: Far above any real manifest (a few hundred bytes per file), far below memory trouble.
MANIFEST_LIMIT = 16 * 1024 * 1024
MANIFEST_SUFFIX = ".json"
#: A channel file is a pin and a rollout of a few steps: a few hundred bytes.
CHANNEL_LIMIT = 64 * 1024
CHANNEL_SUFFIX = ".json"
#: Uploads are staged in ``partitions/.upload-<version>-<random>``: a dot-directory, never indexed.
STAGE_PREFIX = ".upload-"

#: Directories a replica's mirror fetches into, inside partitions/ (see ``LocalStore.staging``).
STAGING_PREFIX = ".mirror-"

#: Suffixes of files being written by editors and copy tools, never part of a release.
TEMPORARY_SUFFIXES = ("~", ".swp", ".swx", ".tmp", ".part", ".partial", ".crdownload")

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: O_NONBLOCK: opening a FIFO planted under partitions/ must not hang a worker; it is
#: refused by the fstat check right after. On regular files it changes nothing.
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def is_temporary(name: str) -> bool:
    """rsync's ``.name.XXXXXX``, editors' ``name~`` and ``.name.swp``, any dotfile."""
    return name.startswith(".") or name.endswith(TEMPORARY_SUFFIXES)


def identity(st: os.stat_result) -> Identity:
    """A local file's identity: any write changes its ctime, a replacement its inode."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_info(st: os.stat_result) -> FileInfo:
    return FileInfo(st.st_size, identity(st), max(st.st_mtime_ns, st.st_ctime_ns))


def _plain(name: str) -> str:
    """Every path component here is one plain name: no ``/``, no ``..``."""
    if not is_plain_name(name):
        raise ContainmentError("a name under partitions/ must be a plain name")
    return name


def _open_directory(name: str, parent: int, label: str) -> int:
    try:
        return os.open(_plain(name), _DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    except OSError as e:
        # Linux answers ENOTDIR for a symlink opened with O_DIRECTORY | O_NOFOLLOW
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            linked = stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
            what = "a symbolic link" if linked else "not a directory"
            raise ContainmentError(f"{label} is {what}; a release must be a real directory") from e
        raise


def _regular(st: os.stat_result, label: str) -> os.stat_result:
    if stat.S_ISLNK(st.st_mode):
        raise ContainmentError(f"{label} is a symbolic link; only regular files are read")
    if not stat.S_ISREG(st.st_mode):
        raise ContainmentError(f"{label} is not a regular file")
    return st


def _open_file(name: str, parent: int, label: str) -> LocalFile:
    """Open ``name`` in ``parent`` without following a symlink; it must be a regular file."""
    try:
        fd = os.open(_plain(name), _FILE, dir_fd=parent)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ContainmentError(f"{label} is a symbolic link; only regular files are read") from e
        raise
    try:
        return LocalFile(fd, _regular(os.fstat(fd), label))
    except BaseException:
        os.close(fd)
        raise


def _check_inside(opened: LocalFile, root_dev: int, label: str) -> LocalFile:
    """The opened file lives on partitions/' filesystem and nowhere else (one link)."""
    problem = None
    if opened.stat.st_dev != root_dev:
        problem = f"{label} is on another filesystem than partitions/; only files inside it are served"
    elif opened.stat.st_nlink != 1:
        problem = (f"{label} has {opened.stat.st_nlink} hard links; hard-linked files are never served "
                   "(copy the file instead of linking it)")
    if problem is not None:
        opened.close()
        raise ContainmentError(problem)
    return opened


def _read_small(directory: Path, name: str, label: str, limit: int, inside: bool, advice: str = "") -> bytes | None:
    """A small file directly in ``directory`` (the pin, a manifest), never through a link.

    None if the directory or the file is absent. ``inside``: the file must also be on
    the directory's filesystem with one link, as release files are. A file over
    ``limit`` bytes raises ``ContainmentError`` naming ``label``, then ``advice``.
    """
    try:
        root = os.open(directory, _DIRECTORY)
    except FileNotFoundError:
        return None
    try:
        opened = _open_file(name, root, label)
        if inside:
            opened = _check_inside(opened, os.fstat(root).st_dev, label)
    except FileNotFoundError:
        return None
    finally:
        os.close(root)
    try:
        return _read(opened.fd, limit)
    except ContainmentError as e:
        raise ContainmentError(f"{label} is {e.message}{advice}") from None
    finally:
        opened.close()


def _read(fd: int, limit: int | None) -> bytes:
    """Everything up to EOF, or ``ContainmentError`` past ``limit`` bytes (read no further)."""
    parts, total = [], 0
    while chunk := os.read(fd, 1 << 20 if limit is None else min(1 << 20, limit + 1 - total)):
        parts.append(chunk)
        total += len(chunk)
        if limit is not None and total > limit:
            raise ContainmentError(f"larger than {limit} bytes")
    return b"".join(parts)


class LocalFile:
    """An open descriptor that passed the checks, and the ``fstat`` they were made on."""

    def __init__(self, fd: int, st: os.stat_result) -> None:
        self.fd, self.stat = fd, st

    @property
    def info(self) -> FileInfo:
        return file_info(self.stat)

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            return _read(self.fd, None)
        return os.read(self.fd, size)

    def close(self) -> None:
        os.close(self.fd)


class LocalRelease:
    """One release directory, held open: its files, read under the rules."""

    def __init__(self, fd: int, root_dev: int, version: str) -> None:
        self.fd, self.root_dev, self.version = fd, root_dev, version

    def names(self) -> list[str]:
        return sorted(name for name in os.listdir(self.fd) if is_release_file(name))

    def stat(self, name: str) -> FileInfo:
        """``lstat`` of a file in this directory: a symlink or a non-regular file is refused."""
        return file_info(_regular(os.stat(_plain(name), dir_fd=self.fd, follow_symlinks=False), name))

    @contextmanager
    def open(self, name: str) -> Iterator[LocalFile]:
        """``name`` opened, checked (regular, same filesystem, one link), closed after use."""
        opened = _check_inside(_open_file(name, self.fd, name), self.root_dev, name)
        try:
            yield opened
        finally:
            opened.close()


class LocalStage:
    """A release being uploaded, in a dot-directory of ``partitions/`` nobody indexes."""

    def __init__(self, path: Path, target: Path) -> None:
        self.path, self.target = path, target
        self.committed = False

    def add(self, name: str, chunks: Iterable[bytes]) -> int:
        if not is_release_file(name):
            raise ContainmentError(f"{name!r} is not a release file name (<partition>.bin, a plain name)")
        fd = os.open(self.path / name, _NEW_FILE, 0o644)  # a name twice: FileExistsError
        total = 0
        try:
            for chunk in chunks:
                _write_all(fd, chunk)
                total += len(chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        return total

    def read(self, name: str) -> bytes:
        fd = os.open(self.path / _plain(name), _FILE)
        try:
            return _read(fd, None)
        finally:
            os.close(fd)

    def commit(self) -> None:
        if os.path.lexists(self.target):
            raise FileExistsError(errno.EEXIST, "release exists", self.target.name)
        os.rename(self.path, self.target)
        self.committed = True
        _fsync_directory(self.target.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, _DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pin_document(version: str) -> bytes:
    """The bytes of a pin naming ``version``: what ``write_pin`` writes, and what a replica
    puts into its bucket's ``partitions/LATEST`` (``channel_writer``)."""
    return f"{_plain(version)}\n".encode()


class LocalStore:
    """``partitions/`` (releases and the pin), ``manifests/`` and ``channels/``, read without leaving them."""

    def __init__(self, partitions: Path, manifests: Path, channels: Path | None = None) -> None:
        self.partitions = Path(partitions)
        self.manifests = Path(manifests)
        self.channels_dir = Path(channels) if channels is not None else self.partitions.parent / "channels"
        self._linked: set[str] = set()  # symlinked release directories already logged

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalStore:
        return cls(settings.partitions_dir, settings.manifests_dir, settings.channels_dir)

    # -- where things are, for log lines ------------------------------------------------

    def where(self, version: str, name: str | None = None) -> str:
        return str(self.partitions / version if name is None else self.partitions / version / name)

    def where_manifest(self, version: str) -> str:
        return str(self._manifest_path(version))

    def where_pin(self) -> str:
        return str(self.partitions / PIN_FILE)

    def _manifest_path(self, version: str) -> Path:
        return self.manifests / f"{_plain(version)}{MANIFEST_SUFFIX}"

    # -- releases -----------------------------------------------------------------------

    def list_releases(self) -> set[str]:
        """Release directories present now: real directories with plain names.

        ``.v2.tmp`` is not one; a symlinked one is left out and logged once (its
        path, not its target), until it is gone or replaced by a real directory.
        """
        try:
            entries = list(os.scandir(self.partitions))
        except (FileNotFoundError, NotADirectoryError):
            return set()
        found, linked = set(), set()
        for entry in entries:
            if not is_plain_name(entry.name):
                continue
            if entry.is_symlink():
                linked.add(entry.name)
            elif entry.is_dir(follow_symlinks=False):
                found.add(entry.name)
        for name in sorted(linked - self._linked):
            logger.error("%s is a symbolic link: not a release, never indexed or served; a release "
                         "must be a real directory inside %s", self.partitions / name, self.partitions)
        self._linked = linked
        return found

    @contextmanager
    def release(self, version: str) -> Iterator[LocalRelease]:
        root = os.open(self.partitions, _DIRECTORY)
        try:
            root_dev = os.fstat(root).st_dev
            fd = _open_directory(version, root, f"partitions/{version}")
        finally:
            os.close(root)
        try:
            yield LocalRelease(fd, root_dev, version)
        finally:
            os.close(fd)

    def stat(self, version: str, name: str) -> FileInfo:
        """``lstat`` of a release file by its path: one system call, for the cache's re-checks."""
        return file_info(os.lstat(self.partitions / _plain(version) / _plain(name)))

    @contextmanager
    def open(self, version: str, name: str) -> Iterator[LocalFile]:
        with self.release(version) as release, release.open(name) as opened:
            yield opened

    # -- the pin and the manifests --------------------------------------------------------

    def read_pin(self) -> str | None:
        """The version ``partitions/LATEST`` names; None if there is no pin (absent or blank).

        Raises ``ContainmentError`` for a pin that is not a regular file inside
        ``partitions/`` or whose text is not a plain name; the message never
        contains that text (a link to the keys file must not put tokens in a log).
        """
        label = f"partitions/{PIN_FILE}"
        data = _read_small(self.partitions, PIN_FILE, label, PIN_LIMIT, inside=True,
                           advice="; it must hold one version name")
        if data is None:
            return None
        try:
            text: str | None = data.decode("ascii").strip()
        except UnicodeDecodeError:
            text = None
        if text == "":
            return None
        if text is None or not is_plain_name(text):
            raise ContainmentError(f"{label} does not hold a plain version name ({len(data)} bytes); "
                                   "it must hold one version name")
        return text

    def read_manifest(self, version: str) -> bytes | None:
        """``manifests/<version>.json``, None if absent; never through a symlink."""
        label = f"manifests/{version}{MANIFEST_SUFFIX}"
        return _read_small(self.manifests, f"{_plain(version)}{MANIFEST_SUFFIX}", label, MANIFEST_LIMIT,
                           inside=False)

    def write_manifest(self, version: str, document: bytes, durable: bool = True) -> None:
        path = self._manifest_path(version)
        try:
            write_atomic(path, document, durable=durable)
        except FileNotFoundError:  # no manifests/ yet: made once, not checked before each of 5,000 writes
            self.manifests.mkdir(parents=True, exist_ok=True)
            write_atomic(path, document, durable=durable)

    def sync_manifests(self, versions: Iterable[str]) -> None:
        make_durable([self._manifest_path(version) for version in versions])

    def write_pin(self, version: str | None) -> None:
        self.copy_pin(None if version is None else pin_document(version))

    # -- channels ---------------------------------------------------------------------------

    def where_channel(self, name: str) -> str:
        return str(self.channels_dir / f"{_plain(name)}{CHANNEL_SUFFIX}")

    def list_channels(self) -> set[str]:
        return {name[: -len(CHANNEL_SUFFIX)] for name in _names(self.channels_dir)
                if name.endswith(CHANNEL_SUFFIX) and is_plain_name(name[: -len(CHANNEL_SUFFIX)])}

    def read_channel(self, name: str) -> bytes | None:
        """``channels/<name>.json``, None if absent; never through a symlink, at most ``CHANNEL_LIMIT``."""
        return _read_small(self.channels_dir, f"{_plain(name)}{CHANNEL_SUFFIX}", f"channels/{name}{CHANNEL_SUFFIX}",
                           CHANNEL_LIMIT, inside=False)

    def write_channel(self, name: str, document: bytes | None) -> None:
        path = self.channels_dir / f"{_plain(name)}{CHANNEL_SUFFIX}"
        if document is None:
            path.unlink(missing_ok=True)
            return
        if len(document) > CHANNEL_LIMIT:
            raise ContainmentError(f"a channel file is at most {CHANNEL_LIMIT} bytes")
        self.channels_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(path, document)

    # -- uploads ------------------------------------------------------------------------------

    @contextmanager
    def stage_release(self, version: str) -> Iterator[LocalStage]:
        """``partitions/.upload-<version>-<random>/``, renamed to ``partitions/<version>`` on commit.

        The same filesystem as the releases, so the rename is atomic; a dot-directory,
        so the watcher never indexes it half-written. Removed unless committed.
        """
        self.ensure_partitions()
        path = self.partitions / f"{STAGE_PREFIX}{_plain(version)}-{secrets.token_hex(6)}"
        os.mkdir(path, 0o755)
        stage = LocalStage(path, self.partitions / version)
        try:
            yield stage
        finally:
            if not stage.committed:
                shutil.rmtree(path, ignore_errors=True)

    def publish(self, version: str, files: Mapping[str, bytes]) -> None:
        """Write a release's files, each atomically (mode 0644): how the example release is
        made. Operators publish by copying a directory in; the server never writes here."""
        directory = self.partitions / _plain(version)
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            write_atomic(directory / _plain(name), data)

    # -- for a replica's mirror: the one writer of releases here (``mirror``) ---------------

    def staging(self, version: str) -> Path:
        """A new empty directory inside ``partitions/`` to fetch a release into: a dot name,
        so neither the indexer nor the watcher takes it for a release."""
        self.partitions.mkdir(parents=True, exist_ok=True)
        path = self.partitions / f"{STAGING_PREFIX}{_plain(version)}-{secrets.token_hex(4)}"
        path.mkdir()
        return path

    def clear_staging(self) -> None:
        """Remove what a mirror that stopped mid-fetch left behind."""
        for name in _all_names(self.partitions):
            if name.startswith(STAGING_PREFIX):
                shutil.rmtree(self.partitions / name, ignore_errors=True)

    def install(self, version: str, document: bytes, staged: Path) -> None:
        """Make ``staged`` (from ``staging``) release ``version`` with manifest ``document``.

        The manifest first, then the files, so the indexer never sees a release without
        its manifest: a new release by one rename of the directory, a present one file by
        file (each replaced whole, files no longer in it removed). A moment with the new
        manifest and some old files is refused by verification, never served.
        """
        self.write_manifest(version, document)
        target = self.partitions / _plain(version)
        try:
            os.rename(staged, target)  # also over an empty directory
            return
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        names = set(os.listdir(staged))
        for name in sorted(names):
            os.replace(staged / name, target / name)
        for name in set(os.listdir(target)) - names:
            _remove_path(target / name)
        os.rmdir(staged)

    def remove(self, version: str) -> None:
        """Remove a release: its manifest first, then its directory (renamed away whole)."""
        self._manifest_path(version).unlink(missing_ok=True)
        target = self.partitions / _plain(version)
        if target.is_dir() and not target.is_symlink():
            gone = self.partitions / f"{STAGING_PREFIX}gone-{version}-{secrets.token_hex(4)}"
            os.rename(target, gone)
            shutil.rmtree(gone, ignore_errors=True)

    def installed(self) -> tuple[set[str], set[str]]:
        """(release directories, manifests) present: what a mirror finds at its start."""
        manifests = {name[: -len(MANIFEST_SUFFIX)] for name in _all_names(self.manifests)
                     if name.endswith(MANIFEST_SUFFIX) and is_plain_name(name[: -len(MANIFEST_SUFFIX)])}
        return self.list_releases(), manifests

    def copy_pin(self, document: bytes | None) -> None:
        """A mirror's copy of its bucket's ``LATEST``, byte for byte, so the indexer judges
        it as it judges a local one (an unusable pin stays unusable); None removes it."""
        if document is None:
            (self.partitions / PIN_FILE).unlink(missing_ok=True)
            return
        self.partitions.mkdir(parents=True, exist_ok=True)
        write_atomic(self.partitions / PIN_FILE, document)

    # -- for the watcher ------------------------------------------------------------------

    def ensure_directories(self) -> None:
        """Create ``partitions/``, ``manifests/`` and ``channels/`` (a replica's empty cache:
        the watcher watches the channel files the mirror copies in from the start)."""
        self.partitions.mkdir(parents=True, exist_ok=True)
        self.manifests.mkdir(parents=True, exist_ok=True)
        self.channels_dir.mkdir(parents=True, exist_ok=True)

    def ensure_partitions(self) -> None:
        """Create ``partitions/`` if it is missing, so that there is a directory to watch."""
        self.partitions.mkdir(parents=True, exist_ok=True)

    def roots(self) -> Roots:
        """The directories as they resolve now: a symlinked ``partitions/`` may point elsewhere later."""
        return Roots(self.partitions.resolve(), self.manifests.resolve(), self.channels_dir.resolve())


#: What ``stat`` says about one path (None: absent). Equal signatures: nothing to re-read.
Signature = tuple[object, ...] | None
#: What changed, as the watcher counts it: ("release", version), ("manifest", version), ("pin", ""),
#: ("channel", name).
Item = tuple[str, str]
PIN = ("pin", "")
CHANNEL = "channel"


@dataclass(frozen=True)
class Roots:
    """Where ``partitions/`` and ``manifests/`` are on disk right now (resolved), for the watcher."""

    partitions: Path
    manifests: Path
    channels: Path | None = None  # None: no channel files are followed

    @property
    def pin(self) -> Path:
        return self.partitions / PIN_FILE

    def directories(self, manifests: bool) -> dict[str, tuple[Path, bool]]:
        """The directories to watch, by role, and whether recursively."""
        wanted = {"partitions": (self.partitions, True)}
        if self.channels is not None:
            wanted["channels"] = (self.channels, False)
        if manifests:
            wanted["manifests"] = (self.manifests, False)
        return wanted

    def locate(self, path: Path, manifests: bool) -> Item | None:
        """What a changed path (as watchfiles reports it) can change; None: nothing.

        A path inside a release names the release, unless it is a temporary file or
        deeper than the release's own files; ``manifests/<version>.json`` counts only
        when ``manifests`` (offline mode, where operators copy manifests in).
        """
        if path == self.pin:
            return PIN
        if self.channels is not None and path.parent == self.channels and path.suffix == CHANNEL_SUFFIX:
            if is_plain_name(path.stem) and not is_temporary(path.name):
                return (CHANNEL, path.stem)
            return None
        if path.is_relative_to(self.partitions) and path != self.partitions:
            parts = path.relative_to(self.partitions).parts
            if not is_plain_name(parts[0]) or any(is_temporary(p) for p in parts) or len(parts) > 2:
                return None
            return ("release", parts[0])
        if manifests and path.parent == self.manifests and path.suffix == MANIFEST_SUFFIX:
            if is_plain_name(path.stem) and not is_temporary(path.name):
                return ("manifest", path.stem)
        return None

    def signatures(self, versions: Iterable[str] | None, pin: bool, manifests: bool) -> dict[Item, Signature]:
        """Stat signatures of the releases (all if ``versions`` is None), the pin and, if
        ``manifests``, the manifests. Only ``stat`` is called, never a file's contents.

        For named ``versions`` an absent one is there as None, so the watcher can
        record what it is about to re-read; a whole scan leaves absent ones out.
        """
        found: dict[Item, Signature] = {}
        if versions is None:
            for name in _names(self.partitions):
                found[("release", name)] = _release(self.partitions / name)
            if manifests:
                for name in _names(self.manifests):
                    if name.endswith(MANIFEST_SUFFIX) and is_plain_name(name[: -len(MANIFEST_SUFFIX)]):
                        found[("manifest", name[: -len(MANIFEST_SUFFIX)])] = signature(self.manifests / name)
            found = {k: v for k, v in found.items() if v is not None}
        else:
            for version in versions:
                found[("release", version)] = _release(self.partitions / version)
                if manifests:
                    found[("manifest", version)] = signature(self.manifests / f"{version}{MANIFEST_SUFFIX}")
        if pin:
            found[PIN] = signature(self.pin)
            if self.channels is not None:  # channel files are re-read with the pin: both are small
                for name in _names(self.channels):
                    if name.endswith(CHANNEL_SUFFIX) and is_plain_name(name[: -len(CHANNEL_SUFFIX)]):
                        found[(CHANNEL, name[: -len(CHANNEL_SUFFIX)])] = signature(self.channels / name)
        return found


def _names(directory: Path) -> list[str]:
    try:
        return [name for name in os.listdir(directory) if is_plain_name(name) and not is_temporary(name)]
    except OSError:  # absent, or not a directory (yet)
        return []


def _all_names(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:  # absent, or not a directory (yet)
        return []


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _stat_signature(st: os.stat_result) -> tuple[object, ...]:
    return (st.st_dev, st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_size,
            st.st_mtime_ns, st.st_ctime_ns)


def signature(path: Path) -> Signature:
    """The path itself and, for a symlink, what it points to: re-pointing one is a change."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISLNK(st.st_mode):
        return _stat_signature(st)
    try:
        return (_stat_signature(st), _stat_signature(os.stat(path)))
    except OSError:  # dangling
        return (_stat_signature(st), None)


def _release(path: Path) -> Signature:
    """A release directory: which directory it is (through a symlink too), and each file
    in it; not its own times, which every temporary file of a copy in progress changes."""
    try:
        link = os.lstat(path)
        st = os.stat(path) if stat.S_ISLNK(link.st_mode) else link
        if not stat.S_ISDIR(st.st_mode):
            return None
        names = sorted(name for name in os.listdir(path) if not is_temporary(name))
    except OSError:
        return None
    ident = (link.st_dev, link.st_ino, link.st_mode, st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_gid)
    return (ident, tuple((name, signature(path / name)) for name in names))
