"""Only the local store knows where releases live: no other module builds a path under
partitions/ or manifests/, and the web layer reaches storage only through the cache.

Every module of the package and every checkout wrapper in tools/ is parsed (not
imported), so a module no test happens to import is checked too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

import sanic_ota

PACKAGE = Path(sanic_ota.__file__).resolve().parent
#: The one module that knows the layout, and the settings that name its two roots.
LAYOUT_MODULES = {PACKAGE / "store" / "local.py", PACKAGE / "settings.py"}
#: Settings naming the roots (releases, manifests, channel files), and the local store's own attributes for them.
LAYOUT_NAMES = {"partitions_dir", "manifests_dir", "channels_dir", "partitions", "manifests"}
#: File names of the layout.
LAYOUT_FILES = {"LATEST"}


def layout_uses(source: str) -> list[str]:
    """Where ``source`` reaches for the release layout itself."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in LAYOUT_NAMES:
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Constant) and node.value in LAYOUT_FILES:
            found.append(f"line {node.lineno}: {node.value!r}")
    return found


def web_storage_imports(source: str) -> list[str]:
    """Imports of a store implementation, or of the store's modules at all, from the web layer."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        found += [f"line {node.lineno}: {name}" for name in names if name.startswith("sanic_ota.store")]
    return found


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("path = settings.partitions_dir / version / name", ["line 1: .partitions_dir"]),
        ("path = Path(self.settings.manifests_dir) / 'v1.json'", ["line 1: .manifests_dir"]),
        ("os.listdir(self.partitions / version)", ["line 1: .partitions"]),
        ("pin = root / 'LATEST'", ["line 1: 'LATEST'"]),
        ("release = store.release(version)\nmanifest = manifests.verify(data, key, version)", []),
        ('"""partitions/LATEST pins one."""', []),
    ],
)
def test_the_check_sees_a_path_built_from_the_layout(source: str, expected: list[str]) -> None:
    assert layout_uses(source) == expected


def test_only_the_local_store_builds_paths_under_partitions_and_manifests() -> None:
    modules = sorted(PACKAGE.rglob("*.py")) + sorted((REPO / "tools").glob("*.py"))
    assert len(modules) > 30
    found = {
        str(path.relative_to(REPO)): uses
        for path in modules
        if path not in LAYOUT_MODULES and (uses := layout_uses(path.read_text()))
    }
    assert found == {}


def test_the_web_layer_reaches_storage_only_through_the_verified_cache() -> None:
    found = {
        str(path.relative_to(REPO)): imports
        for path in sorted((PACKAGE / "web").rglob("*.py"))
        if (imports := web_storage_imports(path.read_text()))
    }
    assert found == {}
