"""Ed25519 signatures over canonical JSON, the only bytes this project ever signs.

``canonical_bytes`` is the single definition of what a signature covers; signing and
verifying both call it, so they cannot disagree. An auditor reproduces the same
bytes with ``jq -jcS .signed`` (sorted keys, no whitespace, UTF-8).

``cryptography``'s key (de)serialisation is imported where a key is loaded or written:
the package brings its SSH and cipher modules along (about 0.1 s), which Sanic's main
process, importing the app to start its workers, never needs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sanic_ota.errors import ConfigurationError, SignatureError, UnknownKeyError
from sanic_ota.files import write_atomic


def canonical_bytes(signed: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8; DEL escaped as ``\\u007f``, as jq writes it."""
    text = json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("\x7f", "\\u007f").encode()


def raw_public_bytes(public_key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class Verifier:
    """A public key and its TUF-style key id (hex SHA-256 of the raw 32 bytes)."""

    public_key: Ed25519PublicKey

    @cached_property
    def keyid(self) -> str:
        """Computed once per key: every manifest checked compares it."""
        return hashlib.sha256(raw_public_bytes(self.public_key)).hexdigest()

    @property
    def pem(self) -> str:
        return public_pem(self.public_key).decode()

    def verify(self, signed: Any, signatures: Any) -> None:
        """Raise ``SignatureError`` unless one of ``signatures`` is ours and valid
        (``UnknownKeyError`` if none is even by our key)."""
        if not isinstance(signatures, list):
            raise SignatureError("signatures must be a list")
        ours = [s for s in signatures if isinstance(s, dict) and s.get("keyid") == self.keyid]
        if not ours:
            seen = ", ".join(str(s.get("keyid"))[:16] for s in signatures if isinstance(s, dict))
            raise UnknownKeyError(f"no signature by key {self.keyid[:16]}… (found: {seen or 'none'})")
        data = canonical_bytes(signed)
        for entry in ours:
            try:
                self.public_key.verify(bytes.fromhex(str(entry.get("sig", ""))), data)
                return
            except (InvalidSignature, ValueError):
                continue
        raise SignatureError(f"signature by key {self.keyid[:16]}… does not verify")


@dataclass(frozen=True)
class Signer:
    private_key: Ed25519PrivateKey

    @cached_property
    def verifier(self) -> Verifier:
        """Made once per key (with its key id): every manifest signed names it."""
        return Verifier(self.private_key.public_key())

    def sign(self, signed: Any) -> dict[str, str]:
        sig = self.private_key.sign(canonical_bytes(signed))
        return {"keyid": self.verifier.keyid, "sig": sig.hex()}


def load_verifier(path: Path) -> Verifier:
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except FileNotFoundError as e:
        raise ConfigurationError(f"public key {path} not found") from e
    except (OSError, ValueError) as e:
        raise ConfigurationError(f"cannot read public key {path}: {e}") from e
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError(f"public key {path} is not an Ed25519 key")
    return Verifier(key)


def load_signer(path: Path) -> Signer:
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except FileNotFoundError as e:
        raise ConfigurationError(f"signing key {path} not found") from e
    except (OSError, ValueError, TypeError) as e:
        raise ConfigurationError(f"cannot read signing key {path}: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"signing key {path} is not an Ed25519 key")
    return Signer(key)


def create_key_pair(private_path: Path, public_path: Path) -> Signer:
    """Write a new key pair: the private key 0600, the public key beside it 0644."""
    from cryptography.hazmat.primitives import serialization

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(Path(private_path), pem, mode=0o600)
    write_atomic(Path(public_path), public_pem(key.public_key()), mode=0o644)
    return Signer(key)
