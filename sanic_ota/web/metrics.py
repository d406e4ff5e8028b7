"""Prometheus metrics, summed across Sanic's worker processes.

With several workers, each process writes its samples to files in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode), which the
server's main process creates before the workers start; ``/metrics`` in any worker
then reports the sum. Without that variable (single process, tests) the default
registry is used. The mode is fixed when this module is first imported, as it is
for prometheus-client itself.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest, multiprocess

from sanic_ota.audit import AuditRecord
from sanic_ota.keys import PROBLEMS, KeysFileStatus
from sanic_ota.releases import Index

ENV = "PROMETHEUS_MULTIPROC_DIR"
MULTIPROCESS = bool(os.environ.get(ENV))

DOWNLOADS = Counter(
    "sanic_ota_downloads", "Downloads by release, file and outcome (completed, aborted, error).",
    ["version", "file", "outcome"],
)
BYTES = Counter("sanic_ota_bytes_served", "Image bytes handed to clients.", ["version", "file"])
IN_FLIGHT = Gauge("sanic_ota_downloads_in_flight", "Downloads being sent now.", multiprocess_mode="livesum")
AUTH_FAILURES = Counter("sanic_ota_auth_failures", "Failed authentications by reason.", ["reason"])
CONNECTIONS_CLOSED = Counter(
    "sanic_ota_connections_closed", "Connections closed early: header_timeout, unauthenticated_cap.", ["reason"],
)
REQUESTS = Counter("sanic_ota_requests", "Requests by kind and status.", ["kind", "status"])
MANIFEST_BUILDS = Counter("sanic_ota_manifest_builds", "Manifests signed (or refused) by result.", ["result"])
RELEASES = Gauge("sanic_ota_releases_served", "Releases currently served.", multiprocess_mode="max")
BROKEN = Gauge("sanic_ota_releases_broken", "Releases present but not servable.", multiprocess_mode="max")
# "live": a worker that exited takes its view of the keys file with it
KEYS_FILE_OK = Gauge("sanic_ota_keys_file_ok", "1 if the keys file on disk is applied in full (in every worker).",
                     multiprocess_mode="livemin")
KEYS_FILE_PROBLEM = Gauge("sanic_ota_keys_file_problem", "1 for the reason the keys file is not (fully) applied.",
                          ["reason"], multiprocess_mode="livemax")


#: The label value for every version or file that is not a release on disk.
OTHER = "other"

#: The index that decides which names are label values; replaced by ``releases``.
_index = Index()


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


def observe(record: AuditRecord, auth_failure: str | None) -> None:
    REQUESTS.labels(record.kind, str(record.status)).inc()
    if auth_failure:
        AUTH_FAILURES.labels(auth_failure).inc()
    if record.kind == "download":
        version, file = download_labels(_index, record.version, record.file)
        DOWNLOADS.labels(version, file, record.outcome).inc()
        if record.status == 200 and record.bytes:  # image bytes; an error's JSON body is not
            BYTES.labels(version, file).inc(record.bytes)


def manifest_event(result: str, version: str) -> None:
    MANIFEST_BUILDS.labels(result).inc()


def releases(index: Index) -> None:
    """Called with every new index: releases served, and present but refused."""
    global _index
    _index = index
    RELEASES.set(len(index.releases))
    BROKEN.set(len(index.problems))


def keys_file(status: KeysFileStatus) -> None:
    """Called at start and after every reload of the keys file."""
    KEYS_FILE_OK.set(1 if status.ok else 0)
    for reason in PROBLEMS:
        KEYS_FILE_PROBLEM.labels(reason).set(1 if status.problem == reason else 0)


def exposition() -> tuple[bytes, str]:
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


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


def worker_exited(pid: int) -> None:
    if MULTIPROCESS:
        multiprocess.mark_process_dead(pid)
