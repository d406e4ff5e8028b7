"""Tests for sanic_ota.signing: Ed25519 over the one canonical form of JSON."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sanic_ota.errors import ConfigurationError, SignatureError
from sanic_ota.signing import (
    Signer,
    Verifier,
    canonical_bytes,
    create_key_pair,
    load_signer,
    load_verifier,
    raw_public_bytes,
)

SIGNED = {"version": "v1", "serial": 3, "files": {"ota.bin": {"length": 10}}, "note": "é ☃ \n \"q\""}


@pytest.fixture
def signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


def test_canonical_bytes_are_sorted_compact_utf8_json() -> None:
    assert canonical_bytes(SIGNED) == json.dumps(
        SIGNED, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    assert canonical_bytes({"b": 1, "a": {"d": [1, 2], "c": "é"}}) == '{"a":{"c":"é","d":[1,2]},"b":1}'.encode()


def test_canonical_bytes_ignore_key_order_and_whitespace() -> None:
    reordered = json.loads(json.dumps(dict(reversed(list(SIGNED.items()))), indent=7))
    assert canonical_bytes(reordered) == canonical_bytes(SIGNED)


def test_sign_and_verify_round_trip(signer: Signer) -> None:
    signature = signer.sign(SIGNED)
    assert set(signature) == {"keyid", "sig"}
    assert len(bytes.fromhex(signature["sig"])) == 64
    signer.verifier.verify(SIGNED, [signature])
    signer.verifier.verify(json.loads(json.dumps(SIGNED)), [{"keyid": "other", "sig": "00"}, signature])


def test_keyid_is_sha256_of_the_raw_public_key(signer: Signer) -> None:
    raw = signer.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert len(raw) == 32 and raw_public_bytes(signer.private_key.public_key()) == raw
    assert signer.verifier.keyid == hashlib.sha256(raw).hexdigest()
    assert signer.sign(SIGNED)["keyid"] == signer.verifier.keyid


def test_a_signature_by_another_key_is_refused(signer: Signer) -> None:
    other = Signer(Ed25519PrivateKey.generate())
    with pytest.raises(SignatureError, match="no signature by key"):
        signer.verifier.verify(SIGNED, [other.sign(SIGNED)])
    # another key's signature labelled with our key id
    forged = {"keyid": signer.verifier.keyid, "sig": other.sign(SIGNED)["sig"]}
    with pytest.raises(SignatureError, match="does not verify"):
        signer.verifier.verify(SIGNED, [forged])


@pytest.mark.parametrize("change", [
    lambda d: d.update(serial=4),
    lambda d: d["files"]["ota.bin"].update(length=11),
    lambda d: d.update(extra=None),
    lambda d: d.pop("note"),
    lambda d: d.update(serial=3.0),
])
def test_any_changed_value_fails(signer: Signer, change) -> None:
    signature = signer.sign(SIGNED)
    changed = json.loads(json.dumps(SIGNED))
    change(changed)
    with pytest.raises(SignatureError):
        signer.verifier.verify(changed, [signature])


@pytest.mark.parametrize("signatures", [None, {}, "sig", [], ["x"], [{"keyid": None}]])
def test_malformed_signature_lists_are_refused(signer: Signer, signatures: object) -> None:
    with pytest.raises(SignatureError):
        signer.verifier.verify(SIGNED, signatures)


@pytest.mark.parametrize("sig", ["", "zz", "00" * 64, "0" * 127])
def test_malformed_signatures_do_not_verify(signer: Signer, sig: str) -> None:
    with pytest.raises(SignatureError, match="does not verify"):
        signer.verifier.verify(SIGNED, [{"keyid": signer.verifier.keyid, "sig": sig}])


def test_create_key_pair_writes_private_0600_and_public_pem(tmp_path: Path) -> None:
    private, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    signer = create_key_pair(private, public)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert b"PRIVATE KEY" in private.read_bytes()
    loaded = load_signer(private)
    verifier = load_verifier(public)
    assert loaded.verifier.keyid == verifier.keyid == signer.verifier.keyid
    verifier.verify(SIGNED, [loaded.sign(SIGNED)])
    assert verifier.pem == public.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem", "k.pub.pem"]


def test_load_errors_are_configuration_errors(tmp_path: Path, signer: Signer) -> None:
    with pytest.raises(ConfigurationError, match="not found"):
        load_signer(tmp_path / "absent.pem")
    with pytest.raises(ConfigurationError, match="not found"):
        load_verifier(tmp_path / "absent.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_signer(garbage)
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_verifier(garbage)
    ec = generate_private_key(SECP256R1())
    ec_private, ec_public = tmp_path / "ec.pem", tmp_path / "ec.pub.pem"
    ec_private.write_bytes(ec.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    ec_public.write_bytes(ec.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(ConfigurationError, match="not an Ed25519 key"):
        load_signer(ec_private)
    with pytest.raises(ConfigurationError, match="not an Ed25519 key"):
        load_verifier(ec_public)
    encrypted = tmp_path / "enc.pem"
    encrypted.write_bytes(signer.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_signer(encrypted)


def test_verifier_of_a_signer_is_equal_to_the_loaded_public_key(tmp_path: Path, signer: Signer) -> None:
    assert isinstance(signer.verifier, Verifier)
    path = tmp_path / "pub.pem"
    path.write_text(signer.verifier.pem)
    assert load_verifier(path).keyid == signer.verifier.keyid
