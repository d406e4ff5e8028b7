"""Tests for sanic_ota.identities: the record that lets a restart skip hashing, and its limits."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import TOKEN, VERSION, env_for, settings_for, write_release
from esp_client import ModuleError, download, version_query
from server_process import ServerProcess

from sanic_ota import identities
from sanic_ota.identities import IDENTITIES_FILE, Hashed
from sanic_ota.store.local import identity

SHA = "ab" * 32


def test_records_round_trip() -> None:
    records = {"v1": {"ota.bin": Hashed((1, 2, 3, 4, 5), SHA), "mqtt_ca.bin": Hashed((1, 3, 9, -4, 5), "cd" * 32)},
               "v2": {"ota.bin": Hashed(("9b2cf535f27731c974343645a3985328", 4096), SHA)}}  # an ETag and a size
    assert identities.parse(identities.encode(records)) == records


@pytest.mark.parametrize(
    "data",
    [b"", b"[]", b"{", b"[" * 100_000, b'{"v1": ' + b"9" * 5000 + b"}", b'{"v1": {"ota.bin": [1, 2]}}',
     b'{"v1": {"ota.bin": [1, 2, 3, 4, true, "' + b"ab" * 32 + b'"]}}',
     b'{"v1": {"ota.bin": [1, 2, 3, 4, 5, "AB"]}}', b'{"v1": {"ota.bin": ["' + b"ab" * 32 + b'"]}}',
     b'{"v1": {"ota.bin": [1.5, "' + b"ab" * 32 + b'"]}}', b'{"v1": {"ota.bin": [null, "' + b"ab" * 32 + b'"]}}',
     b"\xff\xfe"],
)
def test_a_bad_record_counts_as_empty(data: bytes) -> None:
    assert identities.parse(data) == {}


def test_a_release_with_one_bad_entry_is_not_recorded_at_all() -> None:
    good = [1, 2, 3, 4, 5, SHA]
    data = json.dumps({"v1": {"ota.bin": good, "mqtt_ca.bin": good[:5]}, "v2": {"ota.bin": good}}).encode()
    assert identities.parse(data) == {"v2": {"ota.bin": Hashed((1, 2, 3, 4, 5), SHA)}}


def test_settled() -> None:
    now = 10**18
    assert identities.settled(now - 3 * 10**9, now)
    assert not identities.settled(now - 10**9, now)  # changed a second ago
    assert not identities.settled(now + 10**9, now)  # in the future


# -- on a real server process -----------------------------------------------------------


def _wait_until_settled() -> None:
    time.sleep(identities.SETTLE_SECONDS + 0.1)  # files written by the test, recorded only once settled


def test_a_restart_with_two_workers_hashes_and_signs_nothing(workdir: Path) -> None:
    for n in range(5):
        write_release(workdir / "partitions", f"v2.{n}.0")
    _wait_until_settled()
    settings = settings_for(workdir)
    with ServerProcess(env_for(settings), cwd=workdir, workers=2) as proc:
        assert version_query(proc.host, proc.port, TOKEN) == "v2.4.0"
    for version in (VERSION, *(f"v2.{n}.0" for n in range(5))):
        assert proc.log().count(f"signed manifest for {version} (serial 1,") == 1  # once, by one worker
    with ServerProcess(env_for(settings), cwd=workdir, workers=2) as again:
        assert version_query(again.host, again.port, TOKEN) == "v2.4.0"
        line = "6 unchanged since last hashed, 0 file(s) hashed, 0 manifest(s) signed"
        assert again.log().count(line) == 2, again.log()


def test_a_wrong_record_never_gets_unverified_bytes_served(workdir: Path) -> None:
    """The record is trusted at start, but bytes are still checked before they are sent."""
    _wait_until_settled()
    settings = settings_for(workdir)
    with ServerProcess(env_for(settings), cwd=workdir) as proc:
        assert version_query(proc.host, proc.port, TOKEN) == VERSION
    cert = workdir / "partitions" / VERSION / "mqtt_ca.bin"
    data = bytearray(cert.read_bytes())
    data[-1] ^= 0xFF
    cert.write_bytes(bytes(data))  # changed while the server is down, same size
    record_path = workdir / "manifests" / IDENTITIES_FILE
    records = identities.parse(record_path.read_bytes())
    old = records[VERSION]["mqtt_ca.bin"]
    records[VERSION]["mqtt_ca.bin"] = Hashed(identity(os.lstat(cert)), old.sha256)  # a record that lies
    record_path.write_bytes(identities.encode(records))
    with ServerProcess(env_for(settings), cwd=workdir) as proc:
        assert "1 unchanged since last hashed, 0 file(s) hashed" in proc.log()  # the lie was believed...
        with pytest.raises(ModuleError):
            download(proc.host, proc.port, TOKEN, VERSION, "mqtt_ca")  # ...but the bytes were not
        assert proc.logged("INTEGRITY", "mqtt_ca.bin does not match its signed manifest")
        assert download(proc.host, proc.port, TOKEN, VERSION, "ota")
