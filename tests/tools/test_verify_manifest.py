"""Tests for tools/verify_manifest.py (sanic_ota.tools.verify_manifest), and the auditor's jq and openssl check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import VERSION, example, settings_for, write_release
from test_build_manifest import run_build_manifest

from sanic_ota.settings import Settings
from sanic_ota.signing import create_key_pair
from sanic_ota.state import open_indexer, signing_keys
from sanic_ota.tools import verify_manifest

#: What the README tells an auditor to run: no Python, only jq, xxd and OpenSSL.
AUDITOR_COMMANDS = """\
jq -jcS .signed m.json > signed.bin
jq -r '.signatures[0].sig' m.json | xxd -r -p > sig.bin
openssl pkeyutl -verify -pubin -inkey pub.pem -rawin -in signed.bin -sigfile sig.bin
"""


@pytest.fixture
def signed(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """v1.0.0 signed into manifests/, and SANIC_OTA_* pointing at it for the tool."""
    verifier, signer = signing_keys(settings)
    open_indexer(settings, verifier, signer).index_release(VERSION)
    for name in [k for k in os.environ if k.startswith("SANIC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SANIC_OTA_PARTITIONS_DIR", str(settings.partitions_dir))
    monkeypatch.setenv("SANIC_OTA_MANIFESTS_DIR", str(settings.manifests_dir))
    monkeypatch.setenv("SANIC_OTA_SIGNING_KEY", str(settings.signing_key))
    return settings


def _flip(path: Path, offset: int = -10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_good_manifest(signed: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_manifest.main([VERSION]) == 0
    assert capsys.readouterr().out.startswith("OK ")
    assert verify_manifest.main([VERSION, "--files"]) == 0
    assert f"2 file(s) in {signed.partitions_dir / VERSION} match" in capsys.readouterr().out


def test_explicit_manifest_and_public_key(signed: Settings, tmp_path: Path) -> None:
    shutil.copy(signed.manifests_dir / f"{VERSION}.json", tmp_path / "m.json")
    shutil.copy(signed.public_key_path, tmp_path / "pub.pem")
    assert verify_manifest.main([VERSION, "--manifest", str(tmp_path / "m.json"),
                                 "--public-key", str(tmp_path / "pub.pem")]) == 0
    assert verify_manifest.main(["v2.0.0", "--manifest", str(tmp_path / "m.json")]) == 1


def test_files_after_a_byte_flip(signed: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    _flip(signed.partitions_dir / VERSION / "mqtt_ca.bin")
    assert verify_manifest.main([VERSION]) == 0  # the manifest itself is still fine
    assert verify_manifest.main([VERSION, "--files"]) == 1
    assert "FAIL mqtt_ca.bin does not match its manifest" in capsys.readouterr().err


def test_files_with_an_extra_unlisted_file(signed: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    (signed.partitions_dir / VERSION / "client_cert.bin").write_bytes(b"\xf1\xf1 extra")
    assert verify_manifest.main([VERSION, "--files"]) == 1
    assert "FAIL client_cert.bin is on disk but not in the manifest" in capsys.readouterr().err


def test_another_public_key(signed: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    create_key_pair(tmp_path / "other.pem", tmp_path / "other.pub.pem")
    assert verify_manifest.main([VERSION, "--public-key", str(tmp_path / "other.pub.pem")]) == 1
    assert "no signature by key" in capsys.readouterr().err


def test_missing_manifest_or_key(signed: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_manifest.main(["v9.9.9"]) == 1
    assert "FAIL" in capsys.readouterr().err
    assert verify_manifest.main([VERSION, "--public-key", str(tmp_path / "absent.pem")]) == 1
    assert "not found" in capsys.readouterr().err


def test_links_are_refused_as_the_server_refuses_them(signed: Settings, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    manifest = signed.manifests_dir / f"{VERSION}.json"
    shutil.move(manifest, tmp_path / "m.json")
    manifest.symlink_to(tmp_path / "m.json")
    assert verify_manifest.main([VERSION]) == 1
    assert f"manifests/{VERSION}.json is a symbolic link" in capsys.readouterr().err
    manifest.unlink()
    shutil.move(tmp_path / "m.json", manifest)
    cert = signed.partitions_dir / VERSION / "mqtt_ca.bin"
    shutil.move(cert, tmp_path / "mqtt_ca.bin")
    cert.symlink_to(tmp_path / "mqtt_ca.bin")  # the very bytes the manifest lists, but through a link
    assert verify_manifest.main([VERSION, "--files"]) == 1
    assert "mqtt_ca.bin is a symbolic link" in capsys.readouterr().err


# -- the auditor's commands ------------------------------------------------------------------


def _audit(directory: Path) -> subprocess.CompletedProcess[str]:
    """Run AUDITOR_COMMANDS as the auditor would: a bash script in the directory holding the files."""
    (directory / "audit.sh").write_text(AUDITOR_COMMANDS)
    return subprocess.run(["bash", "audit.sh"], cwd=directory, capture_output=True, text=True, timeout=60)


def _manifest_for_auditor(tmp_path: Path, project: str | None = None) -> Path:
    """build_manifest signs a release; the auditor gets m.json and pub.pem in a fresh directory."""
    workdir = tmp_path / "server"
    directory = write_release(workdir / "partitions", VERSION)
    if project is not None:
        (directory / "ota.bin").write_bytes(example.build_app_image(VERSION, project=project))
    settings = settings_for(workdir)
    result = run_build_manifest(settings, VERSION, workdir)
    assert result.returncode == 0, result.stderr
    audit = tmp_path / "audit"
    audit.mkdir()
    shutil.copy(settings.manifests_dir / f"{VERSION}.json", audit / "m.json")
    shutil.copy(settings.public_key_path, audit / "pub.pem")
    return audit


def test_auditor_commands_verify_a_manifest_and_refuse_a_changed_one(tmp_path: Path) -> None:
    audit = _manifest_for_auditor(tmp_path)
    result = _audit(audit)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Signature Verified Successfully" in result.stdout

    document = json.loads((audit / "m.json").read_text())
    document["signed"]["files"]["ota.bin"]["length"] += 1
    (audit / "m.json").write_text(json.dumps(document, indent=2))
    changed = _audit(audit)
    assert changed.returncode != 0
    assert "Signature Verified Successfully" not in changed.stdout


@pytest.mark.parametrize("project", ["fïrmware ☃ 𝄞\t\x01\x1f\"\\", "del\x7fchar"], ids=["unicode-controls", "del"])
def test_auditor_commands_agree_on_any_text_an_image_carries(tmp_path: Path, project: str) -> None:
    # The project name comes from the image's esp_app_desc_t and is signed as it is;
    # jq must reproduce the exact canonical bytes whatever characters it holds.
    result = _audit(_manifest_for_auditor(tmp_path, project))
    assert result.returncode == 0, result.stdout + result.stderr
