"""Channels, staged rollouts, the admin API, uploads and the fleet view, on a real server.

The server runs as a process; modules are the module model (``esp_client``) from
distinct loopback addresses (127.0.x.y: each stands for another module behind the
same product key); the operator is the ``sanic-ota`` CLI, run as a process.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from archives import tar_of
from conftest import OTHER_TOKEN, TOKEN, VERSION, env_for, settings_for, write_release
from esp_client import list_versions, version_query
from server_process import ServerProcess

from sanic_ota import example_release as example
from sanic_ota.channels import bucket
from sanic_ota.keys import Key, save_keys

ADMIN_TOKEN = "a" * 40
NEW = "v1.1.0"
CLI = Path(sys.executable).with_name("sanic-ota")
CALLERS = [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(400)]


@pytest.fixture
def fleet_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """v1.0.0 and v1.1.0; device-1 on stable, device-2 on beta, ops an admin key."""
    write_release(tmp_path / "partitions", VERSION)
    write_release(tmp_path / "partitions", NEW)
    save_keys(tmp_path / "keys.json", [Key("device-1", TOKEN), Key("device-2", OTHER_TOKEN, {"channel": "beta"}),
                                       Key("ops", ADMIN_TOKEN, {"Role": "admin"})])
    settings = settings_for(tmp_path, upload_max_bytes=1 << 20)
    with ServerProcess(env_for(settings), cwd=tmp_path) as proc:
        yield proc


def cli(proc: ServerProcess, *args: str, token: str = ADMIN_TOKEN) -> tuple[int, dict[str, object] | str]:
    env = dict(os.environ, OTA_SERVER=f"http://{proc.host}:{proc.port}", OTA_ADMIN_TOKEN=token)
    done = subprocess.run([str(CLI), *args], env=env, cwd=proc.cwd, capture_output=True, text=True, timeout=60)
    return done.returncode, json.loads(done.stdout) if done.returncode == 0 else done.stderr


def ask(proc: ServerProcess, token: str, callers: list[str]) -> dict[str, str]:
    return {c: version_query(proc.host, proc.port, token, source=c) for c in callers}


def admin(proc: ServerProcess, method: str, path: str, body: bytes | None = None,
          token: str = ADMIN_TOKEN) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(f"http://{proc.host}:{proc.port}{path}", data=body, method=method,
                                     headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        assert e.headers["Content-Length"] is not None
        return e.code, json.loads(e.read())


def test_two_keys_on_two_channels_get_different_answers(fleet_server: ServerProcess) -> None:
    proc = fleet_server
    assert version_query(proc.host, proc.port, TOKEN) == NEW
    assert version_query(proc.host, proc.port, OTHER_TOKEN) == NEW  # beta has no file yet: the newest
    code, answer = cli(proc, "channel", "set", "beta", VERSION)
    assert code == 0, answer
    assert version_query(proc.host, proc.port, TOKEN) == NEW  # stable as before
    assert version_query(proc.host, proc.port, OTHER_TOKEN) == VERSION
    assert list_versions(proc.host, proc.port, TOKEN) == [NEW, VERSION]
    assert list_versions(proc.host, proc.port, OTHER_TOKEN) == [VERSION]  # nothing newer than its answer
    assert (proc.cwd / "channels" / "beta.json").exists()
    # downloads by explicit version are unaffected by the channel
    code, answer = cli(proc, "channel", "clear", "beta")
    assert code == 0, answer
    assert version_query(proc.host, proc.port, OTHER_TOKEN) == NEW
    # stable's pin is partitions/LATEST, exactly as before
    code, answer = cli(proc, "channel", "set", "stable", VERSION)
    assert code == 0, answer
    assert (proc.cwd / "partitions" / "LATEST").read_text().strip() == VERSION
    assert version_query(proc.host, proc.port, TOKEN) == VERSION
    assert proc.logged("kind=admin key=ops", "change=pin:beta=v1.0.0", "change=unpin:beta",
                       "change=pin:stable=v1.0.0")


def test_a_rollout_offers_a_quarter_keeps_answers_and_halts_at_once(fleet_server: ServerProcess) -> None:
    proc = fleet_server
    assert cli(proc, "channel", "set", "beta", VERSION)[0] == 0
    code, answer = cli(proc, "rollout", "start", "beta", NEW, "--percent", "25")
    assert code == 0, answer
    first, later = CALLERS[:200], CALLERS[200:]
    answers = ask(proc, OTHER_TOKEN, first)
    offered = {c for c, v in answers.items() if v == NEW}
    assert set(answers.values()) <= {VERSION, NEW}
    assert 30 <= len(offered) <= 70, len(offered)  # a quarter of 200, give or take
    assert ask(proc, OTHER_TOKEN, first) == answers  # the same callers keep their answers
    assert ask(proc, TOKEN, first[:20]) == {c: NEW for c in first[:20]}  # stable is not in beta's rollout

    beta = next(c for c in answer["channels"] if c["name"] == "beta")  # type: ignore[union-attr,index]
    started = beta["rollout"]["started"]
    would = [c for c in later if bucket(f"{NEW}@{started}", "device-2", c) < 2500]
    assert would, "some later callers would have been offered the release"
    code, answer = cli(proc, "rollout", "halt", "beta")
    assert code == 0, answer
    after = ask(proc, OTHER_TOKEN, later)
    assert set(after.values()) == {VERSION}  # nobody new is offered it
    assert ask(proc, OTHER_TOKEN, first) == answers  # nobody offered it is sent back

    status, fleet = admin(proc, "GET", "/v1/admin/fleet")
    assert status == 200
    group = next(g for g in fleet["groups"] if g["key"] == "device-2")  # type: ignore[union-attr,index]
    assert group["offered"][NEW] == 3 * len(offered)  # type: ignore[index]
    assert group["addresses"] == 400  # type: ignore[index]
    rollout = fleet["rollouts"][0]  # type: ignore[index]
    assert rollout["halted"] is True and rollout["offered"] == 3 * len(offered)  # type: ignore[index]
    assert proc.logged("change=rollout-start:beta=v1.1.0@25.0%", "change=rollout-halt:beta=v1.1.0")


def test_raising_the_percentage_only_adds_callers(fleet_server: ServerProcess) -> None:
    proc = fleet_server
    assert cli(proc, "channel", "set", "beta", VERSION)[0] == 0
    assert cli(proc, "rollout", "start", "beta", NEW, "--percent", "10")[0] == 0
    callers = CALLERS[:100]
    at_10 = {c for c, v in ask(proc, OTHER_TOKEN, callers).items() if v == NEW}
    code, answer = cli(proc, "rollout", "advance", "beta", "--percent", "100")
    assert code == 0, answer
    assert ask(proc, OTHER_TOKEN, callers) == {c: NEW for c in callers}
    assert at_10 < set(callers)
    code, answer = cli(proc, "rollout", "advance", "beta", "--percent", "50")
    assert code == 1 and "only rises" in str(answer)
    assert proc.logged("change=rollout-advance:beta=v1.1.0@100.0%")


def test_the_admin_api_is_for_admin_keys_only(fleet_server: ServerProcess) -> None:
    proc = fleet_server
    status, body = admin(proc, "GET", "/v1/admin/channels", token=TOKEN)
    assert status == 403 and "not an admin key" in str(body["message"])
    code, answer = cli(proc, "channel", "set", "beta", VERSION, token=TOKEN)
    assert code == 1 and "403" in str(answer)
    status, body = admin(proc, "PUT", "/v1/admin/channels/../pin", b'{"version": "v1.0.0"}')
    assert status in (400, 404)
    status, body = admin(proc, "PUT", "/v1/admin/channels/beta/pin", b'{"version": "v9.9.9"}')
    assert status == 404
    status, body = admin(proc, "PUT", "/v1/admin/channels/beta/pin", b"not json")
    assert status == 400 and body == {"status": 400, "message": "the request body must be a JSON object"}
    assert not (proc.cwd / "channels" / "beta.json").exists()




def test_an_upload_of_a_tampered_image_is_refused_and_leaves_nothing(fleet_server: ServerProcess) -> None:
    proc = fleet_server
    image = bytearray(example.build_app_image("v2.0.0"))
    image[len(image) // 2] ^= 0xFF  # one bit of the application flipped: its checksum and hash fail
    status, body = admin(proc, "PUT", "/v1/admin/releases/v2.0.0", tar_of({"ota.bin": bytes(image)}))
    assert status == 400 and "module would reject" in str(body["message"])
    assert sorted(p.name for p in (proc.cwd / "partitions").iterdir()) == [VERSION, NEW]  # no stage left
    assert version_query(proc.host, proc.port, TOKEN) == NEW

    status, body = admin(proc, "PUT", "/v1/admin/releases/v2.0.0", b"x" * ((1 << 20) + 1))
    assert status == 413
    link = io.BytesIO()
    with tarfile.open(fileobj=link, mode="w") as tar:
        info = tarfile.TarInfo("ota.bin")
        info.type, info.linkname = tarfile.SYMTYPE, "../../keys.json"
        tar.addfile(info)
    status, body = admin(proc, "PUT", "/v1/admin/releases/v2.0.0", link.getvalue())
    assert status == 400 and "not a regular file" in str(body["message"])
    assert sorted(p.name for p in (proc.cwd / "partitions").iterdir()) == [VERSION, NEW]

    release = proc.cwd / "upload-v2"
    release.mkdir()
    (release / "ota.bin").write_bytes(example.build_app_image("v2.0.0"))
    code, answer = cli(proc, "upload", "v2.0.0", str(release))
    assert code == 0, answer
    assert answer["served"] is True  # type: ignore[index]
    assert version_query(proc.host, proc.port, TOKEN) == "v2.0.0"
    code, answer = cli(proc, "upload", "v2.0.0", str(release))
    assert code == 1 and "409" in str(answer)
    assert proc.logged("change=upload:v2.0.0")


def test_status_shows_the_fleet_and_the_rollout(fleet_server: ServerProcess) -> None:
    proc = fleet_server
    assert cli(proc, "channel", "set", "beta", VERSION)[0] == 0
    assert cli(proc, "rollout", "start", "beta", NEW, "--percent", "50")[0] == 0
    ask(proc, OTHER_TOKEN, CALLERS[:10])
    request = urllib.request.Request(f"http://{proc.host}:{proc.port}/status",
                                     headers={"Authorization": f"token {ADMIN_TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        page = answer.read().decode()
    assert "<h2>Fleet</h2>" in page and "device-2" in page and "<td class=n>10</td>" in page
    assert "id='rollout-beta'" in page and "50%" in page
    assert "<tr id='channel-beta'><td>beta</td><td>device-2</td><td>v1.0.0</td>" in page


def _group_when(proc: ServerProcess, expected: dict[str, int], timeout: float = 8.0) -> dict[str, object]:
    """The first fleet group once its offers are ``expected`` (workers flush every 2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        _, fleet = admin(proc, "GET", "/v1/admin/fleet")
        group: dict[str, object] = fleet["groups"][0] if fleet["groups"] else {}  # type: ignore[index]
        if group.get("offered") == expected or time.monotonic() > deadline:
            return group
        time.sleep(0.2)


def test_fleet_counts_are_shared_by_workers_and_survive_a_restart(tmp_path: Path) -> None:
    write_release(tmp_path / "partitions", VERSION)
    save_keys(tmp_path / "keys.json", [Key("device-1", TOKEN), Key("ops", ADMIN_TOKEN, {"Role": "admin"})])
    env = env_for(settings_for(tmp_path))
    with ServerProcess(env, cwd=tmp_path, workers=2) as proc:
        ask(proc, TOKEN, CALLERS[:6])
        assert _group_when(proc, {VERSION: 6})["offered"] == {VERSION: 6}  # either worker sees all six
    with ServerProcess(env, cwd=tmp_path) as proc:
        group = _group_when(proc, {VERSION: 6})
        assert group["offered"] == {VERSION: 6} and group["addresses"] == 6


def test_a_channel_file_written_by_hand_is_followed_by_every_worker(tmp_path: Path) -> None:
    write_release(tmp_path / "partitions", VERSION)
    write_release(tmp_path / "partitions", NEW)
    save_keys(tmp_path / "keys.json", [Key("device-2", OTHER_TOKEN, {"channel": "beta"})])
    with ServerProcess(env_for(settings_for(tmp_path)), cwd=tmp_path, workers=2) as proc:
        assert version_query(proc.host, proc.port, OTHER_TOKEN) == NEW
        (tmp_path / "channels").mkdir()
        (tmp_path / "channels" / ".beta.json.tmp").write_text(json.dumps({"pin": VERSION}))
        (tmp_path / "channels" / ".beta.json.tmp").rename(tmp_path / "channels" / "beta.json")
        # a new directory is watched within a second, and the file read at once, by each worker
        assert proc.logged("channels are now: beta (pin v1.0.0)", timeout=5)
        deadline = time.monotonic() + 5
        while proc.log().count("channels are now: beta (pin v1.0.0)") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert {version_query(proc.host, proc.port, OTHER_TOKEN) for _ in range(12)} == {VERSION}
        (tmp_path / "channels" / "beta.json").write_text("{not json")
        assert proc.logged("channel beta refused", timeout=5)
        time.sleep(0.3)  # the other worker too
        with pytest.raises(AssertionError):  # a refused channel file: 503, never a guess
            version_query(proc.host, proc.port, OTHER_TOKEN)


def _refused(proc: ServerProcess, token: str) -> bool:
    try:
        version_query(proc.host, proc.port, token)
    except AssertionError:
        return True
    return False


def test_the_readme_walk_through_works_as_written(tmp_path: Path) -> None:
    """Every command of the README's walk-through, in order, against a real server."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("### Walk-through", 1)[1].split("Watch it on", 1)[0]
    commands = [line.split("#", 1)[0].split() for line in block.splitlines() if line.startswith("    ")]
    commands = [c for c in commands if c and c[0] in ("sanic-ota", "tools/keygen.py")]
    assert [c[:2] for c in commands if c[0] == "sanic-ota"] == [
        ["sanic-ota", "channel"], ["sanic-ota", "upload"], ["sanic-ota", "rollout"], ["sanic-ota", "fleet"],
        ["sanic-ota", "rollout"], ["sanic-ota", "rollout"], ["sanic-ota", "channel"]]
    write_release(tmp_path / "partitions", "v1.2.0")
    write_release(tmp_path / "build", "v1.3.0")
    save_keys(tmp_path / "keys.json", [Key("ops", ADMIN_TOKEN, {"Role": "admin"})])
    env = env_for(settings_for(tmp_path))
    with ServerProcess(env, cwd=tmp_path) as proc:
        assert proc.logged("(keys file)")  # the watch is up: the key keygen adds is seen at once
        for command in commands:
            if command[0] == "tools/keygen.py":
                keygen = Path(__file__).resolve().parent.parent / "tools" / "keygen.py"
                done = subprocess.run([sys.executable, str(keygen), *command[1:], "--keys", "keys.json"],
                                      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
                assert done.returncode == 0, done.stderr
                beta_token = done.stdout.strip()
                deadline = time.monotonic() + 5  # the server applies the keys file within about a second
                while time.monotonic() < deadline and _refused(proc, beta_token):
                    time.sleep(0.5)  # slowly: 20 failures a minute would get this address 429
                continue
            code, answer = cli(proc, *command[1:])
            assert code == 0, (command, answer)
            if command[1:3] == ["channel", "set"]:
                assert version_query(proc.host, proc.port, beta_token) == "v1.2.0"
            if command[1:3] == ["rollout", "advance"]:
                assert version_query(proc.host, proc.port, beta_token) == "v1.3.0"
        channels = {c["name"]: c for c in answer["channels"]}  # type: ignore[index]
        assert channels["beta"]["keys"] == ["plant-7-beta"] and channels["beta"]["rollout"]["halted"] is True
        assert proc.logged("change=rollout-halt:beta=v1.3.0")


def test_a_backend_names_the_device_and_the_channel_chooses_its_signed_url(fleet_server: ServerProcess) -> None:
    """``/v1/admin/url?device=...`` without a version: the rollout buckets by the device."""
    proc = fleet_server
    assert cli(proc, "channel", "set", "beta", VERSION)[0] == 0
    assert cli(proc, "rollout", "start", "beta", NEW, "--percent", "50")[0] == 0

    def version_for(device: str) -> str:
        status, body = admin(proc, "GET", f"/v1/admin/url?key=device-2&device={device}&filename=ota.bin")
        assert status == 200, body
        assert f"version={body['version']}&" in str(body["url"])
        return str(body["version"])

    first = {f"D{i}": version_for(f"D{i}") for i in range(60)}
    assert 15 <= sum(v == NEW for v in first.values()) <= 45
    assert {d: version_for(d) for d in first} == first  # a device keeps its answer, whatever its address
    assert cli(proc, "rollout", "halt", "beta")[0] == 0
    assert {version_for(f"E{i}") for i in range(30)} == {VERSION}  # nobody new
    assert {d: version_for(d) for d in first} == first
    status, body = admin(proc, "GET", "/v1/admin/url?key=device-2&device=../x&filename=ota.bin")
    assert status == 400
