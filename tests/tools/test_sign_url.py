"""Tests for tools/sign_url.py (sanic_ota.tools.sign_url): one line on stdout, a URL that checks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import REPO, TOKEN, VERSION

from sanic_ota.keys import Key, save_keys
from sanic_ota.signed_urls import DEFAULT_LIFETIME, check
from sanic_ota.tools import sign_url

TOOL = REPO / "tools" / "sign_url.py"
KEYS = [Key("device-1", TOKEN)]


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    save_keys(tmp_path / "keys.json", KEYS)
    return tmp_path / "keys.json"


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_prints_only_a_url_that_checks_for_seven_days(keys_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = int(time.time())
    assert sign_url.main(["device-1", VERSION, "ota.bin", "--keys", str(keys_file)]) == 0
    out = capsys.readouterr()
    assert out.out.count("\n") == 1 and out.err == ""
    url = out.out.strip()
    assert url.startswith("http://127.0.0.1:8000/v1/device/rom/?action=download_rom&")
    q = _query(url)
    assert before + DEFAULT_LIFETIME <= int(q["expires"]) <= int(time.time()) + DEFAULT_LIFETIME
    assert check(KEYS, q["key"], q["version"], q["filename"], q["expires"], q["sig"], time.time()) == KEYS[0]


def test_expires_and_base(keys_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["device-1", VERSION, "ota.bin", "--keys", str(keys_file), "--expires", "60", "--base", "https://ota.example/"]
    assert sign_url.main(args) == 0
    url = capsys.readouterr().out.strip()
    assert url.startswith("https://ota.example/v1/device/rom/?")
    assert int(_query(url)["expires"]) <= int(time.time()) + 60


@pytest.mark.parametrize("args", [
    ["nobody", VERSION, "ota.bin"], ["device-1", "../etc", "ota.bin"], ["device-1", VERSION, "a/b"],
])
def test_refusals_print_nothing_on_stdout(keys_file: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    assert sign_url.main([*args, "--keys", str(keys_file)]) == 1
    out = capsys.readouterr()
    assert out.out == "" and out.err.startswith("sign_url: ")


@pytest.mark.parametrize("extra", [["--expires", "0"], ["--expires", "x"], ["--base", "ota.example"]])
def test_bad_options_are_usage_errors(keys_file: Path, extra: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        sign_url.main(["device-1", VERSION, "ota.bin", "--keys", str(keys_file), *extra])
    assert e.value.code == 2


def test_the_checkout_script_reads_the_keys_file_setting(keys_file: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANIC_")}
    env["SANIC_OTA_KEYS_FILE"] = str(keys_file)
    done = subprocess.run([sys.executable, str(TOOL), "device-1", VERSION, "ota.bin"],
                          capture_output=True, text=True, env=env, check=True)
    assert done.stdout.count("\n") == 1 and _query(done.stdout.strip())["key"] == "device-1"


def test_make_url_prints_only_the_url(keys_file: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SANIC_", "MAKE"))}
    done = subprocess.run(  # -o: never reinstall the venv from a test
        ["make", "-s", "-o", ".venv/.installed", "url", "KEY=device-1", f"VERSION={VERSION}", "FILE=ota.bin",
         f"SANIC_OTA_KEYS_FILE={keys_file}", "EXPIRES=60", "PORT=9000"],
        cwd=REPO, capture_output=True, text=True, env=env, check=True,
    )
    assert done.stdout.count("\n") == 1 and done.stdout.startswith("http://127.0.0.1:9000/v1/device/rom/?")
    assert int(_query(done.stdout)["expires"]) <= int(time.time()) + 60
    usage = subprocess.run(["make", "-s", "-o", ".venv/.installed", "url", "KEY=device-1"],
                           cwd=REPO, capture_output=True, text=True, env=env)
    assert usage.returncode == 2 and usage.stdout == "" and "usage: make url" in usage.stderr
