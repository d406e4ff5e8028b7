"""deploy/: the systemd unit, its example env file and ``make install-service`` agree.

The unit is read with a small parser of our own (systemd keys repeat, which
configparser cannot keep); where ``systemd-analyze`` works it also verifies the unit
and rates its sandbox. The env file must set every ``SANIC_OTA_*`` setting, and every
path it names that the server writes must lie inside the unit's ``ReadWritePaths=``.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import typing
from dataclasses import fields
from pathlib import Path, PurePosixPath

import pytest
from conftest import REPO

from sanic_ota.settings import ENV_PREFIX, Settings, describe
from sanic_ota.web.server import TIMEOUT_DEFAULTS

UNIT = REPO / "deploy" / "sanic-ota.service"
ENV_FILE = REPO / "deploy" / "sanic-ota.env"
INSTALLED_ENV = "/etc/sanic-ota/sanic-ota.env"
#: Settings naming paths the server only reads; every other path setting is written.
READ_ONLY = {"SANIC_OTA_PARTITIONS_DIR"}

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Sections -> key -> every value given, in order; an empty value resets, as in systemd."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = unit.setdefault(line.strip("[]"), {})
            continue
        assert section is not None, f"key outside a section: {line}"
        key, _, value = line.partition("=")
        values = section.setdefault(key.strip(), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
    return unit


def parse_env(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(variables set, variables shown commented out as ``#NAME=value``)."""
    active, commented = {}, {}
    for line in text.splitlines():
        if match := re.fullmatch(r"([A-Z_][A-Z0-9_]*)=(.*)", line):
            active[match[1]] = match[2]
        elif match := re.fullmatch(r"#([A-Z_][A-Z0-9_]*)=(\S*)", line):
            commented[match[1]] = match[2]
    return active, commented


UNIT_TEXT = UNIT.read_text()
SERVICE = parse_unit(UNIT_TEXT)["Service"]
ENV, ENV_COMMENTED = parse_env(ENV_FILE.read_text())


def one(key: str) -> str:
    values = SERVICE.get(key, [])
    assert len(values) == 1, f"[Service] {key}= given {len(values)} times: {values}"
    return values[0]


def words(key: str) -> list[str]:
    return [word for value in SERVICE.get(key, []) for word in value.split()]


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m)?", value)
    assert match, f"unexpected time span {value!r}"
    return float(match[1]) * (60 if match[2] in ("min", "m") else 1)


def read_write_paths() -> list[PurePosixPath]:
    return [PurePosixPath(p.lstrip("-")) for p in words("ReadWritePaths")]


def writable(path: PurePosixPath) -> bool:
    return any(path == root or root in path.parents for root in read_write_paths())


# --- the unit ------------------------------------------------------------------------


def test_unit_runs_the_app_from_the_install_virtualenv() -> None:
    argv = shlex.split(one("ExecStart"))
    sanic = PurePosixPath(argv[0])
    assert sanic.is_absolute() and sanic.parts[-3:] == (".venv", "bin", "sanic"), argv
    assert argv[1] == "sanic_ota.app"
    assert argv[argv.index("--host") + 1] == "${SANIC_OTA_HOST}"
    assert argv[argv.index("--port") + 1] == "${SANIC_OTA_PORT}"
    # Relative settings resolve against the working directory: the install directory.
    assert PurePosixPath(one("WorkingDirectory")) == sanic.parents[2]


def test_every_variable_on_the_command_line_has_a_value() -> None:
    defaults = dict(word.split("=", 1) for word in words("Environment"))
    for name in re.findall(r"\$\{(\w+)\}", one("ExecStart")):
        assert name in ENV or name in defaults, name


def test_unit_reads_its_settings_from_the_env_file_as_an_unprivileged_user() -> None:
    # No "-" prefix: a missing env file is an error, not a server with default paths.
    assert one("EnvironmentFile") == INSTALLED_ENV
    assert one("User") not in ("root", "0") and one("Group") not in ("root", "0")
    # A stable uid owns the keys file and signing key; DynamicUser would change it.
    assert SERVICE.get("DynamicUser", ["no"])[-1] == "no"


def test_unit_restarts_on_failure() -> None:
    assert one("Restart") == "on-failure"
    assert seconds(one("RestartSec")) >= 1


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
    ],
)
def test_unit_is_sandboxed(key: str, value: str) -> None:
    assert one(key) == value


def test_unit_holds_no_capabilities() -> None:
    assert "CapabilityBoundingSet" in SERVICE and not SERVICE["CapabilityBoundingSet"]
    assert not SERVICE.get("AmbientCapabilities")


def test_stop_waits_longer_than_sanic_graceful_shutdown() -> None:
    graceful = float(ENV.get("SANIC_GRACEFUL_SHUTDOWN_TIMEOUT", TIMEOUT_DEFAULTS["GRACEFUL_SHUTDOWN_TIMEOUT"]))
    assert one("KillSignal") == "SIGTERM"
    assert seconds(one("TimeoutStopSec")) > graceful


def test_unit_raises_the_open_files_limit_far_above_the_default() -> None:
    """At 1024 open files, a thousand trickling connections took the server down."""
    assert int(one("LimitNOFILE")) >= 65536


