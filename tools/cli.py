#!/usr/bin/env python3
"""Channels, rollouts, uploads and the fleet view (``sanic-ota``), run from a checkout.

The tool is sanic_ota/tools/cli.py (--help for its usage); _run.py starts it.
"""

import sys

from _run import run

if __name__ == "__main__":
    sys.exit(run("cli"))
