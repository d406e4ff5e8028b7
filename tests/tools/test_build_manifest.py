"""Tests for tools/build_manifest.py (sanic_ota.tools.build_manifest), run as the operator runs it."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from conftest import REPO, VERSION, env_for, write_release

from sanic_ota import manifest as manifests
from sanic_ota.settings import Settings
from sanic_ota.signing import load_verifier

TOOL = REPO / "tools" / "build_manifest.py"


def run_build_manifest(settings: Settings, version: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), version], cwd=cwd, env=env_for(settings),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def test_signs_a_release_and_creates_the_key_pair(settings: Settings, workdir: Path) -> None:
    result = run_build_manifest(settings, VERSION, workdir)
    assert result.returncode == 0, result.stderr
    path = settings.manifests_dir / f"{VERSION}.json"
    verifier = load_verifier(settings.public_key_path)
    manifest = manifests.verify(path.read_bytes(), verifier, VERSION)
    assert manifest.serial == 1 and set(manifest.files) == {"ota.bin", "mqtt_ca.bin"}
    assert stat.S_IMODE(settings.signing_key.stat().st_mode) == 0o600
    assert f"serial 1, 2 file(s), key {verifier.keyid}" in result.stdout
    before = path.read_bytes()
    again = run_build_manifest(settings, VERSION, workdir)
    assert again.returncode == 0 and path.read_bytes() == before  # unchanged: not rewritten


def test_a_bad_magic_release_signs_nothing(settings: Settings, workdir: Path) -> None:
    directory = write_release(settings.partitions_dir, "v2.0.0")
    (directory / "ota.bin").write_bytes(b"\x00" + (directory / "ota.bin").read_bytes()[1:])
    result = run_build_manifest(settings, "v2.0.0", workdir)
    assert result.returncode == 1
    assert "build_manifest: v2.0.0: ota.bin" in result.stderr and "magic" in result.stderr
    assert not (settings.manifests_dir / "v2.0.0.json").exists()
    serials = settings.manifests_dir / ".serials.json"
    assert not serials.exists() or "v2.0.0" not in json.loads(serials.read_text())


def test_a_release_name_that_is_not_plain_is_refused(settings: Settings, workdir: Path) -> None:
    result = run_build_manifest(settings, "../outside", workdir)
    assert result.returncode == 1 and "plain name" in result.stderr


def test_a_linked_file_signs_nothing(settings: Settings, workdir: Path) -> None:
    directory = write_release(settings.partitions_dir, "v2.0.0")
    (directory / "mfg_nvs.bin").hardlink_to(workdir / "keys.json")  # the keys file, as a custom partition
    result = run_build_manifest(settings, "v2.0.0", workdir)
    assert result.returncode == 1
    assert "build_manifest: v2.0.0: mfg_nvs.bin has 2 hard links" in result.stderr
    assert not (settings.manifests_dir / "v2.0.0.json").exists()
