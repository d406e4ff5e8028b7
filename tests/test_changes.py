"""Tests for sanic_ota.changes: which file events re-read what."""

from __future__ import annotations

from pathlib import Path

import pytest

from sanic_ota.changes import Layout, Plan, is_temporary, plan

ROOT = Path("/srv/ota")
LAYOUT = Layout(
    partitions=ROOT / "partitions",
    manifests=ROOT / "manifests",
    keys_file=ROOT / "authorisation_keys.json",
    watch_manifests=False,
)
OFFLINE = Layout(LAYOUT.partitions, LAYOUT.manifests, LAYOUT.keys_file, watch_manifests=True)


def _plan(*paths: str, layout: Layout = LAYOUT) -> Plan:
    return plan([(1, str(ROOT / p)) for p in paths], layout)


@pytest.mark.parametrize("name", [".ota.bin.AbC123", "ota.bin~", ".ota.bin.swp", ".hidden", "ota.bin.tmp",
                                  "ota.bin.part", "ota.bin.crdownload"])
def test_temporary_names(name: str) -> None:
    assert is_temporary(name)


@pytest.mark.parametrize("name", ["ota.bin", "mqtt_ca.bin", "v2", "LATEST"])
def test_real_names_are_not_temporary(name: str) -> None:
    assert not is_temporary(name)


@pytest.mark.parametrize("path", [
    "partitions/v2/.ota.bin.AbC123",
    "partitions/v2/ota.bin~",
    "partitions/v2/.ota.bin.swp",
    "partitions/v2/.DS_Store",
    "partitions/.v2.tmp",
    "partitions/.v2.tmp/ota.bin",
    "partitions/v2/sub/ota.bin",
    "partitions/v2/sub/deeper/ota.bin",
    "partitions/LATEST~",
    "partitions/.LATEST.swp",
    "partitions",
    "elsewhere/v2/ota.bin",
    "manifests/v2.json",
    "authorisation_keys.json~",
])
def test_ignored_paths(path: str) -> None:
    assert not _plan(path)
    assert _plan(path) == Plan()


@pytest.mark.parametrize("path", ["partitions/v2", "partitions/v2/ota.bin", "partitions/v2/notes.txt"])
def test_release_paths_name_their_release(path: str) -> None:
    assert _plan(path) == Plan(versions=frozenset({"v2"}))


def test_pin_and_keys() -> None:
    assert _plan("partitions/LATEST") == Plan(pin=True)
    assert _plan("authorisation_keys.json") == Plan(keys=True)


def test_manifests_only_when_watched() -> None:
    assert not _plan("manifests/v2.json")
    assert _plan("manifests/v2.json", layout=OFFLINE) == Plan(versions=frozenset({"v2"}))
    for ignored in ("manifests/.serials.json", "manifests/.v2.json.x1y2.tmp", "manifests/.lock",
                    "manifests/v2.json~", "manifests/sub/v2.json", "manifests/v2.txt"):
        assert not _plan(ignored, layout=OFFLINE), ignored


def test_a_batch_combines_everything() -> None:
    found = _plan("partitions/v2/ota.bin", "partitions/v3", "partitions/v2/.x.tmp", "partitions/LATEST",
                  "authorisation_keys.json")
    assert found == Plan(versions=frozenset({"v2", "v3"}), keys=True, pin=True)


def test_plan_union_and_truthiness() -> None:
    assert not Plan()
    assert Plan(keys=True) and Plan(pin=True) and Plan(versions=frozenset({"v1"}))
    merged = Plan(versions=frozenset({"v1"})) | Plan(versions=frozenset({"v2"}), keys=True) | Plan(pin=True)
    assert merged == Plan(versions=frozenset({"v1", "v2"}), keys=True, pin=True)
    assert Plan() | Plan() == Plan()


def test_layout_latest_file() -> None:
    assert LAYOUT.latest_file == ROOT / "partitions" / "LATEST"
