"""Create a device key: a new 40-hex-character token, stored under NAME (``sanic-ota-keygen``).

    tools/keygen.py NAME                  # add to authorisation_keys.json in place
    tools/keygen.py NAME --keys FILE      # add to FILE in place
    cat keys.json | tools/keygen.py NAME  # scripts: updated list on stdout
    tools/keygen.py NAME --channel beta   # the key's product build follows channel "beta"

In place, the file is rewritten atomically with mode 0600 and the new token is
printed. A key with the same name is replaced (its other fields kept). Never pipe a
file into this tool and redirect back to that same file: the shell empties the file
before it is read, which is how the original tool lost every key.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sanic_ota.channels import ChannelError, check_channel
from sanic_ota.errors import KeysFileError
from sanic_ota.keys import dump_keys, load_keys, new_token, parse_keys, save_keys, with_key
from sanic_ota.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="the key's name, logged instead of its token")
    parser.add_argument("--keys", type=Path, help="keys file to edit in place "
                        "(default: $SANIC_OTA_KEYS_FILE or authorisation_keys.json)")
    parser.add_argument("--channel", help='the channel the key follows ("channel" in its entry; '
                        "default: stable, or the channel it has)")
    args = parser.parse_args(argv)
    token = new_token()
    if args.channel is not None:
        try:
            check_channel(args.channel)
        except ChannelError as e:
            print(f"keygen: --channel: {e.message}", file=sys.stderr)
            return 2
    try:
        if args.keys is None:
            piped = _stdin_text()
            if piped is not None:
                sys.stdout.write(dump_keys(with_key(parse_keys(piped, "stdin"), args.name, token, args.channel)))
                return 0
        path = args.keys or Settings.from_environ(os.environ).keys_file
        keys = load_keys(path) if path.exists() else []
        if path.exists() and not keys and path.stat().st_size == 0:
            print(f"note: {path} was empty", file=sys.stderr)
        save_keys(path, with_key(keys, args.name, token, args.channel))
    except KeysFileError as e:
        print(f"keygen: {e.message}", file=sys.stderr)
        return 1
    print(f"key {args.name!r} saved in {path}", file=sys.stderr)
    print(token)
    return 0


def _stdin_text() -> str | None:
    """Keys JSON piped in, or None when stdin is a terminal, closed, or empty."""
    if sys.stdin is None or sys.stdin.closed or sys.stdin.isatty():
        return None
    text = sys.stdin.read()
    return text if text.strip() else None

