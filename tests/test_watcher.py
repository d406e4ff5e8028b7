"""The real watcher on a real directory, with a real server process answering modules."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import OTHER_TOKEN, TOKEN, VERSION, env_for, settings_for, write_release
from esp_client import ModuleError, download, list_versions, version_query
from server_process import ServerProcess, eventually

from sanic_ota.files import write_atomic
from sanic_ota.keys import Key, dump_keys, load_keys, save_keys
from sanic_ota.settings import Settings
from sanic_ota.state import State, open_indexer, open_state, signing_keys
from sanic_ota.watcher import Watcher


@pytest.mark.parametrize("workers", [1, 2])
def test_release_copied_in_is_installed_without_restart(workdir: Path, tmp_path_factory, workers: int) -> None:
    staging = tmp_path_factory.mktemp("staging")
    source = write_release(staging, "v2.0.0")
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir, workers=workers) as proc:
        assert version_query(proc.host, proc.port, TOKEN) == VERSION
        shutil.copytree(source, workdir / "partitions" / "v2.0.0")
        started = time.monotonic()
        # every worker must answer the same: ask several times over new connections
        eventually(lambda: all(version_query(proc.host, proc.port, TOKEN) == "v2.0.0" for _ in range(6)))
        assert time.monotonic() - started < 3.0 + 1.0  # 3 s target plus polling slack
        for partition in ("ota", "mqtt_ca"):
            body = download(proc.host, proc.port, TOKEN, "v2.0.0", partition)
            assert body == (source / f"{partition}.bin").read_bytes()
        manifest = workdir / "manifests" / "v2.0.0.json"
        assert manifest.exists()
        # built once: one "signed manifest" line across all workers
        assert proc.log().count("signed manifest for v2.0.0") == 1


def test_slow_copy_is_never_served_partially(workdir: Path, tmp_path_factory) -> None:
    source = write_release(tmp_path_factory.mktemp("staging"), "v3.0.0")
    image = (source / "ota.bin").read_bytes()
    target = workdir / "partitions" / "v3.0.0"
    with ServerProcess(env_for(settings_for(workdir, quiet_seconds=1.0)), cwd=workdir) as proc:
        target.mkdir()
        with open(target / "ota.bin", "wb") as handle:
            handle.write(image[: len(image) // 2])
            handle.flush()
            deadline = time.monotonic() + 0.6
            while time.monotonic() < deadline:  # a module asking mid-copy gets an error, never half
                with pytest.raises(ModuleError):
                    download(proc.host, proc.port, TOKEN, "v3.0.0", "ota")
                time.sleep(0.1)
            handle.write(image[len(image) // 2 :])
        body = eventually(lambda: download(proc.host, proc.port, TOKEN, "v3.0.0", "ota"))
        assert body == image


def test_changed_file_gets_a_higher_serial_and_removed_release_disappears(workdir: Path) -> None:
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        write_release(workdir / "partitions", "v1.1.0")
        eventually(lambda: list_versions(proc.host, proc.port, TOKEN) == ["v1.1.0", VERSION])
        first = (workdir / "manifests" / "v1.1.0.json").read_text()
        new_image = (workdir / "partitions" / VERSION / "ota.bin").read_bytes()
        (workdir / "partitions" / "v1.1.0" / "ota.bin").write_bytes(new_image)
        eventually(lambda: download(proc.host, proc.port, TOKEN, "v1.1.0", "ota") == new_image)
        assert '"serial": 2' in (workdir / "manifests" / "v1.1.0.json").read_text() != first
        shutil.rmtree(workdir / "partitions" / "v1.1.0")
        eventually(lambda: list_versions(proc.host, proc.port, TOKEN) == [VERSION])
        with pytest.raises(ModuleError):
            download(proc.host, proc.port, TOKEN, "v1.1.0", "ota")


def test_pin_and_keys_follow_the_files(workdir: Path) -> None:
    write_release(workdir / "partitions", "v2.0.0")
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        assert version_query(proc.host, proc.port, TOKEN) == "v2.0.0"
        (workdir / "partitions" / "LATEST").write_text(VERSION)
        eventually(lambda: version_query(proc.host, proc.port, TOKEN) == VERSION)
        keys_file = workdir / "keys.json"
        new = "a" * 40
        save_keys(keys_file, [k for k in load_keys(keys_file) if k.token != OTHER_TOKEN] + [Key("new", new)])
        eventually(lambda: version_query(proc.host, proc.port, new) == VERSION)
        with pytest.raises(ModuleError):
            version_query(proc.host, proc.port, OTHER_TOKEN)


# -- a watcher that cannot die ------------------------------------------------------

ADMIN = "ad" * 20
NEW = "ee" * 20
#: Python's JSON refuses these with ValueError / RecursionError, not JSONDecodeError.
HUGE_NUMBER = '{"signed": {"serial": ' + "9" * 5000 + "}}"
DEEP = "[" * 100_000 + "]" * 100_000


def get(proc: ServerProcess, path: str, token: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection(proc.host, proc.port, timeout=10)
    try:
        connection.request("GET", path, headers={"Authorization": f"token {token}"})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def listing_status(proc: ServerProcess, token: str) -> int:
    return get(proc, "/v1/device/rom", token)[0]


def sign_elsewhere(settings: Settings, partitions: Path, manifests: Path, version: str) -> Path:
    """Sign a release as ``make manifest`` does where the private key lives."""
    where = dataclasses.replace(settings, partitions_dir=partitions, manifests_dir=manifests, sign_manifests=True)
    verifier, signer = signing_keys(where)
    open_indexer(where, verifier, signer).index_release(version)
    return manifests / f"{version}.json"


def test_hostile_manifest_and_keys_file_never_kill_the_watcher(workdir: Path, tmp_path_factory) -> None:
    settings = settings_for(workdir, sign_manifests=False)
    staging = tmp_path_factory.mktemp("signing")
    sign_elsewhere(settings, workdir / "partitions", workdir / "manifests", VERSION)
    write_release(staging / "partitions", "v2.0.0")
    v2_manifest = sign_elsewhere(settings, staging / "partitions", staging / "manifests", "v2.0.0")
    keys_file = workdir / "keys.json"
    good_keys = keys_file.read_bytes()
    with ServerProcess(env_for(settings), cwd=workdir) as proc:
        assert version_query(proc.host, proc.port, TOKEN) == VERSION
        (workdir / "manifests" / f"{VERSION}.json").write_text(HUGE_NUMBER)
        write_atomic(keys_file, DEEP.encode(), mode=0o600)
        time.sleep(1.5)  # both are read by now
        # still watching: a good release published afterwards is served, the old keys still work
        shutil.copytree(staging / "partitions" / "v2.0.0", workdir / "partitions" / "v2.0.0")
        shutil.copy(v2_manifest, workdir / "manifests" / "v2.0.0.json")
        eventually(lambda: download(proc.host, proc.port, TOKEN, "v2.0.0", "ota")
                   == (staging / "partitions" / "v2.0.0" / "ota.bin").read_bytes())
        log = proc.log()
        assert f"release {VERSION} is NOT served: manifest is not valid JSON" in log
        assert "KEYS FILE NOT (FULLY) APPLIED (invalid)" in log and "Traceback" not in log
    write_atomic(keys_file, good_keys, mode=0o600)
    (workdir / "manifests" / "v2.0.0.json").write_text(DEEP)
    with ServerProcess(env_for(settings), cwd=workdir) as proc:  # and the next start starts
        with pytest.raises(ModuleError):
            download(proc.host, proc.port, TOKEN, VERSION, "ota")
        assert listing_status(proc, TOKEN) == 200


def test_a_revocation_applies_while_a_slow_upload_goes_on(workdir: Path) -> None:
    keys_file = workdir / "keys.json"
    stop = threading.Event()

    def slow_upload() -> None:  # a file under partitions/ changes every 100 ms
        (workdir / "partitions" / "v2.0.0").mkdir()
        with open(workdir / "partitions" / "v2.0.0" / "ota.bin", "wb") as handle:
            while not stop.wait(0.1):
                handle.write(b"\xe9" * 512)
                handle.flush()

    with ServerProcess(env_for(settings_for(workdir, quiet_seconds=1.0)), cwd=workdir) as proc:
        assert listing_status(proc, OTHER_TOKEN) == 200
        upload = threading.Thread(target=slow_upload)
        upload.start()
        try:
            time.sleep(1.5)  # well under way
            save_keys(keys_file, [k for k in load_keys(keys_file) if k.token != OTHER_TOKEN])
            revoked = time.monotonic()
            eventually(lambda: listing_status(proc, OTHER_TOKEN) == 403, timeout=6)
            assert time.monotonic() - revoked < 2.0
            assert listing_status(proc, TOKEN) == 200
        finally:
            stop.set()
            upload.join()


@pytest.fixture
def admin_server(workdir: Path) -> Iterator[ServerProcess]:
    keys_file = workdir / "keys.json"
    save_keys(keys_file, load_keys(keys_file) + [Key("ops", ADMIN, {"Role": "admin"})])
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        assert_keys_file_reported(proc, None)
        yield proc


def assert_keys_file_reported(proc: ServerProcess, problem: str | None) -> None:
    """/status and /metrics say whether the keys file is applied, and if not, why."""
    status, page = get(proc, "/status", ADMIN)
    assert status == 200
    status, metrics = get(proc, "/metrics", ADMIN)
    assert status == 200
    if problem is None:
        assert "Keys file: <span class=ok>applied</span>" in page
        assert re.search(r"^sanic_ota_keys_file_ok 1\.0$", metrics, re.M), metrics
        assert not re.search(r'^sanic_ota_keys_file_problem\{reason="\w+"\} 1\.0$', metrics, re.M)
    else:
        assert f"NOT (fully) applied ({problem})" in page
        assert re.search(r"^sanic_ota_keys_file_ok 0\.0$", metrics, re.M), metrics
        assert re.search(rf'^sanic_ota_keys_file_problem\{{reason="{problem}"\}} 1\.0$', metrics, re.M)
        assert proc.logged(f"KEYS FILE NOT (FULLY) APPLIED ({problem})")


def test_a_keys_file_that_disappears_revokes_every_device_key(admin_server: ServerProcess, workdir: Path) -> None:
    proc, keys_file = admin_server, workdir / "keys.json"
    keys = keys_file.read_bytes()
    keys_file.unlink()
    eventually(lambda: listing_status(proc, TOKEN) == 403)
    assert listing_status(proc, ADMIN) == 403  # an admin key opens nothing but the admin pages
    assert_keys_file_reported(proc, "missing")
    write_atomic(keys_file, keys, mode=0o600)
    eventually(lambda: listing_status(proc, TOKEN) == 200)
    assert_keys_file_reported(proc, None)


def test_an_invalid_keys_file_keeps_the_previous_keys_and_says_so(admin_server: ServerProcess,
                                                                  workdir: Path) -> None:
    proc, keys_file = admin_server, workdir / "keys.json"
    keys = keys_file.read_bytes()
    keys_file.write_bytes(keys[: len(keys) // 2])  # half an edit
    eventually(lambda: "KEYS FILE NOT" in proc.log())
    assert listing_status(proc, TOKEN) == 200 and listing_status(proc, OTHER_TOKEN) == 200
    assert_keys_file_reported(proc, "invalid")
    keys_file.write_bytes(keys)
    eventually(lambda: "keys file applied again" in proc.log())
    assert_keys_file_reported(proc, None)


def test_a_keys_file_open_to_others_applies_only_removals(admin_server: ServerProcess, workdir: Path) -> None:
    proc, keys_file = admin_server, workdir / "keys.json"
    keys = [k for k in load_keys(keys_file) if k.token != OTHER_TOKEN] + [Key("new", NEW)]
    write_atomic(keys_file, dump_keys(keys).encode(), mode=0o644)  # device-2 removed, "new" added
    removed = time.monotonic()
    eventually(lambda: listing_status(proc, OTHER_TOKEN) == 403)
    assert time.monotonic() - removed < 2.0  # a revocation never waits for a chmod
    assert listing_status(proc, NEW) == 403 and listing_status(proc, TOKEN) == 200
    assert_keys_file_reported(proc, "open_to_others")
    keys_file.chmod(0o600)
    eventually(lambda: listing_status(proc, NEW) == 200)
    assert listing_status(proc, OTHER_TOKEN) == 403
    assert_keys_file_reported(proc, None)


# -- a watcher that sees a replaced directory ------------------------------------------
# The re-scan is set to a minute: what these tests see within seconds is the recovered watch.

def watcher_up(proc: ServerProcess, keys_file: Path) -> None:
    """The watcher has started: a key added now is accepted."""
    probe = "9f" * 20
    save_keys(keys_file, load_keys(keys_file) + [Key("probe", probe)])
    eventually(lambda: listing_status(proc, probe) == 200)


def watch_works(proc: ServerProcess, partitions: Path, version: str) -> None:
    """A release published now is listed: the watch is up before the directory is replaced."""
    write_release(partitions, version)
    eventually(lambda: version in list_versions(proc.host, proc.port, TOKEN))

def test_partitions_renamed_away_and_made_anew_is_watched(workdir: Path) -> None:
    partitions = workdir / "partitions"
    with ServerProcess(env_for(settings_for(workdir, rescan_seconds=60.0)), cwd=workdir) as proc:
        watch_works(proc, partitions, "v1.1.0")
        partitions.rename(workdir / "partitions.old")
        partitions.mkdir()
        write_release(partitions, "v2.0.0")
        eventually(lambda: list_versions(proc.host, proc.port, TOKEN) == ["v2.0.0"], timeout=6)
        write_release(partitions, "v3.0.0")
        started = time.monotonic()
        eventually(lambda: list_versions(proc.host, proc.port, TOKEN) == ["v3.0.0", "v2.0.0"], timeout=6)
        assert time.monotonic() - started < 3.0
        assert proc.logged("partitions directory", "watching it anew")


def test_a_re_pointed_partitions_symlink_is_watched(workdir: Path) -> None:
    first, second, link = workdir / "releases-1", workdir / "releases-2", workdir / "partitions"
    link.rename(first)
    link.symlink_to(first.name)
    write_release(second, VERSION)
    write_release(second, "v2.0.0")
    with ServerProcess(env_for(settings_for(workdir, rescan_seconds=60.0)), cwd=workdir) as proc:
        watch_works(proc, link, "v1.1.0")
        new_link = workdir / ".partitions.new"
        new_link.symlink_to(second.name)
        os.replace(new_link, link)  # what `ln -sfn releases-2 partitions` does, atomically
        eventually(lambda: list_versions(proc.host, proc.port, TOKEN) == ["v2.0.0", VERSION], timeout=6)
        write_release(second, "v3.0.0")
        started = time.monotonic()
        eventually(lambda: list_versions(proc.host, proc.port, TOKEN)[0] == "v3.0.0", timeout=6)
        assert time.monotonic() - started < 3.0


def served(proc: ServerProcess) -> list[str]:
    """Releases served now, newest first (the auditor's index; the listing also shows unservable ones)."""
    connection = http.client.HTTPConnection(proc.host, proc.port, timeout=5)
    try:
        connection.request("GET", "/v1/manifest/", headers={"Authorization": f"token {TOKEN}"})
        return [item["version"] for item in json.loads(connection.getresponse().read())["versions"]]
    finally:
        connection.close()


def test_offline_manifests_directory_created_after_start_is_watched(workdir: Path, tmp_path_factory) -> None:
    settings = settings_for(workdir, sign_manifests=False, rescan_seconds=60.0)
    staging = tmp_path_factory.mktemp("signing")
    write_release(workdir / "partitions", "v2.0.0")
    for version in (VERSION, "v2.0.0"):
        sign_elsewhere(settings, workdir / "partitions", staging, version)
    with ServerProcess(env_for(settings), cwd=workdir) as proc:
        assert served(proc) == []
        watcher_up(proc, workdir / "keys.json")
        (workdir / "manifests").mkdir()
        shutil.copy(staging / f"{VERSION}.json", workdir / "manifests")
        eventually(lambda: served(proc) == [VERSION], timeout=6)
        shutil.copy(staging / "v2.0.0.json", workdir / "manifests")
        started = time.monotonic()
        eventually(lambda: served(proc) == ["v2.0.0", VERSION], timeout=6)
        assert time.monotonic() - started < 3.0


# -- transient failures are retried --------------------------------------------------

def test_a_release_that_failed_for_a_transient_reason_is_retried(workdir: Path, tmp_path_factory) -> None:
    """manifests/ replaced by a file: root cannot write into it either (chmod would not stop root)."""
    manifests, away = workdir / "manifests", workdir / "manifests.away"
    env = env_for(settings_for(workdir, rescan_seconds=60.0))
    env["SANIC_OTA_STATS_FILE"] = str(tmp_path_factory.mktemp("stats") / "stats.sqlite3")
    with ServerProcess(env, cwd=workdir) as proc:
        manifests.rename(away)
        manifests.write_text("in the way")
        write_release(workdir / "partitions", "v2.0.0")
        eventually(lambda: "release v2.0.0 is NOT served" in proc.log())
        with pytest.raises(ModuleError):
            download(proc.host, proc.port, TOKEN, "v2.0.0", "ota")
        manifests.unlink()
        away.rename(manifests)  # fixed, and nothing under partitions/ changes
        fixed = time.monotonic()
        eventually(lambda: download(proc.host, proc.port, TOKEN, "v2.0.0", "ota"), timeout=10)
        assert time.monotonic() - fixed < 5.0
        assert (manifests / "v2.0.0.json").exists()
        assert proc.logged("release v2.0.0 failed for a transient reason; retrying in 1 s")


# -- in process: the re-scan and the watches' supervision -------------------------------

async def _watch_until(state: State, done: Callable[[], bool], act: Callable[[Watcher], None] | None = None,
                       timeout: float = 6.0) -> Watcher:
    watcher = Watcher(state)
    task = asyncio.create_task(watcher.run())
    try:
        if act is not None:
            await asyncio.sleep(0.5)
            act(watcher)
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "not within the deadline"
            await asyncio.sleep(0.1)
    finally:
        watcher.stop()
        await asyncio.wait_for(task, 5)
    return watcher


def test_changes_made_while_the_server_starts_are_caught_by_the_re_scan(workdir: Path) -> None:
    """No watch saw them (none was running yet): the stat signature taken at start did."""
    state = open_state(settings_for(workdir))
    write_release(workdir / "partitions", "v2.0.0")
    (workdir / "partitions" / "LATEST").write_text(VERSION)
    save_keys(workdir / "keys.json", [k for k in load_keys(workdir / "keys.json") if k.token != OTHER_TOKEN])
    asyncio.run(_watch_until(state, lambda: "v2.0.0" in state.index.releases
                             and state.index.pinned == VERSION and state.keyring.find(OTHER_TOKEN) is None))


def test_a_watch_that_ends_is_started_again(workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = open_state(settings_for(workdir))

    def break_the_watch(watcher: Watcher) -> None:
        watcher.pumps["partitions"].task.cancel()  # as if watchfiles had failed
        write_release(workdir / "partitions", "v2.0.0")

    asyncio.run(_watch_until(state, lambda: "v2.0.0" in state.index.releases, break_the_watch))
    assert "watch on" in caplog.text and "ended" in caplog.text


def test_a_large_start_answers_the_newest_at_once_and_reads_the_rest_next(workdir: Path) -> None:
    """Over ``READ_FIRST`` releases, the server serves as soon as the newest is checked; the
    watcher reads the others next, each a 503 until then (never an older one in its place)."""
    source = workdir / "partitions" / VERSION
    names = [f"v1.{n}.0" for n in range(1, 121)]
    for name in names:
        shutil.copytree(source, workdir / "partitions" / name)
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        assert version_query(proc.host, proc.port, TOKEN) == "v1.120.0"
        assert proc.logged("read 1 of 121 release(s) first", "the other 120 are checked next")
        image = eventually(lambda: download(proc.host, proc.port, TOKEN, VERSION, "ota"), timeout=30)
        assert image == (source / "ota.bin").read_bytes()
        assert proc.logged("re-indexed v1.119.0, v1.118.0")  # named newest first, and counted
        listed = list_versions(proc.host, proc.port, TOKEN)
        assert listed[0] == "v1.120.0"
