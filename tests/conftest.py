"""Shared fixtures: a real release directory, real keys, real server processes."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from server_process import ServerProcess  # noqa: E402

from sanic_ota.keys import Key, save_keys  # noqa: E402
from sanic_ota.settings import Settings  # noqa: E402

TOKEN = "0123456789abcdef0123456789abcdef01234567"
OTHER_TOKEN = "fedcba9876543210fedcba9876543210fedcba98"
VERSION = "v1.0.0"


def load_tool(name: str) -> ModuleType:
    """Import ``tools/<name>.py`` (tools/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"tools_{name}", REPO / "tools" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_tool("make_example_release")


def write_release(partitions: Path, version: str, app_version: str | None = None) -> Path:
    """A valid release: an ESP32 application image and a certificate partition."""
    directory = partitions / version
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ota.bin").write_bytes(example.build_app_image(app_version or version))
    (directory / "mqtt_ca.bin").write_bytes(example.build_cert_partition(b"-----BEGIN CERTIFICATE-----\n"))
    return directory


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_release(tmp_path / "partitions", VERSION)
    save_keys(tmp_path / "keys.json", [Key("device-1", TOKEN), Key("device-2", OTHER_TOKEN)])
    return tmp_path


@pytest.fixture
def settings(workdir: Path) -> Settings:
    return settings_for(workdir)


def settings_for(workdir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        keys_file=workdir / "keys.json",
        partitions_dir=workdir / "partitions",
        manifests_dir=workdir / "manifests",
        signing_key=workdir / "signing.pem",
        quiet_seconds=0.3,
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def env_for(settings: Settings) -> dict[str, str]:
    """The SANIC_OTA_* variables that give a server process these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANIC_")}
    env.update(
        SANIC_OTA_KEYS_FILE=str(settings.keys_file),
        SANIC_OTA_PARTITIONS_DIR=str(settings.partitions_dir),
        SANIC_OTA_MANIFESTS_DIR=str(settings.manifests_dir),
        SANIC_OTA_SIGNING_KEY=str(settings.signing_key),
        SANIC_OTA_SIGN_MANIFESTS=str(settings.sign_manifests).lower(),
        SANIC_OTA_QUIET_SECONDS=str(settings.quiet_seconds),
        SANIC_OTA_RESCAN_SECONDS=str(settings.rescan_seconds),
    )
    if settings.public_key is not None:
        env["SANIC_OTA_PUBLIC_KEY"] = str(settings.public_key)
    return env


@pytest.fixture
def server(settings: Settings, workdir: Path) -> Iterator[ServerProcess]:
    """``sanic sanic_ota.app`` as a real process on a loopback port."""
    with ServerProcess(env_for(settings), cwd=workdir) as proc:
        yield proc
