"""Release manifests: what each file of a release is, signed so anyone can check it.

The on-disk form is TUF's: ``{"signed": {...}, "signatures": [{"keyid", "sig"}]}``,
the signature covering ``signing.canonical_bytes(signed)``. This module is pure: it
turns bytes into checked objects and back. Reading them is the store's job, and
whether a release's files match its manifest is ``trust``'s.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sanic_ota import images
from sanic_ota.errors import ImageError, ManifestError, OtherReleaseError
from sanic_ota.signing import Signer, Verifier
from sanic_ota.versions import is_plain_name

MANIFEST_TYPE = "esp-at-ota-manifest"
SPEC_VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FileEntry:
    """One file of a release: its length, SHA-256, and what the image says of itself."""

    length: int
    sha256: str
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def describe(cls, filename: str, data: bytes) -> FileEntry:
        """Hash ``data`` and inspect it as the partition its name says it is.

        Raises ``ImageError`` when the module would reject the bytes (bad magic,
        truncated application image): such a file must never be signed.
        """
        partition = filename.removesuffix(".bin")
        try:
            info = images.inspect(partition, data)
        except ImageError as e:
            raise ImageError(f"{filename}: {e.message}") from e
        return cls(length=len(data), sha256=hashlib.sha256(data).hexdigest(), info=info)

    def to_dict(self) -> dict[str, Any]:
        return {**self.info, "length": self.length, "hashes": {"sha256": self.sha256}}

    @classmethod
    def from_dict(cls, name: str, data: Any) -> FileEntry:
        if not isinstance(data, dict):
            raise ManifestError(f"files[{name!r}] must be an object")
        length, hashes = data.get("length"), data.get("hashes")
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise ManifestError(f"files[{name!r}].length must be a non-negative integer")
        sha = hashes.get("sha256") if isinstance(hashes, dict) else None
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise ManifestError(f"files[{name!r}].hashes.sha256 must be 64 lower-case hex digits")
        info = {k: v for k, v in data.items() if k not in ("length", "hashes")}
        return cls(length=length, sha256=sha, info=info)


@dataclass(frozen=True)
class Manifest:
    version: str
    serial: int
    created: str
    files: dict[str, FileEntry]

    def to_signed(self) -> dict[str, Any]:
        return {
            "_type": MANIFEST_TYPE,
            "spec_version": SPEC_VERSION,
            "version": self.version,
            "serial": self.serial,
            "created": self.created,
            "files": {name: entry.to_dict() for name, entry in sorted(self.files.items())},
        }

    @classmethod
    def from_signed(cls, signed: Any) -> Manifest:
        if not isinstance(signed, dict):
            raise ManifestError('"signed" must be an object')
        if signed.get("_type") != MANIFEST_TYPE:
            raise ManifestError(f'_type is {signed.get("_type")!r}, expected {MANIFEST_TYPE!r}')
        if signed.get("spec_version") != SPEC_VERSION:
            raise ManifestError(f"spec_version {signed.get('spec_version')!r} is not supported")
        version, serial, created = signed.get("version"), signed.get("serial"), signed.get("created")
        if not isinstance(version, str) or not is_plain_name(version):
            raise ManifestError(f"version {version!r} is not a plain release name")
        if not isinstance(serial, int) or isinstance(serial, bool) or serial < 1:
            raise ManifestError("serial must be a positive integer")
        if not isinstance(created, str):
            raise ManifestError("created must be an RFC 3339 string")
        files = signed.get("files")
        if not isinstance(files, dict):
            raise ManifestError("files must be an object")
        for name in files:
            if not is_plain_name(name):
                raise ManifestError(f"file name {name!r} is not a plain name")
        entries = {name: FileEntry.from_dict(name, data) for name, data in files.items()}
        return cls(version=version, serial=serial, created=created, files=entries)


def utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def sign(manifest: Manifest, signer: Signer) -> bytes:
    """The manifest file's bytes: readable JSON, signed over the canonical form."""
    signed = manifest.to_signed()
    document = {"signed": signed, "signatures": [signer.sign(signed)]}
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def verify(data: bytes, verifier: Verifier, expected_version: str) -> Manifest:
    """Parse and check a manifest file; raise ``ManifestError`` saying what is wrong.

    Checks, in order: JSON shape, our signature over the canonical ``signed`` bytes
    (so whitespace or key order may change, values may not), the schema, and that
    it names the release it was found for (a manifest copied over another release's
    fails here). Input that Python's JSON refuses outright (a 5,000-digit number,
    nesting deeper than the recursion limit) is a ``ManifestError`` like any other.
    The subclasses say which check failed (``SignatureError``, ``UnknownKeyError``,
    ``OtherReleaseError``), for ``trust.decide``'s verdict.
    """
    try:
        return _verify(data, verifier, expected_version)
    except (ValueError, RecursionError) as e:
        raise ManifestError(f"manifest is not valid JSON: {e}") from e


def _verify(data: bytes, verifier: Verifier, expected_version: str) -> Manifest:
    document = json.loads(data)
    if not isinstance(document, dict) or "signed" not in document:
        raise ManifestError('manifest must be an object with "signed" and "signatures"')
    verifier.verify(document["signed"], document.get("signatures"))
    manifest = Manifest.from_signed(document["signed"])
    if manifest.version != expected_version:
        raise OtherReleaseError(
            f"manifest names release {manifest.version!r}, expected {expected_version!r}"
        )
    return manifest
