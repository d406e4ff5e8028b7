"""Whether a release may be served: one pure decision, and the one length + SHA-256 check.

``decide`` takes what was read (the manifest's bytes, None when there is none), the
public key, what the release's files were seen to be (length and SHA-256 of each) and
the highest serial this server has seen for the release, and returns a ``Verdict``:
servable, with the checked ``Manifest``, or exactly why not, as a ``Reason`` and a
message; never a bare False a caller could ignore. It reads and writes nothing, the
way python-tuf keeps ``Metadata.verify_delegate`` free of I/O: the indexer reads the
store, keeps the records and calls this to decide, and tests hand it bytes.

The pin is not part of it: which servable release plain ``AT+CIUPDATE`` gets is
``releases.Index.latest``'s decision, pure as well. Neither is the signing mode: the
verdict is the same whether the server signs or only verifies; a server that signs
answers a refused manifest by signing a new one, one that verifies refuses the release.

``check_file`` is the only comparison of a file's bytes with its manifest entry, like
python-tuf's ``TargetFile.verify_length_and_hashes``: ``decide`` uses it for a whole
release, the verified-bytes cache before a byte is sent, and ``sanic-ota-verify
--files`` for the operator. ``Measure`` takes length and SHA-256 of bytes read in chunks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from sanic_ota import manifest as manifests
from sanic_ota.errors import ManifestError, OtherReleaseError, SignatureError, UnknownKeyError
from sanic_ota.manifest import FileEntry, Manifest
from sanic_ota.signing import Verifier


class Reason(StrEnum):
    """Why a release may not be served."""

    NO_FILES = "no_files"  # nothing to serve
    NO_MANIFEST = "no_manifest"
    MALFORMED = "malformed"  # not JSON, not a manifest, numbers or nesting Python refuses
    UNKNOWN_KEY = "unknown_key"  # no signature by our key: signed elsewhere with another one
    BAD_SIGNATURE = "bad_signature"  # our key id, but the signature does not verify: altered
    OTHER_RELEASE = "other_release"  # a good manifest of another release, copied over this one's
    REPLAYED = "replayed"  # an older serial than one already seen for the release
    MISSING_FILE = "missing_file"  # listed, not there
    LENGTH_MISMATCH = "length_mismatch"
    HASH_MISMATCH = "hash_mismatch"


#: Reasons about the manifest itself, not about the files it lists.
MANIFEST_REASONS = frozenset({Reason.NO_MANIFEST, Reason.MALFORMED, Reason.UNKNOWN_KEY, Reason.BAD_SIGNATURE,
                              Reason.OTHER_RELEASE, Reason.REPLAYED})


@dataclass(frozen=True)
class Observed:
    """What a file's bytes were seen to be."""

    length: int
    sha256: str

    @classmethod
    def of(cls, data: bytes) -> Observed:
        return cls(len(data), hashlib.sha256(data).hexdigest())


class Measure:
    """Length and SHA-256 of bytes that pass by in chunks (to a copy, to a client)."""

    def __init__(self) -> None:
        self.length = 0
        self._sha256 = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self.length += len(chunk)
        self._sha256.update(chunk)

    def observed(self) -> Observed:
        return Observed(self.length, self._sha256.hexdigest())


@dataclass(frozen=True)
class FileProblem:
    """One file that does not match its manifest entry: which, why, and the figures."""

    name: str
    reason: Reason
    detail: str

    @property
    def message(self) -> str:
        if self.reason is Reason.MISSING_FILE:
            return f"{self.name} is listed in the manifest but missing"
        return f"{self.name} does not match its manifest: {self.detail}"


def check_file(name: str, expected: FileEntry, seen: Observed) -> FileProblem | None:
    """Length, then SHA-256, of what was seen against the manifest's entry; None if both match.

    A reader may stop one byte past the expected length (no need to read a 600 MB
    file to learn it is too long), so "longer" is said as "more than".
    """
    if seen.length != expected.length:
        size = f"more than {expected.length}" if seen.length > expected.length else str(seen.length)
        return FileProblem(name, Reason.LENGTH_MISMATCH, f"{size} bytes, the manifest says {expected.length}")
    if seen.sha256 != expected.sha256:
        return FileProblem(name, Reason.HASH_MISMATCH,
                           f"SHA-256 {seen.sha256[:16]}…, the manifest says {expected.sha256[:16]}…")
    return None


def check_files(manifest: Manifest, observed: Mapping[str, Observed]) -> tuple[list[FileProblem], list[str]]:
    """Every listed file that is missing or differs, and the files present but not listed
    (never served: the manifest does not vouch for them)."""
    problems = []
    for name, entry in sorted(manifest.files.items()):
        seen = observed.get(name)
        if seen is None:
            problems.append(FileProblem(name, Reason.MISSING_FILE, "missing"))
        elif (problem := check_file(name, entry, seen)) is not None:
            problems.append(problem)
    return problems, sorted(set(observed) - set(manifest.files))


@dataclass(frozen=True)
class Verdict:
    """Servable (``reason`` None), or why not.

    ``manifest`` is the checked manifest whenever the manifest itself can be trusted
    (signature, schema, release, serial), even if the files do not match it; None when
    the manifest is refused. ``unlisted`` names files present that are not served.
    """

    reason: Reason | None = None
    message: str = ""
    manifest: Manifest | None = None
    problems: tuple[FileProblem, ...] = ()
    unlisted: tuple[str, ...] = ()

    @property
    def servable(self) -> bool:
        return self.reason is None

    @property
    def exact(self) -> bool:
        """Servable, and the manifest lists exactly the files present: nothing to re-sign."""
        return self.reason is None and not self.unlisted


def decide(
    document: bytes | None, verifier: Verifier, version: str, observed: Mapping[str, Observed], highest_serial: int
) -> Verdict:
    """May ``version`` be served, given its manifest ``document`` and its files as ``observed``?

    In order: the release has files; there is a manifest; it is a manifest, signed by
    our key, whose signature verifies (``manifest.verify``), of this release; its
    serial is not older than ``highest_serial`` (a replayed manifest could bring back
    files it once vouched for); and every file it lists is there with its length and
    SHA-256. Files it does not list are allowed, and named in ``unlisted``.
    """
    if not observed:
        return Verdict(Reason.NO_FILES, f"release {version} holds no .bin file")
    if document is None:
        return Verdict(Reason.NO_MANIFEST, f"release {version} has no manifest")
    try:
        manifest = manifests.verify(document, verifier, version)
    except UnknownKeyError as e:
        return Verdict(Reason.UNKNOWN_KEY, e.message)
    except SignatureError as e:
        return Verdict(Reason.BAD_SIGNATURE, e.message)
    except OtherReleaseError as e:
        return Verdict(Reason.OTHER_RELEASE, e.message)
    except ManifestError as e:
        return Verdict(Reason.MALFORMED, e.message)
    if manifest.serial < highest_serial:
        return Verdict(Reason.REPLAYED, f"manifest serial {manifest.serial} is older than serial {highest_serial} "
                                        "already seen for this release (replayed manifest?)")
    problems, unlisted = check_files(manifest, observed)
    if problems:
        message = "; ".join(problem.message for problem in problems)
        return Verdict(problems[0].reason, message, manifest, tuple(problems), tuple(unlisted))
    return Verdict(manifest=manifest, unlisted=tuple(unlisted))
