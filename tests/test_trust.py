"""Tests for sanic_ota.trust: the one decision whether a release may be served, as a table.

Every case hands ``decide`` bytes and figures, nothing else: no file, no store, no
records. What it answers is the whole contract: a ``Reason`` (None: servable), the
checked manifest when the manifest itself can be trusted, and a message that says why.
"""

from __future__ import annotations

import json
import sys
from dataclasses import FrozenInstanceError, dataclass, field

import pytest
from conftest import VERSION, example
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sanic_ota import manifest as manifests
from sanic_ota.manifest import FileEntry, Manifest
from sanic_ota.signing import Signer
from sanic_ota.trust import (
    MANIFEST_REASONS,
    FileProblem,
    Measure,
    Observed,
    Reason,
    Verdict,
    check_file,
    check_files,
    decide,
)

SIGNER = Signer(Ed25519PrivateKey.generate())
OTHER = Signer(Ed25519PrivateKey.generate())
OTA = example.build_app_image(VERSION)
CERT = example.build_cert_partition(example.EXAMPLE_CA)
FILES = {"ota.bin": FileEntry.describe("ota.bin", OTA), "mqtt_ca.bin": FileEntry.describe("mqtt_ca.bin", CERT)}
MANIFEST = Manifest(version=VERSION, serial=3, created="2026-01-01T00:00:00Z", files=FILES)
DOCUMENT = manifests.sign(MANIFEST, SIGNER)
SEEN = {"ota.bin": Observed.of(OTA), "mqtt_ca.bin": Observed.of(CERT)}


def _altered(change) -> bytes:
    """The good document with its signed part changed after signing."""
    document = json.loads(DOCUMENT)
    change(document["signed"])
    return json.dumps(document).encode()


def _resigned(change) -> bytes:
    """The signed part changed, then properly signed again (valid signature, bad content)."""
    document = json.loads(DOCUMENT)
    change(document["signed"])
    document["signatures"] = [SIGNER.sign(document["signed"])]
    return json.dumps(document).encode()


@dataclass(frozen=True)
class Case:
    id: str
    reason: Reason | None
    message: str = ""  # a part of the verdict's message
    document: bytes | None = DOCUMENT
    seen: dict[str, Observed] = field(default_factory=lambda: dict(SEEN))
    highest: int = 0
    unlisted: tuple[str, ...] = ()


