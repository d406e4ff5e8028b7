#!/usr/bin/env python3
"""Check a manifest and its files (``sanic-ota-verify``), run from a checkout.

The tool is sanic_ota/tools/verify_manifest.py (--help for its usage); _run.py starts it.
"""

import sys

from _run import run

if __name__ == "__main__":
    sys.exit(run("verify_manifest"))
