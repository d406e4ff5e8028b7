"""What changed on disk, and what must be re-read because of it.

``plan`` is a pure function over watchfiles' change sets, so the rules (which files
are temporary, which release a path belongs to) are tested without an event loop.
``snapshot`` and ``diff`` are the backstop for what file events miss (a replaced or
re-linked ``partitions/``, a directory created after start, a lost watch): a stat
signature of everything that is followed, compared with the previous one, gives the
same kind of ``Plan``. Only ``stat`` is called, never a file's contents.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sanic_ota.settings import Settings
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


def layout_of(settings: Settings) -> Layout:
    """The paths as they resolve now: a symlinked ``partitions/`` may point elsewhere later."""
    return Layout(
        partitions=Path(settings.partitions_dir).resolve(),
        manifests=Path(settings.manifests_dir).resolve(),
        keys_file=Path(settings.keys_file).resolve(),
        watch_manifests=not settings.sign_manifests,
    )


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


#: What ``stat`` says about one path (None: absent). Equal signatures: nothing to re-read.
Signature = tuple[object, ...] | None
#: Signatures by ("release", version), ("manifest", version), ("keys", ""), ("pin", "").
Snapshot = dict[tuple[str, str], Signature]
KEYS = ("keys", "")
PIN = ("pin", "")


def snapshot(layout: Layout, only: Plan | None = None) -> Snapshot:
    """Stat signatures of the releases, the pin, the keys file (and, offline, the manifests).

    ``only`` limits it to what a plan names, with None for what is absent, so the
    watcher can record what it is about to re-read.
    """
    found: Snapshot = {}
    if only is None:
        for name in _names(layout.partitions):
            found[("release", name)] = _release(os.path.join(layout.partitions, name))
        if layout.watch_manifests:
            for name in _names(layout.manifests):
                if name.endswith(".json") and is_plain_name(name[: -len(".json")]):
                    found[("manifest", name[: -len(".json")])] = _file(layout.manifests / name)
        found = {k: v for k, v in found.items() if v is not None}
    else:
        for version in only.versions:
            found[("release", version)] = _release(layout.partitions / version)
            if layout.watch_manifests:
                found[("manifest", version)] = _file(layout.manifests / f"{version}.json")
    if only is None or only.pin:
        found[PIN] = _file(layout.latest_file)
    if only is None or only.keys:
        found[KEYS] = _file(layout.keys_file)
    return found


def diff(old: Snapshot, new: Snapshot) -> Plan:
    """What to re-read because ``new`` differs from ``old`` (absent and None are the same)."""
    changed = {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)}
    versions = frozenset(name for kind, name in changed if kind in ("release", "manifest"))
    return Plan(versions, KEYS in changed, PIN in changed)


def merge(seen: Snapshot, part: Snapshot) -> None:
    """Record ``part`` (from ``snapshot(layout, only=...)``) in ``seen``."""
    for key, signature in part.items():
        if signature is None:
            seen.pop(key, None)
        else:
            seen[key] = signature


def _names(directory: Path) -> list[str]:
    try:
        return [name for name in os.listdir(directory) if is_plain_name(name) and not is_temporary(name)]
    except OSError:  # absent, or not a directory (yet)
        return []


def _signature(st: os.stat_result) -> tuple[object, ...]:
    return (st.st_dev, st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_size,
            st.st_mtime_ns, st.st_ctime_ns)


def _file(path: Path | str) -> Signature:
    """The path itself and, for a symlink, what it points to: re-pointing one is a change."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISLNK(st.st_mode):
        return _signature(st)
    try:
        return (_signature(st), _signature(os.stat(path)))
    except OSError:  # dangling
        return (_signature(st), None)


def _release(path: Path | str) -> Signature:
    """A release directory: which directory it is (through a symlink too), and each file
    in it; not its own times, which every temporary file of a copy in progress changes."""
    try:
        link = os.lstat(path)
        st = os.stat(path) if stat.S_ISLNK(link.st_mode) else link
        if not stat.S_ISDIR(st.st_mode):
            return None
        names = sorted(name for name in os.listdir(path) if not is_temporary(name))
    except OSError:
        return None
    identity = (link.st_dev, link.st_ino, link.st_mode, st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_gid)
    return (identity, tuple((name, _file(os.path.join(path, name))) for name in names))
