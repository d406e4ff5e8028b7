"""Verified file bytes, kept in memory so every download sends exactly what was checked.

A file is read and hashed once per identity (device, inode, size, mtime, ctime) and
compared with its manifest entry; the verified bytes are then served from memory.
The file is ``stat``ed again at most every ``recheck_seconds`` (the server uses
``SERVER_RECHECK_SECONDS``: a ``stat`` per request was a fifth of a worker's time
serving 4 KiB partitions), so a file changed on disk is re-verified within a
second; until then, downloads get the verified bytes, which match the signed
manifest. A file replaced during a download cannot mix old and new bytes: the
download keeps sending the bytes it started with.
Memory is bounded by ``cache_bytes``; files beyond it are read per request.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from sanic_ota.errors import IntegrityError
from sanic_ota.manifest import FileEntry

logger = logging.getLogger("sanic_ota.filecache")

Identity = tuple[int, int, int, int, int]


def identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


#: How stale the server lets its knowledge of a file's identity get.
SERVER_RECHECK_SECONDS = 1.0


@dataclass
class _Cached:
    identity: Identity
    sha256: str
    data: bytes
    checked: float  # monotonic time of the last stat that matched


class VerifiedFiles:
    def __init__(self, max_bytes: int, recheck_seconds: float = 0.0) -> None:
        self.max_bytes = max_bytes
        self.recheck_seconds = recheck_seconds
        self._entries: OrderedDict[Path, _Cached] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()  # ``load`` runs in worker threads

    def cached(self, path: Path, entry: FileEntry) -> bytes | None:
        """The verified bytes if the file is unchanged since they were checked.

        Cheap enough for every request: at most one ``stat``, no read. ``None`` means
        the caller must ``load`` (in a thread; it reads and hashes).
        """
        hit = self._entries.get(path)
        if hit is None or hit.sha256 != entry.sha256:
            return None
        now = time.monotonic()
        if now - hit.checked >= self.recheck_seconds:
            try:
                if identity(os.stat(path)) != hit.identity:
                    return None
            except OSError:
                return None
            hit.checked = now
        with self._lock:
            if path in self._entries:
                self._entries.move_to_end(path)
        return hit.data

    def load(self, path: Path, entry: FileEntry) -> bytes:
        """Read ``path`` and return its bytes only if they match ``entry``."""
        try:
            with open(path, "rb") as handle:
                ident = identity(os.fstat(handle.fileno()))
                data = handle.read()
        except OSError as e:
            raise self._fail(path, f"cannot read it: {e.strerror}") from e
        if len(data) != entry.length:
            raise self._fail(path, f"{len(data)} bytes on disk, manifest says {entry.length}")
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.sha256:
            raise self._fail(path, f"SHA-256 {digest[:16]}… on disk, manifest says {entry.sha256[:16]}…")
        self._store(path, _Cached(ident, entry.sha256, data, time.monotonic()))
        return data

    def _fail(self, path: Path, why: str) -> IntegrityError:
        self._drop(path)
        logger.error("INTEGRITY: %s does not match its signed manifest: %s; not served", path, why)
        return IntegrityError(f"{path.name} does not match its signed manifest; not served")

    def _store(self, path: Path, item: _Cached) -> None:
        with self._lock:
            self._drop_locked(path)
            if len(item.data) > self.max_bytes:
                return
            self._entries[path] = item
            self._size += len(item.data)
            while self._size > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self._size -= len(old.data)

    def _drop(self, path: Path) -> None:
        with self._lock:
            self._drop_locked(path)

    def _drop_locked(self, path: Path) -> None:
        old = self._entries.pop(path, None)
        if old is not None:
            self._size -= len(old.data)
