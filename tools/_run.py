"""Run one of sanic_ota's tools from a checkout, with the Python that has the package.

``tools/keygen.py NAME`` starts whichever ``python3`` comes first on PATH. After
``make install`` the package and its dependencies live in the checkout's ``.venv``,
not in that Python, so when the import fails here the tool starts again with
``.venv/bin/python`` beside ``tools/`` (the same layout ``make install-service`` makes
in /opt/sanic-ota). Nothing is added to ``sys.path``: the package is imported as it
was installed, by ``make install`` or pip. This file runs on whatever ``python3`` is
found, so it keeps to syntax that Python 3.7 can read until it reaches the venv.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

VENV = Path(__file__).resolve().parent.parent / ".venv"


def run(tool: str) -> int:
    """Run ``sanic_ota.tools.<tool>.main()`` with this script's arguments; its exit code."""
    try:
        module = importlib.import_module(f"sanic_ota.tools.{tool}")
    except ModuleNotFoundError as e:
        python = VENV / "bin" / "python"
        if not python.exists() or Path(sys.prefix).resolve() == VENV.resolve():
            print(f"{tool}: {e} (in {sys.executable}); run `make install` first", file=sys.stderr)
            return 1
        os.execv(python, [str(python), os.path.abspath(sys.argv[0]), *sys.argv[1:]])
    main: Callable[[], int] = module.main
    return main()
