"""Metric labels stay as few as the releases on disk, whatever clients ask for; each app counts alone."""

from __future__ import annotations

import http.client
import re
from pathlib import Path

from conftest import TOKEN, VERSION, env_for, settings_for
from sanic import Sanic
from server_process import ServerProcess

from sanic_ota.accounting import Kind, RequestRecord
from sanic_ota.keys import PROBLEMS, Key, KeysFileStatus, load_keys, save_keys
from sanic_ota.mirror_status import StoreStatus
from sanic_ota.releases import Index
from sanic_ota.settings import Settings
from sanic_ota.state import open_state
from sanic_ota.web.metrics import Metrics
from sanic_ota.web.server import create_app

ADMIN = "b" * 40


def _value(metrics: Metrics, version: str, file: str, outcome: str) -> float:
    return metrics.downloads.labels(version, file, outcome)._value.get()


def _bytes_total(metrics: Metrics) -> float:
    return sum(s.value for m in metrics.bytes.collect() for s in m.samples if s.name.endswith("_total"))


def _index(settings: Settings) -> Index:
    """The real index of the workdir's release, plus one release present but refused."""
    index = open_state(settings).index
    return Index(releases=index.releases, problems={"v0.9.0": "holds no .bin file"})


def _download(metrics: Metrics, version: str | None, file: str | None, status: int, sent: int,
              length: int | None = None, kind: Kind = Kind.DOWNLOAD) -> None:
    """A download record closed with ``sent`` of ``length`` bytes; less: the client left."""
    record = RequestRecord(client="x", kind=kind, handled=True, version=version, file=file)
    record.client_gone = length is not None and sent < length
    record.close(status, sent, sent if length is None else length)
    metrics.observe(record)
    metrics.flush()


def test_labels_name_only_releases_on_disk(settings: Settings) -> None:
    metrics = Metrics()
    metrics.releases(_index(settings))
    _download(metrics, VERSION, "ota.bin", 200, 10)
    _download(metrics, "v0.9.0", "made-up-1.bin", 503, 90)  # refused release: its version, never the file asked for
    _download(metrics, "made-up-1", "nope.bin", 404, 60)
    _download(metrics, VERSION, "nope.bin", 404, 60)
    _download(metrics, None, None, 401, 60)  # no token: the query was never read
    assert _value(metrics, VERSION, "ota.bin", "completed") == 1
    assert _value(metrics, "v0.9.0", "other", "error") == 1
    assert _value(metrics, "other", "other", "refused") == 2
    assert _value(metrics, VERSION, "other", "refused") == 1
    labels = {(s.labels.get("version"), s.labels.get("file")) for m in metrics.downloads.collect() for s in m.samples}
    assert not {"made-up-1", "nope.bin", "made-up-1.bin", ""} & {name for pair in labels for name in pair}


def test_bytes_served_counts_image_bytes_not_error_bodies(settings: Settings) -> None:
    metrics = Metrics()
    metrics.releases(_index(settings))
    _download(metrics, VERSION, "ota.bin", 200, 1000, length=5000)  # part of an image is still image bytes
    _download(metrics, "v0.9.0", "ota.bin", 503, 90)
    _download(metrics, VERSION, "nope.bin", 404, 60)
    assert _bytes_total(metrics) == 1000
    assert metrics.bytes.labels(VERSION, "ota.bin")._value.get() == 1000
    assert _value(metrics, VERSION, "ota.bin", "aborted") == 1


def test_a_file_in_windows_is_one_download_and_all_its_bytes(settings: Settings) -> None:
    metrics = Metrics()
    metrics.releases(_index(settings))
    _download(metrics, VERSION, "ota.bin", 200, 0, kind=Kind.HEAD)
    _download(metrics, VERSION, "ota.bin", 206, 4096, kind=Kind.PARTIAL)
    _download(metrics, VERSION, "ota.bin", 206, 4096, kind=Kind.PARTIAL)
    _download(metrics, VERSION, "ota.bin", 206, 100)  # the window with the last byte
    _download(metrics, VERSION, "ota.bin", 304, 0, kind=Kind.NOT_MODIFIED)
    assert _value(metrics, VERSION, "ota.bin", "completed") == 1
    assert metrics.bytes.labels(VERSION, "ota.bin")._value.get() == 4096 * 2 + 100
    kinds = {s.labels["kind"]: s.value for m in metrics.requests.collect() for s in m.samples
             if s.name.endswith("_total")}
    assert kinds == {"head": 1, "partial": 2, "download": 1, "not_modified": 1}


