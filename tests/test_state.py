"""Tests for sanic_ota.state: what start-up opens from settings, and what it refuses."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest
from conftest import TOKEN, VERSION, settings_for

from sanic_ota.errors import ConfigurationError, KeysFileError
from sanic_ota.keys import Key, save_keys
from sanic_ota.settings import Settings
from sanic_ota.signing import create_key_pair
from sanic_ota.state import load_keyring, open_state, signing_keys


def test_open_state_creates_the_key_pair_and_indexes_every_release(settings: Settings) -> None:
    state = open_state(settings)
    assert stat.S_IMODE(settings.signing_key.stat().st_mode) == 0o600
    assert settings.public_key_path.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert state.index.versions() == [VERSION]
    assert state.keyring.find(TOKEN) is not None
    assert state.files.max_bytes == settings.cache_bytes
    again = open_state(settings)  # the second start uses the same key and manifest
    assert again.verifier.keyid == state.verifier.keyid
    assert again.index.releases[VERSION].document == state.index.releases[VERSION].document


def test_a_keys_file_open_to_others_is_refused_with_the_fix(settings: Settings) -> None:
    settings.keys_file.chmod(0o644)
    with pytest.raises(ConfigurationError, match=f"chmod 600 {settings.keys_file}"):
        load_keyring(settings)


def test_a_missing_keys_file_is_a_keys_file_error(tmp_path: Path) -> None:
    with pytest.raises(KeysFileError, match="not found"):
        load_keyring(settings_for(tmp_path))


def test_an_empty_keys_file_starts_with_no_key(workdir: Path) -> None:
    save_keys(workdir / "keys.json", [])
    assert len(load_keyring(settings_for(workdir))) == 0


def test_a_signing_key_open_to_others_is_refused(settings: Settings) -> None:
    signing_keys(settings)
    settings.signing_key.chmod(0o640)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        signing_keys(settings)


def test_a_missing_public_key_is_written_from_the_private_key(settings: Settings) -> None:
    verifier, _ = signing_keys(settings)
    settings.public_key_path.unlink()
    assert signing_keys(settings)[0].keyid == verifier.keyid
    assert settings.public_key_path.exists()


def test_a_public_key_of_another_pair_is_refused(settings: Settings, tmp_path: Path) -> None:
    signing_keys(settings)
    create_key_pair(tmp_path / "other.pem", settings.public_key_path)
    with pytest.raises(ConfigurationError, match="does not belong to signing key"):
        signing_keys(settings)


def test_offline_mode_needs_only_the_public_key(settings: Settings, tmp_path: Path) -> None:
    offline = dataclasses.replace(settings, sign_manifests=False, public_key=tmp_path / "pub.pem")
    with pytest.raises(ConfigurationError, match="not found"):
        signing_keys(offline)
    create_key_pair(tmp_path / "elsewhere.pem", tmp_path / "pub.pem")
    verifier, signer = signing_keys(offline)
    assert signer is None and verifier.keyid
    assert not settings.signing_key.exists()


def test_offline_start_without_manifests_serves_nothing_but_starts(settings: Settings, tmp_path: Path) -> None:
    create_key_pair(tmp_path / "elsewhere.pem", tmp_path / "pub.pem")
    save_keys(settings.keys_file, [Key("device-1", TOKEN)])
    state = open_state(dataclasses.replace(settings, sign_manifests=False, public_key=tmp_path / "pub.pem"))
    assert not state.index.releases
    assert "no manifest" in state.index.problems[VERSION]


@pytest.mark.parametrize("text", ['{"signed": {"serial": ' + "9" * 5000 + "}}", "[" * 100_000 + "]" * 100_000],
                         ids=["5000-digit number", "deep nesting"])
def test_a_manifest_python_cannot_parse_does_not_stop_the_start(settings: Settings, text: str) -> None:
    open_state(settings)
    manifest = settings.manifests_dir / f"{VERSION}.json"
    manifest.write_text(text)
    assert open_state(dataclasses.replace(settings, sign_manifests=False)).index.problems[VERSION]
    assert open_state(settings).index.versions() == [VERSION]  # signing here: signed anew
    assert manifest.read_text() != text
