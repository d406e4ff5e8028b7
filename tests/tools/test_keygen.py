"""Tests for tools/keygen.py (sanic_ota.tools.keygen): new device keys, never losing the ones already there."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, TOKEN

from sanic_ota.keys import Key, load_keys, save_keys
from sanic_ota.tools import keygen

TOOL = REPO / "tools" / "keygen.py"
HEX40 = re.compile(r"[0-9a-f]{40}")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SANIC_")}


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cwd is tmp_path, no SANIC_* settings, and stdin is empty (not a terminal)."""
    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith("SANIC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    return tmp_path


def test_new_default_file_is_0600_with_the_printed_token(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert keygen.main(["device-1"]) == 0
    token = capsys.readouterr().out.strip()
    assert HEX40.fullmatch(token)
    path = in_tmp / "authorisation_keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == [{"Name": "device-1", "Token": token}]


def test_existing_keys_and_their_fields_are_kept(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = in_tmp / "keys.json"
    entries = [{"Name": "admin", "Token": TOKEN, "Role": "admin", "Note": "ops"}]
    path.write_text(json.dumps(entries))
    assert keygen.main(["device-2", "--keys", str(path)]) == 0
    token = capsys.readouterr().out.strip()
    assert json.loads(path.read_text()) == [*entries, {"Name": "device-2", "Token": token}]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_same_name_is_replaced_keeping_its_fields(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = in_tmp / "keys.json"
    save_keys(path, [Key("admin", TOKEN, {"Role": "admin"}), Key("device-1", "1" * 40)])
    assert keygen.main(["admin", "--keys", str(path)]) == 0
    token = capsys.readouterr().out.strip()
    assert token != TOKEN
    assert json.loads(path.read_text()) == [
        {"Name": "admin", "Token": token, "Role": "admin"},
        {"Name": "device-1", "Token": "1" * 40},
    ]


def test_keys_file_from_the_environment(in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SANIC_OTA_KEYS_FILE", "from-env.json")
    assert keygen.main(["device-1"]) == 0
    assert load_keys(in_tmp / "from-env.json")[0].token == capsys.readouterr().out.strip()


@pytest.mark.parametrize("text", ["{not json", '{"Name": "a"}', '[{"Name": "a"}]'])
def test_an_invalid_keys_file_is_left_untouched(in_tmp: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    path = in_tmp / "keys.json"
    path.write_text(text)
    path.chmod(0o644)
    assert keygen.main(["device-1", "--keys", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("keygen: ")
    assert path.read_text() == text
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in in_tmp.iterdir()] == ["keys.json"]


def test_as_a_process_with_no_stdin(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(TOOL), "device-1"], cwd=tmp_path, env=_env(),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert HEX40.fullmatch(token)
    path = tmp_path / "authorisation_keys.json"
    assert load_keys(path) == [Key("device-1", token)]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_piped_keys_go_to_stdout_and_no_file_is_touched(tmp_path: Path) -> None:
    piped = json.dumps([{"Name": "admin", "Token": TOKEN, "Role": "admin"}])
    result = subprocess.run([sys.executable, str(TOOL), "device-1"], cwd=tmp_path, env=_env(),
                            input=piped, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    keys = json.loads(result.stdout)
    assert keys[0] == {"Name": "admin", "Token": TOKEN, "Role": "admin"}
    assert keys[1]["Name"] == "device-1" and HEX40.fullmatch(keys[1]["Token"])
    assert list(tmp_path.iterdir()) == []


def test_channel_is_kept_in_the_entry(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = in_tmp / "keys.json"
    save_keys(path, [Key("plant-7", TOKEN, {"Note": "line 3"})])
    assert keygen.main(["plant-7", "--keys", str(path), "--channel", "beta"]) == 0
    token = capsys.readouterr().out.strip()
    assert json.loads(path.read_text()) == [{"Name": "plant-7", "Token": token, "Note": "line 3", "channel": "beta"}]
    assert keygen.main(["plant-7", "--keys", str(path)]) == 0  # a new token keeps the channel
    assert load_keys(path)[0].channel == "beta"


def test_a_channel_that_is_not_a_plain_name_is_refused(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = in_tmp / "keys.json"
    save_keys(path, [Key("plant-7", TOKEN)])
    before = path.read_bytes()
    assert keygen.main(["plant-7", "--keys", str(path), "--channel", "../beta"]) == 2
    assert "plain name" in capsys.readouterr().err
    assert path.read_bytes() == before
