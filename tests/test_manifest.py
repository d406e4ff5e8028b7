"""Tests for sanic_ota.manifest: the signed description of a release, and its checks."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from conftest import VERSION, example
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sanic_ota import manifest as manifests
from sanic_ota.errors import ImageError, ManifestError, OtherReleaseError, SignatureError, UnknownKeyError
from sanic_ota.manifest import MANIFEST_TYPE, SPEC_VERSION, FileEntry, Manifest
from sanic_ota.signing import Signer

OTA = example.build_app_image(VERSION)
CERT = example.build_cert_partition(example.EXAMPLE_CA)


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


def _manifest(version: str = VERSION, serial: int = 1) -> Manifest:
    files = {"ota.bin": FileEntry.describe("ota.bin", OTA), "mqtt_ca.bin": FileEntry.describe("mqtt_ca.bin", CERT)}
    return Manifest(version=version, serial=serial, created=manifests.utc_now(), files=files)


def _document(signer: Signer, **kwargs: object) -> dict:
    return json.loads(manifests.sign(_manifest(**kwargs), signer))  # type: ignore[arg-type]


def _resign(document: dict, signer: Signer) -> bytes:
    """A document whose "signed" was changed and then properly signed again."""
    document["signatures"] = [signer.sign(document["signed"])]
    return json.dumps(document).encode()


def test_round_trip_through_a_file(tmp_path: Path, signer: Signer) -> None:
    original = _manifest()
    path = tmp_path / f"{VERSION}.json"
    path.write_bytes(manifests.sign(original, signer))
    again = manifests.verify(path.read_bytes(), signer.verifier, VERSION)
    assert again == original
    assert again.files["ota.bin"].info == original.files["ota.bin"].info
    assert again.to_signed() == original.to_signed()


def test_whitespace_and_key_order_may_change(signer: Signer) -> None:
    document = _document(signer)

    def reverse(value: object) -> object:
        if isinstance(value, dict):
            return {k: reverse(v) for k, v in reversed(list(value.items()))}
        return value

    rewritten = json.dumps({"signatures": document["signatures"], "signed": reverse(document["signed"])},
                           indent=5, ensure_ascii=True)
    assert rewritten.encode() != manifests.sign(_manifest(), signer)
    assert manifests.verify(rewritten.encode(), signer.verifier, VERSION).version == VERSION


@pytest.mark.parametrize("change", [
    lambda s: s["files"]["ota.bin"].update(length=s["files"]["ota.bin"]["length"] + 1),
    lambda s: s["files"]["mqtt_ca.bin"]["hashes"].update(sha256="0" * 64),
    lambda s: s.update(serial=s["serial"] + 1),
    lambda s: s["files"]["ota.bin"]["image"].update(app_version="v9"),
    lambda s: s["files"].pop("mqtt_ca.bin"),
])
def test_a_changed_value_fails(signer: Signer, change) -> None:
    document = _document(signer)
    change(document["signed"])
    with pytest.raises(SignatureError):
        manifests.verify(json.dumps(document).encode(), signer.verifier, VERSION)


def test_another_key_fails(signer: Signer) -> None:
    other = Signer(Ed25519PrivateKey.generate())
    with pytest.raises(UnknownKeyError):
        manifests.verify(manifests.sign(_manifest(), other), signer.verifier, VERSION)


def test_an_altered_manifest_fails_as_a_bad_signature_not_an_unknown_key(signer: Signer) -> None:
    document = _document(signer)
    document["signed"]["serial"] += 1
    with pytest.raises(SignatureError) as caught:
        manifests.verify(json.dumps(document).encode(), signer.verifier, VERSION)
    assert not isinstance(caught.value, UnknownKeyError)


def test_a_manifest_naming_another_release_fails(signer: Signer) -> None:
    data = manifests.sign(_manifest(version="v0.9.0"), signer)
    with pytest.raises(OtherReleaseError, match="names release 'v0.9.0', expected 'v1.0.0'"):
        manifests.verify(data, signer.verifier, VERSION)


@pytest.mark.parametrize(("data", "message"), [
    (b"{", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[]", '"signed" and "signatures"'),
    (b'{"signatures": []}', '"signed" and "signatures"'),
])
def test_documents_that_are_not_manifests(signer: Signer, data: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        manifests.verify(data, signer.verifier, VERSION)


#: What Python's own JSON refuses outright: once a ValueError or RecursionError that
#: killed the watcher and stopped the next start.
HOSTILE_JSON = [
    ('{"signed": {"serial": ' + "9" * 5000 + "}}", "not valid JSON.*digits"),
    ('{"signed": ' + "[" * 100_000 + "]" * 100_000 + "}", "not valid JSON.*recursion"),
]


@pytest.mark.parametrize(("text", "message"), HOSTILE_JSON, ids=["5000-digit number", "deep nesting"])
def test_json_python_refuses_is_a_manifest_error(signer: Signer, text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        manifests.verify(text.encode(), signer.verifier, VERSION)


def test_missing_signatures_fail(signer: Signer) -> None:
    document = _document(signer)
    del document["signatures"]
    with pytest.raises(SignatureError):
        manifests.verify(json.dumps(document).encode(), signer.verifier, VERSION)


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s["files"]["ota.bin"]["hashes"].update(sha256="A" * 64), "64 lower-case hex"),
    (lambda s: s["files"]["ota.bin"]["hashes"].update(sha256="0" * 63), "64 lower-case hex"),
    (lambda s: s["files"]["ota.bin"].pop("hashes"), "64 lower-case hex"),
    (lambda s: s["files"]["ota.bin"].update(length=-1), "non-negative integer"),
    (lambda s: s["files"]["ota.bin"].update(length=1.0), "non-negative integer"),
    (lambda s: s["files"]["ota.bin"].update(length=True), "non-negative integer"),
    (lambda s: s["files"].update({"x.bin": []}), "must be an object"),
    (lambda s: s.update(serial=True), "serial must be a positive integer"),
    (lambda s: s.update(serial=0), "serial must be a positive integer"),
    (lambda s: s.update(serial="2"), "serial must be a positive integer"),
    (lambda s: s.pop("_type"), "_type is None"),
    (lambda s: s.update(_type="tuf-root"), "_type is 'tuf-root'"),
    (lambda s: s.update(spec_version=2), "spec_version 2 is not supported"),
    (lambda s: s.update(spec_version="1"), "spec_version '1' is not supported"),
    (lambda s: s.update(version="../v1"), "not a plain release name"),
    (lambda s: s.update(created=0), "created must be"),
    (lambda s: s.update(files=[]), "files must be an object"),
    (lambda s: s["files"].update({"../x": s["files"]["ota.bin"]}), "file name '../x' is not a plain name"),
    (lambda s: s["files"].update({".hidden.bin": s["files"]["ota.bin"]}), "is not a plain name"),
])
def test_schema_errors_are_manifest_errors(signer: Signer, change, message: str) -> None:
    document = _document(signer)
    change(document["signed"])
    with pytest.raises(ManifestError, match=message) as caught:
        manifests.verify(_resign(document, signer), signer.verifier, VERSION)
    assert not isinstance(caught.value, SignatureError)


def test_signed_part_is_what_was_specified(signer: Signer) -> None:
    signed = _document(signer, serial=7)["signed"]
    assert signed["_type"] == MANIFEST_TYPE and signed["spec_version"] == SPEC_VERSION
    assert signed["version"] == VERSION and signed["serial"] == 7
    assert signed["created"].endswith("Z")
    assert list(signed["files"]) == ["mqtt_ca.bin", "ota.bin"]


def test_app_image_info_is_recorded_under_image() -> None:
    entry = FileEntry.describe("ota.bin", OTA)
    assert entry.length == len(OTA)
    image = entry.to_dict()["image"]
    assert image["app_version"] == VERSION
    assert image["project_name"] == "sanic_ota_example"
    assert image["chip"] == "ESP32"
    assert FileEntry.describe("mqtt_ca.bin", CERT).to_dict() == {
        "length": len(CERT), "hashes": {"sha256": FileEntry.describe("mqtt_ca.bin", CERT).sha256}}


@pytest.mark.parametrize(("name", "data"), [
    ("ota.bin", b"\x00" + OTA[1:]),
    ("ota.bin", OTA[: len(OTA) // 2]),
    ("mqtt_ca.bin", b"\x00\x00" + CERT[2:]),
    ("factory_param.bin", b""),
])
def test_describe_refuses_what_the_module_would_reject(name: str, data: bytes) -> None:
    with pytest.raises(ImageError, match=name):
        FileEntry.describe(name, data)


def test_describe_custom_partitions_without_a_check() -> None:
    entry = FileEntry.describe("custom.bin", b"anything")
    assert entry.length == 8 and entry.info == {}


def test_manifest_from_signed_does_not_share_state_with_its_input(signer: Signer) -> None:
    signed = _document(signer)["signed"]
    before = copy.deepcopy(signed)
    Manifest.from_signed(signed)
    assert signed == before
