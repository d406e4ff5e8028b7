"""Replicas as operators run them: real server processes, a real S3 store (SeaweedFS), the
module's own client. Each replica mirrors the bucket into its own cache directory."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bucket_release import Publisher, release_files, replica_env, replica_settings
from conftest import TOKEN
from esp_client import download, version_query
from esp_idf_client import partial_download
from server_process import ServerProcess

from sanic_ota.keys import Key, load_keys, save_keys
from sanic_ota.settings import Settings
from sanic_ota.tools.s3_dev import SeaweedFS

ADMIN = "a" * 40


@pytest.fixture
def admin_workdir(workdir: Path) -> Path:
    save_keys(workdir / "keys.json", load_keys(workdir / "keys.json") + [Key("ops", ADMIN, {"Role": "admin"})])
    return workdir


@pytest.fixture
def publisher(seaweed: SeaweedFS, s3_location: str, tmp_path: Path) -> Publisher:
    return Publisher(seaweed, s3_location, tmp_path)


def eventually(check: Callable[[], object], timeout: float, what: str) -> float:
    """Seconds until ``check()`` is truthy (exceptions count as not yet); fails after ``timeout``."""
    started = time.monotonic()
    last: object = None
    while time.monotonic() - started < timeout:
        try:
            if check():
                return time.monotonic() - started
        except Exception as e:  # not yet: a 503, a refused connection
            last = e
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout} s (last: {last!r})")


def http(proc: ServerProcess, path: str, token: str = TOKEN, basic: bool = False) -> tuple[int, bytes]:
    auth = ("Basic " + base64.b64encode(f"ops:{token}".encode()).decode()) if basic else f"token {token}"
    request = urllib.request.Request(f"http://{proc.host}:{proc.port}{path}", headers={"Authorization": auth})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def query(proc: ServerProcess) -> tuple[int, bytes]:
    return http(proc, "/v1/device/rom/?is_format_simple=true")


def replica(workdir: Path, store: SeaweedFS, settings: Settings, workers: int = 1) -> ServerProcess:
    return ServerProcess(replica_env(settings, store), cwd=workdir, workers=workers)


def test_two_replicas_serve_a_release_byte_exact_and_one_survives_the_other(
        seaweed: SeaweedFS, publisher: Publisher, workdir: Path, s3_location: str) -> None:
    one = replica_settings(workdir, s3_location, publisher.public_key, "one")
    two = replica_settings(workdir, s3_location, publisher.public_key, "two")
    with replica(workdir, seaweed, one, workers=2) as first, replica(workdir, seaweed, two) as second:
        files = publisher.publish("v1.0.0", release_files("v1.0.0", 1_500_000))
        for proc in (first, second):
            waited = eventually(lambda p=proc: version_query(p.host, p.port, TOKEN) == "v1.0.0", 15, "v1.0.0")
            for name, data in files.items():
                # each worker's watcher takes the mirrored release in on its own, within its quiet
                # period of the other's: a download may reach the worker that has not yet
                eventually(lambda p=proc, n=name, d=data: download(p.host, p.port, TOKEN, "v1.0.0",
                                                                   n.removesuffix(".bin")) == d, 5, name)
        assert waited < 15
        # esp_https_ota's sequence (HEAD, then range windows) from a replica's verified copy
        path = "/v1/device/rom/?action=download_rom&version=v1.0.0&filename=ota.bin"
        image, client = partial_download(second.host, second.port, path, {"Authorization": f"token {TOKEN}"})
        assert image == files["ota.bin"] and {answer.status for answer in client.answers} == {206}
        # one worker of the two mirrors (the lock), the other only serves
        assert first.log().count("this worker mirrors") == 1
        # the first replica dies in the middle of a download; the second serves on
        with socket.create_connection((first.host, first.port)) as sock:
            sock.sendall(f"GET /v1/device/rom/?action=download_rom&version=v1.0.0&filename=ota.bin HTTP/1.1\r\n"
                         f"Host: x\r\nAuthorization: token {TOKEN}\r\n\r\n".encode())
            assert b"Content-Length: " in sock.recv(1024)
            assert first.proc is not None
            os.killpg(first.proc.pid, signal.SIGKILL)
            first.proc.wait()
        assert download(second.host, second.port, TOKEN, "v1.0.0", "ota") == files["ota.bin"]


def test_another_worker_takes_over_the_mirror_when_its_worker_dies(
        seaweed: SeaweedFS, publisher: Publisher, workdir: Path, s3_location: str) -> None:
    settings = replica_settings(workdir, s3_location, publisher.public_key)
    with replica(workdir, seaweed, settings, workers=2) as proc:
        publisher.publish("v1.0.0")
        eventually(lambda: version_query(proc.host, proc.port, TOKEN) == "v1.0.0", 15, "v1.0.0")
        holder = re.search(r"\[(\d+)\] INFO sanic_ota\.mirror: this worker mirrors", proc.log())
        assert holder is not None
        os.kill(int(holder.group(1)), signal.SIGKILL)
        eventually(lambda: proc.log().count("this worker mirrors") == 2, 10, "the mirror taken over")
        files = publisher.publish("v2.0.0")
        eventually(lambda: download(proc.host, proc.port, TOKEN, "v2.0.0", "ota") == files["ota.bin"], 15, "v2.0.0")


def test_tampered_bytes_in_the_bucket_are_never_served(
        seaweed: SeaweedFS, publisher: Publisher, admin_workdir: Path, s3_location: str) -> None:
    publisher.publish("v1.0.0")
    files = publisher.publish("v2.0.0")
    tampered = bytearray(files["ota.bin"])
    tampered[-100] ^= 0xFF
    publisher.put("partitions/v2.0.0/ota.bin", bytes(tampered))
    settings = replica_settings(admin_workdir, s3_location, publisher.public_key)
    with replica(admin_workdir, seaweed, settings) as proc:
        eventually(lambda: b"store-failures" in http(proc, "/status", ADMIN, basic=True)[1], 15, "failure in /status")
        eventually(lambda: "v2.0.0" in proc.log() and "NOT served" in proc.log(), 10, "v2.0.0 indexed")
        status, body = query(proc)
        assert status == 503 and b"v2.0.0" in body  # never v1.0.0 in place of the broken newest
        status, body = http(proc, "/v1/device/rom/?action=download_rom&version=v2.0.0&filename=ota.bin")
        assert status == 503 and tampered not in body
        assert download(proc.host, proc.port, TOKEN, "v1.0.0", "ota") == release_files("v1.0.0")["ota.bin"]
        page = http(proc, "/status", ADMIN, basic=True)[1].decode()
        assert "store-failures" in page and "SHA-256" in page and "v2.0.0" in page
        metrics = http(proc, "/metrics", ADMIN)[1].decode()
        assert 'sanic_ota_store_object_failures{version="v2.0.0"} 1.0' in metrics
        assert "sanic_ota_store_up 1.0" in metrics
        assert "ota.bin in s3://" in proc.log() and "SHA-256" in proc.log()


def test_a_deleted_release_leaves_within_a_poll(
        seaweed: SeaweedFS, publisher: Publisher, workdir: Path, s3_location: str) -> None:
    publisher.publish("v1.0.0")
    files = publisher.publish("v2.0.0")
    settings = replica_settings(workdir, s3_location, publisher.public_key, poll_seconds=1.0)
    with replica(workdir, seaweed, settings) as proc:
        eventually(lambda: version_query(proc.host, proc.port, TOKEN) == "v2.0.0", 15, "v2.0.0")
        publisher.unpublish("v2.0.0", list(files))
        # one poll, then the watcher's quiet (0.3 s) and a re-index
        waited = eventually(lambda: version_query(proc.host, proc.port, TOKEN) == "v1.0.0", 5, "v2.0.0 gone")
        assert waited < settings.poll_seconds + settings.quiet_seconds + 1.5
        status, _ = http(proc, "/v1/device/rom/?action=download_rom&version=v2.0.0&filename=ota.bin")
        assert status == 404


def test_a_release_left_out_of_a_full_cache_is_fetched_back_when_asked_for(
        seaweed: SeaweedFS, publisher: Publisher, admin_workdir: Path, s3_location: str) -> None:
    old = publisher.publish("v1.0.0")
    size = sum(len(data) for data in old.values())
    publisher.publish("v2.0.0")
    publisher.publish("v3.0.0")
    settings = replica_settings(admin_workdir, s3_location, publisher.public_key, cache_dir_bytes=2 * size + 4000)
    with replica(admin_workdir, seaweed, settings) as proc:
        eventually(lambda: version_query(proc.host, proc.port, TOKEN) == "v3.0.0", 15, "v3.0.0")
        # left out, as the status every worker reads (at most once a second) says
        eventually(lambda: b"sanic_ota_store_releases_left_out 1.0" in http(proc, "/metrics", ADMIN)[1], 5,
                   "v1.0.0 left out")
        url = f"http://{proc.host}:{proc.port}/v1/device/rom/?action=download_rom&version=v1.0.0&filename=ota.bin"
        request = urllib.request.Request(url, headers={"Authorization": f"token {TOKEN}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 503 and refused.value.headers["Retry-After"] == "1"
        assert b"being fetched from the store" in refused.value.read()
        eventually(lambda: download(proc.host, proc.port, TOKEN, "v1.0.0", "ota") == old["ota.bin"], 10, "v1.0.0")
        assert version_query(proc.host, proc.port, TOKEN) == "v3.0.0"
        assert http(proc, "/v1/device/rom/?action=download_rom&version=v9.0.0&filename=ota.bin")[0] == 404


@pytest.fixture
def own_store(tmp_path: Path) -> Iterator[SeaweedFS]:
    """A store this test may stop and start again (same data, same port)."""
    with SeaweedFS(tmp_path / "own-store") as store:
        yield store


def test_the_store_down_and_back(own_store: SeaweedFS, admin_workdir: Path, tmp_path: Path) -> None:
    location = f"s3://{own_store.bucket}/fleet"
    publisher = Publisher(own_store, location, tmp_path)
    files = publisher.publish("v1.0.0")
    warm = replica_settings(admin_workdir, location, publisher.public_key, "warm")
    cold = replica_settings(admin_workdir, location, publisher.public_key, "cold")
    with replica(admin_workdir, own_store, warm) as proc:
        eventually(lambda: version_query(proc.host, proc.port, TOKEN) == "v1.0.0", 15, "v1.0.0")
        own_store.kill()
        eventually(lambda: b"DOWN (the store did not answer" in http(proc, "/status", ADMIN, basic=True)[1], 15,
                   "the store down in /status")
        page = http(proc, "/status", ADMIN, basic=True)[1].decode()
        assert "v1.0.0 <span class=ok>served</span>" in page
        metrics = http(proc, "/metrics", ADMIN)[1].decode()
        assert "sanic_ota_store_up 0.0" in metrics and "sanic_ota_store_last_sync_timestamp_seconds 1." in metrics
        assert own_store.replica.secret_key not in page + proc.log()
        assert download(proc.host, proc.port, TOKEN, "v1.0.0", "ota") == files["ota.bin"]  # serves on
    # a warm restart with the store down serves at once
    with replica(admin_workdir, own_store, warm) as proc:
        assert version_query(proc.host, proc.port, TOKEN) == "v1.0.0"
        assert "is unreachable at start" in proc.log()
    # an empty cache and the store down: it starts, and answers 503 until the store is back
    with replica(admin_workdir, own_store, cold) as proc:
        status, body = query(proc)
        assert status == 503 and b"this replica holds no release yet" in body
        assert cold.stats_path.parent.is_dir()  # its statistics (and records) live in its cache from the start
        assert lists_nothing(proc)
        back = SeaweedFS(own_store.data_dir, s3_port=own_store.s3_port)
        back.start()
        try:
            eventually(lambda: version_query(proc.host, proc.port, TOKEN) == "v1.0.0", 20, "caught up")
            assert download(proc.host, proc.port, TOKEN, "v1.0.0", "mqtt_ca") == files["mqtt_ca.bin"]
            # each worker reads the mirror's status file at most once a second
            eventually(lambda: b"sanic_ota_store_up 1.0" in http(proc, "/metrics", ADMIN)[1], 3, "store up")
        finally:
            back.kill()


def lists_nothing(proc: ServerProcess) -> bool:
    """The listing of a replica that holds nothing is empty, not an error."""
    status, body = http(proc, "/v1/device/rom")
    return status == 200 and json.loads(body)["versions"] == []


def test_settings_the_store_refuses_stop_the_start(
        seaweed: SeaweedFS, publisher: Publisher, workdir: Path, s3_location: str) -> None:
    settings = replica_settings(workdir, s3_location, publisher.public_key)
    env = replica_env(settings, seaweed) | {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    with pytest.raises(RuntimeError) as failed:
        ServerProcess(env, cwd=workdir).start(timeout=30)
    assert "AWS_SECRET_ACCESS_KEY" in str(failed.value) and "not-the-secret" not in str(failed.value)
    missing = replica_settings(workdir, "s3://no-such-bucket/fleet", publisher.public_key)
    with pytest.raises(RuntimeError) as failed:
        ServerProcess(replica_env(missing, seaweed), cwd=workdir).start(timeout=30)
    assert "does not exist" in str(failed.value) and "check SANIC_OTA_STORE" in str(failed.value)
    signing = replica_env(settings, seaweed) | {"SANIC_OTA_SIGN_MANIFESTS": "true"}
    with pytest.raises(RuntimeError) as failed:
        ServerProcess(signing, cwd=workdir).start(timeout=30)
    assert "SANIC_OTA_SIGN_MANIFESTS=true cannot go with" in str(failed.value)  # Sanic wraps the message
