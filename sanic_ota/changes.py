"""What changed on disk, and what must be re-read because of it.

A pure function over watchfiles' change sets, so the rules (which files are
temporary, which release a path belongs to) are tested without an event loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sanic_ota.versions import is_plain_name

#: Suffixes of files being written by editors and copy tools, never part of a release.
TEMPORARY_SUFFIXES = ("~", ".swp", ".swx", ".tmp", ".part", ".partial", ".crdownload")


def is_temporary(name: str) -> bool:
    """rsync's ``.name.XXXXXX``, editors' ``name~`` and ``.name.swp``, any dotfile."""
    return name.startswith(".") or name.endswith(TEMPORARY_SUFFIXES)


@dataclass(frozen=True)
class Layout:
    """Absolute paths of what is watched."""

    partitions: Path
    manifests: Path
    keys_file: Path
    watch_manifests: bool  # offline mode: manifests are copied in by operators

    @property
    def latest_file(self) -> Path:
        return self.partitions / "LATEST"


@dataclass(frozen=True)
class Plan:
    versions: frozenset[str] = frozenset()
    keys: bool = False
    pin: bool = False

    def __bool__(self) -> bool:
        return bool(self.versions or self.keys or self.pin)

    def __or__(self, other: Plan) -> Plan:
        return Plan(self.versions | other.versions, self.keys or other.keys, self.pin or other.pin)


def plan(changes: Iterable[tuple[object, str]], layout: Layout) -> Plan:
    """The releases to re-index and whether keys or the pin must be re-read."""
    versions: set[str] = set()
    keys = pin = False
    for _, raw in changes:
        path = Path(raw)
        if path == layout.keys_file:
            keys = True
        elif path == layout.latest_file:
            pin = True
        elif path.is_relative_to(layout.partitions) and path != layout.partitions:
            parts = path.relative_to(layout.partitions).parts
            if _belongs(parts):
                versions.add(parts[0])
        elif layout.watch_manifests and path.parent == layout.manifests and path.suffix == ".json":
            if is_plain_name(path.stem) and not is_temporary(path.name):
                versions.add(path.stem)
    return Plan(frozenset(versions), keys, pin)


def _belongs(parts: tuple[str, ...]) -> bool:
    """A path inside a release directory that can change what the release serves."""
    if not is_plain_name(parts[0]) or any(is_temporary(p) for p in parts):
        return False
    return len(parts) <= 2  # the directory itself or a file directly in it
