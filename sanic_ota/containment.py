"""Reading ``partitions/`` and ``manifests/`` without ever leaving them.

This is the only code that opens anything under ``partitions/``. Every release file,
the pin and every manifest is opened through a chain of directory descriptors, each
step with ``O_NOFOLLOW``, and checked on the opened descriptor (``fstat``), so no
symlink, and no swap of a name between a check and an open, can make the server read
a file from elsewhere: the private signing key, the keys file, ``/etc/passwd``.

The rules (the README's "Releases" section says the same to operators):
- ``partitions/`` itself is the configured path and may be a symlink; nothing below it may.
- A release directory is a real directory directly in ``partitions/``; a symlinked one
  is not a release (logged once, naming the path, never what it points to).
- A release file, and ``partitions/LATEST``, must be a regular file on the same
  filesystem as ``partitions/`` with exactly one link. A hard link is refused because
  it can make any file of that filesystem look like a release file; copies made with
  ``cp -al`` or ``rsync --link-dest`` are therefore refused too.
- ``partitions/LATEST`` holds at most ``PIN_LIMIT`` bytes and its text is used only if
  it is a plain name; otherwise it is an invalid pin, and the error says so without
  repeating the text.
- ``manifests/<version>.json`` is opened without following a symlink and must be a
  regular file of at most ``MANIFEST_LIMIT`` bytes. (Its bytes are used only once its
  signature verifies, so a link cannot smuggle anything out.)

Failures of these rules raise ``ContainmentError``; plain I/O errors stay ``OSError``
for the caller to report.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sanic_ota.errors import ContainmentError
from sanic_ota.versions import is_plain_name

logger = logging.getLogger("sanic_ota.containment")

PIN_FILE = "LATEST"
#: A pin is one version name (at most 64 characters) and some whitespace.
PIN_LIMIT = 1024
#: Far above any real manifest (a few hundred bytes per file), far below memory trouble.
MANIFEST_LIMIT = 16 * 1024 * 1024

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: O_NONBLOCK: opening a FIFO planted under partitions/ must not hang a worker; it is
#: refused by the fstat check right after. On regular files it changes nothing.
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@dataclass(frozen=True)
class OpenedFile:
    """An open descriptor that passed the checks, and the ``fstat`` they were made on."""

    fd: int
    stat: os.stat_result


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


def _open_file(name: str, parent: int, label: str) -> OpenedFile:
    """Open ``name`` in ``parent`` without following a symlink; it must be a regular file."""
    try:
        fd = os.open(_plain(name), _FILE, dir_fd=parent)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ContainmentError(f"{label} is a symbolic link; only regular files are read") from e
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ContainmentError(f"{label} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return OpenedFile(fd, st)


def _check_inside(opened: OpenedFile, root_dev: int, label: str) -> OpenedFile:
    """The opened file lives on partitions/' filesystem and nowhere else (one link)."""
    problem = None
    if opened.stat.st_dev != root_dev:
        problem = f"{label} is on another filesystem than partitions/; only files inside it are served"
    elif opened.stat.st_nlink != 1:
        problem = (f"{label} has {opened.stat.st_nlink} hard links; hard-linked files are never served "
                   "(copy the file instead of linking it)")
    if problem is not None:
        os.close(opened.fd)
        raise ContainmentError(problem)
    return opened


def _read(fd: int, limit: int | None) -> bytes:
    """Everything up to EOF, or ``ContainmentError`` past ``limit`` bytes (read no further)."""
    parts, total = [], 0
    while chunk := os.read(fd, 1 << 20 if limit is None else min(1 << 20, limit + 1 - total)):
        parts.append(chunk)
        total += len(chunk)
        if limit is not None and total > limit:
            raise ContainmentError(f"larger than {limit} bytes")
    return b"".join(parts)