def test_made_up_names_leave_metrics_small(workdir: Path) -> None:
    """Thousands of made-up versions and files on a real server: one ``other`` series."""
    save_keys(workdir / "keys.json", load_keys(workdir / "keys.json") + [Key("ops", ADMIN, {"Role": "admin"})])
    (workdir / "partitions" / "v0.9.0").mkdir()  # present, refused: no .bin file
    auth = {"Authorization": f"token {TOKEN}"}
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        connection = http.client.HTTPConnection(proc.host, proc.port, timeout=10)
        statuses = set()
        for n in range(600):
            for version, file in ((f"v7.{n}.0", "ota.bin"), (VERSION, f"x{n}.bin"), ("v0.9.0", f"y{n}.bin")):
                connection.request("GET", f"/v1/device/rom/?action=download_rom&version={version}&filename={file}",
                                   headers=auth)
                response = connection.getresponse()
                response.read()
                statuses.add(response.status)
        connection.request("GET", "/metrics", headers={"Authorization": f"token {ADMIN}"})
        response = connection.getresponse()
        body = response.read().decode()
    assert response.status == 200 and statuses == {404, 503}
    assert len(body) < 16_000, len(body)
    assert not re.search(r'(version|file)="(v7\.|x\d|y\d)', body)
    assert f'sanic_ota_downloads_total{{file="other",outcome="refused",version="{VERSION}"}} 600.0' in body
    assert 'sanic_ota_downloads_total{file="other",outcome="error",version="v0.9.0"} 600.0' in body
    assert 'sanic_ota_downloads_total{file="other",outcome="refused",version="other"} 600.0' in body


def test_the_keys_file_gauges_name_one_reason_at_a_time() -> None:
    metrics = Metrics()
    metrics.keys_file(KeysFileStatus("invalid", "bad JSON"))
    assert metrics.keys_file_ok._value.get() == 0
    assert {r: metrics.keys_file_problem.labels(r)._value.get() for r in PROBLEMS} == {
        "missing": 0, "unreadable": 0, "invalid": 1, "open_to_others": 0}
    metrics.keys_file(KeysFileStatus())
    assert metrics.keys_file_ok._value.get() == 1
    assert not any(metrics.keys_file_problem.labels(r)._value.get() for r in PROBLEMS)


def _completed(metrics: str, version: str = VERSION, file: str = "ota.bin") -> float:
    found = re.search(rf'^sanic_ota_downloads_total{{file="{file}",outcome="completed",version="{version}"}} (\S+)$',
                      metrics, re.M)
    return float(found.group(1)) if found else 0.0


def test_two_apps_in_one_process_keep_separate_counters(workdir: Path, settings: Settings) -> None:
    save_keys(workdir / "keys.json", load_keys(workdir / "keys.json") + [Key("ops", ADMIN, {"Role": "admin"})])
    one: Sanic = create_app(settings)
    two: Sanic = create_app(settings)
    url = f"/v1/device/rom/?action=download_rom&version={VERSION}&filename=ota.bin"
    for app, downloads in ((one, 2), (two, 1)):
        for _ in range(downloads):
            assert app.test_client.get(url, headers={"Authorization": f"token {TOKEN}"})[1].status == 200
    metrics = {name: app.test_client.get("/metrics", headers={"Authorization": f"token {ADMIN}"})[1].text
               for name, app in (("one", one), ("two", two))}
    assert _completed(metrics["one"]) == 2 and _completed(metrics["two"]) == 1
    assert "process_cpu_seconds_total" in metrics["one"]  # a default registry's collectors, as before


def test_store_gauges_follow_the_status_and_label_only_failing_releases() -> None:
    metrics = Metrics(multiprocess_mode=False)
    metrics.store(StoreStatus("s3://b/p", up=True, message="", last_sync=1234.5,
                              failures={"v2.0.0": {"ota.bin": "missing", "mqtt_ca.bin": "missing"}}))
    text = metrics.exposition()[0].decode()
    assert "sanic_ota_store_up 1.0" in text and "sanic_ota_store_last_sync_timestamp_seconds 1234.5" in text
    assert 'sanic_ota_store_object_failures{version="v2.0.0"} 2.0' in text
    metrics.store(StoreStatus("s3://b/p", up=False, message="down", last_sync=1234.5, left_out=["v0.1.0"]))
    text = metrics.exposition()[0].decode()
    assert "sanic_ota_store_up 0.0" in text and "sanic_ota_store_releases_left_out 1.0" in text
    assert 'sanic_ota_store_object_failures{version="v2.0.0"} 0.0' in text  # fixed: back to 0


def test_counts_wait_in_memory_until_a_flush_and_every_read_flushes(settings: Settings) -> None:
    """``observe`` never touches a Prometheus counter (a lock and a shared file in
    multiprocess mode); ``flush`` adds what it kept, and ``/metrics`` flushes first."""
    metrics = Metrics()
    metrics.releases(_index(settings))
    record = RequestRecord(client="x", kind=Kind.DOWNLOAD, handled=True, version=VERSION, file="ota.bin")
    record.close(200, 10, 10)
    metrics.observe(record)
    metrics.observe(record)
    metrics.downloads_in_flight = 3
    assert _value(metrics, VERSION, "ota.bin", "completed") == 0
    assert metrics.in_flight._value.get() == 0
    body = metrics.exposition()[0].decode()
    assert f'sanic_ota_downloads_total{{file="ota.bin",outcome="completed",version="{VERSION}"}} 2.0' in body
    assert 'sanic_ota_requests_total{kind="download",status="200"} 2.0' in body
    assert "sanic_ota_downloads_in_flight 3.0" in body
    metrics.flush()  # nothing left over: nothing counted twice
    assert _value(metrics, VERSION, "ota.bin", "completed") == 2
    assert metrics.bytes.labels(VERSION, "ota.bin")._value.get() == 20
