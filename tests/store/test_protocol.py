"""A second ReleaseStore, in memory, run through the index and the verified cache.

It stands where an S3-compatible store will: object names instead of paths, an
ETag-like identity instead of a stat tuple, manifests written as objects. If the
indexer or the cache needed anything of the local disk beyond the protocol, this
would fail; so the seam is the protocol, not the local layout.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import VERSION, example
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sanic_ota import manifest as manifests
from sanic_ota.channels import Channel, dump
from sanic_ota.errors import IntegrityError
from sanic_ota.filecache import VerifiedFiles
from sanic_ota.records import SERIALS_FILE, Records
from sanic_ota.releases import Indexer
from sanic_ota.signing import Signer
from sanic_ota.store import FileInfo
from sanic_ota.uploads import unpack
from sanic_ota.versions import is_release_file

SIGNER = Signer(Ed25519PrivateKey.generate())


class MemoryFile:
    def __init__(self, data: bytes, info: FileInfo) -> None:
        self.data, self.info, self.position = data, info, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.position + size
        chunk, self.position = self.data[self.position:end], min(end, len(self.data))
        return chunk


def _info(data: bytes, changed_ns: int) -> FileInfo:
    return FileInfo(len(data), (hashlib.md5(data).hexdigest(), len(data)), changed_ns)  # an ETag and a size


class MemoryRelease:
    """A listing taken once; objects read as listed (a bucket would GET with If-Match)."""

    def __init__(self, objects: dict[str, tuple[bytes, int]]) -> None:
        self.objects = dict(objects)

    def names(self) -> list[str]:
        return sorted(name for name in self.objects if is_release_file(name))

    def stat(self, name: str) -> FileInfo:
        return _info(*self.objects[name])

    @contextmanager
    def open(self, name: str) -> Iterator[MemoryFile]:
        data, changed = self.objects[name]
        yield MemoryFile(data, _info(data, changed))


class MemoryStage:
    """An upload held aside until committed, as a bucket would hold it under a temporary prefix."""

    def __init__(self, store: MemoryStore, version: str) -> None:
        self.store, self.version, self.files = store, version, {}

    def add(self, name: str, chunks: Iterable[bytes]) -> int:
        self.files[name] = b"".join(chunks)
        return len(self.files[name])

    def read(self, name: str) -> bytes:
        return self.files[name]

    def commit(self) -> None:
        if self.version in self.store.objects:
            raise FileExistsError(self.version)
        for name, data in self.files.items():
            self.store.put(self.version, name, data)


class MemoryStore:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, tuple[bytes, int]]] = {}
        self.manifests: dict[str, bytes] = {}
        self.channels: dict[str, bytes] = {}
        self.pin: str | None = None

    def put(self, version: str, name: str, data: bytes) -> None:
        self.objects.setdefault(version, {})[name] = (data, time.time_ns() - 10**10)  # settled long ago

    def list_releases(self) -> set[str]:
        return set(self.objects)

    @contextmanager
    def release(self, version: str) -> Iterator[MemoryRelease]:
        yield MemoryRelease(self.objects[version])

    def stat(self, version: str, name: str) -> FileInfo:
        return _info(*self.objects[version][name])

    @contextmanager
    def open(self, version: str, name: str) -> Iterator[MemoryFile]:
        with self.release(version) as release, release.open(name) as opened:
            yield opened

    def read_manifest(self, version: str) -> bytes | None:
        return self.manifests.get(version)

    def read_pin(self) -> str | None:
        return self.pin

    def write_manifest(self, version: str, document: bytes, durable: bool = True) -> None:
        self.manifests[version] = document

    def sync_manifests(self, versions: Iterable[str]) -> None:
        pass  # an object store's PUT is durable when it returns

    def where(self, version: str, name: str | None = None) -> str:
        return f"mem://releases/{version}/{name or ''}"

    def where_manifest(self, version: str) -> str:
        return f"mem://manifests/{version}.json"

    def where_pin(self) -> str:
        return "mem://LATEST"

    def write_pin(self, version: str | None) -> None:
        self.pin = version

    def list_channels(self) -> set[str]:
        return set(self.channels)

    def read_channel(self, name: str) -> bytes | None:
        return self.channels.get(name)

    def write_channel(self, name: str, document: bytes | None) -> None:
        if document is None:
            self.channels.pop(name, None)
        else:
            self.channels[name] = document

    def where_channel(self, name: str) -> str:
        return f"mem://channels/{name}.json"

    @contextmanager
    def stage_release(self, version: str) -> Iterator[MemoryStage]:
        yield MemoryStage(self, version)


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    for version in (VERSION, "v2.0.0"):
        store.put(version, "ota.bin", example.build_app_image(version))
        store.put(version, "mqtt_ca.bin", example.build_cert_partition(b"-----BEGIN CERTIFICATE-----\n"))
    store.put("v2.0.0", "notes.txt", b"not a release file")
    return store


def test_the_index_signs_checks_and_remembers_through_any_store(store: MemoryStore, tmp_path: Path, caplog) -> None:
    records = Records(tmp_path)
    index = Indexer(store, records, SIGNER.verifier, SIGNER).build()
    assert index.versions() == ["v2.0.0", VERSION] and not index.problems
    manifest = manifests.verify(store.manifests["v2.0.0"], SIGNER.verifier, "v2.0.0")
    assert set(manifest.files) == {"ota.bin", "mqtt_ca.bin"} and manifest.serial == 1
    assert (tmp_path / SERIALS_FILE).exists()  # the records stay on the server's own disk

    with caplog.at_level("INFO", logger="sanic_ota.releases"):
        again = Indexer(store, records, SIGNER.verifier, None).build()  # offline, a restart
    assert again.releases["v2.0.0"].document == store.manifests["v2.0.0"]
    assert "2 unchanged since last hashed, 0 file(s) hashed" in caplog.text  # the ETags were remembered

    store.put(VERSION, "ota.bin", example.build_app_image("v1.0.1"))  # a new object, a new ETag
    signed = Indexer(store, records, SIGNER.verifier, SIGNER).build(index, {VERSION})
    assert signed.releases[VERSION].manifest.serial == 2

    store.manifests[VERSION] = manifests.sign(manifest, SIGNER)  # v2.0.0's manifest over v1.0.0's
    refused = Indexer(store, records, SIGNER.verifier, None).build(signed, {VERSION})
    assert "names release 'v2.0.0', expected 'v1.0.0'" in refused.problems[VERSION]


def test_the_cache_serves_only_verified_bytes_from_any_store(store: MemoryStore, tmp_path: Path) -> None:
    index = Indexer(store, Records(tmp_path), SIGNER.verifier, SIGNER).build()
    entry = index.releases[VERSION].manifest.files["ota.bin"]
    for max_bytes in (1 << 20, 16):  # in memory, and through a verified copy
        files = VerifiedFiles(store, max_bytes, spool_dir=tmp_path)
        image = asyncio.run(files.image(VERSION, "ota.bin", entry))
        data = image if isinstance(image, bytes) else image.read(0, image.length)
        assert data == store.objects[VERSION]["ota.bin"][0]
    store.put(VERSION, "ota.bin", example.build_app_image("v6.6.6"))  # replaced in the bucket
    with pytest.raises(IntegrityError, match="ota.bin does not match its signed manifest"):
        asyncio.run(files.image(VERSION, "ota.bin", entry))


def test_the_pin_and_what_is_missing_are_said_in_the_stores_terms(store: MemoryStore, tmp_path: Path) -> None:
    store.pin = VERSION
    index = Indexer(store, Records(tmp_path), SIGNER.verifier, None).build()  # offline: nothing signed here
    assert not index.releases and index.pinned == VERSION
    assert index.problems[VERSION].startswith("no manifest mem://manifests/v1.0.0.json; sign one with")


def test_channels_and_uploads_go_through_any_store(store: MemoryStore, tmp_path: Path) -> None:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        data = example.build_app_image("v9.0.0")
        info = tarfile.TarInfo("ota.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    archive.seek(0)
    unpack(store, "v9.0.0", archive, SIGNER.verifier, signing=True)
    store.write_channel("beta", dump(Channel("beta", pin="v9.0.0")))
    store.write_channel("broken", b"{")
    index = Indexer(store, Records(tmp_path), SIGNER.verifier, SIGNER).build()
    assert index.base("beta").version == "v9.0.0"
    assert set(index.channels.problems) == {"broken"}
