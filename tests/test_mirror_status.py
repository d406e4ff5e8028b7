"""mirror_status: one status file the mirror writes and every worker reads, at most once a second."""

from __future__ import annotations

import os
from pathlib import Path

from sanic_ota.mirror_status import (
    STATUS_FILE,
    WANTED_DIR,
    StatusReader,
    StoreStatus,
    read_status,
    want,
    wanted,
    write_status,
)


def test_the_status_makes_the_round_trip_and_junk_reads_as_none(tmp_path: Path) -> None:
    status = StoreStatus("s3://b/p", up=True, message="", last_sync=1.5e9,
                         failures={"v2.0.0": {"ota.bin": "missing from the bucket"}}, left_out=["v0.1.0"],
                         mirrored=["v1.0.0", "v2.0.0"])
    write_status(tmp_path, status)
    assert read_status(tmp_path) == status and status.synced
    assert read_status(tmp_path / "nowhere") is None
    for junk in (b"", b"[]", b'{"store": 1}', b"{" * 100_000, b'{"up": true}'):
        (tmp_path / STATUS_FILE).write_bytes(junk)
        assert read_status(tmp_path) is None


def test_a_reader_reads_the_file_at_most_once_a_period(tmp_path: Path) -> None:
    reader = StatusReader(tmp_path, "s3://b/p", every=3600)
    first = reader.read()
    assert first == StoreStatus("s3://b/p") and not first.synced  # nothing written yet: not listed
    write_status(tmp_path, StoreStatus("s3://b/p", up=True, last_sync=1.0))
    assert reader.read() is first
    assert StatusReader(tmp_path, "s3://b/p", every=0).read().synced


def test_a_wanted_release_is_remembered_for_an_hour_after_the_last_request(tmp_path: Path) -> None:
    assert wanted(tmp_path, 1e9) == set()
    want(tmp_path, "v1.0.0")
    want(tmp_path, "v0.9.0")
    os.utime(tmp_path / WANTED_DIR / "v0.9.0", (1000.0, 1000.0))  # asked for long ago
    now = os.stat(tmp_path / WANTED_DIR / "v1.0.0").st_mtime
    assert wanted(tmp_path, now + 60) == {"v1.0.0"}
    assert os.listdir(tmp_path / WANTED_DIR) == ["v1.0.0"]  # the old request is forgotten
    assert wanted(tmp_path, now + 7200) == set()
