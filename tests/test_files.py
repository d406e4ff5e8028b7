"""Tests for sanic_ota.files: atomic writes and the cross-process lock."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sanic_ota.files import locked, make_durable, open_to_others, write_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_atomic_creates_with_the_mode_asked_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "public", b"a", mode=0o644)
    finally:
        os.umask(old)
    write_atomic(tmp_path / "secret", b"b", mode=0o600)
    assert _mode(tmp_path / "public") == 0o644
    assert _mode(tmp_path / "secret") == 0o600
    assert (tmp_path / "public").read_bytes() == b"a"


def test_write_atomic_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "file.json"
    target.write_bytes(b"old" * 1000)
    os.chmod(target, 0o666)
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert _mode(target) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.json"]


def test_write_atomic_failing_at_the_rename_removes_its_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "inside").write_bytes(b"keep")
    with pytest.raises(OSError):
        write_atomic(target, b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]
    assert (target / "inside").read_bytes() == b"keep"


def test_open_to_others(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write_atomic(path, b"", mode=0o600)
    assert not open_to_others(path)
    os.chmod(path, 0o640)
    assert open_to_others(path)
    os.chmod(path, 0o604)
    assert open_to_others(path)


#: Exit 0 if it got the lock without waiting, 3 if another process holds it.
_TRY_LOCK = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(3)
    """
)


def _try_lock(path: Path) -> int:
    return subprocess.run([sys.executable, "-c", _TRY_LOCK, str(path)], timeout=20).returncode


def test_locked_excludes_another_process_until_released(tmp_path: Path) -> None:
    lock = tmp_path / "sub" / ".lock"
    with locked(lock):
        assert lock.exists()
        assert _try_lock(lock) == 3
    assert _try_lock(lock) == 0


def test_locked_waits_for_the_holder(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(0.5)\n", str(lock)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        started = time.monotonic()
        with locked(lock):
            waited = time.monotonic() - started
        assert waited > 0.2
    finally:
        holder.wait(timeout=20)


def test_every_file_and_its_directory_is_flushed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More files than flushing threads, in two directories: each file and each directory once."""
    paths = [tmp_path / d / f"v{n}.json" for d in ("a", "b") for n in range(25)]
    for path in paths:
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, b"{}", durable=False)
    flushed: list[tuple[int, int]] = []
    fsync = os.fsync

    def recording(fd: int) -> None:
        st = os.fstat(fd)
        flushed.append((st.st_dev, st.st_ino))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    make_durable(paths)
    expected = [(st.st_dev, st.st_ino) for st in map(os.stat, [*paths, tmp_path / "a", tmp_path / "b"])]
    assert sorted(flushed) == sorted(expected)


def test_files_written_without_waiting_for_the_disk_are_flushed_together(tmp_path: Path) -> None:
    paths = [tmp_path / f"v{n}.json" for n in range(40)]
    for n, path in enumerate(paths):
        write_atomic(path, f"manifest {n}".encode(), durable=False)
    make_durable(paths)
    assert [p.read_text() for p in paths] == [f"manifest {n}" for n in range(40)]
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in paths)  # no temporary file left
    with pytest.raises(FileNotFoundError):
        make_durable([paths[0], tmp_path / "gone.json", paths[1]])  # the others are still flushed
    make_durable([])
