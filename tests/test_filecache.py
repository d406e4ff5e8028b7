"""Tests for sanic_ota.filecache: only verified bytes are served, from a bounded cache."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import pytest

from sanic_ota.errors import IntegrityError
from sanic_ota.filecache import VerifiedFiles
from sanic_ota.manifest import FileEntry


def _file(tmp_path: Path, name: str, data: bytes) -> tuple[Path, FileEntry]:
    path = tmp_path / name
    path.write_bytes(data)
    return path, FileEntry(len(data), hashlib.sha256(data).hexdigest())


def test_load_verifies_and_caches(tmp_path: Path) -> None:
    files = VerifiedFiles(max_bytes=1 << 20)
    path, entry = _file(tmp_path, "ota.bin", b"A" * 1000)
    assert files.cached(path, entry) is None
    data = files.load(path, entry)
    assert data == b"A" * 1000
    assert files.cached(path, entry) is data


def test_cached_does_not_read_the_file(tmp_path: Path) -> None:
    files = VerifiedFiles(max_bytes=1 << 20)
    path, entry = _file(tmp_path, "ota.bin", b"A" * 1000)
    data = files.load(path, entry)
    opened: list[str] = []
    watching = [False]

    def hook(event: str, args: tuple) -> None:
        if watching[0] and event == "open":
            opened.append(str(args[0]))

    sys.addaudithook(hook)  # hooks cannot be removed; ``watching`` turns this one off
    try:
        watching[0] = True
        assert files.cached(path, entry) is data
        assert opened == []
        files.load(path, entry)  # a read is seen by the hook
        assert opened == [str(path)]
    finally:
        watching[0] = False


def test_cached_is_none_for_another_manifest_entry(tmp_path: Path) -> None:
    files = VerifiedFiles(max_bytes=1 << 20)
    path, entry = _file(tmp_path, "ota.bin", b"A" * 10)
    files.load(path, entry)
    assert files.cached(path, FileEntry(10, "0" * 64)) is None


def test_a_byte_flipped_on_disk_is_noticed_even_with_the_old_mtime(tmp_path: Path) -> None:
    files = VerifiedFiles(max_bytes=1 << 20)
    path, entry = _file(tmp_path, "ota.bin", b"A" * 1000)
    files.load(path, entry)
    before = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(500)
        handle.write(b"B")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    assert files.cached(path, entry) is None
    with pytest.raises(IntegrityError, match="ota.bin does not match its signed manifest"):
        files.load(path, entry)
    assert files.cached(path, entry) is None


def test_a_truncated_file_is_an_integrity_error(tmp_path: Path) -> None:
    files = VerifiedFiles(max_bytes=1 << 20)
    path, entry = _file(tmp_path, "ota.bin", b"A" * 1000)
    files.load(path, entry)
    path.write_bytes(b"A" * 999)
    assert files.cached(path, entry) is None
    with pytest.raises(IntegrityError):
        files.load(path, entry)


def test_a_missing_file_is_an_integrity_error(tmp_path: Path) -> None:
    files = VerifiedFiles(max_bytes=1 << 20)
    path, entry = _file(tmp_path, "ota.bin", b"A")
    files.load(path, entry)
    path.unlink()
    assert files.cached(path, entry) is None
    with pytest.raises(IntegrityError):
        files.load(path, entry)


def test_bytes_handed_out_survive_a_replacement_of_the_file(tmp_path: Path) -> None:
    files = VerifiedFiles(max_bytes=1 << 20)
    path, entry = _file(tmp_path, "ota.bin", b"old" * 1000)
    sending = files.load(path, entry)
    new, new_entry = _file(tmp_path, "incoming", b"new" * 1000)
    os.replace(new, path)
    assert sending == b"old" * 1000
    assert files.cached(path, entry) is None
    assert files.load(path, new_entry) == b"new" * 1000
    assert sending == b"old" * 1000


def test_least_recently_used_is_evicted_first(tmp_path: Path) -> None:
    files = VerifiedFiles(max_bytes=250)
    a, b, c = (_file(tmp_path, f"{n}.bin", n.encode() * 100) for n in "abc")
    files.load(*a)
    files.load(*b)
    assert files.cached(*a) is not None  # a is now the most recently used
    files.load(*c)
    assert files.cached(*b) is None
    assert files.cached(*a) == b"a" * 100
    assert files.cached(*c) == b"c" * 100


def test_a_file_bigger_than_the_cache_is_returned_but_not_kept(tmp_path: Path) -> None:
    files = VerifiedFiles(max_bytes=100)
    small = _file(tmp_path, "small.bin", b"s" * 100)
    files.load(*small)
    big = _file(tmp_path, "big.bin", b"B" * 101)
    assert files.load(*big) == b"B" * 101
    assert files.cached(*big) is None
    assert files.cached(*small) == b"s" * 100  # the big file did not evict it


def test_reloading_the_same_path_does_not_count_twice(tmp_path: Path) -> None:
    files = VerifiedFiles(max_bytes=200)
    a = _file(tmp_path, "a.bin", b"a" * 100)
    b = _file(tmp_path, "b.bin", b"b" * 100)
    files.load(*a)
    files.load(*a)
    files.load(*b)
    assert files.cached(*a) is not None and files.cached(*b) is not None


def test_server_recheck_window_serves_verified_bytes_then_notices_the_change(tmp_path: Path) -> None:
    path = tmp_path / "ota.bin"
    path.write_bytes(b"\xe9" + b"a" * 99)
    entry = FileEntry(length=100, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    files = VerifiedFiles(max_bytes=1 << 20, recheck_seconds=0.3)
    verified = files.load(path, entry)
    path.write_bytes(b"\xe9" + b"b" * 99)
    assert files.cached(path, entry) == verified  # within the window: the verified bytes, never the new ones
    time.sleep(0.35)
    assert files.cached(path, entry) is None
