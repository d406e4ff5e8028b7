"""Fleet counts: shared by workers through one file, kept across restarts, bounded."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from sanic_ota import fleet as fleet_module
from sanic_ota.accounting import Kind, RequestRecord
from sanic_ota.fleet import Fleet


def _download(key: str, channel: str, client: str, status: int = 200) -> RequestRecord:
    record = RequestRecord(client=client, kind=Kind.DOWNLOAD, key=key, channel=channel, version="v2", file="ota.bin")
    record.handled = True
    record.close(status, 10 if status == 200 else 0, 10 if status == 200 else 0)
    return record


def _version_query(key: str, channel: str, client: str, offered: str | None) -> RequestRecord:
    record = RequestRecord(client=client, kind=Kind.VERSION_QUERY, key=key, channel=channel, offered=offered)
    record.handled = True
    record.close(200, 40, 40)
    return record


def test_two_workers_share_counts_and_a_restart_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "stats.sqlite3"
    one, two = Fleet(path), Fleet(path)
    one.offered("plant", "beta", "v2", "10.0.0.1")
    one.remember("caller-a")
    two.observe(_version_query("plant", "beta", "10.0.0.2", offered="v2"))
    two.observe(_download("plant", "beta", "10.0.0.2"))
    two.observe(_download("plant", "beta", "10.0.0.3", status=404))
    assert one.flush() and two.flush()
    assert two.was_offered("caller-a")  # an offer remembered by another worker
    (group,) = Fleet(path).snapshot()  # a new process: what the file kept
    assert (group.key, group.channel, group.offered, group.downloaded) == ("plant", "beta", {"v2": 2}, {"v2": 1})
    assert group.addresses == 3 and group.failures == {"refused": 1} and group.last_seen > 0
    restarted = Fleet(path)
    restarted.flush()
    assert restarted.was_offered("caller-a")


def test_addresses_and_remembered_offers_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet_module, "MAX_ADDRESSES", 5)
    monkeypatch.setattr(fleet_module, "MAX_REMEMBERED", 3)
    ticks = itertools.count(1)
    fleet = Fleet(tmp_path / "stats.sqlite3", clock=lambda: float(next(ticks)))
    for i in range(20):
        fleet.offered("plant", "stable", "v1", f"10.0.0.{i}")
        fleet.remember(f"caller-{i}")
    assert fleet.flush()
    (group,) = fleet.snapshot()
    assert group.addresses == 5 and group.addresses_capped and group.offered == {"v1": 20}
    assert [i for i in range(20) if fleet.was_offered(f"caller-{i}")] == [0, 1, 2]  # the buffer is capped too
    later = Fleet(tmp_path / "stats.sqlite3", clock=lambda: float(next(ticks)))
    for i in (20, 21):
        later.offered("plant", "stable", "v1", f"10.0.1.{i}")
        later.remember(f"caller-{i}")
    assert later.flush()
    assert [i for i in range(22) if later.was_offered(f"caller-{i}")] == [2, 20, 21]  # the oldest forgotten first


def test_a_broken_file_keeps_counting_in_memory(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path / "missing-dir" / "stats.sqlite3")
    fleet.offered("plant", "stable", "v1", "10.0.0.1")
    assert not fleet.flush()
    (group,) = fleet.snapshot()
    assert group.offered == {"v1": 1}
