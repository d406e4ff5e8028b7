#!/usr/bin/env python3
"""Create a device key (``sanic-ota-keygen``), run from a checkout.

The tool is sanic_ota/tools/keygen.py (--help for its usage); _run.py starts it.
"""

import sys

from _run import run

if __name__ == "__main__":
    sys.exit(run("keygen"))
