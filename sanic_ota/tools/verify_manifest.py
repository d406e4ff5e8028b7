"""Check a release's manifest against the public key, and with --files, the files on disk.

Installed as ``sanic-ota-verify``; ``make verify VERSION=v1`` runs the second form:

    tools/verify_manifest.py v1                  # manifests/v1.json, public key from settings
    tools/verify_manifest.py v1 --files          # ... and partitions/v1/*.bin match it
    tools/verify_manifest.py v1 --manifest m.json --public-key pub.pem

Exit code 0 only if everything checked holds; each problem is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sanic_ota import manifest as manifests
from sanic_ota.errors import OtaError
from sanic_ota.releases import describe_files
from sanic_ota.settings import Settings
from sanic_ota.signing import load_verifier
from sanic_ota.store.local import LocalStore
from sanic_ota.trust import Observed, check_files
from sanic_ota.versions import check_name


def _why(error: OSError | OtaError) -> str:
    """What went wrong, as an operator reads it: our message, or the OS's text."""
    return error.message if isinstance(error, OtaError) else str(error.strerror or error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version", help="the release the manifest must name")
    parser.add_argument("--manifest", type=Path, help="manifest file (default: manifests/VERSION.json)")
    parser.add_argument("--public-key", type=Path, help="public key PEM (default: $SANIC_OTA_PUBLIC_KEY)")
    parser.add_argument("--files", action="store_true", help="also check partitions/VERSION/ against it")
    args = parser.parse_args(argv)
    settings = Settings.from_environ(os.environ)
    store = LocalStore.from_settings(settings)
    try:
        version = check_name(args.version, "version")
    except OtaError as e:
        print(f"FAIL {args.version!r}: {e.message}", file=sys.stderr)
        return 1
    path = str(args.manifest) if args.manifest else store.where_manifest(version)
    try:
        verifier = load_verifier(args.public_key or settings.public_key_path)
        if args.manifest:  # a file the auditor named: read wherever it is
            document: bytes | None = args.manifest.read_bytes()
        else:  # the server's manifests/: read the way the server does, never through a symlink
            document = store.read_manifest(version)
        if document is None:
            print(f"FAIL {path}: no such manifest", file=sys.stderr)
            return 1
        manifest = manifests.verify(document, verifier, version)
    except (OSError, OtaError) as e:
        print(f"FAIL {path}: {_why(e)}", file=sys.stderr)
        return 1
    print(f"OK   {path}: signature by {verifier.keyid}, release {manifest.version}, serial {manifest.serial}")
    if not args.files:
        return 0
    try:
        with store.release(version) as release:  # read as the server reads: no link, nothing outside
            found = describe_files(release)
    except (OSError, OtaError) as e:
        print(f"FAIL {store.where(version)}: {_why(e)}", file=sys.stderr)
        return 1
    observed = {name: Observed(entry.length, entry.sha256) for name, entry in found.items()}
    problems, unlisted = check_files(manifest, observed)
    for problem in problems:
        print(f"FAIL {problem.message}", file=sys.stderr)
    for name in unlisted:
        print(f"FAIL {name} is on disk but not in the manifest", file=sys.stderr)
    if not problems and not unlisted:
        print(f"OK   {len(found)} file(s) in {store.where(version)} match")
    return 1 if problems or unlisted else 0
