#!/usr/bin/env python3
"""Write the example release (``sanic-ota-example``), run from a checkout.

The tool is sanic_ota/tools/make_example_release.py (--help for its usage); _run.py starts it.
"""

import sys

from _run import run

if __name__ == "__main__":
    sys.exit(run("make_example_release"))
