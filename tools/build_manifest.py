#!/usr/bin/env python3
"""Sign a release's manifest (``sanic-ota-manifest``), run from a checkout.

The tool is sanic_ota/tools/build_manifest.py (--help for its usage); _run.py starts it.
"""

import sys

from _run import run

if __name__ == "__main__":
    sys.exit(run("build_manifest"))
