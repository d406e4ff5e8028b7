"""Write the example release into partitions/ (``make example``, ``sanic-ota-example``).

    tools/make_example_release.py [--partitions DIR] [--version V] [--app-version A]

writes ``DIR/V/ota.bin`` (an ESP32 application image carrying version A, default V)
and ``DIR/V/mqtt_ca.bin``; see ``sanic_ota.example_release`` for what they hold.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sanic_ota.errors import OtaError
from sanic_ota.example_release import write_release
from sanic_ota.settings import Settings
from sanic_ota.store.local import LocalStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", dest="directory", metavar="DIR", type=Path, default=Path("partitions"),
                        help="the releases directory (default: partitions)")
    parser.add_argument("--version", default="v1.0.0", help="release directory name")
    parser.add_argument("--app-version", help="version inside the image (default: --version)")
    args = parser.parse_args(argv)
    try:
        store = LocalStore.from_settings(Settings(partitions_dir=args.directory))
        written = write_release(store, args.version, args.app_version)
    except OtaError as e:
        parser.error(e.message)
    except ValueError as e:
        parser.error(str(e))
    for path, length in written:
        print(f"wrote {path} ({length} bytes)")
    return 0
