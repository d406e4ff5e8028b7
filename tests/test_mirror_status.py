"""mirror_status: one status file the mirror writes and every worker reads, at most once a second."""

from __future__ import annotations

from pathlib import Path

from sanic_ota.mirror_status import STATUS_FILE, StatusReader, StoreStatus, read_status, write_status


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
