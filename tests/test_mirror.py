"""mirror.Mirror against a real bucket (SeaweedFS), one poll at a time, and the index it feeds.

Each test publishes signed releases with ``bucket_release.Publisher``, runs the
mirror's poll in process, then indexes the cache directory with the server's own
``Indexer`` (offline verification): what the mirror installs is what the server serves.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest
from bucket_release import Publisher, release_files, replica_settings, run_as

from sanic_ota.errors import Unavailable
from sanic_ota.mirror import LOCK_FILE, Mirror
from sanic_ota.mirror_status import read_status
from sanic_ota.releases import Index
from sanic_ota.settings import Settings
from sanic_ota.signing import create_key_pair, load_verifier
from sanic_ota.state import open_indexer
from sanic_ota.store.s3 import open_bucket
from sanic_ota.tools.s3_dev import SeaweedFS


@pytest.fixture
def publisher(seaweed: SeaweedFS, s3_location: str, tmp_path: Path) -> Publisher:
    return Publisher(seaweed, s3_location, tmp_path)


@pytest.fixture
def replica(publisher: Publisher, workdir: Path, s3_location: str) -> Settings:
    return replica_settings(workdir, s3_location, publisher.public_key)


def mirror_of(settings: Settings) -> Mirror:
    mirror = Mirror(settings, load_verifier(settings.public_key_path))
    mirror.load()
    return mirror


def poll(seaweed: SeaweedFS, mirror: Mirror, times: int = 1) -> None:
    async def go() -> None:
        async with open_bucket(mirror.location) as bucket:
            for _ in range(times):
                await mirror.poll(bucket)

    run_as(seaweed, go())


def index_of(settings: Settings) -> Index:
    verifier = load_verifier(settings.public_key_path)
    return open_indexer(settings, verifier, None).build()


def test_a_published_release_is_mirrored_byte_exact_and_served(
        seaweed: SeaweedFS, publisher: Publisher, replica: Settings) -> None:
    files = publisher.publish("v1.0.0")
    mirror = mirror_of(replica)
    poll(seaweed, mirror)
    for name, data in files.items():
        assert (replica.partitions_dir / "v1.0.0" / name).read_bytes() == data
    index = index_of(replica)
    assert index.latest().version == "v1.0.0" and not index.problems
    status = read_status(replica.cache_dir)
    assert status is not None and status.up and status.last_sync and status.mirrored == ["v1.0.0"]
    assert not [n for n in os.listdir(replica.partitions_dir) if n.startswith(".")]  # no temporary left
    # nothing changed in the bucket: nothing is fetched or rewritten
    before = {n: os.stat(replica.partitions_dir / "v1.0.0" / n).st_ino for n in files}
    poll(seaweed, mirror, times=2)
    assert before == {n: os.stat(replica.partitions_dir / "v1.0.0" / n).st_ino for n in files}
    # a restarted mirror knows what it installed (.mirror.json) and fetches nothing either
    poll(seaweed, mirror_of(replica))
    assert before == {n: os.stat(replica.partitions_dir / "v1.0.0" / n).st_ino for n in files}


def test_objects_that_are_not_as_signed_are_never_served_and_named(
        seaweed: SeaweedFS, publisher: Publisher, replica: Settings) -> None:
    publisher.publish("v1.0.0")
    files = publisher.publish("v2.0.0")
    tampered = bytearray(files["ota.bin"])
    tampered[-100] ^= 0xFF
    publisher.put("partitions/v2.0.0/ota.bin", bytes(tampered))  # same length, other bytes
    publisher.put("partitions/v2.0.0/mqtt_ca.bin", files["mqtt_ca.bin"][:-4])  # truncated
    mirror = mirror_of(replica)
    poll(seaweed, mirror)
    status = read_status(replica.cache_dir)
    assert status is not None and set(status.failures) == {"v2.0.0"}
    assert status.failures["v2.0.0"]["ota.bin"].startswith("SHA-256")
    assert "bytes in the bucket, the manifest says" in status.failures["v2.0.0"]["mqtt_ca.bin"]
    index = index_of(replica)
    assert "v2.0.0" in index.problems and "v1.0.0" in index.releases
    with pytest.raises(Unavailable):  # never the older release in place of the broken newest
        index.latest()
    # the publisher fixes it: the next poll fetches the new objects (their ETags changed)
    publisher.publish("v2.0.0", files)
    poll(seaweed, mirror)
    assert index_of(replica).latest().version == "v2.0.0"
    status = read_status(replica.cache_dir)
    assert status is not None and status.failures == {}


def test_a_missing_object_and_a_bad_signature(
        seaweed: SeaweedFS, publisher: Publisher, replica: Settings, tmp_path: Path) -> None:
    publisher.publish("v1.0.0")
    publisher.delete("partitions/v1.0.0/mqtt_ca.bin")
    other = create_key_pair(tmp_path / "other.pem", tmp_path / "other.pub.pem")
    impostor = Publisher.__new__(Publisher)
    impostor.__dict__.update(publisher.__dict__, signer=other)
    impostor.publish("v2.0.0")  # signed by a key the replica does not trust
    mirror = mirror_of(replica)
    poll(seaweed, mirror)
    failures = mirror.status.failures
    assert failures["v1.0.0"] == {"mqtt_ca.bin": "missing from the bucket"}
    assert "no signature by key" in failures["v2.0.0"]["manifest"]
    index = index_of(replica)
    assert not index.releases and set(index.problems) == {"v1.0.0", "v2.0.0"}
    assert "no signature by key" in index.problems["v2.0.0"]
    # retried with back-off: after the first delay (1 s) the release is fetched again
    retry = mirror.retries["v1.0.0"]
    assert retry.delay == 1.0
    mirror.retries["v1.0.0"] = retry = dataclasses.replace(retry, at=time.monotonic() + 60)
    poll(seaweed, mirror)  # not due yet: not fetched again
    assert mirror.retries["v1.0.0"] == retry
    mirror.retries["v1.0.0"] = dataclasses.replace(retry, at=0.0)  # due now
    poll(seaweed, mirror)
    assert mirror.retries["v1.0.0"].delay == 2.0


def test_a_deleted_release_and_pin_leave_the_cache(seaweed: SeaweedFS, publisher: Publisher, replica: Settings) -> None:
    publisher.publish("v1.0.0")
    files = publisher.publish("v2.0.0")
    publisher.put("partitions/LATEST", b"v1.0.0\n")
    mirror = mirror_of(replica)
    poll(seaweed, mirror)
    assert index_of(replica).latest().version == "v1.0.0"
    publisher.delete("partitions/LATEST")
    publisher.unpublish("v2.0.0", list(files))
    poll(seaweed, mirror)
    assert not (replica.partitions_dir / "v2.0.0").exists()
    assert not (replica.manifests_dir / "v2.0.0.json").exists()
    assert not (replica.partitions_dir / "LATEST").exists()
    index = index_of(replica)
    assert index.latest().version == "v1.0.0" and set(index.present) == {"v1.0.0"}
    record = json.loads((replica.cache_dir / ".mirror.json").read_bytes())
    assert set(record["releases"]) == {"v1.0.0"} and record["pin"] is None


def test_the_oldest_releases_are_left_out_of_a_full_cache(
        seaweed: SeaweedFS, publisher: Publisher, workdir: Path, s3_location: str) -> None:
    size = sum(len(d) for d in publisher.publish("v1.0.0").values())
    publisher.publish("v2.0.0")
    publisher.publish("v3.0.0")
    # room for about two releases (manifests take a little more)
    settings = replica_settings(workdir, s3_location, publisher.public_key, cache_dir_bytes=2 * size + 4000)
    mirror = mirror_of(settings)
    poll(seaweed, mirror)
    assert sorted(os.listdir(settings.partitions_dir)) == ["v2.0.0", "v3.0.0"]
    assert mirror.status.left_out == ["v1.0.0"]
    publisher.put("partitions/LATEST", b"v1.0.0")  # the pinned release is always held
    poll(seaweed, mirror)
    assert sorted(os.listdir(settings.partitions_dir)) == ["LATEST", "v1.0.0", "v3.0.0"]
    assert index_of(settings).latest().version == "v1.0.0"


def test_releases_a_channel_names_stay_in_a_full_cache(
        seaweed: SeaweedFS, publisher: Publisher, workdir: Path, s3_location: str) -> None:
    """A channel's pin or rollout is what its callers are told to install: kept, like the pin."""
    size = sum(len(d) for d in publisher.publish("v1.0.0").values())
    publisher.publish("v2.0.0")
    publisher.publish("v3.0.0")
    publisher.publish("v4.0.0")
    publisher.put("channels/beta.json", b'{"pin": "v1.0.0"}')
    rollout = {"version": "v2.0.0", "percent": 10, "started": "2026-11-30T08:00:00Z"}
    publisher.put("channels/canary.json", json.dumps({"rollout": rollout}).encode())
    settings = replica_settings(workdir, s3_location, publisher.public_key, cache_dir_bytes=size)  # room for one
    mirror = mirror_of(settings)
    poll(seaweed, mirror)
    assert sorted(os.listdir(settings.partitions_dir)) == ["v1.0.0", "v2.0.0", "v4.0.0"]
    assert mirror.status.left_out == ["v3.0.0"]
    assert index_of(settings).base("beta").version == "v1.0.0"
    # known again after a restart, from the channel files in the cache
    assert mirror_of(settings).channel_names == {"beta": {"v1.0.0"}, "canary": {"v2.0.0"}}
    publisher.delete("channels/beta.json")  # nothing names v1.0.0 any more: it may go
    poll(seaweed, mirror)
    assert sorted(os.listdir(settings.partitions_dir)) == ["v2.0.0", "v4.0.0"]


