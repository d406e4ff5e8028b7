"""What changed on disk, and what must be re-read because of it.

``plan`` is a pure function over watchfiles' change sets, so the rules (which files
are temporary, which release a path belongs to: ``store.local.Roots.locate``) are
tested without an event loop. ``snapshot`` and ``diff`` are the backstop for what
file events miss (a replaced or re-linked ``partitions/``, a directory created after
start, a lost watch): a stat signature of everything that is followed
(``Roots.signatures``), compared with the previous one, gives the same kind of
``Plan``. Only ``stat`` is called, never a file's contents.

Watching is for a local disk: the paths come from the ``LocalStore``, and this module
builds none of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sanic_ota.settings import Settings
from sanic_ota.store.local import CHANNEL, PIN, LocalStore, Roots, Signature, signature


@dataclass(frozen=True)
class Layout:
    """What is watched, as the paths resolve now."""

    roots: Roots
    keys_file: Path
    watch_manifests: bool  # offline mode: manifests are copied in by operators


def layout_of(store: LocalStore, settings: Settings) -> Layout:
    """The paths as they resolve now: a symlinked ``partitions/`` may point elsewhere later."""
    return Layout(store.roots(), Path(settings.keys_file).resolve(), not settings.sign_manifests)


@dataclass(frozen=True)
class Plan:
    versions: frozenset[str] = frozenset()
    keys: bool = False
    pin: bool = False  # the pin or a channel file: both are re-read together, quickly

    def __bool__(self) -> bool:
        return bool(self.versions or self.keys or self.pin)

    def __or__(self, other: Plan) -> Plan:
        return Plan(self.versions | other.versions, self.keys or other.keys, self.pin or other.pin)


def plan(changes: Iterable[tuple[object, str]], layout: Layout) -> Plan:
    """The releases to re-index and whether keys or the pin (and the channel files) must be re-read."""
    versions: set[str] = set()
    keys = pin = False
    for _, raw in changes:
        path = Path(raw)
        if path == layout.keys_file:
            keys = True
        elif (found := layout.roots.locate(path, layout.watch_manifests)) == PIN or (found and found[0] == CHANNEL):
            pin = True
        elif found is not None:
            versions.add(found[1])
    return Plan(frozenset(versions), keys, pin)


#: Signatures by ("release", version), ("manifest", version), ("keys", ""), ("pin", "").
Snapshot = dict[tuple[str, str], Signature]
KEYS = ("keys", "")


def snapshot(layout: Layout, only: Plan | None = None) -> Snapshot:
    """Stat signatures of the releases, the pin, the keys file (and, offline, the manifests).

    ``only`` limits it to what a plan names, with None for what is absent, so the
    watcher can record what it is about to re-read.
    """
    found: Snapshot = layout.roots.signatures(
        None if only is None else only.versions, pin=only is None or only.pin, manifests=layout.watch_manifests
    )
    if only is None or only.keys:
        found[KEYS] = signature(layout.keys_file)
    return found


def diff(old: Snapshot, new: Snapshot) -> Plan:
    """What to re-read because ``new`` differs from ``old`` (absent and None are the same)."""
    changed = {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)}
    versions = frozenset(name for kind, name in changed if kind in ("release", "manifest"))
    return Plan(versions, KEYS in changed, PIN in changed or any(kind == CHANNEL for kind, _ in changed))


def merge(seen: Snapshot, part: Snapshot) -> None:
    """Record ``part`` (from ``snapshot(layout, only=...)``) in ``seen``."""
    for key, sig in part.items():
        if sig is None:
            seen.pop(key, None)
        else:
            seen[key] = sig
