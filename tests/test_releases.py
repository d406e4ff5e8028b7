"""Tests for sanic_ota.releases: which releases are served, in both signing modes."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from pathlib import Path

import pytest
from conftest import VERSION, example, settings_for, write_release
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sanic_ota import identities, records
from sanic_ota import manifest as manifests
from sanic_ota.errors import NotFound, Unavailable
from sanic_ota.files import locked
from sanic_ota.identities import IDENTITIES_FILE
from sanic_ota.manifest import FileEntry
from sanic_ota.records import LOCK_FILE, SERIALS_FILE
from sanic_ota.releases import Index, Indexer, Release
from sanic_ota.settings import Settings
from sanic_ota.signing import Signer
from sanic_ota.state import open_indexer
from sanic_ota.store import local

SIGNER = Signer(Ed25519PrivateKey.generate())
OTHER = Signer(Ed25519PrivateKey.generate())


def _signing(settings: Settings) -> Indexer:
    return open_indexer(settings, SIGNER.verifier, SIGNER)


def _offline(settings: Settings) -> Indexer:
    return open_indexer(settings, SIGNER.verifier, None)


def _serial(settings: Settings, version: str = VERSION) -> int:
    return json.loads((settings.manifests_dir / f"{version}.json").read_text())["signed"]["serial"]


def _release_dir(settings: Settings, version: str = VERSION) -> Path:
    return settings.partitions_dir / version


def _pin_file(settings: Settings) -> Path:
    return settings.partitions_dir / "LATEST"


# -- server-signs mode -----------------------------------------------------------------


def test_server_signs_serial_1_then_2_after_a_change(settings: Settings) -> None:
    index = _signing(settings).build()
    assert list(index.releases) == [VERSION] and not index.problems
    assert index.releases[VERSION].manifest.serial == 1 == _serial(settings)
    document = (settings.manifests_dir / f"{VERSION}.json").read_bytes()
    assert index.releases[VERSION].document == document
    manifests.verify(document, SIGNER.verifier, VERSION)

    (_release_dir(settings) / "ota.bin").write_bytes(example.build_app_image("v1.0.1"))
    index = _signing(settings).build()
    assert index.releases[VERSION].manifest.serial == 2 == _serial(settings)
    assert index.releases[VERSION].manifest.files["ota.bin"].info["image"]["app_version"] == "v1.0.1"
    assert json.loads((settings.manifests_dir / SERIALS_FILE).read_text()) == {VERSION: 2}


def test_unchanged_release_keeps_its_manifest_file(settings: Settings) -> None:
    first = _signing(settings).build().releases[VERSION]
    path = settings.manifests_dir / f"{VERSION}.json"
    stat_before = path.stat()
    second = _signing(settings).build().releases[VERSION]
    assert second.document == first.document
    assert second.manifest.serial == 1
    assert path.stat().st_mtime_ns == stat_before.st_mtime_ns and path.stat().st_ino == stat_before.st_ino


def test_server_replaces_a_replayed_older_manifest_with_a_higher_serial(settings: Settings) -> None:
    _signing(settings).build()
    old = (settings.manifests_dir / f"{VERSION}.json").read_bytes()
    (_release_dir(settings) / "extra.bin").write_bytes(b"extra partition")
    assert _signing(settings).build().releases[VERSION].manifest.serial == 2
    (settings.manifests_dir / f"{VERSION}.json").write_bytes(old)  # serial 1, now stale
    (_release_dir(settings) / "extra.bin").unlink()  # its files match the old manifest again
    release = _signing(settings).build().releases[VERSION]
    assert release.manifest.serial == 3 == _serial(settings)
    assert set(release.manifest.files) == {"ota.bin", "mqtt_ca.bin"}


def test_server_replaces_a_manifest_signed_by_another_key(settings: Settings) -> None:
    open_indexer(settings, OTHER.verifier, OTHER).build()
    release = _signing(settings).build().releases[VERSION]
    assert release.manifest.serial == 2  # higher than the one it replaced
    manifests.verify((settings.manifests_dir / f"{VERSION}.json").read_bytes(), SIGNER.verifier, VERSION)


def test_bad_magic_makes_the_release_a_problem(settings: Settings) -> None:
    write_release(settings.partitions_dir, "v2.0.0")
    ota = _release_dir(settings, "v2.0.0") / "ota.bin"
    ota.write_bytes(b"\x00" + ota.read_bytes()[1:])
    index = _signing(settings).build()
    assert list(index.releases) == [VERSION]
    assert "ota.bin" in index.problems["v2.0.0"] and "magic" in index.problems["v2.0.0"]
    assert not (settings.manifests_dir / "v2.0.0.json").exists()
    with pytest.raises(Unavailable, match="v2.0.0 is not servable"):
        index.release("v2.0.0")


def test_an_empty_release_is_a_problem(settings: Settings) -> None:
    (settings.partitions_dir / "v2.0.0").mkdir()
    (settings.partitions_dir / "v2.0.0" / "README").write_text("not a partition")
    index = _signing(settings).build()
    assert "holds no .bin file" in index.problems["v2.0.0"]
    assert VERSION in index.releases


def test_temporary_and_hidden_files_are_not_part_of_a_release(settings: Settings) -> None:
    directory = _release_dir(settings)
    for name in (".ota.bin.AbC123", "ota.bin~", ".hidden.bin", "notes.txt"):
        (directory / name).write_bytes(b"\x00junk")
    (directory / "sub").mkdir()
    (settings.partitions_dir / ".v2.tmp").mkdir()
    release = _signing(settings).build().releases[VERSION]
    assert set(release.manifest.files) == {"ota.bin", "mqtt_ca.bin"}
    assert _signing(settings).scan() == {VERSION}


@pytest.mark.parametrize(("make", "problem"), [
    (lambda p: p.mkdir(), "client_cert.bin is not a regular file"),
    (lambda p: p.symlink_to(p.parent / "absent"), "client_cert.bin is a symbolic link; only regular files are read"),
], ids=["directory", "dangling-symlink"])
def test_a_bin_that_is_not_a_regular_file_is_a_problem(settings: Settings, make, problem: str) -> None:
    write_release(settings.partitions_dir, "v2.0.0")
    make(_release_dir(settings, "v2.0.0") / "client_cert.bin")
    index = _signing(settings).build()
    assert index.problems["v2.0.0"] == problem
    assert list(index.releases) == [VERSION]


def test_a_manifest_that_cannot_be_written_is_a_problem_of_that_release_only(settings: Settings) -> None:
    write_release(settings.partitions_dir, "v2.0.0")
    (settings.manifests_dir / f"{VERSION}.json").mkdir(parents=True)  # os.replace onto it fails
    index = _signing(settings).build()
    assert list(index.releases) == ["v2.0.0"]
    assert str(settings.manifests_dir) in index.problems[VERSION]


# -- offline mode ----------------------------------------------------------------------


@pytest.fixture
def offline(settings: Settings) -> Settings:
    """Manifests signed elsewhere (by SIGNER) for v1.0.0 and v2.0.0, then served offline."""
    write_release(settings.partitions_dir, "v2.0.0")
    _signing(settings).build()
    (settings.manifests_dir / SERIALS_FILE).unlink()  # the server never saw them
    return settings


def test_offline_serves_manifests_built_by_a_signer(offline: Settings) -> None:
    before = {p.name: p.read_bytes() for p in offline.manifests_dir.glob("*.json")}
    index = _offline(offline).build()
    assert index.versions() == ["v2.0.0", VERSION] and not index.problems
    assert {p.name: p.read_bytes() for p in offline.manifests_dir.glob("v*.json")} == {
        k: v for k, v in before.items() if k.startswith("v")}


@pytest.mark.parametrize("attack", ["flip", "truncate", "copied", "other_key", "missing", "garbage"])
def test_offline_attacks_make_only_that_release_a_problem(offline: Settings, attack: str) -> None:
    directory, path = _release_dir(offline), offline.manifests_dir / f"{VERSION}.json"
    expected = {
        "flip": "mqtt_ca.bin does not match its manifest",
        "truncate": "mqtt_ca.bin does not match its manifest",
        "copied": "manifest names release 'v2.0.0', expected 'v1.0.0'",
        "other_key": "no signature by key",
        "missing": f"no manifest {path}",
        "garbage": "not valid JSON",
    }[attack]
    if attack == "flip":
        data = bytearray((directory / "mqtt_ca.bin").read_bytes())
        data[-10] ^= 0x01
        (directory / "mqtt_ca.bin").write_bytes(bytes(data))
    elif attack == "truncate":
        cert = directory / "mqtt_ca.bin"
        cert.write_bytes(cert.read_bytes()[:-4])
    elif attack == "copied":
        shutil.copy(offline.manifests_dir / "v2.0.0.json", path)
    elif attack == "other_key":
        manifest = manifests.verify(path.read_bytes(), SIGNER.verifier, VERSION)
        path.write_bytes(manifests.sign(manifest, OTHER))
    elif attack == "missing":
        path.unlink()
    else:
        path.write_bytes(b'{"signed": ')
    index = _offline(offline).build()
    assert list(index.releases) == ["v2.0.0"]
    assert expected in index.problems[VERSION]
    with pytest.raises(Unavailable):
        index.release(VERSION)
    assert index.latest().version == "v2.0.0"


def test_offline_extra_unlisted_file_is_served_without_it(offline: Settings) -> None:
    (_release_dir(offline) / "client_cert.bin").write_bytes(b"\xf1\xf1 not in the manifest")
    index = _offline(offline).build()
    assert set(index.releases[VERSION].manifest.files) == {"ota.bin", "mqtt_ca.bin"}
    assert not index.problems


def test_offline_refuses_an_older_serial_replayed_after_a_newer_one(offline: Settings) -> None:
    path = offline.manifests_dir / f"{VERSION}.json"
    old = path.read_bytes()
    newer = manifests.verify(old, SIGNER.verifier, VERSION)
    path.write_bytes(manifests.sign(manifests.Manifest(VERSION, 5, newer.created, newer.files), SIGNER))
    assert _offline(offline).build().releases[VERSION].manifest.serial == 5
    assert json.loads((offline.manifests_dir / SERIALS_FILE).read_text())[VERSION] == 5
    path.write_bytes(old)  # serial 1, properly signed, but older than what was seen
    index = _offline(offline).build()
    assert "serial 1 is older than serial 5" in index.problems[VERSION]
    assert "v2.0.0" in index.releases


def test_offline_never_writes_a_manifest(offline: Settings) -> None:
    (offline.manifests_dir / f"{VERSION}.json").unlink()
    _offline(offline).build()
    assert not (offline.manifests_dir / f"{VERSION}.json").exists()


# -- Index -----------------------------------------------------------------------------


def _index(settings: Settings, *versions: str) -> Index:
    for version in versions:
        write_release(settings.partitions_dir, version)
    return _signing(settings).build()


def test_latest_is_the_newest_in_version_order(settings: Settings) -> None:
    index = _index(settings, "v1.9.2", "v1.10.0", "v1.2.0")
    assert index.versions() == ["v1.10.0", "v1.9.2", "v1.2.0", VERSION]
    assert index.latest().version == "v1.10.0"


def test_latest_honours_the_pin(settings: Settings) -> None:
    _pin_file(settings).parent.mkdir(parents=True, exist_ok=True)
    _pin_file(settings).write_text(" v1.2.0\n")
    index = _index(settings, "v1.10.0", "v1.2.0")
    assert index.pinned == "v1.2.0"
    assert index.latest().version == "v1.2.0"


def test_a_pin_to_a_missing_release_is_unavailable(settings: Settings) -> None:
    _pin_file(settings).write_text("v9.9.9\n")
    index = _index(settings)
    with pytest.raises(Unavailable, match="LATEST pins release v9.9.9"):
        index.latest()


def test_an_empty_pin_means_newest(settings: Settings) -> None:
    _pin_file(settings).write_text("\n")
    assert _index(settings).latest().version == VERSION


def test_no_release_is_not_found(tmp_path: Path) -> None:
    index = _signing(settings_for(tmp_path)).build()
    with pytest.raises(NotFound, match="no release is available"):
        index.latest()
    with pytest.raises(NotFound, match="no release v1"):
        index.release("v1")
    with pytest.raises(NotFound):
        Index().latest()


def test_build_rereads_only_the_versions_named_and_drops_removed_ones(settings: Settings) -> None:
    indexer = _signing(settings)
    first = _index(settings, "v2.0.0", "v3.0.0")
    # v1 and v2 change on disk, but only v2 is named: v1 keeps its old release object
    for version in (VERSION, "v2.0.0"):
        (_release_dir(settings, version) / "extra.bin").write_bytes(b"new partition")
    shutil.rmtree(_release_dir(settings, "v3.0.0"))
    second = indexer.build(first, {"v2.0.0", "v9.9.9"})
    assert second.releases[VERSION] is first.releases[VERSION]
    assert second.releases["v2.0.0"].manifest.serial == 2
    assert "v3.0.0" not in second.releases and "v9.9.9" not in second.releases
    assert not (settings.manifests_dir / "v9.9.9.json").exists()
    third = indexer.build(second)
    assert third.releases[VERSION].manifest.serial == 2


def test_build_keeps_problems_of_releases_not_reread_and_clears_fixed_ones(settings: Settings) -> None:
    indexer = _signing(settings)
    (settings.partitions_dir / "v2.0.0").mkdir()
    first = indexer.build()
    assert "v2.0.0" in first.problems
    assert "v2.0.0" in indexer.build(first, {VERSION}).problems
    write_release(settings.partitions_dir, "v2.0.0")
    fixed = indexer.build(first, {"v2.0.0"})
    assert "v2.0.0" in fixed.releases and not fixed.problems


def test_release_document_sha256(settings: Settings) -> None:
    release: Release = _index(settings).releases[VERSION]
    assert release.document_sha256 == hashlib.sha256(release.document).hexdigest()


# -- containment -----------------------------------------------------------------------


def test_a_symlinked_release_directory_is_neither_served_nor_a_problem(settings: Settings, tmp_path_factory) -> None:
    outside = tmp_path_factory.mktemp("outside")
    write_release(outside, "v2.0.0")
    (settings.partitions_dir / "v2.0.0").symlink_to(outside / "v2.0.0")
    index = _signing(settings).build()
    assert list(index.releases) == [VERSION] and not index.problems
    assert not (settings.manifests_dir / "v2.0.0.json").exists()


def test_a_hard_linked_file_makes_its_release_a_problem(settings: Settings) -> None:
    write_release(settings.partitions_dir, "v2.0.0")
    (_release_dir(settings, "v2.0.0") / "mfg_nvs.bin").hardlink_to(settings.keys_file)
    index = _signing(settings).build()
    assert index.problems["v2.0.0"].startswith("mfg_nvs.bin has 2 hard links")
    assert not (settings.manifests_dir / "v2.0.0.json").exists()


@pytest.mark.parametrize("make", [lambda latest, keys: latest.symlink_to(keys),
                                  lambda latest, keys: latest.write_bytes(keys.read_bytes())],
                         ids=["symlink", "copy"])
def test_an_invalid_pin_names_no_release_and_is_never_logged(settings: Settings, caplog, make) -> None:
    make(_pin_file(settings), settings.keys_file)
    with caplog.at_level(logging.INFO):
        index = _signing(settings).build()
    assert index.pinned == ""
    with pytest.raises(Unavailable) as raised:
        index.latest()
    tokens = [key["Token"] for key in json.loads(settings.keys_file.read_text())]
    assert "pin refused" in caplog.text
    assert not [t for t in tokens if t in caplog.text or t in raised.value.message]


def test_a_release_that_is_not_servable_says_so_without_the_detail(settings: Settings) -> None:
    write_release(settings.partitions_dir, "v2.0.0")
    (settings.manifests_dir / "v2.0.0.json").mkdir(parents=True)
    index = _signing(settings).build()
    assert str(settings.manifests_dir) in index.problems["v2.0.0"]  # for the log and /status
    with pytest.raises(Unavailable) as raised:
        index.release("v2.0.0")
    assert raised.value.message == "release v2.0.0 is not servable; the server log and /status say why"


# -- never a downgrade, only versions are newest ------------------------------------------


def _r(version: str, serial: int = 1) -> Release:
    return Release(version, manifests.Manifest(version, serial, "2026-01-01T00:00:00Z", {}), b"{}")


@pytest.mark.parametrize(
    ("servable", "present", "expected"),
    [
        (["v1.0.0", "old", "backup-2019", "latest"], [], "v1.0.0"),
        (["v2.0.0rc1", "v2.0.0", "v1.10.0"], [], "v2.0.0"),
        (["v2.0.0rc1", "v1.10.0"], [], "v2.0.0rc1"),
        (["v1.9.2", "v1.10.0", "zzz"], [], "v1.10.0"),
        (["v1.0.0", "2019-05-01"], [], "v1.0.0"),
        (["v1.0.0"], ["old", "v0.9"], "v1.0.0"),
    ],
)
def test_latest_is_the_newest_version_and_names_that_are_not_versions_never_win(
    servable: list[str], present: list[str], expected: str
) -> None:
    index = Index(releases={v: _r(v) for v in servable}, present=frozenset(present))
    assert index.latest().version == expected


@pytest.mark.parametrize(
    ("servable", "problems", "present", "newest"),
    [
        (["v1.0.0"], ["v2.0.0"], [], "v2.0.0"),  # refused (truncated file, full disk...)
        (["v1.0.0"], [], ["v2.0.0"], "v2.0.0"),  # on disk, not indexed yet
        (["v1.0.0", "v2.0.0rc1"], ["v2.0.0"], [], "v2.0.0"),
        (["v1.0.0", "old"], ["v1.0.1"], ["backup-2019"], "v1.0.1"),
    ],
)
def test_latest_never_answers_older_than_the_newest_version_present(
    servable: list[str], problems: list[str], present: list[str], newest: str
) -> None:
    index = Index(releases={v: _r(v) for v in servable},
                  problems={v: "cannot read /srv/ota/partitions/x/ota.bin" for v in problems},
                  present=frozenset(present))
    with pytest.raises(Unavailable) as refused:
        index.latest()
    assert refused.value.message == (f"the newest release, {newest}, is not servable now; "
                                     "no older release is offered in its place")
    assert index.listed[0] == newest  # AT+CIPFWVER? shows the same newest first


def test_a_pin_still_holds_back_while_a_newer_release_is_broken() -> None:
    index = Index(releases={"v1.0.0": _r("v1.0.0")}, problems={"v2.0.0": "bad"}, pinned="v1.0.0")
    assert index.latest().version == "v1.0.0"


def test_two_names_of_the_newest_version_are_ambiguous() -> None:
    index = Index(releases={v: _r(v) for v in ("v1.0.0", "v2.0.0", "2.0.0+ci.7")})
    with pytest.raises(Unavailable, match=r"releases 2\.0\.0\+ci\.7 and v2\.0\.0 are the same version"):
        index.latest()


def test_only_names_that_are_not_versions_is_not_found() -> None:
    index = Index(releases={"old": _r("old")})
    with pytest.raises(NotFound, match="no release has a version name"):
        index.latest()
    assert index.release("old").version == "old"  # still downloadable by name


def test_a_refused_release_says_so_without_the_detail() -> None:
    index = Index(releases={}, problems={"v2.0.0": "no manifest /srv/ota/manifests/v2.0.0.json"})
    with pytest.raises(Unavailable) as refused:
        index.release("v2.0.0")
    assert refused.value.message == "release v2.0.0 is not servable; the server log and /status say why"


def test_listed_has_every_version_present_then_other_servable_names() -> None:
    index = Index(releases={v: _r(v) for v in ("v1.0.0", "old", "v0.9")}, problems={"v2.0.0": "x", "junk": "y"},
                  present=frozenset({"v1.5.0", "backup-2019"}))
    assert index.listed == ("v2.0.0", "v1.5.0", "v1.0.0", "v0.9", "old")
    assert index.versions() == ["v1.0.0", "v0.9", "old"]
    assert index.unversioned == ("backup-2019", "junk", "old")


def test_build_knows_every_directory_present(settings: Settings) -> None:
    indexer = _signing(settings)
    first = indexer.build()
    write_release(settings.partitions_dir, "v2.0.0")
    (settings.partitions_dir / "v2.0.0" / "ota.bin").write_bytes(b"\xe9 truncated")
    (settings.partitions_dir / "v3.0.0").mkdir()
    index = indexer.build(first, {"v2.0.0"})  # v3.0.0 is not indexed yet, but it is there
    assert index.present == {VERSION, "v2.0.0", "v3.0.0"}
    assert "v2.0.0" in index.problems and "v3.0.0" not in index.problems
    with pytest.raises(Unavailable, match="v3.0.0, is not servable"):
        index.latest()


def test_names_that_are_not_versions_are_logged_once_per_change(settings: Settings, caplog) -> None:
    for name in ("old", "backup-2019"):
        write_release(settings.partitions_dir, name)
    indexer = _signing(settings)
    with caplog.at_level("WARNING", logger="sanic_ota.releases"):
        first = indexer.build()
        second = indexer.build(first, {VERSION})
        write_release(settings.partitions_dir, "2019-05-01")
        indexer.build(second, {"2019-05-01"})
    lines = [r.getMessage() for r in caplog.records if "names are not versions" in r.getMessage()]
    assert lines == [
        "not offered as the newest release, since their names are not versions (still downloadable by name): "
        "backup-2019, old",
        "not offered as the newest release, since their names are not versions (still downloadable by name): "
        "2019-05-01, backup-2019, old",
    ]
    assert set(first.releases) == {VERSION, "old", "backup-2019"} and first.latest().version == VERSION


# -- start-up: what a restart reads, what a build writes -------------------------------


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file hashed and inspected, in order (the real work is still done)."""
    names: list[str] = []
    describe = FileEntry.describe.__func__  # type: ignore[attr-defined]

    def counting(cls: type[FileEntry], filename: str, data: bytes) -> FileEntry:
        names.append(filename)
        return describe(cls, filename, data)

    monkeypatch.setattr(FileEntry, "describe", classmethod(counting))
    return names


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files written by the test count as settled at once (the real default is 2 s)."""
    monkeypatch.setattr(identities, "SETTLE_SECONDS", 0.0)


def _make(settings: Settings, mode: str) -> Indexer:
    return _signing(settings) if mode == "signs" else _offline(settings)


@pytest.mark.parametrize("mode", ["signs", "offline"])
def test_a_restart_hashes_no_file_that_did_not_change(
    settings: Settings, hashed: list[str], settled: None, mode: str
) -> None:
    write_release(settings.partitions_dir, "v2.0.0")
    first = _signing(settings).build()
    assert len(hashed) == 4
    hashed.clear()
    again = _make(settings, mode).build()  # a new process: nothing in memory
    assert hashed == []
    assert {v: r.document for v, r in again.releases.items()} == {v: r.document for v, r in first.releases.items()}
    assert not again.problems


@pytest.mark.parametrize("mode", ["signs", "offline"])
def test_a_file_changed_while_down_is_hashed_again_even_with_its_size_and_mtime(
    settings: Settings, hashed: list[str], settled: None, mode: str
) -> None:
    write_release(settings.partitions_dir, "v2.0.0")
    _signing(settings).build()
    cert = _release_dir(settings) / "mqtt_ca.bin"
    before = cert.stat()
    data = bytearray(cert.read_bytes())
    data[-1] ^= 0xFF
    cert.write_bytes(bytes(data))
    os.utime(cert, ns=(before.st_atime_ns, before.st_mtime_ns))  # as `cp -p` or `touch -r` would
    assert (cert.stat().st_size, cert.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    hashed.clear()
    index = _make(settings, mode).build()
    assert sorted(hashed) == ["mqtt_ca.bin", "ota.bin"]  # that release only, every file of it
    if mode == "signs":
        entry = index.releases[VERSION].manifest.files["mqtt_ca.bin"]
        assert entry.sha256 == hashlib.sha256(data).hexdigest()
        assert index.releases[VERSION].manifest.serial == 2
    else:
        assert "mqtt_ca.bin does not match its manifest" in index.problems[VERSION]
    assert "v2.0.0" in index.releases


def test_a_file_changed_just_before_it_was_hashed_is_hashed_again_next_time(
    settings: Settings, hashed: list[str]
) -> None:
    _signing(settings).build()  # the files were written a moment ago: their identity may not settle yet
    hashed.clear()
    _signing(settings).build()
    assert sorted(hashed) == ["mqtt_ca.bin", "ota.bin"]
    assert not (settings.manifests_dir / IDENTITIES_FILE).exists()


def test_a_file_replaced_while_its_release_is_read_is_hashed_again_next_time(
    settings: Settings, settled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its identity as opened is not the one after every file was read: nothing is recorded."""
    cert = _release_dir(settings) / "mqtt_ca.bin"
    describe = FileEntry.describe.__func__  # type: ignore[attr-defined]
    names: list[str] = []
    replaced: list[str] = []

    def replacing(cls: type[FileEntry], filename: str, data: bytes) -> FileEntry:
        names.append(filename)
        if filename == "mqtt_ca.bin" and not replaced:  # read, not stat'ed again yet; once
            replaced.append(filename)
            (cert.parent / "copy.tmp").write_bytes(data)  # the same bytes, another inode
            os.replace(cert.parent / "copy.tmp", cert)
        return describe(cls, filename, data)

    monkeypatch.setattr(FileEntry, "describe", classmethod(replacing))
    _signing(settings).build()
    names.clear()
    index = _signing(settings).build()
    assert sorted(names) == ["mqtt_ca.bin", "ota.bin"]  # hashed again: the record did not vouch for it
    assert index.releases[VERSION].manifest.serial == 1  # the same bytes: nothing to sign
    names.clear()
    _signing(settings).build()
    assert names == []  # recorded this time


