"""The README's one command for port 80 under systemd, run against copies of deploy/.

``AT+CIPFWVER?`` always connects to port 80; the command adds the capability to bind
it (a drop-in) and sets ``SANIC_OTA_EXTRA_PORTS=80`` in the env file. Here it runs with
its paths moved into a scratch directory and without the ``systemctl`` calls.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from test_service_unit import ENV_FILE, UNIT_TEXT, parse_env, parse_unit

from sanic_ota.settings import Settings

README = (REPO / "README.md").read_text()
START = "sudo sh -c 'mkdir -p /etc/systemd/system/sanic-ota.service.d"
RESTART = "systemctl daemon-reload && systemctl restart sanic-ota"


def readme_script() -> str:
    """The shell script inside the README's ``sudo sh -c '...'``."""
    start = README.index(START)
    argv = shlex.split(README[start : README.index("'\n", start) + 1])
    assert argv[:3] == ["sudo", "sh", "-c"] and len(argv) == 4, argv
    assert RESTART in argv[3]
    return argv[3]


@pytest.fixture
def applied(tmp_path: Path) -> Path:
    """A scratch /etc: the unit and env file installed, then the README's command run."""
    units, conf = tmp_path / "systemd", tmp_path / "sanic-ota"
    units.mkdir()
    conf.mkdir()
    (units / "sanic-ota.service").write_text(UNIT_TEXT)
    shutil.copy(ENV_FILE, conf / "sanic-ota.env")
    script = (readme_script().replace("/etc/systemd/system", str(units)).replace("/etc/sanic-ota", str(conf))
              .replace(RESTART, "true"))
    subprocess.run(["sh", "-c", script], check=True, capture_output=True)
    return tmp_path


def test_the_command_grants_the_capability_and_sets_the_port(applied: Path) -> None:
    drop_in = (applied / "systemd" / "sanic-ota.service.d" / "port-80.conf").read_text()
    service = parse_unit(UNIT_TEXT + "\n" + drop_in)["Service"]
    assert service["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert service["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    env, _ = parse_env((applied / "sanic-ota" / "sanic-ota.env").read_text())
    assert Settings.from_environ(env).extra_ports == (80,)
    original, _ = parse_env(ENV_FILE.read_text())
    assert {k: v for k, v in env.items() if k != "SANIC_OTA_EXTRA_PORTS"} == {
        k: v for k, v in original.items() if k != "SANIC_OTA_EXTRA_PORTS"}


def test_systemd_accepts_the_unit_with_the_drop_in(applied: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    unit = applied / "systemd" / "sanic-ota.service"
    sanic = shlex.split(parse_unit(UNIT_TEXT)["Service"]["ExecStart"][0])[0]
    unit.write_text(UNIT_TEXT.replace(sanic, sys.executable))  # an ExecStart that exists
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    if "Failed to" in result.stderr and "sanic-ota.service" not in result.stderr:
        pytest.skip(f"systemd-analyze verify does not work here: {result.stderr.strip()[:200]}")
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
