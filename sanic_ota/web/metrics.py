"""Prometheus metrics of one app, summed across Sanic's worker processes.

Each app has its own ``Metrics``, with its own registry, made by ``create_app``: two
apps in one process (tests) never share a counter. With several workers, each
process writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-
client's multiprocess mode), which the server's main process creates before the
workers start; ``/metrics`` in any worker then reports the sum of every worker's
files. Without that variable (single process, tests) the app's registry is reported,
with the process and Python collectors a default registry has. The mode is read when
the app is made, as prometheus-client reads it when it is first imported: both
happen as the worker loads ``sanic_ota.app``.

Requests are counted per request in plain dictionaries (``observe``) and added to the
Prometheus counters by ``flush``: on every ``/metrics`` read in this worker, and every
``stats.FLUSH_SECONDS`` by the server's flush task. A Prometheus counter in
multiprocess mode takes a lock and writes a shared file on every increment, which
was a measurable part of a small answer's time (bench/). Another worker's last
few seconds may be missing from a read, never counted twice.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter as Tally

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    multiprocess,
)

from sanic_ota.accounting import Kind, RequestRecord
from sanic_ota.keys import PROBLEMS, KeysFileStatus
from sanic_ota.mirror_status import StoreStatus
from sanic_ota.releases import Index

ENV = "PROMETHEUS_MULTIPROC_DIR"

#: The label value for every version or file that is not a release on disk.
OTHER = "other"


def download_labels(index: Index, version: str | None, file: str | None) -> tuple[str, str]:
    """(version, file) labels: names of releases present on disk, anything else ``other``.

    A request names whatever the client likes, so only names the operator put on
    disk get their own series: the versions served or refused, and the files of
    a served release. A refused release has no trusted file list; its files are
    ``other``. This keeps ``/metrics`` as small as the release directory.
    """
    if version is None or (version not in index.releases and version not in index.problems):
        return OTHER, OTHER
    release = index.releases.get(version)
    return version, file if release is not None and file in release.manifest.files else OTHER


class Metrics:
    """The app's counters and gauges, and the index that decides which names are labels."""

    def __init__(self, multiprocess_mode: bool | None = None) -> None:
        self.multiprocess = bool(os.environ.get(ENV)) if multiprocess_mode is None else multiprocess_mode
        self.registry = registry = CollectorRegistry()
        if not self.multiprocess:
            for collector in (ProcessCollector, PlatformCollector, GCCollector):
                collector(registry=registry)
        self.downloads = Counter(
            "sanic_ota_downloads", "Downloads by release, file and outcome (completed, aborted, error).",
            ["version", "file", "outcome"], registry=registry,
        )
        self.bytes = Counter("sanic_ota_bytes_served", "Image bytes handed to clients.", ["version", "file"],
                             registry=registry)
        self.in_flight = Gauge("sanic_ota_downloads_in_flight", "Downloads being sent now.",
                               multiprocess_mode="livesum", registry=registry)
        self.auth_failures = Counter("sanic_ota_auth_failures", "Failed authentications by reason.", ["reason"],
                                     registry=registry)
        self.connections_closed = Counter(
            "sanic_ota_connections_closed", "Connections closed early: header_timeout, unauthenticated_cap.",
            ["reason"], registry=registry,
        )
        self.requests = Counter("sanic_ota_requests", "Requests by kind and status.", ["kind", "status"],
                                registry=registry)
        self.manifest_builds = Counter("sanic_ota_manifest_builds", "Manifests signed (or refused) by result.",
                                       ["result"], registry=registry)
        self.releases_served = Gauge("sanic_ota_releases_served", "Releases currently served.",
                                     multiprocess_mode="max", registry=registry)
        self.releases_broken = Gauge("sanic_ota_releases_broken", "Releases present but not servable.",
                                     multiprocess_mode="max", registry=registry)
        # "live": a worker that exited takes its view of the keys file with it
        self.keys_file_ok = Gauge("sanic_ota_keys_file_ok",
                                  "1 if the keys file on disk is applied in full (in every worker).",
                                  multiprocess_mode="livemin", registry=registry)
        self.keys_file_problem = Gauge("sanic_ota_keys_file_problem",
                                       "1 for the reason the keys file is not (fully) applied.",
                                       ["reason"], multiprocess_mode="livemax", registry=registry)
        # A replica's store, as the status file says: each worker sets these when scraped,
        # so the most recent value is the one reported.
        self.store_up = Gauge("sanic_ota_store_up", "1 if the replica's last listing of its store succeeded.",
                              multiprocess_mode="mostrecent", registry=registry)
        self.store_last_sync = Gauge("sanic_ota_store_last_sync_timestamp_seconds",
                                     "When the replica last listed its store successfully (0: not since start).",
                                     multiprocess_mode="mostrecent", registry=registry)
        self.store_failures = Gauge("sanic_ota_store_object_failures",
                                    "Objects of a release in the store that could not be mirrored as signed.",
                                    ["version"], multiprocess_mode="mostrecent", registry=registry)
        self.store_left_out = Gauge("sanic_ota_store_releases_left_out",
                                    "Releases in the store not held: over SANIC_OTA_CACHE_DIR_BYTES.",
                                    multiprocess_mode="mostrecent", registry=registry)
        self._failure_labels: set[str] = set()
        #: The index that decides which names are label values; replaced by ``releases``.
        self.index = Index()
        #: Downloads being sent by this worker now; ``flush`` sets ``in_flight`` to it.
        self.downloads_in_flight = 0
        #: Counts not yet added to the counters above, by counter and label values.
        self._requests: Tally[tuple[str, int]] = Tally()
        self._auth_failures: Tally[str] = Tally()
        self._downloads: Tally[tuple[str, str, str]] = Tally()
        self._bytes: Tally[tuple[str, str]] = Tally()

    def observe(self, record: RequestRecord, n: int = 1) -> None:
        """Count a closed request, or ``n`` that said the same (in memory, until the next ``flush``)."""
        self._requests[(record.kind, record.status)] += n
        if record.auth_failure is not None:
            self._auth_failures[record.auth_failure] += n
        if record.kind in (Kind.DOWNLOAD, Kind.PARTIAL):
            version, file = download_labels(self.index, record.version, record.file)
            if record.kind == Kind.DOWNLOAD:  # a window is bytes, not a download
                self._downloads[(version, file, str(record.outcome))] += n
            if record.status in (200, 206) and record.sent:  # image bytes; an error's JSON body is not
                self._bytes[(version, file)] += record.sent * n

    def flush(self) -> None:
        """Add the counts ``observe`` kept to the Prometheus counters (on the event loop)."""
        self.in_flight.set(self.downloads_in_flight)
        pending = (self._requests, self._auth_failures, self._downloads, self._bytes)
        self._requests, self._auth_failures, self._downloads, self._bytes = Tally(), Tally(), Tally(), Tally()
        requests, auth_failures, downloads, sent = pending
        for (kind, status), n in requests.items():
            self.requests.labels(kind, str(status)).inc(n)
        for reason, n in auth_failures.items():
            self.auth_failures.labels(reason).inc(n)
        for (version, file, outcome), n in downloads.items():
            self.downloads.labels(version, file, outcome).inc(n)
        for (version, file), n in sent.items():
            self.bytes.labels(version, file).inc(n)

    def manifest_event(self, result: str, version: str) -> None:
        self.manifest_builds.labels(result).inc()

    def releases(self, index: Index) -> None:
        """Called with every new index: releases served, and present but refused."""
        self.index = index
        self.releases_served.set(len(index.releases))
        self.releases_broken.set(len(index.problems))

    def keys_file(self, status: KeysFileStatus) -> None:
        """Called at start and after every reload of the keys file."""
        self.keys_file_ok.set(1 if status.ok else 0)
        for reason in PROBLEMS:
            self.keys_file_problem.labels(reason).set(1 if status.problem == reason else 0)

    def store(self, status: StoreStatus) -> None:
        """A replica's store status, before a scrape. Failure labels are versions whose
        manifest is in the bucket, so there are no more series than releases."""
        self.store_up.set(1 if status.up else 0)
        self.store_last_sync.set(status.last_sync or 0)
        self.store_left_out.set(len(status.left_out))
        for version in self._failure_labels - status.failures.keys():
            self.store_failures.labels(version).set(0)
        for version, objects in status.failures.items():
            self.store_failures.labels(version).set(len(objects))
        self._failure_labels |= status.failures.keys()

    def exposition(self) -> tuple[bytes, str]:
        self.flush()
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def worker_exited(self, pid: int) -> None:
        if self.multiprocess:
            multiprocess.mark_process_dead(pid)


def prepare_multiprocess_dir() -> str | None:
    """In the main process, before workers start: a fresh directory, unless one is set."""
    if os.environ.get(ENV):
        return None
    directory = tempfile.mkdtemp(prefix="sanic_ota_metrics_")
    os.environ[ENV] = directory
    return directory


def remove_multiprocess_dir(directory: str | None) -> None:
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
