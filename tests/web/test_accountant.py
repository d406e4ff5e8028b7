"""One record per request tells the audit log, /metrics and /status the same story."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import time
import urllib.request
from pathlib import Path

from conftest import TOKEN, VERSION, env_for, example, settings_for
from server_process import ServerProcess

from sanic_ota.accounting import AuthFailure, Kind, RequestRecord
from sanic_ota.keys import Key, load_keys, save_keys
from sanic_ota.logs import LogWriter
from sanic_ota.settings import Settings
from sanic_ota.state import open_state
from sanic_ota.web.accountant import Accountant
from sanic_ota.web.metrics import Metrics

ADMIN = "c" * 40
BIG = "v5.0.0"


def add_admin(workdir: Path) -> None:
    save_keys(workdir / "keys.json", load_keys(workdir / "keys.json") + [Key("ops", ADMIN, {"Role": "admin"})])


def worker_fds(main_pid: int) -> list[Path]:
    """The open descriptors of every process below the server's main process."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    below, changed = {main_pid}, True
    while changed:
        more = {pid for pid, parent in parents.items() if parent in below} - below
        below |= more
        changed = bool(more)
    return [fd for pid in below - {main_pid} for fd in Path(f"/proc/{pid}/fd").glob("*")]


def verified_copies(proc: ServerProcess, length: int) -> list[Path]:
    """The worker's handles on its verified copy of a ``length``-byte image: an unlinked file."""
    assert proc.proc is not None
    found = []
    for fd in worker_fds(proc.proc.pid):
        try:
            if os.readlink(fd).endswith(" (deleted)") and fd.stat().st_size == length:
                found.append(fd)
        except OSError:
            continue
    assert found, "no verified copy found in the worker"
    return found


def cut(copies: list[Path], keep: int) -> None:
    """What a disk that loses data under a running server does to the copy: only the
    copy changes, so the server still takes it for the verified bytes of an unchanged file."""
    for fd in copies:
        descriptor = os.open(fd, os.O_WRONLY)
        os.ftruncate(descriptor, keep)
        os.close(descriptor)


