"""What each release file was when it was last hashed, so a restart need not hash it again.

Hashing and parsing every image at every start made a worker with 700 releases of
1.6 MB miss Sanic's 30 s start-up limit. So after hashing a release the indexer
records, per file, its identity (the store's ``FileInfo.identity``; on a local disk
device, inode, size, mtime and ctime, the same tuple the file cache uses) and the
SHA-256 it hashed to. At the next start a release
whose files all still have their recorded identity, and whose signed manifest lists
exactly the recorded hashes, is taken as it is without reading a byte. Any write to a
file changes its ctime, which no program can set back, and a replaced file has
another inode, so a file changed while the server was down is hashed again.

The record is a local cache, not a signature: nothing is served because of it.
Bytes are still checked against the signed manifest before their first byte is
sent (``filecache.VerifiedFiles``), so a wrong record can make a release look
servable, never send wrong bytes. A record that cannot be read counts as empty.

A file changed within ``SETTLE_SECONDS`` of being hashed is not recorded: on a
filesystem with coarse timestamps a write in the same tick would leave its
identity unchanged (git's "racily clean" problem), so it is hashed again next time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sanic_ota.store import Identity

IDENTITIES_FILE = ".identities.json"

#: How old a file's last change must be before its identity is trusted to mean its bytes.
SETTLE_SECONDS = 2.0

_SHA256 = re.compile(r"[0-9a-f]{64}")

#: release -> file name -> what the file was when hashed
Records = dict[str, dict[str, "Hashed"]]


@dataclass(frozen=True)
class Hashed:
    identity: Identity
    sha256: str


def settled(changed_ns: int, now_ns: int) -> bool:
    """True if the file last changed (``FileInfo.changed_ns``) long enough ago for its
    identity to stand for its bytes."""
    return now_ns - changed_ns >= SETTLE_SECONDS * 1e9


def parse(data: bytes) -> Records:
    """Records from the file's bytes; anything malformed is dropped, never raised."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(document, dict):
        return {}
    records: Records = {}
    for version, files in document.items():
        if not isinstance(files, dict):
            continue
        entries = {name: hashed for name, value in files.items() if (hashed := _entry(value)) is not None}
        if len(entries) == len(files):  # a release is trusted whole or not at all
            records[version] = entries
    return records


def encode(records: Mapping[str, Mapping[str, Hashed]]) -> bytes:
    document = {
        version: {name: [*h.identity, h.sha256] for name, h in sorted(files.items())}
        for version, files in sorted(records.items())
    }
    return json.dumps(document, separators=(",", ":")).encode()


def _entry(value: object) -> Hashed | None:
    """``[*identity, sha256]``: an identity is numbers and strings (a stat tuple, an ETag)."""
    if not isinstance(value, list) or len(value) < 2:
        return None
    *parts, sha = value
    if not all(isinstance(p, str) or (isinstance(p, int) and not isinstance(p, bool)) for p in parts):
        return None
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        return None
    return Hashed(tuple(parts), sha)