def test_a_changed_release_is_replaced_whole(seaweed: SeaweedFS, publisher: Publisher, replica: Settings) -> None:
    publisher.publish("v1.0.0")
    mirror = mirror_of(replica)
    poll(seaweed, mirror)
    replaced = {"ota.bin": release_files("v1.0.0", 9000)["ota.bin"]}  # --force: other bytes, one file less
    publisher.delete("partitions/v1.0.0/mqtt_ca.bin")
    publisher.publish("v1.0.0", replaced, serial=2)
    poll(seaweed, mirror)
    assert os.listdir(replica.partitions_dir / "v1.0.0") == ["ota.bin"]
    assert (replica.partitions_dir / "v1.0.0" / "ota.bin").read_bytes() == replaced["ota.bin"]
    assert index_of(replica).releases["v1.0.0"].manifest.serial == 2


def test_one_mirror_per_cache_directory(replica: Settings) -> None:
    first, second = Mirror(replica, load_verifier(replica.public_key_path)), Mirror(
        replica, load_verifier(replica.public_key_path))
    assert first._take_lock() and not second._take_lock()
    assert first._take_lock()  # still the holder after a failed round
    assert first._lock_fd is not None
    os.close(first._lock_fd)  # the holder died: the lock is free for the next
    assert second._take_lock() and (replica.cache_dir / LOCK_FILE).exists()


