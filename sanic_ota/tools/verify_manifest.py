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
from sanic_ota.containment import ReleaseTree
from sanic_ota.errors import OtaError
from sanic_ota.releases import Indexer
from sanic_ota.settings import Settings
from sanic_ota.signing import load_verifier


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version", help="the release the manifest must name")
    parser.add_argument("--manifest", type=Path, help="manifest file (default: manifests/VERSION.json)")
    parser.add_argument("--public-key", type=Path, help="public key PEM (default: $SANIC_OTA_PUBLIC_KEY)")
    parser.add_argument("--files", action="store_true", help="also check partitions/VERSION/ against it")
    args = parser.parse_args(argv)
    settings = Settings.from_environ(os.environ)
    path = args.manifest or settings.manifests_dir / f"{args.version}.json"
    try:
        verifier = load_verifier(args.public_key or settings.public_key_path)
        if args.manifest:  # a file the auditor named: read wherever it is
            document: bytes | None = args.manifest.read_bytes()
        else:  # the server's manifests/: read the way the server does, never through a symlink
            document = ReleaseTree(settings.partitions_dir, settings.manifests_dir).read_manifest(args.version)
        if document is None:
            print(f"FAIL {path}: no such manifest", file=sys.stderr)
            return 1
        manifest = manifests.verify(document, verifier, args.version)
    except OSError as e:
        print(f"FAIL {path}: {e.strerror}", file=sys.stderr)
        return 1
    except OtaError as e:
        print(f"FAIL {path}: {e.message}", file=sys.stderr)
        return 1
    print(f"OK   {path}: signature by {verifier.keyid}, release {manifest.version}, serial {manifest.serial}")
    if not args.files:
        return 0
    try:
        found = Indexer(settings, verifier, None).describe_files(args.version)
    except OtaError as e:
        print(f"FAIL partitions/{args.version}: {e.message}", file=sys.stderr)
        return 1
    problems = manifest.mismatches(found)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    for name in manifest.unlisted(found):
        print(f"FAIL {name} is on disk but not in the manifest", file=sys.stderr)
        problems.append(name)
    if not problems:
        print(f"OK   {len(found)} file(s) in partitions/{args.version} match")
    return 1 if problems else 0

