"""Verified file bytes, so every download sends exactly what was checked.

A layer above any ``ReleaseStore``: it asks the store for a file's bytes (on a local
disk: no symlink, no hard link, nothing outside ``partitions/``), reads and hashes
them once per identity (the store's cheap ``FileInfo.identity``), and compares them
with the manifest entry (``trust.check_file``). It never builds a path. What was
verified is then served:
- a file of up to ``max_bytes`` (``SANIC_OTA_CACHE_BYTES``) from memory, the whole
  cache staying within ``max_bytes``. One of at least ``SEALED_MIN`` bytes is held in
  a sealed memfd rather than a ``bytes``: an anonymous in-memory file that nothing,
  this process included, can write, grow or shrink once sealed, so the web layer can
  hand it to the kernel's ``sendfile`` (no copy through user space) and still send
  only the verified bytes. Its memory is counted against ``max_bytes`` like a
  ``bytes``; it is shared memory, so it shows in the system's ``Shmem``, not in the
  worker's RSS. Smaller files stay ``bytes``: they leave in one or a few writes;
- a larger file from a verified copy: it is copied into a private, unlinked temporary
  file, hashed while copying, and served only if length and SHA-256 match. Only this
  process writes it, and never after it was verified, so it too can go by
  ``sendfile``; a connection then holds no buffer of it at all (six stalled downloads
  of a 600 MiB file once held 3.6 GB, when each read the whole file). There is one copy
  per file identity, shared by every download of it; a superseded copy is closed
  here, and the kernel frees it when the last download still reading it ends.

Both kinds of file are a ``VerifiedCopy``: each download gets its own descriptor.

The store is asked for the file's identity again at most every ``recheck_seconds``
(the server uses ``SERVER_RECHECK_SECONDS``: a ``stat`` per request was a fifth of a
worker's time serving 4 KiB partitions), so a file changed in the store is
re-verified within a second; until then, downloads get the verified bytes, which
match the signed manifest. A file replaced during a download cannot mix old and new
bytes: the download keeps sending the bytes, or the copy, it started with.

``image`` is what the web layer awaits: a hit checked within ``recheck_seconds``
costs no I/O at all; anything else (the re-check, a load) runs in a worker thread,
so the event loop never waits on the store, be it a disk or a network.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sanic_ota.errors import ContainmentError, IntegrityError, Unavailable
from sanic_ota.manifest import FileEntry
from sanic_ota.store import Identity, ReleaseFile, ReleaseStore
from sanic_ota.trust import Measure, Observed, check_file

logger = logging.getLogger("sanic_ota.filecache")

Key = tuple[str, str]  # (version, file name)

#: How stale the server lets its knowledge of a file's identity get.
SERVER_RECHECK_SECONDS = 1.0

#: Verified copies kept at most (least recently used closed first): bounds the disk a
#: worker holds for files that left the index. Downloads in flight keep theirs.
MAX_COPIES = 8

#: Bytes read from a release file per step while copying and hashing it.
COPY_CHUNK = 1024 * 1024

#: A file kept in memory is sealed in a memfd from this size on (``sendfile`` can send
#: it); a smaller one stays ``bytes``, which leave in the first write or a few more.
SEALED_MIN = 64 * 1024

#: Once these are set, a memfd's bytes can no longer change, nor its seals.
_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


class VerifiedCopy:
    """A handle on verified bytes in a file whose contents cannot change any more: an
    unlinked file only this process can reach, or (``in_memory``) a sealed memfd.

    Each download gets its own handle (a duplicated descriptor) and must ``close`` it;
    reads use ``pread`` and ``sendfile`` takes an offset, so handles never share a
    file position. ``in_memory``: reading it never waits on a disk.
    """

    def __init__(self, fd: int, length: int, in_memory: bool = False) -> None:
        self.fd, self.length, self.in_memory = fd, length, in_memory
        self._closed = False

    def read(self, start: int, stop: int) -> bytes:
        """Bytes ``start`` to ``stop``; blocking, so the web layer calls it in a thread."""
        parts = []
        while start < stop:
            chunk = os.pread(self.fd, stop - start, start)
            if not chunk:
                raise OSError(f"verified copy ends at {start} of {self.length} bytes")
            parts.append(chunk)
            start += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def dup(self) -> VerifiedCopy:
        return VerifiedCopy(os.dup(self.fd), self.length, self.in_memory)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.fd)

    def __del__(self) -> None:
        self.close()  # a handle dropped unclosed (a download cancelled while loading) frees its fd

    def __enter__(self) -> VerifiedCopy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: What a download sends: verified bytes, or a handle on a verified copy (close it).
Image = bytes | VerifiedCopy


@dataclass
class _Cached:
    identity: Identity
    sha256: str
    data: Image
    checked: float  # monotonic time of the last stat that matched

    @property
    def memory(self) -> int:
        if isinstance(self.data, bytes):
            return len(self.data)
        return self.data.length if self.data.in_memory else 0


class VerifiedFiles:
    """Verified images of release files, keyed by (release, file name)."""

    def __init__(
        self, store: ReleaseStore, max_bytes: int, recheck_seconds: float = 0.0, spool_dir: Path | None = None
    ) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.recheck_seconds = recheck_seconds
        #: where verified copies of large files go: the server's own directory, on disk
        #: rather than in a tmpfs; the system's temporary directory if that cannot take them
        self.spool_dir = spool_dir
        self._spool_warned = False
        self._entries: OrderedDict[Key, _Cached] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()  # ``load`` runs in worker threads
        self._loading: dict[Key, threading.Lock] = {}  # one load per file at a time

    async def image(self, version: str, name: str, entry: FileEntry) -> Image:
        """The verified image of a file, for a download; raises unless its bytes match ``entry``.

        A hit checked within ``recheck_seconds`` is answered at once; the re-check and
        any load run in a thread (``get``).
        """
        key = (version, name)
        hit = self._entries.get(key)
        if hit is not None and hit.sha256 == entry.sha256 and time.monotonic() - hit.checked < self.recheck_seconds:
            with self._lock:
                if self._entries.get(key) is hit:
                    self._entries.move_to_end(key)
                    return self._handle(hit)
        return await asyncio.to_thread(self.get, version, name, entry)

    def get(self, version: str, name: str, entry: FileEntry) -> Image:
        """``cached``, else ``load``: blocking."""
        image = self.cached(version, name, entry)
        return image if image is not None else self.load(version, name, entry)

    def cached(self, version: str, name: str, entry: FileEntry) -> Image | None:
        """The verified image if the file is unchanged since it was checked.

        At most one ``ReleaseStore.stat``, no read. ``None`` means the caller must
        ``load`` (it reads and hashes).
        """
        key = (version, name)
        hit = self._entries.get(key)
        if hit is None or hit.sha256 != entry.sha256:
            return None
        now = time.monotonic()
        if now - hit.checked >= self.recheck_seconds:
            try:
                if self.store.stat(version, name).identity != hit.identity:
                    return None
            except (OSError, ContainmentError):
                return None
            hit.checked = now
        with self._lock:
            if self._entries.get(key) is not hit:
                return None
            self._entries.move_to_end(key)
            return self._handle(hit)

    def load(self, version: str, name: str, entry: FileEntry) -> Image:
        """The file's verified image; raises unless its bytes match ``entry``.

        Concurrent loads of one file wait for the first, then share its result.
        """
        key = (version, name)
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            try:
                with self.store.open(version, name) as opened:
                    ident = opened.info.identity
                    with self._lock:
                        hit = self._entries.get(key)
                        if hit is not None and hit.identity == ident and hit.sha256 == entry.sha256:
                            hit.checked = time.monotonic()
                            self._entries.move_to_end(key)
                            return self._handle(hit)
                    if entry.length > self.max_bytes:
                        data: Image = self._copy(key, opened, entry)
                    else:
                        data = self._read(key, opened, entry)
            except ContainmentError as e:
                raise self._refuse(key, e.message) from e
            except OSError as e:
                raise self._mismatch(key, f"cannot read it: {e.strerror}") from e
            with self._lock:
                item = _Cached(ident, entry.sha256, data, time.monotonic())
                handle = self._handle(item)
                self._store_locked(key, item)
            return handle

    def _read(self, key: Key, opened: ReleaseFile, entry: FileEntry) -> Image:
        data = opened.read(entry.length + 1)  # never more than the manifest allows, plus one
        while len(data) <= entry.length and (more := opened.read(entry.length + 1 - len(data))):
            data += more
        self._check(key, entry, Observed.of(data))
        return data if len(data) < SEALED_MIN else self._seal(key, data)

    def _seal(self, key: Key, data: bytes) -> Image:
        """``data``, verified, in a sealed memfd; ``data`` itself if the system refuses one
        (too many open files): the same bytes, sent through user space."""
        try:
            fd = os.memfd_create(f"sanic-ota {key[0]}/{key[1]}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        except OSError as e:
            return self._unsealed(key, data, e)
        sealed = VerifiedCopy(fd, len(data), in_memory=True)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            if os.fstat(fd).st_size != len(data):
                raise OSError(f"it holds {os.fstat(fd).st_size} of {len(data)} bytes")
        except OSError as e:
            sealed.close()
            return self._unsealed(key, data, e)
        return sealed

    @staticmethod
    def _unsealed(key: Key, data: bytes, e: OSError) -> bytes:
        logger.warning("cannot keep %s/%s in a sealed memfd (%s); it is sent from memory instead",
                       *key, e.strerror or e)
        return data

    def _copy(self, key: Key, opened: ReleaseFile, entry: FileEntry) -> VerifiedCopy:
        """Copy ``opened`` into a spool file, hashing as it goes; the copy is what gets served."""
        measure = Measure()
        try:
            spool = self.spool()
        except OSError as e:
            raise self._no_copy(key, e) from e
        with spool:
            while chunk := opened.read(min(COPY_CHUNK, entry.length + 1 - measure.length)):
                measure.update(chunk)
                if measure.length > entry.length:
                    break
                try:
                    spool.write(chunk)
                except OSError as e:
                    raise self._no_copy(key, e) from e
            self._check(key, entry, measure.observed())
            try:
                spool.flush()
            except OSError as e:
                raise self._no_copy(key, e) from e
            return VerifiedCopy(os.dup(spool.fileno()), entry.length)

    def spool(self) -> BinaryIO:
        """An unlinked temporary file for a verified copy of a large image.

        Unlinked: no other process can open it, and the kernel frees it when the last
        descriptor closes, even after ``kill -9``.
        """
        try:
            return tempfile.TemporaryFile(dir=self.spool_dir)
        except OSError as e:
            if not self._spool_warned:
                self._spool_warned = True
                logger.warning("cannot keep verified copies in %s (%s); using %s", self.spool_dir,
                               e.strerror, tempfile.gettempdir())
            return tempfile.TemporaryFile()

    def _check(self, key: Key, entry: FileEntry, seen: Observed) -> None:
        problem = check_file(key[1], entry, seen)
        if problem is not None:
            raise self._mismatch(key, problem.detail)

    def _mismatch(self, key: Key, why: str) -> IntegrityError:
        self._drop(key)
        logger.error("INTEGRITY: %s does not match its signed manifest: %s; not served", self.store.where(*key), why)
        return IntegrityError(f"{key[1]} does not match its signed manifest; not served")

    def _refuse(self, key: Key, why: str) -> IntegrityError:
        self._drop(key)
        logger.error("CONTAINMENT: %s is refused: %s; not served", self.store.where(*key), why)
        return IntegrityError(f"{key[1]} cannot be served; the server log says why")

    def _no_copy(self, key: Key, e: OSError) -> Unavailable:
        logger.error("cannot make a verified copy of %s: %s; not served", self.store.where(*key), e.strerror or e)
        return Unavailable(f"{key[1]} cannot be served right now; the server log says why")

    @staticmethod
    def _handle(item: _Cached) -> Image:
        """What a caller gets: the bytes themselves, or its own handle on the copy."""
        return item.data.dup() if isinstance(item.data, VerifiedCopy) else item.data

    def _store_locked(self, key: Key, item: _Cached) -> None:
        self._drop_locked(key)
        self._entries[key] = item
        self._size += item.memory
        copies = [k for k, v in self._entries.items() if isinstance(v.data, VerifiedCopy) and not v.data.in_memory]
        for old_key in copies[: max(0, len(copies) - MAX_COPIES)]:
            self._drop_locked(old_key)
        while self._size > self.max_bytes:
            oldest = next(k for k, v in self._entries.items() if v.memory)
            self._drop_locked(oldest)

    def _drop(self, key: Key) -> None:
        with self._lock:
            self._drop_locked(key)

    def _drop_locked(self, key: Key) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._size -= old.memory
            self._release(old)

    @staticmethod
    def _release(item: _Cached) -> None:
        if isinstance(item.data, VerifiedCopy):
            item.data.close()  # handles given to downloads stay open until they end

