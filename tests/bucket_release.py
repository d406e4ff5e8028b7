"""Tests' publisher: signed releases put into a real bucket, and replicas' settings.

A stand-in for ``tools/publish.py`` in tests of the replica side: it signs a manifest
offline with a test key (as ``make manifest`` does where the private key is), puts
the release's files, then its manifest last (the commit point), through
``store.s3.Bucket`` with the store's ``publisher`` identity. It also does what a
publisher must never do (replace one object's bytes), to test that replicas refuse it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import env_for, settings_for

from sanic_ota import example_release as example
from sanic_ota import manifest as manifests
from sanic_ota.manifest import FileEntry, Manifest
from sanic_ota.settings import Settings
from sanic_ota.signing import Signer, create_key_pair
from sanic_ota.store.s3 import Bucket, S3Location, open_bucket
from sanic_ota.tools.s3_dev import SeaweedFS


def release_files(version: str, size: int = 0) -> dict[str, bytes]:
    """An ESP32 application image (of about ``size`` bytes, at least 4 KiB) and a certificate."""
    return {
        "ota.bin": example.build_app_image(version, size=max(size, 4096)),
        "mqtt_ca.bin": example.build_cert_partition(b"-----BEGIN CERTIFICATE-----\n" + version.encode()),
    }


def signed_manifest(signer: Signer, version: str, files: Mapping[str, bytes], serial: int = 1) -> bytes:
    entries = {name: FileEntry.describe(name, data) for name, data in files.items()}
    return manifests.sign(Manifest(version, serial, manifests.utc_now(), entries), signer)


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` in os.environ for the duration (aiobotocore reads credentials from it)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Publisher:
    """Puts signed releases into ``location`` as the store's publisher identity."""

    def __init__(self, store: SeaweedFS, location: str, key_dir: Path) -> None:
        self.store, self.location = store, S3Location.parse(location)
        self.public_key = key_dir / "publisher.pub.pem"
        self.signer = create_key_pair(key_dir / "publisher.pem", self.public_key)

    def run(self, make: Any) -> Any:
        """``make(bucket)``'s coroutine, run with the publisher's credentials."""
        async def go() -> Any:
            async with open_bucket(self.location) as bucket:
                return await make(bucket)

        with environment(self.store.publisher.environ(self.store.endpoint)):
            return asyncio.run(go())

    def publish(self, version: str, files: Mapping[str, bytes] | None = None, serial: int = 1) -> dict[str, bytes]:
        files = dict(files) if files is not None else release_files(version)
        document = signed_manifest(self.signer, version, files, serial)

        async def put(bucket: Bucket) -> None:
            for name, data in files.items():
                await bucket.put(f"partitions/{version}/{name}", data)
            await bucket.put(f"manifests/{version}.json", document)  # last: the commit point

        self.run(put)
        return files

    def put(self, path: str, data: bytes) -> None:
        self.run(lambda bucket: bucket.put(path, data))

    def delete(self, *paths: str) -> None:
        async def go(bucket: Bucket) -> None:
            for path in paths:
                await bucket.delete(path)

        self.run(go)

    def unpublish(self, version: str, names: list[str]) -> None:
        """The manifest first (the release is gone at once), then its files."""
        self.delete(f"manifests/{version}.json", *(f"partitions/{version}/{n}" for n in names))


def replica_settings(workdir: Path, location: str, public_key: Path, name: str = "replica",
                     **overrides: object) -> Settings:
    """A replica's settings: its own cache directory in ``workdir``, short polls."""
    cache = workdir / name
    values: dict[str, object] = dict(
        store=location, sign_manifests=False, public_key=public_key, cache_dir=cache,
        partitions_dir=cache / "partitions", manifests_dir=cache / "manifests", channels_dir=cache / "channels",
        poll_seconds=0.5,
    )
    values.update(overrides)
    return settings_for(workdir, **values)


def replica_env(settings: Settings, store: SeaweedFS) -> dict[str, str]:
    """The server's environment: the settings and the replica's (read-only) credentials."""
    return env_for(settings) | store.replica.environ(store.endpoint)


def run_as(store: SeaweedFS, coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coroutine`` with the replica's credentials (for in-process mirror tests)."""
    with environment(store.replica.environ(store.endpoint)):
        return asyncio.run(coroutine)