@pytest.mark.parametrize("mode", ["signs", "offline"])
def test_records_are_written_once_per_build(
    settings: Settings, settled: None, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    for n in range(3):
        write_release(settings.partitions_dir, f"v2.{n}.0")
    if mode == "offline":  # manifests signed elsewhere, then served: serials and identities are new here
        _signing(settings).build()
        for name in (SERIALS_FILE, IDENTITIES_FILE):
            (settings.manifests_dir / name).unlink()
    writes: list[str] = []
    write_atomic = records.write_atomic

    def counting(path: Path, data: bytes, *args: object, **kwargs: object) -> None:
        writes.append(Path(path).name)
        write_atomic(path, data, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(records, "write_atomic", counting)  # the records
    monkeypatch.setattr(local, "write_atomic", counting)  # the manifests
    index = _make(settings, mode).build()
    assert len(index.releases) == 4
    assert writes.count(SERIALS_FILE) == 1 and writes.count(IDENTITIES_FILE) == 1
    assert json.loads((settings.manifests_dir / SERIALS_FILE).read_text()) == dict.fromkeys(index.releases, 1)
    writes.clear()
    _make(settings, mode).build()
    assert writes == []  # nothing changed: nothing written


def test_a_restart_with_nothing_to_write_does_not_wait_for_the_lock(settings: Settings, settled: None) -> None:
    _signing(settings).build()
    done = threading.Event()
    with locked(settings.manifests_dir / LOCK_FILE):  # another worker signing for a long time
        threading.Thread(target=lambda: (_signing(settings).build(), done.set()), daemon=True).start()
        assert done.wait(10)


# -- a large start -------------------------------------------------------------------------

def _many(settings: Settings, count: int) -> list[str]:
    """``count`` releases v1.0.0 .. v1.<count-1>.0, copies of one (hashing each is the point)."""
    names = [f"v1.{n}.0" for n in range(count)]
    source = _release_dir(settings)
    for name in names[1:]:
        shutil.copytree(source, settings.partitions_dir / name)
    return names


def test_a_large_start_reads_first_what_a_version_query_names(settings: Settings) -> None:
    names = _many(settings, 8)  # v1.0.0 is the fixture's release
    _pin_file(settings).write_text("v1.3.0\n")
    settings.channels_dir.mkdir(exist_ok=True)
    (settings.channels_dir / "beta.json").write_text(json.dumps({"pin": "v1.5.0"}))
    indexer = _signing(settings)
    index = indexer.start(read_first=5)
    assert set(index.releases) == {"v1.7.0", "v1.3.0", "v1.5.0"}  # the newest, LATEST, beta's pin
    assert index.pending == set(names) - set(index.releases)
    assert index.latest().version == "v1.3.0" and index.base("beta").version == "v1.5.0"
    with pytest.raises(Unavailable) as told:
        index.release("v1.0.0")
    assert told.value.headers["Retry-After"] and "not been checked yet" in told.value.message
    assert "v1.0.0" in index.listed  # listed, as not servable for now
    complete = indexer.build(index, index.pending)  # what the watcher does next
    assert set(complete.releases) == set(names) and not complete.pending


def test_a_start_with_few_releases_reads_them_all_first(settings: Settings) -> None:
    names = _many(settings, 4)
    index = _signing(settings).start(read_first=5)
    assert set(index.releases) == set(names) and not index.pending


def test_a_broken_newest_release_is_not_passed_over_by_a_large_start(settings: Settings) -> None:
    _many(settings, 8)
    (_release_dir(settings, "v1.7.0") / "ota.bin").write_bytes(b"not an image")
    index = _signing(settings).start(read_first=5)
    assert "v1.7.0" in index.problems
    with pytest.raises(Unavailable):  # never an older release in its place
        index.latest()
