"""The real watcher on a real directory, with a real server process answering modules."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from conftest import OTHER_TOKEN, TOKEN, VERSION, env_for, settings_for, write_release
from esp_client import ModuleError, download, list_versions, version_query
from server_process import ServerProcess

from sanic_ota.keys import Key, load_keys, save_keys

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 8.0) -> T:
    """Poll ``check`` until it returns a truthy value without raising, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (ModuleError, OSError) as e:
            last: object = e
        else:
            last = result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last: {last!r}")
        time.sleep(0.1)


@pytest.mark.parametrize("workers", [1, 2])
def test_release_copied_in_is_installed_without_restart(workdir: Path, tmp_path_factory, workers: int) -> None:
    staging = tmp_path_factory.mktemp("staging")
    source = write_release(staging, "v2.0.0")
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir, workers=workers) as proc:
        assert version_query(proc.host, proc.port, TOKEN) == VERSION
        shutil.copytree(source, workdir / "partitions" / "v2.0.0")
        started = time.monotonic()
        # every worker must answer the same: ask several times over new connections
        eventually(lambda: all(version_query(proc.host, proc.port, TOKEN) == "v2.0.0" for _ in range(6)))
        assert time.monotonic() - started < 3.0 + 1.0  # 3 s target plus polling slack
        for partition in ("ota", "mqtt_ca"):
            body = download(proc.host, proc.port, TOKEN, "v2.0.0", partition)
            assert body == (source / f"{partition}.bin").read_bytes()
        manifest = workdir / "manifests" / "v2.0.0.json"
        assert manifest.exists()
        # built once: one "signed manifest" line across all workers
        assert proc.log().count("signed manifest for v2.0.0") == 1


def test_slow_copy_is_never_served_partially(workdir: Path, tmp_path_factory) -> None:
    source = write_release(tmp_path_factory.mktemp("staging"), "v3.0.0")
    image = (source / "ota.bin").read_bytes()
    target = workdir / "partitions" / "v3.0.0"
    with ServerProcess(env_for(settings_for(workdir, quiet_seconds=1.0)), cwd=workdir) as proc:
        target.mkdir()
        with open(target / "ota.bin", "wb") as handle:
            handle.write(image[: len(image) // 2])
            handle.flush()
            deadline = time.monotonic() + 0.6
            while time.monotonic() < deadline:  # a module asking mid-copy gets an error, never half
                with pytest.raises(ModuleError):
                    download(proc.host, proc.port, TOKEN, "v3.0.0", "ota")
                time.sleep(0.1)
            handle.write(image[len(image) // 2 :])
        body = eventually(lambda: download(proc.host, proc.port, TOKEN, "v3.0.0", "ota"))
        assert body == image


def test_changed_file_gets_a_higher_serial_and_removed_release_disappears(workdir: Path) -> None:
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        write_release(workdir / "partitions", "v1.1.0")
        eventually(lambda: list_versions(proc.host, proc.port, TOKEN) == ["v1.1.0", VERSION])
        first = (workdir / "manifests" / "v1.1.0.json").read_text()
        new_image = (workdir / "partitions" / VERSION / "ota.bin").read_bytes()
        (workdir / "partitions" / "v1.1.0" / "ota.bin").write_bytes(new_image)
        eventually(lambda: download(proc.host, proc.port, TOKEN, "v1.1.0", "ota") == new_image)
        assert '"serial": 2' in (workdir / "manifests" / "v1.1.0.json").read_text() != first
        shutil.rmtree(workdir / "partitions" / "v1.1.0")
        eventually(lambda: list_versions(proc.host, proc.port, TOKEN) == [VERSION])
        with pytest.raises(ModuleError):
            download(proc.host, proc.port, TOKEN, "v1.1.0", "ota")


def test_pin_and_keys_follow_the_files(workdir: Path) -> None:
    write_release(workdir / "partitions", "v2.0.0")
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        assert version_query(proc.host, proc.port, TOKEN) == "v2.0.0"
        (workdir / "partitions" / "LATEST").write_text(VERSION)
        eventually(lambda: version_query(proc.host, proc.port, TOKEN) == VERSION)
        keys_file = workdir / "keys.json"
        new = "a" * 40
        save_keys(keys_file, [k for k in load_keys(keys_file) if k.token != OTHER_TOKEN] + [Key("new", new)])
        eventually(lambda: version_query(proc.host, proc.port, new) == VERSION)
        with pytest.raises(ModuleError):
            version_query(proc.host, proc.port, OTHER_TOKEN)
