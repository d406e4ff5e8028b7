"""Download counts and failures shared by workers through one SQLite file."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from sanic_ota import shared_file
from sanic_ota.accounting import AuthFailure, Kind, RequestRecord
from sanic_ota.stats import HOURS, MAX_FAILURES, Stats, failure_of, flush_periodically

T0 = 1_800_000_000.0  # a fixed hour boundary: 500000 * 3600


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def done(version: str = "v1", file: str = "ota.bin", outcome: str = "completed", status: int = 200,
         at: float | None = None) -> RequestRecord:
    """A closed download record, begun at ``at`` (now if None); ``aborted``: the client left
    after 100 of 1000 bytes."""
    record = RequestRecord(client="10.0.0.1", kind=Kind.DOWNLOAD, handled=True, key="device-1",
                           version=version, file=file)
    if at is not None:
        record.at = at
    record.client_gone = outcome == "aborted"
    record.close(status, 100, 1000 if outcome == "aborted" else 100)
    assert record.outcome == outcome
    return record


def test_two_workers_on_one_file_add_up(tmp_path: Path) -> None:
    clock = Clock()
    one, two = Stats(tmp_path / "s.db", clock), Stats(tmp_path / "s.db", clock)
    for _ in range(2):
        one.observe([done("v1")])
    two.observe([done("v1")])
    two.observe([done("v2", "mqtt_ca.bin")])
    assert one.flush() and two.flush()
    one.observe([done("v1")])  # not flushed yet: only its own worker sees it
    assert sum(one.snapshot().per_release()["v1"]) == 4
    assert sum(two.snapshot().per_release()["v1"]) == 3
    snapshot = two.snapshot()
    assert snapshot.downloads[("v2", "mqtt_ca.bin")][-1] == 1  # the current hour is last
    assert one.flush()
    assert sum(Stats(tmp_path / "s.db", clock).snapshot().per_release()["v1"]) == 4  # a restart keeps them


def test_only_completed_downloads_count() -> None:
    memory = Stats()
    memory.observe([done(outcome="aborted")])
    memory.observe([done(outcome="refused", status=404)])
    query = RequestRecord(client="x", kind=Kind.VERSION_QUERY)
    query.close(200, 10, 10)
    memory.observe([query])
    assert memory.snapshot().per_release() == {}
    assert [f.reason for f in memory.snapshot().failures] == ["refused", "aborted"]


def test_counts_are_kept_for_24_hours(tmp_path: Path) -> None:
    clock = Clock()
    worker = Stats(tmp_path / "s.db", clock)
    worker.observe([done()])
    worker.flush()
    clock.now += (HOURS - 1) * 3600
    assert worker.snapshot().per_release()["v1"][0] == 1  # the oldest hour shown
    clock.now += 3600
    worker.observe([done()])
    worker.flush()
    assert worker.snapshot().per_release()["v1"] == [0] * (HOURS - 1) + [1]
    with sqlite3.connect(tmp_path / "s.db") as db:  # the old bucket is gone from the file too
        assert db.execute("SELECT COUNT(*) FROM downloads").fetchone() == (1,)


def test_failures_are_capped_newest_first(tmp_path: Path) -> None:
    clock = Clock()
    one, two = Stats(tmp_path / "s.db", clock), Stats(tmp_path / "s.db", clock)
    for n in range(MAX_FAILURES + 15):
        clock.now += 1
        (one if n % 2 else two).observe([done(version=f"v{n}", outcome="aborted", at=clock.now)])
        if n % 7 == 0:
            one.flush()
            two.flush()
    one.flush()
    two.flush()
    failures = one.snapshot().failures
    assert len(failures) == MAX_FAILURES
    assert failures[0].version == f"v{MAX_FAILURES + 14}" and failures[-1].version == "v15"
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("SELECT COUNT(*) FROM failures").fetchone() == (MAX_FAILURES,)


def test_failure_kinds() -> None:
    login = RequestRecord(client="x", kind=Kind.STATUS, credentials=True, auth_failure=AuthFailure.MALFORMED)
    login.close(401, 0, 0)
    assert failure_of(login).reason == "auth: malformed"
    assert failure_of(done()) is None
    pin = RequestRecord(client="x", kind=Kind.VERSION_QUERY)
    pin.close(503, 0, 0)
    assert failure_of(pin).reason == "error"
    missing = RequestRecord(client="x", kind=Kind.MANIFEST)
    missing.close(404, 0, 0)
    assert failure_of(missing) is None  # an auditor asking for a release that is not there


def test_an_unwritable_file_never_raises_and_counts_stay_in_memory(tmp_path: Path, caplog) -> None:
    (tmp_path / "not-a-dir").write_text("")
    worker = Stats(tmp_path / "not-a-dir" / "s.db")  # unopenable, even for root (a read-only dir is not)
    with caplog.at_level(logging.WARNING, "sanic_ota.stats"):
        for _ in range(3):
            worker.observe([done(outcome="aborted")])
            worker.observe([done()])
            assert worker.flush() is False
            assert worker.snapshot().failures  # reading fails too, quietly
    assert sum(worker.snapshot().per_release()["v1"]) == 3
    assert len(worker.snapshot().failures) == 3
    assert len([r for r in caplog.records if r.name == "sanic_ota.stats"]) == 1  # said once, not per flush


def test_a_locked_file_keeps_the_buffer_until_it_is_free(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(shared_file, "BUSY_TIMEOUT", 0.05)
    worker = Stats(tmp_path / "s.db")
    worker.observe([done()])
    assert worker.flush()
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another worker in the middle of a long write
    worker.observe([done()])
    assert worker.flush() is False
    assert sum(worker.snapshot().per_release()["v1"]) == 1  # reading is locked out as well: buffer only
    other.execute("COMMIT")
    other.close()
    assert worker.flush()
    assert sum(Stats(tmp_path / "s.db").snapshot().per_release()["v1"]) == 2  # nothing lost, nothing twice


@pytest.mark.parametrize("stop_early", [False, True])
def test_flush_periodically_flushes_until_stopped(tmp_path: Path, stop_early: bool) -> None:
    worker = Stats(tmp_path / "s.db")

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(flush_periodically(worker, stop, every=0.02))
        worker.observe([done()])
        if not stop_early:
            await asyncio.sleep(0.1)
            assert sum(Stats(tmp_path / "s.db").snapshot().per_release()["v1"]) == 1
        worker.observe([done()])
        stop.set()
        await asyncio.wait_for(task, 2)

    asyncio.run(run())
    assert sum(Stats(tmp_path / "s.db").snapshot().per_release()["v1"]) == 2  # the last flush on stop


def test_counts_in_memory_leave_after_24_hours_too(tmp_path: Path) -> None:
    """The buffer is pruned when the hour changes (not on every request), so a worker that
    cannot write its file still keeps only the last 24 hours."""
    clock = Clock()
    memory = Stats(None, clock)
    for _ in range(3):
        memory.observe([done()])
    clock.now += HOURS * 3600
    memory.observe([done("v2")])
    assert memory.snapshot().per_release() == {"v2": [0] * (HOURS - 1) + [1]}
    assert list(memory._counts) == [(int(clock.now // 3600), "v2", "ota.bin")]


def test_a_stop_during_a_flush_still_gets_a_last_flush(tmp_path: Path) -> None:
    """``stop`` set while a flush runs in its thread: what was counted meanwhile is in
    the file when the task ends (the flush that follows the stop is the last)."""
    flushing, go_on = threading.Event(), threading.Event()

    class Slow(Stats):
        def _write(self, *args: Any) -> None:  # the buffer is taken: later counts wait for the next flush
            flushing.set()
            go_on.wait(5)
            super()._write(*args)

    worker = Slow(tmp_path / "s.db")

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(flush_periodically(worker, stop, every=0.01))
        worker.observe([done()])
        assert await asyncio.to_thread(flushing.wait, 5)  # its flush has taken the count and waits
        worker.observe([done()])
        stop.set()
        go_on.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(run())
    assert sum(Stats(tmp_path / "s.db").snapshot().per_release()["v1"]) == 2
