"""Release names: which ones are safe to use as a path, and which one is newest.

Release directories are named by people (``v1``, ``v1.10.0``, ``2.0.0-rc1``), so the
order is "natural": numbers compare as numbers (v1.10.0 is newer than v1.9.2), and a
pre-release suffix after ``-`` sorts before its release (2.0.0-rc1 < 2.0.0), as in
SemVer. Plain string order would hand modules v1.9 after v1.10.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sanic_ota.errors import BadRequest

#: Longest name accepted for a release or a file. The module itself allows 64.
MAX_NAME_LENGTH = 64

_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_TOKEN = re.compile(r"\d+|[A-Za-z]+")

#: Part of a sort key: (0, number) for digits, (1, text) for letters, so numbers and
#: words never meet in one comparison.
_Part = tuple[int, int | str]


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


def _parts(text: str) -> tuple[_Part, ...]:
    return tuple(
        (0, int(tok)) if tok.isdigit() else (1, tok.lower()) for tok in _TOKEN.findall(text)
    )


def version_key(version: str) -> tuple[tuple[_Part, ...], int, tuple[_Part, ...], str]:
    """Sort key putting releases in version order (newest last).

    A leading ``v`` is ignored; a release sorts after its own pre-releases; the raw
    name breaks ties so the order is total.
    """
    core, dash, pre = version.removeprefix("v").removeprefix("V").partition("-")
    return (_parts(core), 0 if dash else 1, _parts(pre), version)


def newest_first(versions: Iterable[str]) -> list[str]:
    return sorted(versions, key=version_key, reverse=True)
