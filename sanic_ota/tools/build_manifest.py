"""Sign partitions/VERSION/ into manifests/VERSION.json (``make manifest VERSION=v1``, ``sanic-ota-manifest``).

Run where the private key lives. Honours the server's SANIC_OTA_* variables
(partitions, manifests, signing key). The manifest is rewritten, with a higher
serial, only when the files changed; a file the module would reject (bad magic
bytes, truncated application image) is reported and nothing is signed. Creates
the key pair on first use, like the server does.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

from sanic_ota.errors import OtaError
from sanic_ota.releases import Release
from sanic_ota.settings import Settings
from sanic_ota.signing import Verifier
from sanic_ota.state import open_indexer, signing_keys
from sanic_ota.store.local import LocalStore


def sign_release(settings: Settings, version: str) -> tuple[Release, Verifier]:
    """Sign ``version``'s manifest where the private key lives, as the server would.

    The manifest is rewritten only when the files changed; the key pair is created on
    first use. Raises ``OtaError`` saying why nothing was signed. ``tools/publish.py``
    signs with this too, so a published manifest is made exactly as ``make manifest`` makes it.
    """
    verifier, signer = signing_keys(dataclasses.replace(settings, sign_manifests=True))
    return open_indexer(settings, verifier, signer).index_release(version), verifier


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version", help="release directory name under partitions/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings.from_environ(os.environ)
    try:
        release, verifier = sign_release(settings, args.version)
    except OtaError as e:
        print(f"build_manifest: {args.version}: {e.message}", file=sys.stderr)
        return 1
    manifest = release.manifest
    print(f"{LocalStore.from_settings(settings).where_manifest(args.version)}: serial {manifest.serial}, "
          f"{len(manifest.files)} file(s), key {verifier.keyid}")
    for name, entry in sorted(manifest.files.items()):
        print(f"  {name}  {entry.length} bytes  sha256 {entry.sha256}")
    return 0

