"""Tests for sanic_ota.store.local: nothing outside partitions/ is ever read, indexed or served.

The attacks are the ones a bad artifact or a careless copy makes: a symlink or a hard
link to the keys file (it holds every token, admin ones included) in place of a
release file, a release directory or partitions/LATEST. Unit tests check the rules;
the tests at the end run a real server and look at every body and the whole log.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import OTHER_TOKEN, TOKEN, VERSION, env_for, settings_for, write_release
from server_process import ServerProcess

from sanic_ota.errors import ContainmentError
from sanic_ota.settings import Settings
from sanic_ota.store.local import MANIFEST_LIMIT, PIN_LIMIT, LocalStore, identity

SECRET = b'[{"Name": "admin", "Token": "SECRET-TOKEN-0123456789", "Role": "admin"}]\n'


@pytest.fixture
def tree(tmp_path: Path) -> LocalStore:
    (tmp_path / "partitions" / "v1").mkdir(parents=True)
    (tmp_path / "manifests").mkdir()
    (tmp_path / "secret.json").write_bytes(SECRET)
    return LocalStore(tmp_path / "partitions", tmp_path / "manifests")


def _secret(tree: LocalStore) -> Path:
    return tree.partitions.parent / "secret.json"


def _path(tree: LocalStore, version: str, name: str | None = None) -> Path:
    return tree.partitions / version if name is None else tree.partitions / version / name


# -- release directories -------------------------------------------------------------------


def test_versions_are_real_directories_with_plain_names(tree: LocalStore) -> None:
    (tree.partitions / ".v2.tmp").mkdir()
    (tree.partitions / "LATEST").write_text("v1\n")
    (tree.partitions / "v3").write_bytes(b"a file, not a release")
    assert tree.list_releases() == {"v1"}


def test_a_symlinked_release_directory_is_not_a_release_and_is_logged_once(tree: LocalStore, caplog) -> None:
    outside = tree.partitions.parent / "elsewhere"
    outside.mkdir()
    (tree.partitions / "v2").symlink_to(outside)
    (tree.partitions / "v3").symlink_to(tree.partitions / "v1")  # even one pointing inside
    with caplog.at_level(logging.ERROR):
        assert tree.list_releases() == {"v1"}
        assert tree.list_releases() == {"v1"}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2  # once per link, not once per scan
    assert f"{tree.partitions / 'v2'} is a symbolic link" in lines[0]
    assert str(outside) not in caplog.text  # the path, never where it points
    with pytest.raises(ContainmentError, match="partitions/v2 is a symbolic link"), tree.release("v2"):
        pass


def test_a_release_directory_swapped_for_a_symlink_after_the_scan_is_refused(tree: LocalStore) -> None:
    assert tree.list_releases() == {"v1"}
    os.rename(tree.partitions / "v1", tree.partitions / ".old")
    (tree.partitions / "v1").symlink_to(tree.partitions / ".old")
    with pytest.raises(ContainmentError, match="is a symbolic link"), tree.release("v1"):
        pass


# -- release files ---------------------------------------------------------------------


def _read(tree: LocalStore, name: str) -> bytes:
    with tree.release("v1") as release, release.open(name) as opened:
        return opened.read()


def test_a_regular_file_is_read(tree: LocalStore) -> None:
    _path(tree, "v1", "ota.bin").write_bytes(b"\xe9 image")
    assert _read(tree, "ota.bin") == b"\xe9 image"
    with tree.release("v1") as release:
        assert release.names() == ["ota.bin"]


@pytest.mark.parametrize(("make", "problem"), [
    (lambda link, target: link.symlink_to(target), "mfg_nvs.bin is a symbolic link"),
    (lambda link, target: link.hardlink_to(target), "mfg_nvs.bin has 2 hard links; hard-linked files are never served"),
    (lambda link, target: os.mkfifo(link), "mfg_nvs.bin is not a regular file"),
    (lambda link, target: link.mkdir(), "mfg_nvs.bin is not a regular file"),
], ids=["symlink", "hardlink", "fifo", "directory"])
def test_a_release_file_that_is_not_a_plain_file_inside_is_refused(tree: LocalStore, make, problem: str) -> None:
    make(_path(tree, "v1", "mfg_nvs.bin"), _secret(tree))
    with pytest.raises(ContainmentError) as raised:
        _read(tree, "mfg_nvs.bin")
    assert raised.value.message.startswith(problem)
    assert "SECRET" not in raised.value.message and str(_secret(tree)) not in raised.value.message


def test_a_symlink_to_a_file_inside_partitions_is_refused_too(tree: LocalStore) -> None:
    _path(tree, "v1", "ota.bin").write_bytes(b"\xe9 image")
    _path(tree, "v1", "copy.bin").symlink_to("ota.bin")
    with pytest.raises(ContainmentError, match="symbolic link"):
        _read(tree, "copy.bin")


def test_a_release_lists_only_its_files_and_stats_them_without_following_links(tree: LocalStore) -> None:
    _path(tree, "v1", "ota.bin").write_bytes(b"\xe9 image")
    for name in ("notes.txt", ".ota.bin.AbC123", "ota.bin~"):
        _path(tree, "v1", name).write_bytes(b"not a release file")
    _path(tree, "v1", "link.bin").symlink_to(_secret(tree))
    _path(tree, "v1", "dir.bin").mkdir()
    with tree.release("v1") as release:
        assert release.names() == ["dir.bin", "link.bin", "ota.bin"]
        info = release.stat("ota.bin")
        st = os.lstat(_path(tree, "v1", "ota.bin"))
        assert (info.length, info.identity) == (7, identity(st))
        assert info.changed_ns == max(st.st_mtime_ns, st.st_ctime_ns)
        with pytest.raises(ContainmentError, match="link.bin is a symbolic link"):
            release.stat("link.bin")
        with pytest.raises(ContainmentError, match="dir.bin is not a regular file"):
            release.stat("dir.bin")
        with pytest.raises(FileNotFoundError):
            release.stat("absent.bin")
    assert tree.stat("v1", "ota.bin") == info  # the cache's cheap re-check says the same


def test_a_file_is_read_in_chunks_from_what_was_opened(tree: LocalStore) -> None:
    path = _path(tree, "v1", "ota.bin")
    path.write_bytes(b"\xe9" + b"a" * 9)
    with tree.open("v1", "ota.bin") as opened:
        assert opened.info == tree.stat("v1", "ota.bin")
        os.replace(_secret(tree), path)  # renamed over it after the open: the opened file is read
        assert opened.read(4) == b"\xe9aaa" and opened.read() == b"a" * 6 and opened.read(4) == b""


def test_names_that_are_not_plain_are_refused_before_any_open(tree: LocalStore) -> None:
    for name in ("../secret.json", "a/b.bin", ".."):
        with pytest.raises(ContainmentError, match="plain name"):
            _read(tree, name)
    with pytest.raises(ContainmentError, match="plain name"), tree.release(".."):
        pass


def test_a_file_on_another_filesystem_is_refused(tree: LocalStore) -> None:
    mount = _path(tree, "v2")
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        (mount / "ota.bin").write_bytes(b"\xe9 image")
        with pytest.raises(ContainmentError, match="another filesystem"), tree.open("v2", "ota.bin"):
            pass
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# -- the pin --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "pin"), [(None, None), (b"", None), (b" \n", None), (b" v1.2.0\n", "v1.2.0")])
def test_a_pin_is_a_plain_name_or_nothing(tree: LocalStore, text: bytes | None, pin: str | None) -> None:
    if text is not None:
        (tree.partitions / "LATEST").write_bytes(text)
    assert tree.read_pin() == pin


@pytest.mark.parametrize("make", [
    lambda latest, secret: latest.symlink_to(secret),
    lambda latest, secret: latest.hardlink_to(secret),
    lambda latest, secret: latest.write_bytes(SECRET),  # the keys file copied in by mistake
    lambda latest, secret: latest.write_bytes(b"../../SECRET-TOKEN\n"),
    lambda latest, secret: latest.write_bytes(b"v1 SECRET-TOKEN\n"),
    lambda latest, secret: latest.write_bytes(b"\xffSECRET-TOKEN\n"),
    lambda latest, secret: latest.write_bytes(b"v1" + b" " * PIN_LIMIT + b"SECRET-TOKEN"),
], ids=["symlink", "hardlink", "json", "traversal", "two-words", "not-utf8", "too-long"])
def test_an_invalid_pin_is_refused_without_repeating_it(tree: LocalStore, make) -> None:
    make(tree.partitions / "LATEST", _secret(tree))
    with pytest.raises(ContainmentError) as raised:
        tree.read_pin()
    assert "SECRET" not in raised.value.message and "partitions/LATEST" in raised.value.message


def test_no_partitions_directory_means_no_pin_and_no_release(tmp_path: Path) -> None:
    tree = LocalStore(tmp_path / "absent", tmp_path / "manifests")
    assert tree.read_pin() is None and tree.list_releases() == set()


# -- manifests --------------------------------------------------------------------------------


def test_a_manifest_is_read_only_as_a_regular_file(tree: LocalStore) -> None:
    assert tree.read_manifest("v1") is None
    (tree.manifests / "v1.json").write_bytes(b"{}")
    assert tree.read_manifest("v1") == b"{}"
    (tree.manifests / "v1.json").unlink()
    (tree.manifests / "v1.json").symlink_to(_secret(tree))
    with pytest.raises(ContainmentError, match="manifests/v1.json is a symbolic link"):
        tree.read_manifest("v1")
    (tree.manifests / "v1.json").unlink()
    (tree.manifests / "v1.json").mkdir()
    with pytest.raises(ContainmentError, match="not a regular file"):
        tree.read_manifest("v1")


def test_a_huge_manifest_is_refused_unread(tree: LocalStore) -> None:
    with open(tree.manifests / "v1.json", "wb") as handle:
        handle.truncate(MANIFEST_LIMIT + 1)  # sparse: costs no disk
    with pytest.raises(ContainmentError, match="larger than"):
        tree.read_manifest("v1")


def test_a_manifest_is_written_atomically_where_it_is_read(tree: LocalStore) -> None:
    store = LocalStore(tree.partitions, tree.manifests / "new")  # created on the first write
    store.write_manifest("v1", b"{}", durable=False)
    store.write_manifest("v1", b'{"a": 1}', durable=False)
    store.sync_manifests(["v1"])
    assert store.read_manifest("v1") == b'{"a": 1}'
    assert [p.name for p in (tree.manifests / "new").iterdir()] == ["v1.json"]  # no temporary left
    with pytest.raises(ContainmentError, match="plain name"):
        store.write_manifest("../v1", b"{}")


def test_where_things_are_for_the_log(tmp_path: Path) -> None:
    store = LocalStore.from_settings(Settings())
    assert store.where_pin() == "partitions/LATEST"
    assert store.where("v1", "ota.bin") == "partitions/v1/ota.bin"
    assert store.where_manifest("v1") == "manifests/v1.json"


# -- on a real server -------------------------------------------------------------------------


def fetch(proc: ServerProcess, path: str, token: str = TOKEN) -> tuple[int, bytes]:
    """One request, ``Connection: close``, read to the end: (status, body)."""
    with socket.create_connection((proc.host, proc.port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: token {token}\r\n"
                     "Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _download(version: str, name: str) -> str:
    return f"/v1/device/rom/?action=download_rom&version={version}&filename={name}"


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.1)


def _symlinked_bin(partitions: Path, keys_file: Path, outside: Path) -> str:
    write_release(partitions, "v2.0.0")  # mfg_nvs: a custom partition, no magic bytes to check
    (partitions / "v2.0.0" / "mfg_nvs.bin").symlink_to(keys_file)
    return "release v2.0.0 is NOT served: mfg_nvs.bin is a symbolic link"


def _hardlinked_bin(partitions: Path, keys_file: Path, outside: Path) -> str:
    write_release(partitions, "v2.0.0")
    (partitions / "v2.0.0" / "mfg_nvs.bin").hardlink_to(keys_file)
    return "release v2.0.0 is NOT served: mfg_nvs.bin has 2 hard links"


def _symlinked_release(partitions: Path, keys_file: Path, outside: Path) -> str:
    write_release(outside, "v2.0.0")  # a release elsewhere, its files plain copies
    (outside / "v2.0.0" / "mfg_nvs.bin").write_bytes(keys_file.read_bytes())
    (partitions / "v2.0.0").symlink_to(outside / "v2.0.0")
    return f"{partitions / 'v2.0.0'} is a symbolic link: not a release"


def _symlinked_pin(partitions: Path, keys_file: Path, outside: Path) -> str:
    (partitions / "LATEST").symlink_to(keys_file)
    return "pin refused, plain AT+CIUPDATE gets 503 until it is fixed: partitions/LATEST is a symbolic link"


def _garbage_pin(partitions: Path, keys_file: Path, outside: Path) -> str:
    (partitions / "LATEST").write_bytes(b"v1.0.0; GARBAGE-PIN-TEXT \x1b[31m\n")
    return "pin refused, plain AT+CIUPDATE gets 503 until it is fixed: partitions/LATEST does not hold a plain"


@pytest.mark.parametrize("attack", [_symlinked_bin, _hardlinked_bin, _symlinked_release, _symlinked_pin, _garbage_pin],
                         ids=["symlinked-bin", "hardlinked-bin", "symlinked-release", "symlinked-pin", "garbage-pin"])
def test_nothing_outside_partitions_is_served_or_echoed(workdir: Path, tmp_path_factory, attack) -> None:
    """Every answer a device can get, and the whole log, hold no token and no pin text."""
    partitions, keys_file = workdir / "partitions", workdir / "keys.json"
    outside = tmp_path_factory.mktemp("outside")
    logged = attack(partitions, keys_file, outside)
    secrets = (TOKEN, OTHER_TOKEN, "GARBAGE")
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        answers = {
            "version query": fetch(proc, "/v1/device/rom/?is_format_simple=true"),
            "listing": fetch(proc, "/v1/device/rom"),
            "manifests": fetch(proc, "/v1/manifest/"),
            "manifest": fetch(proc, "/v1/manifest/v2.0.0"),
            **{name: fetch(proc, _download("v2.0.0", name)) for name in ("mfg_nvs.bin", "ota.bin")},
        }
        log = proc.log()
    for what, (_, body) in answers.items():
        assert not [s for s in secrets if s.encode() in body], what
    assert not [s for s in secrets if s in log]
    assert logged in log and str(outside) not in log
    versions = [v["version"] for v in json.loads(answers["listing"][1])["versions"] if v.get("servable", True)]
    if "pin" in attack.__name__:  # an unusable pin fails closed
        assert answers["version query"][0] == 503 and versions == [VERSION]
    else:
        assert answers["mfg_nvs.bin"][0] in (404, 503) and versions == [VERSION]
        assert not (workdir / "manifests" / "v2.0.0.json").exists()  # never signed


def test_a_pin_fixed_on_disk_is_followed_again(workdir: Path) -> None:
    (workdir / "partitions" / "LATEST").symlink_to(workdir / "keys.json")
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        assert fetch(proc, "/v1/device/rom/?is_format_simple=true")[0] == 503
        (workdir / "partitions" / "LATEST").unlink()
        (workdir / "partitions" / "LATEST").write_text(f"{VERSION}\n")
        _wait_for(lambda: fetch(proc, "/v1/device/rom/?is_format_simple=true")[0] == 200)


def test_error_bodies_carry_no_server_path_and_no_os_error_text(workdir: Path) -> None:
    partitions, manifests = workdir / "partitions", workdir / "manifests"
    write_release(partitions, "v2.0.0")
    (manifests / "v2.0.0.json").mkdir(parents=True)  # its manifest cannot be written: "Is a directory: /tmp/..."
    (partitions / "LATEST").write_text("v2.0.0\n")
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        assert re.search(r"release v2.0.0 is NOT served: .*Is a directory", proc.log())  # the log keeps the detail
        (partitions / VERSION / "mqtt_ca.bin").unlink()  # gone after indexing
        answers = [
            fetch(proc, "/v1/device/rom/?is_format_simple=true"),
            fetch(proc, _download("v2.0.0", "ota.bin")),
            fetch(proc, "/v1/manifest/v2.0.0"),
            fetch(proc, _download(VERSION, "mqtt_ca.bin")),
            fetch(proc, _download("v9", "ota.bin")),
        ]
    assert [status for status, _ in answers] == [503, 503, 503, 500, 404]
    strerrors = [os.strerror(n) for n in errno.errorcode]
    for _, body in answers:
        message = json.loads(body)["message"]
        assert str(workdir) not in message and "/tmp" not in message, message
        assert not [text for text in strerrors if text in message], message


def test_a_mirror_installs_and_removes_releases_manifest_first(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "partitions", tmp_path / "manifests")
    staged = store.staging("v2")
    assert staged.parent == store.partitions and store.list_releases() == set()  # a dot name: not a release
    (staged / "ota.bin").write_bytes(b"new")
    store.install("v2", b"{manifest 1}", staged)
    assert store.read_manifest("v2") == b"{manifest 1}" and store.list_releases() == {"v2"}
    assert not staged.exists()
    again = store.staging("v2")  # the release changed: replaced file by file, stale files removed
    (again / "mqtt_ca.bin").write_bytes(b"ca")
    store.install("v2", b"{manifest 2}", again)
    with store.release("v2") as release:
        assert release.names() == ["mqtt_ca.bin"]
    assert store.read_manifest("v2") == b"{manifest 2}" and not again.exists()
    store.copy_pin(b"v2\n")
    assert store.read_pin() == "v2" and store.installed() == ({"v2"}, {"v2"})
    store.staging("v3")  # a fetch cut short by a crash
    store.clear_staging()
    store.remove("v2")
    store.copy_pin(None)
    assert os.listdir(store.partitions) == [] and store.installed() == (set(), set())