def get_raw(proc: ServerProcess, path: str, token: str) -> tuple[int, bytes]:
    """Status and every body byte until the server closes."""
    with socket.create_connection((proc.host, proc.port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: token {token}\r\n"
                     f"Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_a_download_the_server_cannot_finish_is_an_error_everywhere(workdir: Path) -> None:
    add_admin(workdir)
    image = example.build_app_image(BIG, size=8 * 1024 * 1024)
    (workdir / "partitions" / BIG).mkdir()
    (workdir / "partitions" / BIG / "ota.bin").write_bytes(image)
    url = f"/v1/device/rom/?action=download_rom&version={BIG}&filename=ota.bin"
    env = dict(env_for(settings_for(workdir, cache_bytes=1024)), SANIC_OTA_LOG_FORMAT="json")
    with ServerProcess(env, cwd=workdir) as proc:
        assert get_raw(proc, url, TOKEN) == (200, image)  # the verified copy is made
        copies = verified_copies(proc, len(image))
        cut(copies, 0)  # the first read fails: before the headers
        status, body = get_raw(proc, url, TOKEN)
        assert status == 500 and json.loads(body)["status"] == 500
        cut(copies, 1024 * 1024)  # a read fails after the headers and most of the first MiB
        status, body = get_raw(proc, url, TOKEN)
        assert status == 200 and len(body) < len(image)
        request = urllib.request.Request(f"http://{proc.host}:{proc.port}/metrics",
                                         headers={"Authorization": f"token {ADMIN}"})
        metrics = urllib.request.urlopen(request).read().decode()
        basic = base64.b64encode(f"ops:{ADMIN}".encode()).decode()
        request = urllib.request.Request(f"http://{proc.host}:{proc.port}/status",
                                         headers={"Authorization": f"Basic {basic}"})
        page = urllib.request.urlopen(request).read().decode()
        records = proc.records_when(lambda rs: sum(r["version"] == BIG for r in rs) == 3)
        told = [(r["status"], r["outcome"], r["bytes"]) for r in records if r["version"] == BIG]
    assert told[0] == (200, "completed", len(image))
    assert told[1][:2] == (500, "error")  # as the module was told, not "200 aborted"
    assert told[2][:2] == (200, "error") and 1024 * 1024 - 256 * 1024 <= told[2][2] <= 1024 * 1024
    assert f'sanic_ota_downloads_total{{file="ota.bin",outcome="error",version="{BIG}"}} 2.0' in metrics
    assert 'sanic_ota_requests_total{kind="download",status="500"} 1.0' in metrics
    assert 'sanic_ota_requests_total{kind="download",status="200"} 2.0' in metrics
    assert page.count('<td class=n>500</td><td class=bad>error</td>') == 1
    assert page.count('<td class=n>200</td><td class=bad>error</td>') == 1


def _closed(accountant: Accountant, client: str, status: int, failure: AuthFailure | None = None,
            at: float | None = None) -> RequestRecord:
    record = RequestRecord(client=client, credentials=True, kind=Kind.DOWNLOAD, handled=True, key="fleet",
                           channel="stable", version=VERSION, file="ota.bin", auth_failure=failure,
                           at=time.time() if at is None else at)
    accountant.close(record, status, 10 if status == 200 else 0, 10 if status == 200 else 0)
    return record


def test_the_counters_are_told_in_groups_and_every_failure_is_listed(settings: Settings) -> None:
    """``settle`` tells the counters once per group of records that say the same, with
    their number: the same totals as one by one. The failure list still names each
    failed request; nothing is counted before ``settle``, or twice after it."""
    state = open_state(settings)
    metrics = Metrics()
    metrics.releases(state.index)
    accountant = Accountant("text", LogWriter(io.StringIO()), metrics, state.stats, state.fleet)
    for client in ("10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.2"):
        _closed(accountant, client, 200)
    now = time.time()
    refused = [_closed(accountant, "10.0.0.3", 403, AuthFailure.UNKNOWN_TOKEN, at=now + n) for n in range(3)]
    for client in ("10.0.0.4", "10.0.0.4", "10.0.0.5"):  # version queries: the fleet counts their offer
        query = RequestRecord(client=client, credentials=True, kind=Kind.VERSION_QUERY, handled=True, key="fleet",
                              channel="stable", offered=VERSION)
        accountant.close(query, 200, 40, 40)
    assert not state.stats.snapshot().downloads and not state.fleet.snapshot()
    accountant.settle()
    accountant.settle()  # nothing left: nothing counted twice
    assert state.stats.snapshot().downloads[(VERSION, "ota.bin")][-1] == 4
    assert [f.time for f in state.stats.snapshot().failures] == [r.time for r in reversed(refused)]
    (group,) = state.fleet.snapshot()
    assert group.downloaded == {VERSION: 4} and group.offered == {VERSION: 3}
    assert group.addresses == 5 and group.failures == {"auth: unknown_token": 3}
    metrics.flush()
    assert metrics.downloads.labels(VERSION, "ota.bin", "completed")._value.get() == 4
    assert metrics.requests.labels("download", "403")._value.get() == 3
    assert metrics.requests.labels("version_query", "200")._value.get() == 3
    assert metrics.auth_failures.labels("unknown_token")._value.get() == 3


def test_failures_told_in_groups_are_listed_newest_first(settings: Settings) -> None:
    """Groups are told in the order each first appeared: failures of two groups that took
    turns are still listed by when each request began."""
    state = open_state(settings)
    accountant = Accountant("text", LogWriter(io.StringIO()), Metrics(), state.stats, state.fleet)
    now = time.time()
    closed = [_closed(accountant, "10.0.0.3", 403, AuthFailure.UNKNOWN_TOKEN, at=now),
              _closed(accountant, "10.0.0.4", 404, at=now + 1),
              _closed(accountant, "10.0.0.3", 403, AuthFailure.UNKNOWN_TOKEN, at=now + 2)]
    accountant.settle()
    assert [f.time for f in state.stats.snapshot().failures] == [r.time for r in reversed(closed)]
