"""Shared fixtures: a real release directory, real keys, real server processes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_process import ServerProcess

from sanic_ota import example_release as example
from sanic_ota.keys import Key, save_keys
from sanic_ota.settings import Settings
from sanic_ota.tools.s3_dev import SeaweedFS

REPO = Path(__file__).resolve().parent.parent

TOKEN = "0123456789abcdef0123456789abcdef01234567"
OTHER_TOKEN = "fedcba9876543210fedcba9876543210fedcba98"
VERSION = "v1.0.0"


def write_release(partitions: Path, version: str, app_version: str | None = None) -> Path:
    """A valid release: an ESP32 application image and a certificate partition."""
    directory = partitions / version
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ota.bin").write_bytes(example.build_app_image(app_version or version))
    (directory / "mqtt_ca.bin").write_bytes(example.build_cert_partition(b"-----BEGIN CERTIFICATE-----\n"))
    return directory


@pytest.fixture
def tls_args(tmp_path: Path) -> list[str]:
    """``sanic``'s arguments to serve TLS, with a new self-signed certificate for 127.0.0.1
    (Sanic wants a subjectAltName in it)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return ["--cert", str(cert), "--key", str(key)]


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
        channels_dir=workdir / "channels",
        signing_key=workdir / "signing.pem",
        quiet_seconds=0.3,
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def env_for(settings: Settings) -> dict[str, str]:
    """This environment without SANIC_* variables, plus every setting of ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANIC_")}
    env.update(settings.to_environ())
    return env


@pytest.fixture
def server(settings: Settings, workdir: Path) -> Iterator[ServerProcess]:
    """``sanic sanic_ota.app`` as a real process on a loopback port."""
    with ServerProcess(env_for(settings), cwd=workdir) as proc:
        yield proc


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One real SeaweedFS (S3 on loopback) per test process; tests share it by prefix.

    ~5 s to start, so once per session (per pytest-xdist worker). A test that stops
    its store starts its own ``SeaweedFS`` instead.
    """
    # each test has its own prefix: the replica identity may write channels/ and LATEST under any
    with SeaweedFS(tmp_path_factory.mktemp("seaweed"), prefix="*") as store:
        yield store


@pytest.fixture
def s3_location(seaweed: SeaweedFS, request: pytest.FixtureRequest) -> str:
    """``s3://bucket/prefix`` unique to this test, in the session's SeaweedFS."""
    return f"s3://{seaweed.bucket}/{request.node.name.replace('[', '-').strip(']')}-{os.getpid()}"