CASES = [
    Case("good", None),
    Case("good, serial as high as seen", None, highest=3),
    Case("good, an unlisted file is allowed and named", None,
         seen={**SEEN, "extra.bin": Observed.of(b"x")}, unlisted=("extra.bin",)),
    Case("no files", Reason.NO_FILES, "holds no .bin file", seen={}),
    Case("no files, whatever the manifest", Reason.NO_FILES, "holds no .bin file", document=None, seen={}),
    Case("no manifest (offline, none copied in)", Reason.NO_MANIFEST, "has no manifest", document=None),
    Case("bad signature: a value changed after signing", Reason.BAD_SIGNATURE, "does not verify",
         document=_altered(lambda s: s.update(serial=9))),
    Case("bad signature: a file's hash changed after signing", Reason.BAD_SIGNATURE, "does not verify",
         document=_altered(lambda s: s["files"]["ota.bin"]["hashes"].update(sha256="0" * 64))),
    Case("bad signature: not hex", Reason.BAD_SIGNATURE, "does not verify",
         document=json.dumps({**json.loads(DOCUMENT), "signatures": [
             {"keyid": SIGNER.verifier.keyid, "sig": "zz"}]}).encode()),
    Case("wrong key", Reason.UNKNOWN_KEY, "no signature by key", document=manifests.sign(MANIFEST, OTHER)),
    Case("not signed at all", Reason.UNKNOWN_KEY, "found: none",
         document=json.dumps({**json.loads(DOCUMENT), "signatures": []}).encode()),
    Case("replayed older serial", Reason.REPLAYED, "serial 3 is older than serial 4", highest=4),
    Case("manifest naming another release", Reason.OTHER_RELEASE, "names release 'v0.9.0', expected 'v1.0.0'",
         document=manifests.sign(Manifest("v0.9.0", 3, MANIFEST.created, FILES), SIGNER)),
    Case("missing file", Reason.MISSING_FILE, "mqtt_ca.bin is listed in the manifest but missing",
         seen={"ota.bin": SEEN["ota.bin"]}),
    Case("length mismatch: truncated", Reason.LENGTH_MISMATCH,
         f"mqtt_ca.bin does not match its manifest: {len(CERT) - 4} bytes, the manifest says {len(CERT)}",
         seen={**SEEN, "mqtt_ca.bin": Observed.of(CERT[:-4])}),
    Case("length mismatch: longer", Reason.LENGTH_MISMATCH, f"more than {len(CERT)} bytes",
         seen={**SEEN, "mqtt_ca.bin": Observed.of(CERT + b"\xff")}),
    Case("hash mismatch: one bit", Reason.HASH_MISMATCH, "mqtt_ca.bin does not match its manifest: SHA-256",
         seen={**SEEN, "mqtt_ca.bin": Observed.of(CERT[:-1] + bytes([CERT[-1] ^ 1]))}),
    Case("two problems: the first names the reason, the message has both", Reason.MISSING_FILE,
         "mqtt_ca.bin is listed in the manifest but missing; ota.bin does not match its manifest",
         seen={"ota.bin": Observed.of(OTA[:-1])}),
    Case("malformed: not JSON", Reason.MALFORMED, "not valid JSON", document=b'{"signed": '),
    Case("malformed: not UTF-8", Reason.MALFORMED, "not valid JSON", document=b"\xff\xfe"),
    Case("malformed: not a manifest", Reason.MALFORMED, '"signed" and "signatures"', document=b"[]"),
    Case("malformed: huge number", Reason.MALFORMED, "not valid JSON",
         document=('{"signed": {"serial": ' + "9" * 5000 + "}}").encode()),
    Case("malformed: deep nesting", Reason.MALFORMED, "not valid JSON",
         document=('{"signed": ' + "[" * 100_000 + "]" * 100_000 + "}").encode()),
    Case("malformed: signed, but a negative length", Reason.MALFORMED, "non-negative integer",
         document=_resigned(lambda s: s["files"]["ota.bin"].update(length=-1))),
    Case("malformed: signed, but a file name that is not plain", Reason.MALFORMED, "is not a plain name",
         document=_resigned(lambda s: s["files"].update({"../x.bin": s["files"]["ota.bin"]}))),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_decide(case: Case) -> None:
    verdict = decide(case.document, SIGNER.verifier, VERSION, case.seen, case.highest)
    assert verdict.reason is case.reason, verdict.message
    assert verdict.servable is (case.reason is None)
    assert case.message in verdict.message
    assert verdict.unlisted == case.unlisted
    assert verdict.exact is (case.reason is None and not case.unlisted)
    if case.reason is None:
        assert verdict.manifest == MANIFEST and verdict.message == "" and verdict.problems == ()
    elif case.reason in MANIFEST_REASONS or case.reason is Reason.NO_FILES:
        assert verdict.manifest is None  # a manifest that is refused is never handed on
    else:  # the manifest is good, its files are not: a signer re-signs above its serial
        assert verdict.manifest == MANIFEST
        assert [p.reason for p in verdict.problems][0] is case.reason


def test_every_reason_has_a_case() -> None:
    assert {case.reason for case in CASES} == set(Reason) | {None}


def test_decide_does_no_io() -> None:
    """Like python-tuf's verification: bytes in, a verdict out; no file is opened or listed."""
    events: list[str] = []
    watching = [False]

    def hook(event: str, args: tuple) -> None:
        if watching[0] and (event == "open" or event.startswith(("os.", "socket.", "subprocess."))):
            events.append(event)

    sys.addaudithook(hook)  # hooks cannot be removed; ``watching`` turns this one off
    try:
        watching[0] = True
        for case in CASES:
            decide(case.document, SIGNER.verifier, VERSION, case.seen, case.highest)
    finally:
        watching[0] = False
    assert events == []


def test_a_verdict_is_a_value() -> None:
    verdict = decide(DOCUMENT, SIGNER.verifier, VERSION, SEEN, 0)
    with pytest.raises(FrozenInstanceError):
        verdict.reason = Reason.REPLAYED  # type: ignore[misc]
    assert Verdict(Reason.REPLAYED, "x").servable is False
    assert Reason.HASH_MISMATCH == "hash_mismatch"  # a StrEnum: logs and metrics can use it as it is


# -- the one length + SHA-256 check --------------------------------------------------------


@pytest.mark.parametrize(("data", "reason", "detail"), [
    (b"abcdef", None, ""),
    (b"abcde", Reason.LENGTH_MISMATCH, "5 bytes, the manifest says 6"),
    (b"abcdefg", Reason.LENGTH_MISMATCH, "more than 6 bytes, the manifest says 6"),
    (b"abcdeX", Reason.HASH_MISMATCH, f"SHA-256 {Observed.of(b'abcdeX').sha256[:16]}…, the manifest says "
                                      f"{Observed.of(b'abcdef').sha256[:16]}…"),
])
def test_check_file(data: bytes, reason: Reason | None, detail: str) -> None:
    expected = FileEntry(6, Observed.of(b"abcdef").sha256)
    problem = check_file("x.bin", expected, Observed.of(data))
    if reason is None:
        assert problem is None
    else:
        assert problem == FileProblem("x.bin", reason, detail)
        assert problem.message == f"x.bin does not match its manifest: {detail}"


def test_check_files_ignores_what_an_image_says_about_itself() -> None:
    bare = Manifest(VERSION, 1, MANIFEST.created, {n: FileEntry(e.length, e.sha256) for n, e in FILES.items()})
    assert check_files(bare, SEEN) == ([], [])
    assert check_files(MANIFEST, {**SEEN, "b.bin": SEEN["ota.bin"], "a.bin": SEEN["ota.bin"]}) == ([],
                                                                                                    ["a.bin", "b.bin"])


def test_measure_in_chunks_is_the_same_as_all_at_once() -> None:
    measure = Measure()
    for start in range(0, len(OTA), 1000):
        measure.update(OTA[start:start + 1000])
    assert measure.observed() == Observed.of(OTA) == Observed(len(OTA), FILES["ota.bin"].sha256)
