"""tools/*.py as the README shows them, and the installed sanic-ota-* commands.

``tools/keygen.py NAME`` starts whichever ``python3`` is on PATH; after ``make install``
that one usually lacks the package, and tools/_run.py must hand over to .venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import REPO

from sanic_ota.keys import load_keys

SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
TOOLS = sorted(p.stem for p in (REPO / "tools").glob("*.py") if not p.name.startswith("_"))


@pytest.fixture
def bare_python(tmp_path: Path) -> dict[str, str]:
    """An environment whose ``python3`` is the base interpreter, without this venv's packages."""
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip("needs the checkout's own .venv (make install)")
    base = getattr(sys, "_base_executable", sys.executable)
    bin_dir = tmp_path / "bare-bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(base)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SANIC_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    probe = subprocess.run(["python3", "-c", "import sanic_ota"], cwd=tmp_path, env=env, capture_output=True)
    if probe.returncode == 0:
        pytest.skip(f"{base} has sanic_ota installed itself: nothing to hand over")
    return env


def test_every_tool_has_a_command_and_a_checkout_wrapper() -> None:
    targets = {command: target.removesuffix(":main") for command, target in SCRIPTS.items()}
    assert sorted(target.removeprefix("sanic_ota.tools.") for target in targets.values()) == TOOLS
    assert all(os.access(REPO / "tools" / f"{name}.py", os.X_OK) for name in TOOLS)


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_installed_commands_run(command: str) -> None:
    result = subprocess.run([str(Path(sys.executable).with_name(command)), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {command} ")


@pytest.mark.parametrize("name", TOOLS)
def test_a_checkout_wrapper_hands_over_to_the_venv(bare_python: dict[str, str], tmp_path: Path, name: str) -> None:
    result = subprocess.run([str(REPO / "tools" / f"{name}.py"), "--help"], cwd=tmp_path, env=bare_python,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {name}.py ")


def test_keygen_from_a_checkout_with_piped_keys(bare_python: dict[str, str], tmp_path: Path) -> None:
    # stdin survives the hand-over: the piped list comes back with the new key.
    piped = '[{"Name": "admin", "Token": "' + "a" * 40 + '"}]'
    result = subprocess.run([str(REPO / "tools" / "keygen.py"), "device-1"], cwd=tmp_path, env=bare_python,
                            input=piped, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (tmp_path / "keys.json").write_text(result.stdout)
    assert [key.name for key in load_keys(tmp_path / "keys.json")] == ["admin", "device-1"]


def test_without_a_venv_it_says_to_run_make_install(bare_python: dict[str, str], tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "tools", checkout / "tools", ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([str(checkout / "tools" / "keygen.py"), "device-1"], cwd=tmp_path, env=bare_python,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "No module named 'sanic_ota'" in result.stderr and "run `make install` first" in result.stderr
    assert list(tmp_path.glob("*.json")) == []
