#!/usr/bin/env python3
"""Publish a release to an S3-compatible store (``sanic-ota-publish``), run from a checkout.

The tool is sanic_ota/tools/publish.py (--help for its usage); _run.py starts it.
"""

import sys

from _run import run

if __name__ == "__main__":
    sys.exit(run("publish"))
