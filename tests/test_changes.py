"""Tests for sanic_ota.changes: which file events re-read what (with store.local's Roots)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sanic_ota.changes import Layout, Plan, diff, layout_of, merge, plan, snapshot
from sanic_ota.settings import Settings
from sanic_ota.store.local import LocalStore, Roots, is_temporary

ROOT = Path("/srv/ota")
LAYOUT = Layout(
    roots=Roots(partitions=ROOT / "partitions", manifests=ROOT / "manifests"),
    keys_file=ROOT / "authorisation_keys.json",
    watch_manifests=False,
)
OFFLINE = Layout(LAYOUT.roots, LAYOUT.keys_file, watch_manifests=True)


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


def test_layout_pin_file() -> None:
    assert LAYOUT.roots.pin == ROOT / "partitions" / "LATEST"


def test_layout_comes_from_the_store_resolved(tmp_path: Path) -> None:
    (tmp_path / "releases-1").mkdir()
    (tmp_path / "partitions").symlink_to(tmp_path / "releases-1")
    settings = Settings(partitions_dir=tmp_path / "partitions", manifests_dir=tmp_path / "manifests",
                        keys_file=tmp_path / "keys.json", sign_manifests=False)
    layout = layout_of(LocalStore.from_settings(settings), settings)
    assert layout == Layout(Roots(tmp_path / "releases-1", tmp_path / "manifests", Path("channels").resolve()),
                            tmp_path / "keys.json", True)
    assert layout.roots.directories(manifests=True) == {"partitions": (tmp_path / "releases-1", True),
                                                        "manifests": (tmp_path / "manifests", False),
                                                        "channels": (Path("channels").resolve(), False)}


def _disk(tmp_path: Path, offline: bool = False) -> Layout:
    for version in ("v1", "v2"):
        (tmp_path / "partitions" / version).mkdir(parents=True)
        (tmp_path / "partitions" / version / "ota.bin").write_bytes(b"\xe9" * 10)
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "v1.json").write_text("{}")
    (tmp_path / "keys.json").write_text("[]")
    return Layout(Roots(tmp_path / "partitions", tmp_path / "manifests"), tmp_path / "keys.json",
                  watch_manifests=offline)


def test_an_unchanged_disk_needs_nothing(tmp_path: Path) -> None:
    layout = _disk(tmp_path)
    assert not diff(snapshot(layout), snapshot(layout))


def test_the_snapshot_sees_what_events_would(tmp_path: Path) -> None:
    layout = _disk(tmp_path)
    before = snapshot(layout)
    (tmp_path / "partitions" / "v1" / "ota.bin").write_bytes(b"\xe9" * 11)  # changed
    (tmp_path / "partitions" / "v3").mkdir()  # added
    (tmp_path / "partitions" / "v2" / "ota.bin").unlink()  # a file removed
    (tmp_path / "partitions" / "LATEST").write_text("v1")
    (tmp_path / "keys.json").chmod(0o600)  # a mode change is a change
    assert diff(before, snapshot(layout)) == Plan(frozenset({"v1", "v2", "v3"}), keys=True, pin=True)


def test_copies_in_progress_and_other_files_are_not_changes(tmp_path: Path) -> None:
    layout = _disk(tmp_path)
    before = snapshot(layout)
    (tmp_path / "partitions" / "v1" / ".ota.bin.Xy12ab").write_bytes(b"half")  # rsync's temporary
    (tmp_path / "partitions" / ".v9.tmp").mkdir()
    (tmp_path / "partitions" / "notes.txt").write_text("not a release")
    (tmp_path / "manifests" / "v2.json").write_text("{}")  # manifests are written here, not followed
    assert not diff(before, snapshot(layout))


def test_a_replaced_partitions_directory_changes_every_release(tmp_path: Path) -> None:
    layout = _disk(tmp_path)
    before = snapshot(layout)
    (tmp_path / "partitions").rename(tmp_path / "old")
    (tmp_path / "partitions" / "v1").mkdir(parents=True)  # same name, another directory
    (tmp_path / "partitions" / "v1" / "ota.bin").write_bytes(b"\xe9" * 10)
    assert diff(before, snapshot(layout)) == Plan(frozenset({"v1", "v2"}))


def test_a_re_pointed_symlink_is_a_change(tmp_path: Path) -> None:
    layout = _disk(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "ota.bin").write_bytes(b"\xe9" * 10)
    (tmp_path / "partitions" / "v3").symlink_to(tmp_path / "partitions" / "v1")
    before = snapshot(layout)
    (tmp_path / "partitions" / "v3").unlink()
    (tmp_path / "partitions" / "v3").symlink_to(tmp_path / "elsewhere")
    assert diff(before, snapshot(layout)) == Plan(frozenset({"v3"}))


def test_offline_manifests_are_followed_even_when_their_directory_comes_late(tmp_path: Path) -> None:
    layout = _disk(tmp_path, offline=True)
    (tmp_path / "manifests").rename(tmp_path / "manifests.away")
    before = snapshot(layout)
    (tmp_path / "manifests.away").rename(tmp_path / "manifests")
    assert diff(before, snapshot(layout)) == Plan(frozenset({"v1"}))


def test_a_partial_snapshot_records_only_what_it_names(tmp_path: Path) -> None:
    layout = _disk(tmp_path)
    seen = snapshot(layout)
    (tmp_path / "partitions" / "v1" / "ota.bin").write_bytes(b"\xe9" * 12)
    (tmp_path / "partitions" / "v2" / "ota.bin").write_bytes(b"\xe9" * 12)
    (tmp_path / "keys.json").unlink()
    merge(seen, snapshot(layout, Plan(frozenset({"v1"}), keys=True)))
    assert diff(seen, snapshot(layout)) == Plan(frozenset({"v2"}))


def test_a_channel_file_is_re_read_with_the_pin(tmp_path: Path) -> None:
    roots = Roots(tmp_path / "partitions", tmp_path / "manifests", tmp_path / "channels")
    layout = Layout(roots, tmp_path / "keys.json", False)
    assert plan([(1, str(tmp_path / "channels" / "beta.json"))], layout) == Plan(pin=True)
    assert plan([(1, str(tmp_path / "channels" / ".beta.json.tmp"))], layout) == Plan()
    assert plan([(1, str(tmp_path / "channels" / "notes.txt"))], layout) == Plan()
    (tmp_path / "channels").mkdir()
    before = snapshot(layout)
    (tmp_path / "channels" / "beta.json").write_text("{}")
    assert diff(before, snapshot(layout)) == Plan(pin=True)