def test_channel_files_are_mirrored_byte_for_byte_and_follow_the_bucket(
        seaweed: SeaweedFS, publisher: Publisher, replica: Settings) -> None:
    publisher.publish("v1.0.0")
    publisher.publish("v2.0.0")
    beta = b'{"pin": "v1.0.0", "by": "ops"}\n'
    publisher.put("channels/beta.json", beta)
    publisher.put("channels/huge.json", b" " * (64 * 1024 + 1))
    publisher.put("channels/notes.txt", b"not a channel file")
    mirror = mirror_of(replica)
    poll(seaweed, mirror)
    copy = replica.channels_dir / "beta.json"
    assert copy.read_bytes() == beta
    assert sorted(os.listdir(replica.channels_dir)) == ["beta.json", "huge.json"]
    index = index_of(replica)
    assert index.base("beta").version == "v1.0.0"
    assert "huge" in index.channels.problems  # over 64 KiB: refused, its callers get 503, never an old copy
    # unchanged ETags: nothing fetched or rewritten, also after a restart (.mirror.json)
    inode = os.stat(copy).st_ino
    poll(seaweed, mirror)
    poll(seaweed, mirror_of(replica))
    assert os.stat(copy).st_ino == inode
    # a copy the record does not know (written by hand) is replaced by the bucket's, or removed
    (replica.channels_dir / "alpha.json").write_bytes(b'{"pin": "v2.0.0"}')
    copy.write_bytes(b'{"pin": "v2.0.0"}')
    restarted = mirror_of(replica)
    restarted.channel_etags["beta"] = ""  # as after a crash between the write and the record
    poll(seaweed, restarted)
    assert copy.read_bytes() == beta and not (replica.channels_dir / "alpha.json").exists()
    # deleted from the bucket: gone from the cache; the channel follows the newest again
    publisher.delete("channels/beta.json")
    poll(seaweed, restarted)
    assert not copy.exists()
    assert index_of(replica).base("beta").version == "v2.0.0"


def test_a_manifest_too_large_is_a_failure_and_not_fetched(
        seaweed: SeaweedFS, publisher: Publisher, replica: Settings) -> None:
    from sanic_ota.store.local import MANIFEST_LIMIT

    publisher.publish("v1.0.0")
    publisher.put("manifests/v9.0.0.json", b" " * (MANIFEST_LIMIT + 1))
    mirror = mirror_of(replica)
    poll(seaweed, mirror)
    assert "more than a manifest may be" in mirror.retries["v9.0.0"].problems["manifest"]  # named, retried later
