#!/usr/bin/env python3
"""A local S3-compatible store to try replicas (``sanic-ota-s3-dev``), run from a checkout.

The tool is sanic_ota/tools/s3_dev.py (--help for its usage); _run.py starts it.
"""

import sys

from _run import run

if __name__ == "__main__":
    sys.exit(run("s3_dev"))
