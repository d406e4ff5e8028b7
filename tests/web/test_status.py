"""The operator's status page: rendered from plain data, served in process, seen by Chromium."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import TOKEN, VERSION, env_for, settings_for, write_release
from esp_client import ModuleError, download
from sanic import Sanic
from server_process import ServerProcess

from sanic_ota.keys import Key, KeysFileStatus, load_keys, save_keys
from sanic_ota.manifest import FileEntry, Manifest
from sanic_ota.mirror_status import StoreStatus
from sanic_ota.releases import Index, Release
from sanic_ota.settings import Settings
from sanic_ota.stats import HOURS, Failure, Snapshot
from sanic_ota.web.server import create_app
from sanic_ota.web.status import render_status

ADMIN = "a" * 40
KEYID = "0f" * 32
SHA = "ab" * 32
HOUR = 500_000  # 1987-01-14 08:00 UTC, any hour will do


def release(version: str, image: dict[str, str] | None = None) -> Release:
    files = {"ota.bin": FileEntry(4096, SHA, {"image": image or {"project_name": "at", "app_version": "1",
                                                                 "idf_version": "v5.1", "chip": "ESP32"}}),
             "mqtt_ca.bin": FileEntry(392, "cd" * 32)}
    return Release(version, Manifest(version, 3, "2026-11-27T18:00:00Z", files), b"{}")


def test_render_shows_releases_downloads_and_failures() -> None:
    index = Index(releases={"v1.0.0": release("v1.0.0"), "v1.10.0": release("v1.10.0")},
                  problems={"v0.9.0": "ota.bin: invalid magic"})
    snapshot = Snapshot(HOUR, {("v1.0.0", "ota.bin"): [0] * (HOURS - 2) + [5, 2],
                               ("v1.0.0", "mqtt_ca.bin"): [1] + [0] * (HOURS - 1)},
                        [Failure(0, "2026-11-27T18:00:00.000Z", "download", "10.0.0.9", "plant-7", "v1.0.0",
                                 "ota.bin", 200, "aborted")])
    page = render_status(index, KEYID, snapshot, "2026-11-27T18:00:00Z")
    assert "gets: <b class=ok>v1.10.0</b> (the newest release)" in page
    assert page.index("<h2 id='r-v1.10.0'>") < page.index("<h2 id='r-v1.0.0'>")  # version order
    assert f"<code>{SHA}</code>" in page and "4,096 B (4.0 KiB)" in page and "392 B" in page
    assert "project at<br>app 1<br>IDF v5.1<br>chip ESP32" in page
    assert "serial 3" in page and f"verified with key {KEYID[:16]}<" in page
    assert "<td class=n id='d-v1.0.0'>8</td>" in page and "<td class=n id='d-v1.10.0'>0</td>" in page
    assert "<title>08:00 UTC: 2</title>" in page and "<title>09:00 UTC: 1</title>" in page
    assert "NOT served" in page and "ota.bin: invalid magic" in page
    assert "plant-7" in page and "aborted" in page
    assert "<script" not in page


def test_render_escapes_what_comes_from_files() -> None:
    evil = "<script>alert(1)</script>"
    index = Index(releases={"v1": release("v1", {"project_name": evil, "app_version": "'\"&"})},
                  problems={"v2": f"manifest names release {evil!r}"}, pinned="v1")
    failure = Failure(0, "t", "download", "<img>", evil, None, None, 403, "auth: unknown_token")
    page = render_status(index, KEYID, Snapshot(HOUR, {}, [failure]), "now")
    assert "<script" not in page and "<img>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&#x27;&quot;&amp;" in page
    assert "(pinned in partitions/LATEST)" in page


def test_render_says_why_plain_ciupdate_gets_nothing() -> None:
    index = Index(releases={"v1": release("v1")}, pinned="v9")
    page = render_status(index, KEYID, Snapshot(HOUR), "now")
    assert "gets: <span class=bad>nothing (LATEST pins release v9, which is not servable" in page
    assert "None recorded." in page


def test_render_says_loudly_when_the_keys_file_is_not_applied() -> None:
    index = Index(releases={"v1": release("v1")})
    assert "Keys file: <span class=ok>applied</span>" in render_status(index, KEYID, Snapshot(HOUR), "now")
    status = KeysFileStatus("open_to_others", "keys file /k<x>.json is readable by group or others")
    page = render_status(index, KEYID, Snapshot(HOUR), "now", status)
    assert "<span class=bad>NOT (fully) applied (open_to_others): keys file /k&lt;x&gt;.json is readable" in page
    assert page.index("id=keys-file") < page.index("AT+CIUPDATE")  # at the top


def test_render_never_shows_an_older_release_in_place_of_the_newest() -> None:
    index = Index(releases={"v1.10.0": release("v1.10.0"), "old": release("old")},
                  problems={"v2.0.0": "ota.bin: invalid magic"})
    page = render_status(index, KEYID, Snapshot(HOUR), "now")
    assert ("gets: <span class=bad>nothing (the newest release, v2.0.0, is not servable now; "
            "no older release is offered in its place)") in page
    assert "v2.0.0 <span class=bad>NOT served</span>" in page and "ota.bin: invalid magic" in page
    assert "since the name is not a version" in page and "<code>old</code>" in page


@pytest.fixture
def admin_workdir(workdir: Path) -> Path:
    save_keys(workdir / "keys.json", load_keys(workdir / "keys.json") + [Key("ops", ADMIN, {"Role": "admin"})])
    return workdir


def basic(name: str = "ops", token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{token}".encode()).decode()}


def test_status_in_process(admin_workdir: Path, settings: Settings) -> None:
    app: Sanic = create_app(settings)
    _, response = app.test_client.get("/status")
    assert response.status == 401 and response.headers["WWW-Authenticate"].startswith("Basic")
    _, response = app.test_client.get("/status", headers={"Authorization": f"token {TOKEN}"})
    assert response.status == 403  # a device key
    url = f"/v1/device/rom/?action=download_rom&version={VERSION}&filename=ota.bin"
    assert app.test_client.get(url, headers={"Authorization": f"token {TOKEN}"})[1].status == 200
    _, response = app.test_client.get("/status", headers=basic())
    assert response.status == 200 and response.content_type.startswith("text/html")
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    page = response.text
    assert f"<td class=n id='d-{VERSION}'>1</td>" in page
    # the device key's 403 is a failure; the browser's first, credential-less 401 is not
    assert "not_admin" in page and "malformed" not in page


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(binary).exists():
        pytest.fail("Chromium is missing: this test needs Debian's `chromium` (apt-get install -y chromium)")
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"chromium did not finish within 60 s: {command}\n{e.stderr}")
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_status_page_in_headless_chromium(admin_workdir: Path, tmp_path: Path) -> None:
    write_release(admin_workdir / "partitions", "v1.1.0")
    (admin_workdir / "partitions" / "LATEST").write_text(f"{VERSION}\n")
    with ServerProcess(env_for(settings_for(admin_workdir)), cwd=admin_workdir, workers=2) as proc:
        for _ in range(3):
            download(proc.host, proc.port, TOKEN, VERSION, "ota")
        download(proc.host, proc.port, TOKEN, "v1.1.0", "mqtt_ca")
        with pytest.raises(ModuleError):
            download(proc.host, proc.port, TOKEN, "v9.9.9", "ota")
        wait_for_counts(proc, {VERSION: 3, "v1.1.0": 1})  # two workers: flushed within 2 s
        url = f"http://ops:{ADMIN}@{proc.host}:{proc.port}/status"  # Chromium answers the Basic challenge
        dom = chromium(tmp_path, "--dump-dom", url).stdout
        png = tmp_path / "status.png"
        chromium(tmp_path, f"--screenshot={png}", "--window-size=1280,1600", url)
    sha = hashlib.sha256((admin_workdir / "partitions" / VERSION / "ota.bin").read_bytes()).hexdigest()
    assert "sanic_ota status" in dom
    assert re.search(rf"gets: <b class=\"ok\">{re.escape(VERSION)}</b> \(pinned", dom), dom[:2000]
    assert re.search(rf'id="d-{re.escape(VERSION)}">3</td>', dom) and 'id="d-v1.1.0">1</td>' in dom
    assert "ota.bin" in dom and "mqtt_ca.bin" in dom and sha in dom
    assert '<td class="n">404</td><td class="bad">refused</td>' in dom  # the module that asked for v9.9.9
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000, len(data)


def wait_for_counts(proc: ServerProcess, expected: dict[str, int], steady: float = 2.5) -> None:
    """Until every page for ``steady`` seconds shows ``expected``: with two workers, the one
    that counted shows its own counts at once, the other once they are flushed (within 2 s)."""
    deadline = time.monotonic() + 15
    since = None
    while since is None or time.monotonic() - since < steady:
        request = urllib.request.Request(f"http://{proc.host}:{proc.port}/status", headers=basic())
        page = urllib.request.urlopen(request).read().decode()
        right = all(f"id='d-{v}'>{n}<" in page for v, n in expected.items())
        since = (since or time.monotonic()) if right else None
        assert time.monotonic() < deadline, page
        time.sleep(0.2)


def test_head_304_and_windows_are_not_downloads_on_the_status_page(admin_workdir: Path, settings: Settings) -> None:
    app: Sanic = create_app(settings)
    url = f"/v1/device/rom/?action=download_rom&version={VERSION}&filename=ota.bin"
    auth = {"Authorization": f"token {TOKEN}"}
    _, head = app.test_client.head(url, headers=auth)
    etag = head.headers["etag"]
    length = int(head.headers["content-length"])
    assert app.test_client.get(url, headers={**auth, "If-None-Match": etag})[1].status == 304
    assert app.test_client.get(url, headers={**auth, "Range": "bytes=0-99"})[1].status == 206
    assert app.test_client.get(url, headers={**auth, "Range": f"bytes=100-{length}"})[1].status == 206
    _, status_head = app.test_client.head("/status", headers=basic())
    assert status_head.status == 200 and status_head.body == b"" and status_head.content_type.startswith("text/html")
    _, response = app.test_client.get("/status", headers=basic())
    assert f"<td class=n id='d-{VERSION}'>1</td>" in response.text  # one download: the window with the last byte


def test_a_replicas_store_section_says_up_or_down_and_what_failed() -> None:
    index = Index(releases={"v1.0.0": release("v1.0.0")})
    assert "<h2>Store</h2>" not in render_status(index, KEYID, Snapshot(HOUR), "now")  # local disk: none
    status = StoreStatus("s3://b/fleet", up=False, message="the store did not answer (<Timeout>)", last_sync=0.0,
                         failures={"v2.0.0": {"ota.bin": "SHA-256 ab…, the manifest says cd…"}},
                         left_out=["v0.1.0"], mirrored=["v1.0.0", "v2.0.0"])
    page = render_status(index, KEYID, Snapshot(HOUR), "now", store=status)
    assert "<span class=bad>DOWN (the store did not answer (&lt;Timeout&gt;))</span>" in page
    assert "last listed 1970-01-01 00:00:00 UTC; 2 release(s)" in page
    assert "<td>v2.0.0</td><td>ota.bin</td><td class=bad>SHA-256 ab…, the manifest says cd…</td>" in page
    assert "not offered by this replica: <code>v0.1.0</code>" in page
    up = render_status(index, KEYID, Snapshot(HOUR), "now", store=StoreStatus("s3://b/fleet", up=True, message=""))
    assert "<span class=ok>up</span>; last listed never since start" in up
