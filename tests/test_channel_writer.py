"""Channels on replicas: the admin API writes the bucket, every replica's mirror follows.

Real replica processes (short polls), a real SeaweedFS, the module's own client. The
``replica`` identity may write only ``channels/*`` and ``partitions/LATEST``; the
``reader`` identity only reads and lists.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from bucket_release import Publisher, replica_env, replica_settings
from conftest import OTHER_TOKEN, TOKEN
from esp_client import version_query
from server_process import ServerProcess
from test_fleet_control import ADMIN_TOKEN, admin
from test_replicas import eventually

from sanic_ota.keys import Key, save_keys
from sanic_ota.store.s3 import Bucket, ObjectMissing
from sanic_ota.tools.s3_dev import SeaweedFS

THIRD_TOKEN = "3" * 40


@pytest.fixture
def publisher(seaweed: SeaweedFS, s3_location: str, tmp_path: Path) -> Publisher:
    """v1.0.0 and v2.0.0 in the bucket; device-1 on stable, device-2 and device-3 on beta, ops an admin."""
    save_keys(tmp_path / "keys.json", [Key("device-1", TOKEN), Key("device-2", OTHER_TOKEN, {"channel": "beta"}),
                                       Key("device-3", THIRD_TOKEN, {"channel": "beta"}),
                                       Key("ops", ADMIN_TOKEN, {"Role": "admin"})])
    publisher = Publisher(seaweed, s3_location, tmp_path)
    publisher.publish("v1.0.0")
    publisher.publish("v2.0.0")
    return publisher


def replica(workdir: Path, store: SeaweedFS, publisher: Publisher, name: str,
            credentials: dict[str, str] | None = None) -> ServerProcess:
    settings = replica_settings(workdir, str(publisher.location), publisher.public_key, name)
    return ServerProcess(replica_env(settings, store) | (credentials or {}), cwd=workdir)


def read(publisher: Publisher, path: str) -> bytes | None:
    async def go(bucket: Bucket) -> bytes | None:
        try:
            return await bucket.read(path)
        except ObjectMissing:
            return None

    result: bytes | None = publisher.run(go)
    return result


def answers(proc: ServerProcess, token: str, version: str, source: str | None = None) -> bool:
    return version_query(proc.host, proc.port, token, source=source) == version


def test_a_pin_set_on_one_replica_is_answered_by_the_other_within_a_poll(
        seaweed: SeaweedFS, publisher: Publisher, tmp_path: Path) -> None:
    with replica(tmp_path, seaweed, publisher, "a") as a, replica(tmp_path, seaweed, publisher, "b") as b:
        for proc in (a, b):
            eventually(lambda p=proc: answers(p, OTHER_TOKEN, "v2.0.0"), 15, "v2.0.0 on beta")
        status, body = admin(a, "PUT", "/v1/admin/channels/beta/pin", json.dumps({"version": "v1.0.0"}).encode())
        assert status == 200, body
        assert answers(a, OTHER_TOKEN, "v1.0.0")  # this replica answers at once
        waited = eventually(lambda: answers(b, OTHER_TOKEN, "v1.0.0"), 5, "the pin on the other replica")
        assert waited < 3  # one poll (0.5 s), the watcher's quiet (0.3 s), a re-read
        document = read(publisher, "channels/beta.json")
        assert document is not None and json.loads(document)["pin"] == "v1.0.0"
        assert (tmp_path / "b" / "channels" / "beta.json").read_bytes() == document  # byte for byte
        assert a.logged("kind=admin key=ops", "change=pin:beta=v1.0.0")

        # the stable channel's pin is the bucket's partitions/LATEST
        status, body = admin(a, "PUT", "/v1/admin/channels/stable/pin", json.dumps({"version": "v1.0.0"}).encode())
        assert status == 200, body
        assert read(publisher, "partitions/LATEST") == b"v1.0.0\n"
        eventually(lambda: answers(b, TOKEN, "v1.0.0"), 5, "the stable pin on the other replica")
        assert a.logged("change=pin:stable=v1.0.0")
        status, body = admin(b, "DELETE", "/v1/admin/channels/stable/pin")  # the other way round
        assert status == 200, body
        assert read(publisher, "partitions/LATEST") is None
        eventually(lambda: answers(a, TOKEN, "v2.0.0"), 5, "the stable pin removed on the first replica")

        # a channel file deleted from the bucket leaves every replica's copy: beta follows the newest again
        publisher.delete("channels/beta.json")
        for proc, name in ((a, "a"), (b, "b")):
            eventually(lambda p=proc: answers(p, OTHER_TOKEN, "v2.0.0"), 5, "beta unpinned")
            assert not (tmp_path / name / "channels" / "beta.json").exists()
        assert b.logged("channel file beta removed (gone from the bucket)")


def test_a_rollout_halted_on_one_replica_stops_new_offers_on_the_other(
        seaweed: SeaweedFS, publisher: Publisher, tmp_path: Path) -> None:
    with replica(tmp_path, seaweed, publisher, "a") as a, replica(tmp_path, seaweed, publisher, "b") as b:
        eventually(lambda: answers(b, OTHER_TOKEN, "v2.0.0"), 15, "v2.0.0 on beta")
        assert admin(a, "PUT", "/v1/admin/channels/beta/pin", b'{"version": "v1.0.0"}')[0] == 200
        eventually(lambda: answers(b, OTHER_TOKEN, "v1.0.0", "127.0.0.9"), 5, "the pin on the other replica")
        status, body = admin(a, "POST", "/v1/admin/channels/beta/rollout", b'{"version": "v2.0.0", "percent": 100}')
        assert status == 200, body
        eventually(lambda: answers(b, OTHER_TOKEN, "v2.0.0", "127.0.0.2"), 5, "the rollout on the other replica")
        status, body = admin(a, "POST", "/v1/admin/channels/beta/rollout/halt")
        assert status == 200, body
        assert a.logged("change=rollout-start:beta=v2.0.0@100.0%", "change=rollout-halt:beta=v2.0.0")
        # a caller the other replica never offered v2.0.0 to is not offered it once the halt arrived
        # (each try is a new caller: one offered v2.0.0 before the halt arrived keeps it)
        callers = (f"127.0.1.{n}" for n in range(1, 250))
        waited = eventually(lambda: answers(b, THIRD_TOKEN, "v1.0.0", next(callers)), 5, "the halt on replica b")
        assert waited < 3
        assert answers(b, OTHER_TOKEN, "v2.0.0", "127.0.0.2")  # offered before the halt: kept
        document = read(publisher, "channels/beta.json")
        assert document is not None and json.loads(document)["rollout"]["halted"] is True


def test_a_read_only_replica_changes_nothing_and_takes_no_upload(
        seaweed: SeaweedFS, publisher: Publisher, tmp_path: Path) -> None:
    reader = seaweed.reader.environ(seaweed.endpoint)
    with replica(tmp_path, seaweed, publisher, "ro", reader) as proc:
        eventually(lambda: answers(proc, OTHER_TOKEN, "v2.0.0"), 15, "v2.0.0 on beta")
        for method, path, body in (("PUT", "/v1/admin/channels/beta/pin", b'{"version": "v1.0.0"}'),
                                   ("PUT", "/v1/admin/channels/stable/pin", b'{"version": "v1.0.0"}'),
                                   ("DELETE", "/v1/admin/channels/stable/pin", None)):
            status, answer = admin(proc, method, path, body)
            assert status == 503, answer
            message = str(answer["message"])
            assert "nothing was changed" in message and "write access" in message
            assert "channels/ and partitions/LATEST" in message and "on a server that has it" in message
            assert str(tmp_path) not in message and seaweed.reader.secret_key not in message
        assert read(publisher, "channels/beta.json") is None and read(publisher, "partitions/LATEST") is None
        assert not (tmp_path / "ro" / "channels" / "beta.json").exists()
        assert not (tmp_path / "ro" / "partitions" / "LATEST").exists()
        time.sleep(0.7)  # a poll later, still as before
        assert answers(proc, OTHER_TOKEN, "v2.0.0") and answers(proc, TOKEN, "v2.0.0")
        assert proc.logged("refused this replica's write")

        status, answer = admin(proc, "PUT", "/v1/admin/releases/v3.0.0", b"not read")
        assert status == 409, answer
        assert "tools/publish.py" in str(answer["message"])
        assert not (tmp_path / "ro" / "partitions" / "v3.0.0").exists()


def test_a_change_while_the_store_is_down_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """502, worth a retry: the bucket did not take it, so no replica, this one included, has it."""
    with SeaweedFS(tmp_path / "own-store") as store:
        save_keys(tmp_path / "keys.json", [Key("device-2", OTHER_TOKEN, {"channel": "beta"}),
                                           Key("ops", ADMIN_TOKEN, {"Role": "admin"})])
        publisher = Publisher(store, f"s3://{store.bucket}/fleet", tmp_path)
        publisher.publish("v1.0.0")
        publisher.publish("v2.0.0")
        with replica(tmp_path, store, publisher, "a") as proc:
            eventually(lambda: answers(proc, OTHER_TOKEN, "v2.0.0"), 15, "v2.0.0 on beta")
            store.kill()
            status, answer = admin(proc, "PUT", "/v1/admin/channels/beta/pin", b'{"version": "v1.0.0"}')
            assert status == 502, answer
            message = str(answer["message"])
            assert "nothing was changed" in message and "try again when the store answers" in message
            assert str(tmp_path) not in message and store.replica.secret_key not in message
            assert not (tmp_path / "a" / "channels" / "beta.json").exists()
            assert answers(proc, OTHER_TOKEN, "v2.0.0")  # serving goes on, as before
            assert proc.logged("did not take this replica's")
            assert proc.logged("kind=admin key=ops", "status=502")  # the request is audited,
            assert "change=pin:beta" not in proc.log()  # and no change with it: nothing changed