def test_unit_offers_no_reload_because_sighup_is_ignored() -> None:
    assert "ExecReload" not in SERVICE
    assert "SIGHUP" in UNIT_TEXT and "ignored" in UNIT_TEXT


def test_unit_is_enabled_at_boot() -> None:
    assert parse_unit(UNIT_TEXT)["Install"]["WantedBy"] == ["multi-user.target"]


# --- the env file ----------------------------------------------------------------------


def test_env_file_sets_every_setting() -> None:
    missing = [variable for variable, _, _ in describe() if variable not in ENV]
    assert not missing, f"deploy/sanic-ota.env lacks {missing}"


def test_env_file_shows_sanic_timeouts_with_the_servers_defaults() -> None:
    for name, value in TIMEOUT_DEFAULTS.items():
        shown = ENV.get(f"SANIC_{name}", ENV_COMMENTED.get(f"SANIC_{name}"))
        assert shown is not None, name
        if f"SANIC_{name}" not in ENV:  # commented out: documents the default
            assert float(shown) == value, name


def path_settings() -> dict[str, PurePosixPath]:
    """Every path-typed setting the env file gives a value (empty means a default)."""
    hints = typing.get_type_hints(Settings)
    names = [
        ENV_PREFIX + f.name.upper()
        for f in fields(Settings)
        if Path in (hints[f.name], *typing.get_args(hints[f.name]))
    ]
    assert "SANIC_OTA_KEYS_FILE" in names and "SANIC_OTA_MANIFESTS_DIR" in names
    return {name: PurePosixPath(ENV[name]) for name in names if ENV.get(name)}


def test_env_file_paths_are_absolute() -> None:
    # The working directory is the install directory, which the service cannot write.
    for name, path in path_settings().items():
        assert path.is_absolute(), name


def test_every_path_the_server_writes_is_in_read_write_paths() -> None:
    for name, path in path_settings().items():
        if name in READ_ONLY:
            assert not writable(path), f"{name}={path} should be read-only for the service"
            continue
        # Files are replaced atomically through a temporary file beside them.
        directory = path if name.endswith("_DIR") else path.parent
        assert writable(directory), f"{name}={path}: {directory} is not in ReadWritePaths={read_write_paths()}"


# --- systemd's own checks ------------------------------------------------------------


def _systemd_analyze(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *map(str, args)], capture_output=True, text=True, timeout=60)


@pytest.fixture
def runnable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at a binary that exists, so verify checks the rest."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed")
    probe = tmp_path / "probe.service"
    probe.write_text(f"[Service]\nExecStart={sys.executable} -V\n")
    result = _systemd_analyze("verify", probe)
    if result.returncode or result.stderr.strip():
        pytest.skip(f"systemd-analyze verify does not work here: {result.stderr.strip()[:200]}")
    sanic = shlex.split(one("ExecStart"))[0]
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT_TEXT.replace(sanic, sys.executable))
    return unit


def test_systemd_analyze_verify_finds_nothing(runnable_unit: Path) -> None:
    result = _systemd_analyze("verify", runnable_unit)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_systemd_analyze_rates_the_sandbox_low(runnable_unit: Path) -> None:
    result = _systemd_analyze("--offline=yes", "security", runnable_unit)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    if match is None:
        pytest.skip(f"systemd-analyze security --offline not supported: {result.stderr.strip()[:200]}")
    assert float(match[1]) < 3.0, result.stdout


# --- make install-service ------------------------------------------------------------


def dry_run(*overrides: str) -> list[str]:
    """``make -n install-service``: one shell command per entry, continuations joined."""
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    result = subprocess.run(
        ["make", "-s", "-n", "install-service", *overrides], cwd=REPO, capture_output=True, text=True, check=True
    )
    return result.stdout.replace("\\\n", " ").splitlines()


def test_install_service_creates_the_user_and_installs_the_unit_and_tools() -> None:
    commands = "\n".join(dry_run())
    assert re.search(r"id -u sanic-ota\b.*\|\|\s+useradd --system .*sanic-ota$", commands, re.M)
    assert "deploy/sanic-ota.service > /etc/systemd/system/sanic-ota.service" in commands
    assert "/opt/sanic-ota/.venv" in commands and "/opt/sanic-ota/tools" in commands
    assert re.search(r"\[ -d /run/systemd/system \].*systemctl daemon-reload", commands)
    assert "install -d -m 0700 -o sanic-ota -g sanic-ota /var/lib/sanic-ota" in commands
    assert "systemctl enable --now sanic-ota" in commands


def test_install_service_never_overwrites_an_env_file(tmp_path: Path) -> None:
    """Run the dry run's env-file command itself, twice, against a scratch CONFDIR."""
    target = tmp_path / "sanic-ota.env"
    commands = [c for c in dry_run(f"CONFDIR={tmp_path}") if f"> {target}" in c]
    assert len(commands) == 1, commands
    assert f"[ -f {target} ]" in commands[0] or f"test -f {target}" in commands[0]
    subprocess.run(["sh", "-c", commands[0]], cwd=REPO, check=True, capture_output=True)
    assert parse_env(target.read_text())[0].keys() == ENV.keys()
    target.write_text("SANIC_OTA_PORT=9000\n")
    subprocess.run(["sh", "-c", commands[0]], cwd=REPO, check=True, capture_output=True)
    assert target.read_text() == "SANIC_OTA_PORT=9000\n"
