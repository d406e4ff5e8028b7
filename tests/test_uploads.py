"""Uploads into a local store: checked in a stage nobody indexes, moved in whole or not at all."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from archives import tar_of
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sanic_ota import example_release as example
from sanic_ota import manifest as manifests
from sanic_ota.manifest import FileEntry, Manifest
from sanic_ota.signing import Signer
from sanic_ota.store.local import LocalStore
from sanic_ota.uploads import Conflict, UploadRefused, unpack

SIGNER = Signer(Ed25519PrivateKey.generate())
APP = example.build_app_image("v2.0.0")
CERT = example.build_cert_partition(b"-----BEGIN CERTIFICATE-----\n")



def _tar(files: dict[str, bytes]) -> io.BytesIO:
    return io.BytesIO(tar_of(files))


def _signed(files: dict[str, bytes], version: str = "v2.0.0") -> bytes:
    entries = {n: FileEntry.describe(n, d) for n, d in files.items()}
    return manifests.sign(Manifest(version, 1, "2026-01-01T00:00:00Z", entries), SIGNER)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "partitions", tmp_path / "manifests", tmp_path / "channels")


def _left(store: LocalStore) -> list[str]:
    return sorted(p.name for p in store.partitions.iterdir()) if store.partitions.exists() else []


def test_a_release_with_its_signed_manifest_is_moved_in_whole(store: LocalStore) -> None:
    files = {"ota.bin": APP, "mqtt_ca.bin": CERT}
    done = unpack(store, "v2.0.0", _tar({**files, "manifest.json": _signed(files)}), SIGNER.verifier, signing=False)
    assert set(done.files) == set(files) and _left(store) == ["v2.0.0"]
    assert (store.partitions / "v2.0.0" / "ota.bin").read_bytes() == APP
    assert store.read_manifest("v2.0.0") == done.manifest
    with pytest.raises(Conflict):
        unpack(store, "v2.0.0", _tar(files), SIGNER.verifier, signing=True)


@pytest.mark.parametrize(("files", "message"), [
    ({"ota.bin": APP[:-1] + bytes([APP[-1] ^ 1])}, "module would reject"),
    ({"ota.bin": APP, "notes.txt": b"hi"}, "not a release file"),
    ({"sub/ota.bin": APP}, "not a plain file name"),
    ({}, "no release file"),
])
def test_what_is_refused_leaves_nothing_behind(store: LocalStore, files: dict[str, bytes], message: str) -> None:
    with pytest.raises(UploadRefused, match=message):
        unpack(store, "v2.0.0", _tar(files), SIGNER.verifier, signing=True)
    assert _left(store) == []  # no release, no stage


def test_files_that_do_not_match_the_uploaded_manifest_are_refused(store: LocalStore) -> None:
    signed = _signed({"mqtt_ca.bin": CERT})
    tampered = CERT[:-1] + b"X"  # still a certificate partition to the module: only the manifest can tell
    with pytest.raises(UploadRefused, match="do not match"):
        unpack(store, "v2.0.0", _tar({"mqtt_ca.bin": tampered, "manifest.json": signed}), SIGNER.verifier, False)
    other = Signer(Ed25519PrivateKey.generate())
    with pytest.raises(UploadRefused, match="manifest.json refused"):
        unpack(store, "v2.0.0", _tar({"mqtt_ca.bin": CERT, "manifest.json": signed}), other.verifier, False)
    with pytest.raises(UploadRefused, match="upload manifest.json too"):
        unpack(store, "v2.0.0", _tar({"mqtt_ca.bin": CERT}), SIGNER.verifier, signing=False)
    assert _left(store) == [] and store.read_manifest("v2.0.0") is None


def test_not_a_tar_is_refused(store: LocalStore) -> None:
    with pytest.raises(UploadRefused, match="not a tar archive"):
        unpack(store, "v2.0.0", io.BytesIO(b"garbage" * 100), SIGNER.verifier, signing=True)
    assert _left(store) == []
