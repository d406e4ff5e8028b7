#!/usr/bin/env python3
"""Print a signed download URL (``sanic-ota-sign-url``), run from a checkout.

The tool is sanic_ota/tools/sign_url.py (--help for its usage); _run.py starts it.
"""

import sys

from _run import run

if __name__ == "__main__":
    sys.exit(run("sign_url"))