class ReleaseDirectory:
    """One release directory, open: its names and its files, read under the rules."""

    def __init__(self, fd: int, root_dev: int, version: str) -> None:
        self.fd, self.root_dev, self.version = fd, root_dev, version

    def names(self) -> list[str]:
        return sorted(os.listdir(self.fd))

    @contextmanager
    def open(self, name: str) -> Iterator[OpenedFile]:
        """``name`` opened, checked (regular, same filesystem, one link), closed after use."""
        opened = _check_inside(_open_file(name, self.fd, name), self.root_dev, name)
        try:
            yield opened
        finally:
            os.close(opened.fd)

    def read(self, name: str) -> bytes:
        with self.open(name) as opened:
            return _read(opened.fd, None)


class ReleaseTree:
    """``partitions/`` (releases and the pin) and ``manifests/``, read without leaving them."""

    def __init__(self, partitions: Path, manifests: Path) -> None:
        self.partitions = Path(partitions)
        self.manifests = Path(manifests)
        self._linked: set[str] = set()  # symlinked release directories already logged
        self._spool_warned = False

    def path(self, version: str, name: str | None = None) -> Path:
        """Where a release (file) is, for log lines: never opened by path."""
        return self.partitions / version if name is None else self.partitions / version / name

    def versions(self) -> set[str]:
        """Release directories present now: real directories with plain names.

        A symlinked one is left out and logged once (its path, not its target), until
        it is gone or replaced by a real directory.
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

    def identity(self, version: str, name: str) -> os.stat_result:
        """``lstat`` of a release file: cheap, to notice that a verified file changed."""
        return os.lstat(self.path(_plain(version), _plain(name)))

    @contextmanager
    def release(self, version: str) -> Iterator[ReleaseDirectory]:
        root = os.open(self.partitions, _DIRECTORY)
        try:
            root_dev = os.fstat(root).st_dev
            fd = _open_directory(version, root, f"partitions/{version}")
        finally:
            os.close(root)
        try:
            yield ReleaseDirectory(fd, root_dev, version)
        finally:
            os.close(fd)

    def read_pin(self) -> str | None:
        """The version ``partitions/LATEST`` names; None if there is no pin (absent or blank).

        Raises ``ContainmentError`` for a pin that is not a regular file inside
        ``partitions/`` or whose text is not a plain name; the message never
        contains that text (a link to the keys file must not put tokens in a log).
        """
        label = f"partitions/{PIN_FILE}"
        try:
            root = os.open(self.partitions, _DIRECTORY)
        except FileNotFoundError:
            return None
        try:
            opened = _check_inside(_open_file(PIN_FILE, root, label), os.fstat(root).st_dev, label)
        except FileNotFoundError:
            return None
        finally:
            os.close(root)
        try:
            data = _read(opened.fd, PIN_LIMIT)
        except ContainmentError as e:
            raise ContainmentError(f"{label} is {e.message}; it must hold one version name") from None
        finally:
            os.close(opened.fd)
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
        label = f"manifests/{version}.json"
        try:
            root = os.open(self.manifests, _DIRECTORY)
        except FileNotFoundError:
            return None
        try:
            opened = _open_file(f"{_plain(version)}.json", root, label)
        except FileNotFoundError:
            return None
        finally:
            os.close(root)
        try:
            return _read(opened.fd, MANIFEST_LIMIT)
        except ContainmentError as e:
            raise ContainmentError(f"{label} is {e.message}") from None
        finally:
            os.close(opened.fd)

    def spool(self) -> BinaryIO:
        """An unlinked temporary file for a verified copy of a large image.

        Under ``manifests/`` (the server's own state, on disk rather than in a tmpfs);
        the system's temporary directory if ``manifests/`` cannot take it (offline
        mode may run with it read-only). Unlinked: no other process can open it, and
        the kernel frees it when the last descriptor closes, even after ``kill -9``.
        """
        try:
            return tempfile.TemporaryFile(dir=self.manifests)
        except OSError as e:
            if not self._spool_warned:
                self._spool_warned = True
                logger.warning("cannot keep verified copies in %s (%s); using %s", self.manifests,
                               e.strerror, tempfile.gettempdir())
            return tempfile.TemporaryFile()
