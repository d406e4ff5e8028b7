"""Only sanic_ota/web/ may use Sanic: the core, the tools and the checks run without it.

Every module of the package is parsed (not imported), so a module no test happens to
import is checked too, and so is an import inside a function.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import sanic_ota

PACKAGE = Path(sanic_ota.__file__).resolve().parent
CORE = sorted(p for p in PACKAGE.rglob("*.py") if "web" not in p.relative_to(PACKAGE).parts)


def module_name(path: Path) -> str:
    parts = ("sanic_ota", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_sanic(name: str) -> bool:
    """Sanic itself or one of its packages (sanic_routing, sanic_ext, sanic_testing...)."""
    top = name.split(".")[0]
    return top == "sanic" or (top.startswith("sanic_") and top != "sanic_ota")


def forbidden_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """What ``module`` imports that would bring Sanic in.

    Sanic's packages anywhere in the file; ``sanic_ota.web`` at import time (outside a
    function), since importing it imports Sanic. The package's lazy ``app`` attribute
    imports the web layer inside a function, when ``sanic sanic_ota.app`` asks for it.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: list[str] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for name in names:
            web = name == "sanic_ota.web" or name.startswith("sanic_ota.web.")
            if is_sanic(name) or (web and not in_function):
                found.append(f"line {getattr(node, 'lineno', '?')}: {name}")
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(source), False)
    return sorted(set(found))


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("import sanic", "sanic_ota.x", ["line 1: sanic"]),
        ("from sanic.response import raw", "sanic_ota.x", ["line 1: sanic.response", "line 1: sanic.response.raw"]),
        ("def f():\n    import sanic_routing", "sanic_ota.x", ["line 2: sanic_routing"]),
        ("from .web import routes", "sanic_ota.x", ["line 1: sanic_ota.web", "line 1: sanic_ota.web.routes"]),
        ("from . import web", "sanic_ota.x", ["line 1: sanic_ota.web"]),
        ("from .. import web", "sanic_ota.tools.x", ["line 1: sanic_ota.web"]),
        ("class C:\n    import sanic_ota.web.server", "sanic_ota.x", ["line 2: sanic_ota.web.server"]),
        ("def app():\n    from sanic_ota.web.server import create_app", "sanic_ota", []),
        ("import sanic_ota.settings\nfrom sanic_ota import keys\nfrom . import images", "sanic_ota.x", []),
    ],
)
def test_the_check_sees_every_way_of_importing_sanic(source: str, module: str, expected: list[str]) -> None:
    assert forbidden_imports(source, module) == expected


def test_no_module_outside_web_imports_sanic() -> None:
    assert len(CORE) > 15  # the whole package outside web/, tools/ included
    found = {
        str(path.relative_to(PACKAGE.parent)): problems
        for path in CORE
        if (problems := forbidden_imports(path.read_text(), module_name(path), path.name == "__init__.py"))
    }
    assert found == {}


def test_importing_every_module_outside_web_leaves_sanic_unloaded() -> None:
    # Also catches Sanic arriving through a third-party import.
    names = [module_name(path) for path in CORE]
    code = f"import importlib, sys\nfor name in {names!r}: importlib.import_module(name)\nprint('sanic' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", "importing the core loaded Sanic"
