"""Tests for sanic_ota.example_release: the example release's bytes and where they go."""

from __future__ import annotations

import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from sanic_ota.errors import BadRequest
from sanic_ota.example_release import EXAMPLE_CA, build_app_image, build_cert_partition, write_release
from sanic_ota.images import check_magic, inspect
from sanic_ota.store.local import LocalStore

IMAGE = build_app_image("v1.2.3")


def test_esptool_image_info_says_valid(tmp_path: Path) -> None:
    path = tmp_path / "ota.bin"
    path.write_bytes(IMAGE)
    result = subprocess.run(
        [sys.executable, "-m", "esptool", "image-info", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Checksum: " in result.stdout and "(valid)" in result.stdout
    assert "Validation hash: " in result.stdout
    assert "invalid" not in result.stdout
    assert "App version: v1.2.3" in result.stdout


def test_build_is_deterministic() -> None:
    assert build_app_image("v1.2.3") == IMAGE
    assert build_app_image("v2") != IMAGE


def test_build_size_and_alignment() -> None:
    big = build_app_image("v1", size=16384)
    assert len(big) == 16384
    assert (len(big) - 32) % 16 == 0


def test_build_refuses_overlong_version() -> None:
    with pytest.raises(ValueError, match="31 bytes"):
        build_app_image("v" * 32)


def test_cert_partition_layout() -> None:
    text = EXAMPLE_CA
    data = build_cert_partition(text)
    magic, count, length = struct.unpack_from("<HHI", data)
    assert (magic, count, length) == (0xF1F1, 1, len(data) - 8)
    assert struct.unpack_from("<BBH", data, 8) == (0x01, 0, len(text))
    assert data[12 : 12 + len(text)] == text
    assert len(data) % 4 == 0
    check_magic("mqtt_ca", data)


def _store(partitions: Path) -> LocalStore:
    return LocalStore(partitions, partitions.parent / "manifests")


def test_write_release_writes_both_files_readable_by_all(tmp_path: Path) -> None:
    written = write_release(_store(tmp_path), "v9", app_version="9.0")
    release = tmp_path / "v9"
    assert written == [(str(release / "ota.bin"), len(build_app_image("9.0"))),
                       (str(release / "mqtt_ca.bin"), len(build_cert_partition(EXAMPLE_CA)))]
    assert sorted(p.name for p in release.iterdir()) == ["mqtt_ca.bin", "ota.bin"]  # no temporary file left
    assert (release / "ota.bin").read_bytes() == build_app_image("9.0")
    assert inspect("mqtt_ca", (release / "mqtt_ca.bin").read_bytes()) == {}
    assert all(stat.S_IMODE(Path(path).stat().st_mode) == 0o644 for path, _ in written)


@pytest.mark.parametrize("version", ["../escape", "a/b", "", ".hidden"])
def test_write_release_refuses_a_name_that_is_not_plain(tmp_path: Path, version: str) -> None:
    with pytest.raises(BadRequest, match="plain name|missing"):
        write_release(_store(tmp_path / "partitions"), version)
    assert list(tmp_path.iterdir()) == []


def test_the_shipped_example_is_what_make_example_writes(tmp_path: Path) -> None:
    write_release(_store(tmp_path), "v1.0.0")
    for name in ("ota.bin", "mqtt_ca.bin"):
        assert (tmp_path / "v1.0.0" / name).read_bytes() == (REPO / "partitions" / "v1.0.0" / name).read_bytes()
