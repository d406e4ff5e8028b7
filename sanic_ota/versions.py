"""Release names: which ones are safe to use as a path, which are versions, which is newest.

Release directories are named by people, so "newest" needs a grammar, and a name
outside it is never a candidate (a directory called ``old`` or ``backup-2019`` must
not win). A version is::

    version      = ["v" | "V"] release [pre-release] ["+" build]
    release      = number *("." number)                  1, 1.10.0, 2024.5
    pre-release  = [sep] label [[sep] number]            rc1, -rc.1, -beta.2, .dev3, a1
    label        = dev | a | alpha | b | beta | rc | c | pre | preview   (any case)
    sep          = "-" | "." | "_"
    build        = ident *("." ident), ident = 1*(letter | digit | "-")

It is PEP 440's release and pre-release segments, with SemVer's ``-rc.1`` spelling
and SemVer's ``+build`` metadata. Order: numbers compare as numbers (v1.10.0 is newer
than v1.9.2), trailing zeros do not count (v1.0 is v1.0.0), a pre-release sorts
before its release (dev < alpha < beta < rc < release, and rc2 < rc10; a label with
no number is number 0), the ``v`` and the ``+build`` part are ignored. So two names
can be the same version (``v2.0.0``, ``2.0.0+ci.7``); which one is newest is then
ambiguous, and ``releases.Index`` refuses to choose. Everything else (post-releases,
``1.0.0-hotfix``, dates like ``2019-05-01``) is not a version: such a release is
served by its name only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sanic_ota.errors import BadRequest

#: Longest name accepted for a release or a file. The module itself allows 64.
MAX_NAME_LENGTH = 64

_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_VERSION = re.compile(
    r"v?(?P<release>[0-9]+(?:\.[0-9]+)*)"
    r"(?:[-._]?(?P<label>dev|alpha|a|beta|b|rc|c|preview|pre)(?:[-._]?(?P<number>[0-9]+))?)?"
    r"(?:\+[0-9a-z-]+(?:\.[0-9a-z-]+)*)?",
    re.ASCII | re.IGNORECASE,
)

#: Pre-release labels and where they sort; a release without one is ``FINAL``.
STAGES = {"dev": 0, "a": 1, "alpha": 1, "b": 2, "beta": 2, "rc": 3, "c": 3, "pre": 3, "preview": 3}
FINAL = 4


@dataclass(frozen=True, order=True)
class Version:
    """What a version name means for ordering; equal objects are the same version."""

    release: tuple[int, ...]  # trailing zeros dropped: 1.0 and 1.0.0 are one version
    stage: int  # ``STAGES`` value of the pre-release label, ``FINAL`` for a release
    number: int  # the pre-release number (rc2: 2), 0 for a release


#: Sorts below every version, for names that are not one.
_NOT_A_VERSION = Version((), -1, -1)


def check_name(value: str | None, what: str) -> str:
    """Return ``value`` if it is a plain name usable as one path component.

    Anything else (empty, too long, ``..``, slashes, backslashes, NUL, control or
    non-ASCII characters) raises ``BadRequest``: the name is never joined to a path
    before passing here, so no request can reach outside ``partitions/``.
    """
    if value is None or value == "":
        raise BadRequest(f"missing {what}")
    if len(value) > MAX_NAME_LENGTH:
        raise BadRequest(f"{what} is longer than {MAX_NAME_LENGTH} characters")
    if not _PLAIN_NAME.fullmatch(value) or ".." in value:
        raise BadRequest(
            f"{what} must be a plain name (letters, digits, '.', '_', '+', '-')"
        )
    return value


def is_plain_name(value: str) -> bool:
    try:
        check_name(value, "name")
    except BadRequest:
        return False
    return True


def is_release_file(name: str) -> bool:
    """Files that belong to a release: ``<partition>.bin``, never temporary or hidden ones."""
    return name.endswith(".bin") and is_plain_name(name)


def parse_version(name: str) -> Version | None:
    """The ``Version`` a release name stands for, or None if it is not a version."""
    if len(name) > MAX_NAME_LENGTH:
        return None
    match = _VERSION.fullmatch(name)
    if match is None:
        return None
    release = tuple(int(part) for part in match["release"].split("."))
    while release and release[-1] == 0:
        release = release[:-1]
    label = match["label"]
    if label is None:
        return Version(release, FINAL, 0)
    return Version(release, STAGES[label.lower()], int(match["number"] or 0))


def is_version(name: str) -> bool:
    return parse_version(name) is not None


def version_key(name: str) -> tuple[bool, Version, str]:
    """A total order over all names: non-versions first, then versions oldest to newest.

    The raw name breaks ties between names of the same version, so sorting never
    depends on input order.
    """
    version = parse_version(name)
    return (version is not None, version or _NOT_A_VERSION, name)


def newest_first(names: Iterable[str]) -> list[str]:
    """Versions newest first, then the names that are not versions, in name order.

    Each name is parsed once: sorted by ``version_key`` descending, the versions come
    first, newest first, and the other names after them in reverse name order.
    """
    keys = sorted(map(version_key, names), reverse=True)
    split = next((i for i, (is_version, _, _) in enumerate(keys) if not is_version), len(keys))
    return [name for _, _, name in keys[:split]] + [name for _, _, name in reversed(keys[split:])]


def newest(names: Iterable[str]) -> list[str]:
    """Every name that is the highest version among ``names`` (empty: none is a version).

    More than one means the newest is ambiguous (``v2.0.0`` and ``2.0.0``).
    """
    parsed = [(v, n) for n in names if (v := parse_version(n)) is not None]
    if not parsed:
        return []
    top = max(v for v, _ in parsed)
    return sorted(n for v, n in parsed if v == top)
