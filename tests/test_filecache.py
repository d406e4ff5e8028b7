"""Tests for sanic_ota.filecache: only verified bytes are served, from a bounded cache or a verified copy."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from sanic_ota import filecache
from sanic_ota.errors import IntegrityError
from sanic_ota.filecache import VerifiedCopy, VerifiedFiles
from sanic_ota.manifest import FileEntry
from sanic_ota.store.local import LocalStore

VERSION = "v1"
File = tuple[str, str, FileEntry]


@pytest.fixture
def tree(tmp_path: Path) -> LocalStore:
    (tmp_path / "partitions" / VERSION).mkdir(parents=True)
    (tmp_path / "manifests").mkdir()
    return LocalStore(tmp_path / "partitions", tmp_path / "manifests")


def _cache(tree: LocalStore, max_bytes: int, recheck_seconds: float = 0.0) -> VerifiedFiles:
    """A cache over ``tree`` keeping its verified copies in manifests/, as the server does."""
    return VerifiedFiles(tree, max_bytes, recheck_seconds, spool_dir=tree.manifests)


def _path(tree: LocalStore, name: str) -> Path:
    return tree.partitions / VERSION / name


def _file(tree: LocalStore, name: str, data: bytes) -> File:
    _path(tree, name).write_bytes(data)
    return VERSION, name, FileEntry(len(data), hashlib.sha256(data).hexdigest())


def _replace(tree: LocalStore, name: str, data: bytes) -> File:
    """A new file renamed over the old one, as a careful publisher does."""
    _file(tree, ".incoming", data)
    os.replace(_path(tree, ".incoming"), _path(tree, name))
    return VERSION, name, FileEntry(len(data), hashlib.sha256(data).hexdigest())


def _bytes(image: filecache.Image) -> bytes:
    if isinstance(image, bytes):
        return image
    with image:
        return image.read(0, image.length)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_load_verifies_and_caches(tree: LocalStore) -> None:
    files = _cache(tree, max_bytes=1 << 20)
    f = _file(tree, "ota.bin", b"A" * 1000)
    assert files.cached(*f) is None
    data = files.load(*f)
    assert data == b"A" * 1000
    assert files.cached(*f) is data


def test_cached_does_not_read_the_file(tree: LocalStore) -> None:
    files = _cache(tree, max_bytes=1 << 20)
    f = _file(tree, "ota.bin", b"A" * 1000)
    data = files.load(*f)
    opened: list[str] = []
    watching = [False]

    def hook(event: str, args: tuple) -> None:
        if watching[0] and event == "open":
            opened.append(str(args[0]))

    sys.addaudithook(hook)  # hooks cannot be removed; ``watching`` turns this one off
    try:
        watching[0] = True
        assert files.cached(*f) is data
        assert opened == []
        files.load(*f)  # an open is seen by the hook
        assert "ota.bin" in opened
    finally:
        watching[0] = False


def test_cached_is_none_for_another_manifest_entry(tree: LocalStore) -> None:
    files = _cache(tree, max_bytes=1 << 20)
    f = _file(tree, "ota.bin", b"A" * 10)
    files.load(*f)
    assert files.cached(VERSION, "ota.bin", FileEntry(10, "0" * 64)) is None


def test_a_byte_flipped_on_disk_is_noticed_even_with_the_old_mtime(tree: LocalStore) -> None:
    files = _cache(tree, max_bytes=1 << 20)
    f = _file(tree, "ota.bin", b"A" * 1000)
    path = _path(tree, "ota.bin")
    files.load(*f)
    before = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(500)
        handle.write(b"B")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    assert files.cached(*f) is None
    with pytest.raises(IntegrityError, match="ota.bin does not match its signed manifest"):
        files.load(*f)
    assert files.cached(*f) is None


def test_a_truncated_file_is_an_integrity_error(tree: LocalStore) -> None:
    files = _cache(tree, max_bytes=1 << 20)
    f = _file(tree, "ota.bin", b"A" * 1000)
    files.load(*f)
    _path(tree, "ota.bin").write_bytes(b"A" * 999)
    assert files.cached(*f) is None
    with pytest.raises(IntegrityError):
        files.load(*f)


def test_a_missing_file_is_an_integrity_error(tree: LocalStore) -> None:
    files = _cache(tree, max_bytes=1 << 20)
    f = _file(tree, "ota.bin", b"A")
    files.load(*f)
    _path(tree, "ota.bin").unlink()
    assert files.cached(*f) is None
    with pytest.raises(IntegrityError):
        files.load(*f)


def test_bytes_handed_out_survive_a_replacement_of_the_file(tree: LocalStore) -> None:
    files = _cache(tree, max_bytes=1 << 20)
    f = _file(tree, "ota.bin", b"old" * 1000)
    sending = files.load(*f)
    new = _replace(tree, "ota.bin", b"new" * 1000)
    assert sending == b"old" * 1000
    assert files.cached(*f) is None
    assert files.load(*new) == b"new" * 1000
    assert sending == b"old" * 1000


def test_least_recently_used_is_evicted_first(tree: LocalStore) -> None:
    files = _cache(tree, max_bytes=250)
    a, b, c = (_file(tree, f"{n}.bin", n.encode() * 100) for n in "abc")
    files.load(*a)
    files.load(*b)
    assert files.cached(*a) is not None  # a is now the most recently used
    files.load(*c)
    assert files.cached(*b) is None
    assert files.cached(*a) == b"a" * 100
    assert files.cached(*c) == b"c" * 100


def test_reloading_the_same_file_does_not_count_twice(tree: LocalStore) -> None:
    files = _cache(tree, max_bytes=200)
    a = _file(tree, "a.bin", b"a" * 100)
    b = _file(tree, "b.bin", b"b" * 100)
    files.load(*a)
    files.load(*a)
    files.load(*b)
    assert files.cached(*a) is not None and files.cached(*b) is not None


def test_server_recheck_window_serves_verified_bytes_then_notices_the_change(tree: LocalStore) -> None:
    f = _file(tree, "ota.bin", b"\xe9" + b"a" * 99)
    files = _cache(tree, max_bytes=1 << 20, recheck_seconds=0.3)
    verified = files.load(*f)
    _path(tree, "ota.bin").write_bytes(b"\xe9" + b"b" * 99)
    assert files.cached(*f) == verified  # within the window: the verified bytes, never the new ones
    time.sleep(0.35)
    assert files.cached(*f) is None


def test_image_answers_a_fresh_hit_without_io_and_anything_else_in_a_thread(tree: LocalStore, monkeypatch) -> None:
    files = _cache(tree, max_bytes=1 << 20, recheck_seconds=0.3)
    f = _file(tree, "ota.bin", b"\xe9" + b"a" * 99)
    threads: list[str] = []
    to_thread = asyncio.to_thread

    async def counting(function, *args):
        threads.append(function.__name__)
        return await to_thread(function, *args)

    monkeypatch.setattr(filecache.asyncio, "to_thread", counting)
    assert asyncio.run(files.image(*f)) == b"\xe9" + b"a" * 99  # loaded in a thread
    assert threads == ["get"]

    def no_io(*args: object) -> None:
        raise AssertionError("the store was asked")

    with monkeypatch.context() as patched:
        patched.setattr(tree, "stat", no_io)
        patched.setattr(tree, "open", no_io)
        assert asyncio.run(files.image(*f)) == b"\xe9" + b"a" * 99  # within recheck_seconds: no I/O, no thread
    assert threads == ["get"]
    _path(tree, "ota.bin").write_bytes(b"\xe9" + b"b" * 99)
    time.sleep(0.35)
    with pytest.raises(IntegrityError):  # re-checked in a thread, and refused
        asyncio.run(files.image(*f))
    assert threads == ["get", "get"]


# -- files kept in memory from SEALED_MIN on: a sealed memfd -------------------------------


def test_a_file_kept_in_memory_is_sealed_so_nothing_can_change_its_bytes(tree: LocalStore) -> None:
    """The web layer hands this descriptor to sendfile: the bytes it sends must be the
    verified ones, whoever holds a descriptor of it."""
    files = _cache(tree, max_bytes=1 << 20)
    data = os.urandom(filecache.SEALED_MIN)
    with files.load(*_file(tree, "ota.bin", data)) as image:
        assert isinstance(image, VerifiedCopy) and image.in_memory and image.length == len(data)
        seals = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
        assert fcntl.fcntl(image.fd, fcntl.F_GET_SEALS) & seals == seals
        for change in (lambda: os.pwrite(image.fd, b"x", 0), lambda: os.ftruncate(image.fd, 1),
                       lambda: os.ftruncate(image.fd, len(data) + 1)):
            with pytest.raises(PermissionError):
                change()
        reopened = os.open(f"/proc/self/fd/{image.fd}", os.O_RDWR)
        try:
            with pytest.raises(PermissionError):
                os.write(reopened, b"x")
        finally:
            os.close(reopened)
        assert image.read(0, len(data)) == data
    assert isinstance(files.load(*_file(tree, "small.bin", data[:1000])), bytes)  # below SEALED_MIN


def test_sealed_files_count_against_the_cache_and_outlive_their_eviction(tree: LocalStore) -> None:
    files = _cache(tree, max_bytes=150_000)
    a = os.urandom(100_000)
    a_file, b_file = _file(tree, "a.bin", a), _file(tree, "b.bin", os.urandom(100_000))
    sending = files.load(*a_file)
    files.load(*b_file).close()
    assert files.cached(*a_file) is None  # 200 kB in a 150 kB cache: a left it
    assert files.cached(*b_file) is not None
    assert _bytes(sending) == a  # a download still sending it keeps its own descriptor


def test_without_a_memfd_the_verified_bytes_are_kept_as_bytes(tree: LocalStore, monkeypatch, caplog) -> None:
    def refused(name: str, flags: int = 0) -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(os, "memfd_create", refused)
    data = os.urandom(filecache.SEALED_MIN)
    with caplog.at_level(logging.WARNING):
        assert _cache(tree, max_bytes=1 << 20).load(*_file(tree, "ota.bin", data)) == data
    assert "sealed memfd" in caplog.text


# -- files larger than the cache: a verified copy ------------------------------------------


def test_a_file_bigger_than_the_cache_is_served_from_a_verified_copy(tree: LocalStore) -> None:
    files = _cache(tree, max_bytes=100)
    small = _file(tree, "small.bin", b"s" * 100)
    files.load(*small)
    data = os.urandom(300_000)
    big = _file(tree, "big.bin", data)
    image = files.load(*big)
    assert isinstance(image, VerifiedCopy) and image.length == len(data)
    assert image.read(0, 10) == data[:10] and image.read(299_990, 300_000) == data[-10:]
    again = files.cached(*big)
    assert isinstance(again, VerifiedCopy) and again.fd != image.fd  # each download its own handle
    assert _bytes(image) == data and _bytes(again) == data
    assert files.cached(*small) == b"s" * 100  # the copy takes no memory from the cache


def test_a_verified_copy_is_not_the_file_itself(tree: LocalStore) -> None:
    files = _cache(tree, max_bytes=100)
    data = b"\xe9" + b"x" * 9999
    big = _file(tree, "big.bin", data)
    with files.load(*big) as image:
        assert isinstance(image, VerifiedCopy)
        path = _path(tree, "big.bin")
        assert os.fstat(image.fd).st_ino != path.stat().st_ino
        assert os.fstat(image.fd).st_nlink == 0  # unlinked: nothing else can open it
        with open(path, "r+b") as handle:  # rewritten in place mid-download
            handle.write(b"Y" * 10000)
        assert image.read(0, 10000) == data  # never mixed: the download keeps what was verified


def test_a_copy_that_does_not_match_is_never_handed_out(tree: LocalStore, caplog) -> None:
    files = _cache(tree, max_bytes=100)
    _, name, entry = _file(tree, "big.bin", b"a" * 1000)
    _path(tree, name).write_bytes(b"b" * 1000)
    before = _open_fds()
    with caplog.at_level(logging.ERROR), pytest.raises(IntegrityError, match="big.bin does not match"):
        files.load(VERSION, name, entry)
    assert "INTEGRITY" in caplog.text
    assert files.cached(VERSION, name, entry) is None
    assert _open_fds() == before  # the rejected copy is closed, not kept


def test_concurrent_loads_share_one_copy(tree: LocalStore, monkeypatch) -> None:
    files = _cache(tree, max_bytes=100)
    big = _file(tree, "big.bin", os.urandom(2_000_000))
    spooled: list[int] = []
    real_spool = files.spool

    def counting_spool():
        spooled.append(1)
        time.sleep(0.1)  # the others arrive while the first one copies
        return real_spool()

    monkeypatch.setattr(files, "spool", counting_spool)
    results: list[VerifiedCopy] = []
    threads = [threading.Thread(target=lambda: results.append(files.load(*big))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(spooled) == 1 and len(results) == 4
    assert len({os.fstat(r.fd).st_ino for r in results}) == 1
    for result in results:
        result.close()


def test_a_superseded_copy_is_freed_when_its_last_download_ends(tree: LocalStore) -> None:
    files = _cache(tree, max_bytes=100)
    before = _open_fds()
    old = files.load(*_file(tree, "big.bin", b"o" * 5000))
    new_file = _replace(tree, "big.bin", b"n" * 5000)
    assert files.cached(VERSION, "big.bin", new_file[2]) is None
    new = files.load(*new_file)
    assert _bytes(old) == b"o" * 5000 and _bytes(new) == b"n" * 5000  # closes both handles
    assert _open_fds() == before + 1  # the cache keeps only the current copy open


def test_copies_beyond_the_limit_are_closed_oldest_first(tree: LocalStore, monkeypatch) -> None:
    monkeypatch.setattr(filecache, "MAX_COPIES", 1)
    files = _cache(tree, max_bytes=100)
    a, b = _file(tree, "a.bin", b"a" * 500), _file(tree, "b.bin", b"b" * 500)
    files.load(*a).close()
    files.load(*b).close()
    assert files.cached(*a) is None
    assert _bytes(files.cached(*b)) == b"b" * 500


def test_the_spool_is_an_unlinked_file_in_manifests(tree: LocalStore) -> None:
    with _cache(tree, max_bytes=10).spool() as spool:
        st = os.fstat(spool.fileno())
        assert st.st_nlink == 0 and st.st_dev == os.stat(tree.manifests).st_dev
        assert oct(st.st_mode & 0o777) == "0o600"
    assert not [p for p in tree.manifests.iterdir()]


def test_without_a_writable_manifests_dir_copies_go_to_the_temp_dir(tmp_path: Path, caplog) -> None:
    (tmp_path / "partitions" / VERSION).mkdir(parents=True)
    tree = LocalStore(tmp_path / "partitions", tmp_path / "no-manifests")
    files = _cache(tree, max_bytes=10)
    with caplog.at_level(logging.WARNING):
        assert _bytes(files.load(*_file(tree, "big.bin", b"z" * 100))) == b"z" * 100
    assert "cannot keep verified copies" in caplog.text


# -- containment ------------------------------------------------------------------------


@pytest.mark.parametrize("max_bytes", [1 << 20, 10], ids=["memory", "copy"])
@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_file_linked_after_indexing_is_refused(tree: LocalStore, tmp_path: Path, caplog,
                                                   max_bytes: int, link: str) -> None:
    """The keys file linked in place of a release file, with the manifest entry the attacker would need."""
    secret = tmp_path / "keys.json"
    secret.write_bytes(b'[{"Name": "admin", "Token": "SECRET-TOKEN"}]')
    entry = FileEntry(secret.stat().st_size, hashlib.sha256(secret.read_bytes()).hexdigest())
    getattr(_path(tree, "ota.bin"), "symlink_to" if link == "symlink" else "hardlink_to")(secret)
    files = _cache(tree, max_bytes=max_bytes)
    with caplog.at_level(logging.ERROR), pytest.raises(IntegrityError) as raised:
        files.load(VERSION, "ota.bin", entry)
    assert raised.value.message == "ota.bin cannot be served; the server log says why"
    assert "CONTAINMENT" in caplog.text and "SECRET-TOKEN" not in caplog.text
    assert files.cached(VERSION, "ota.bin", entry) is None
