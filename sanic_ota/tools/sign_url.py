"""Print a signed download URL for a client that cannot send headers (``sanic-ota-sign-url``).

    tools/sign_url.py NAME VERSION FILENAME                 # valid 7 days, http://127.0.0.1:8000
    tools/sign_url.py NAME VERSION FILENAME --expires 3600 --base https://ota.example.com
    make url KEY=NAME VERSION=v1.0.0 FILE=ota.bin

The URL downloads exactly that file of that release with no Authorization header
(for AT+USEROTA), until it expires or until the key is removed or given a new token.
Only the URL is printed on stdout, so ``url=$(tools/sign_url.py ...)`` works; it
holds a credential for that one file: hand it only to the device that needs it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from sanic_ota import signed_urls
from sanic_ota.errors import BadRequest, KeysFileError
from sanic_ota.keys import load_keys
from sanic_ota.settings import Settings
from sanic_ota.versions import check_name

DEFAULT_BASE = "http://127.0.0.1:8000"


def _lifetime(text: str) -> int:
    try:
        seconds = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < seconds <= signed_urls.MAX_LIFETIME:
        raise argparse.ArgumentTypeError(f"must be from 1 to {signed_urls.MAX_LIFETIME} seconds")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="the key whose token signs the URL (its Name in the keys file)")
    parser.add_argument("version", help="the release, as in partitions/VERSION/")
    parser.add_argument("filename", help="the file, as in partitions/VERSION/FILENAME")
    parser.add_argument("--expires", type=_lifetime, default=signed_urls.DEFAULT_LIFETIME, metavar="SECONDS",
                        help=f"lifetime in seconds (default {signed_urls.DEFAULT_LIFETIME}, 7 days)")
    parser.add_argument("--base", default=DEFAULT_BASE,
                        help=f"scheme, host and port the device reaches the server at (default {DEFAULT_BASE})")
    parser.add_argument("--keys", type=Path,
                        help="keys file (default: $SANIC_OTA_KEYS_FILE or authorisation_keys.json)")
    args = parser.parse_args(argv)
    if not args.base.startswith(("http://", "https://")):
        parser.error("--base must start with http:// or https://")
    try:
        version, filename = check_name(args.version, "version"), check_name(args.filename, "filename")
        path = args.keys or Settings.from_environ(os.environ).keys_file
        found = [k for k in load_keys(path) if k.name == args.name]
    except (BadRequest, KeysFileError) as e:
        print(f"sign_url: {e.message}", file=sys.stderr)
        return 1
    if len(found) != 1:
        what = "no key" if not found else "more than one key"
        print(f"sign_url: {what} named {args.name!r} in {path}", file=sys.stderr)
        return 1
    expires = int(time.time()) + args.expires
    print(signed_urls.url(args.base, found[0], version, filename, expires))
    return 0
