"""Device keys: the original server's keys file, read once and looked up in constant time.

The file is the original format, a JSON list of ``{"Name": ..., "Token": ...}``
objects. Entries may carry more fields (``"Role"``, notes); they are kept as they
are when the file is rewritten, so an upgrade never drops what an operator wrote.

While the server runs, ``reload`` applies the file's rules: a file that disappears
revokes every device key, one that cannot be read or parsed changes nothing, and one
that group or others can read may only take keys away. It says which case applied in
a ``KeysFileStatus``, for the log, ``/status`` and ``/metrics``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from sanic_ota.channels import DEFAULT_CHANNEL, ChannelError, check_channel
from sanic_ota.errors import KeysFileError
from sanic_ota.files import write_atomic

#: ESP-AT firmware is configured with a 40-hex-character token by default.
TOKEN_BYTES = 20
#: ``"Role"`` of keys that may open ``/status`` and ``/metrics``.
ADMIN_ROLE = "admin"
#: The keys-file field naming a key's channel.
CHANNEL_FIELD = "channel"
#: Why a keys file on disk is not (fully) applied: a small fixed set, used as a metrics label.
PROBLEMS = ("missing", "unreadable", "invalid", "open_to_others")


@dataclass(frozen=True)
class Key:
    name: str
    token: str = field(repr=False)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @cached_property  # asked on every request; a key never changes (the keyring is replaced whole)
    def role(self) -> str:
        return str(self.extra.get("Role", "device"))

    @cached_property
    def channel(self) -> str:
        """The channel the key's product build follows (``"channel"`` in its entry), ``stable`` without one."""
        return str(self.extra.get(CHANNEL_FIELD, DEFAULT_CHANNEL))

    def to_dict(self) -> dict[str, Any]:
        return {"Name": self.name, "Token": self.token, **self.extra}

    @classmethod
    def from_dict(cls, entry: Any, index: int) -> Key:
        if not isinstance(entry, dict):
            raise KeysFileError(f"entry {index} is {type(entry).__name__}, expected an object")
        name, token = entry.get("Name"), entry.get("Token")
        if not isinstance(name, str) or not name:
            raise KeysFileError(f'entry {index} has no "Name" string')
        if not isinstance(token, str) or not token:
            raise KeysFileError(f'entry {index} ("{name}") has no "Token" string')
        try:
            name.encode(), token.encode()
        except UnicodeEncodeError:
            raise KeysFileError(f'entry {index}: "Name" and "Token" must be valid text') from None
        extra = {k: v for k, v in entry.items() if k not in ("Name", "Token")}
        if CHANNEL_FIELD in extra:
            try:
                check_channel(extra[CHANNEL_FIELD])
            except ChannelError as e:
                raise KeysFileError(f'entry {index} ("{name}"): "{CHANNEL_FIELD}": {e.message}') from None
        return cls(name=name, token=token, extra=extra)


def new_token() -> str:
    return secrets.token_hex(TOKEN_BYTES)


def parse_keys(text: str, source: str = "keys file") -> list[Key]:
    """Parse the keys file's JSON; an empty text is an empty list."""
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:  # also a 5,000-digit number or nesting too deep
        raise KeysFileError(f"{source} is not valid JSON: {e}") from e
    if not isinstance(data, list):
        raise KeysFileError(f"{source} must hold a JSON list, found {type(data).__name__}")
    try:
        return [Key.from_dict(entry, i) for i, entry in enumerate(data)]
    except KeysFileError as e:
        raise KeysFileError(f"{source}: {e.message}") from None


def dump_keys(keys: Iterable[Key]) -> str:
    return json.dumps([k.to_dict() for k in keys], indent=4) + "\n"


def load_keys(path: Path) -> list[Key]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise KeysFileError(
            f"keys file {path} not found; create one with: tools/keygen.py NAME --keys {path}"
        ) from e
    except (OSError, UnicodeDecodeError) as e:
        raise KeysFileError(f"cannot read keys file {path}: {e}") from e
    return parse_keys(text, str(path))


def save_keys(path: Path, keys: Iterable[Key]) -> None:
    """Write the keys file atomically with mode 0600: it holds secrets."""
    write_atomic(Path(path), dump_keys(keys).encode(), mode=0o600)


def with_key(keys: Iterable[Key], name: str, token: str, channel: str | None = None) -> list[Key]:
    """The list with a key named ``name`` set to ``token``, in place of any of that name;
    ``channel``, if given, is set in its entry too (other fields are kept)."""
    result, replaced = [], False
    named = {} if channel is None else {CHANNEL_FIELD: check_channel(channel)}
    for key in keys:
        if key.name == name:
            extra = {**key.extra, **named}
            result.append(Key(name=name, token=token, extra=extra))
            replaced = True
        else:
            result.append(key)
    if not replaced:
        result.append(Key(name=name, token=token, extra=named))
    return result


#: Keys the token digests, new in every process: a digest says nothing outside it, and
#: nobody who does not know it can choose tokens whose digests collide in the dict.
_LOOKUP_KEY = secrets.token_bytes(32)


def _digest(token: str) -> bytes:
    """Keyed BLAKE2b (a MAC by design, RFC 7693): 0.7 us a token, where OpenSSL's
    one-shot HMAC-SHA256 took 4 us and let go of the GIL in the middle of a request."""
    return hashlib.blake2b(token.encode("utf-8", "surrogateescape"), key=_LOOKUP_KEY, digest_size=32).digest()


class Keyring:
    """The loaded keys, looked up by token in one dict access, however many keys there are.

    Lookup goes through a keyed hash of the token under a random per-process key, so
    the time it takes says nothing about how many leading characters of a guess were
    right (a dict compares the digests, never the tokens, and a guess cannot aim at a
    digest it cannot compute); the final check is ``hmac.compare_digest`` of the
    digests as well.

    ``admin_pages_only`` are admin keys kept after the keys file disappeared: they
    open ``/status`` and ``/metrics`` (which say why nothing else works), nothing else.
    """

    def __init__(self, keys: Iterable[Key], admin_pages_only: Iterable[Key] = ()) -> None:
        self.keys = list(keys)
        self.admin_pages_only = list(admin_pages_only)
        self._digests = {k.token: _digest(k.token) for k in (*self.keys, *self.admin_pages_only)}
        self._by_digest = {self._digests[k.token]: k for k in self.keys}
        self._pages_only = {self._digests[k.token]: k for k in self.admin_pages_only}

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, token: str, admin_page: bool = False) -> Key | None:
        """The key with ``token``; ``admin_page``: the request is for /status or /metrics."""
        digest = _digest(token)
        key = self._by_digest.get(digest)
        if key is None and admin_page:
            key = self._pages_only.get(digest)
        if key is not None and hmac.compare_digest(self._digests[key.token], digest):
            return key
        return None

    def find_named(self, name: str, token: str) -> Key | None:
        """For HTTP Basic (admin pages only): the key only if both its name and token match."""
        key = self.find(token, admin_page=True)
        if key is not None and hmac.compare_digest(key.name.encode(), name.encode()):
            return key
        return None


@dataclass(frozen=True)
class KeysFileStatus:
    """Whether the keys file on disk is applied in full, and if not, why (for log, /status, /metrics)."""

    problem: str | None = None  # one of PROBLEMS
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None


def removals_only(previous: Keyring, found: Iterable[Key]) -> Keyring:
    """What a keys file that others can read may do: take keys away, never add one.

    A key stays only if the file still has its name with the same token; a changed
    token is a removal of the old one, and the new one is not trusted. A key that the
    file would make an admin keeps its previous role; one it makes a device loses admin.
    """
    present = {(k.name, k.token): k for k in found}

    def kept(keys: list[Key]) -> list[Key]:
        result = []
        for old in keys:
            new = present.get((old.name, old.token))
            if new is not None:
                promoted = new.role == ADMIN_ROLE and old.role != ADMIN_ROLE
                result.append(old if promoted else new)
        return result

    return Keyring(kept(previous.keys), kept(previous.admin_pages_only))


def reload(previous: Keyring, path: Path) -> tuple[Keyring, KeysFileStatus]:
    """The keys to use after ``path`` changed, and whether the file is applied in full.

    Fail closed: a missing file revokes every device key (admin keys keep only the
    admin pages, so an operator can see why). A file that cannot be read or is not
    valid changes nothing: half an edit must not lock every module out. A file that
    group or others can read is not trusted to add a key, but its removals apply at
    once, so a revocation never waits for a chmod.
    """
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            data = handle.read()
    except FileNotFoundError:
        admins = [k for k in previous.keys + previous.admin_pages_only if k.role == ADMIN_ROLE]
        return Keyring([], admins), KeysFileStatus(
            "missing", f"keys file {path} is missing: every device key is refused until it is back"
        )
    except OSError as e:
        return previous, KeysFileStatus(
            "unreadable", f"cannot read keys file {path} ({e.strerror}): the previous keys stay in force"
        )
    try:
        keys = parse_keys(data.decode("utf-8"), str(path))
    except UnicodeDecodeError:
        return previous, KeysFileStatus(
            "invalid", f"keys file {path} is not UTF-8 text: the previous keys stay in force"
        )
    except KeysFileError as e:
        return previous, KeysFileStatus("invalid", f"{e.message}: the previous keys stay in force")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return removals_only(previous, keys), KeysFileStatus(
            "open_to_others",
            f"keys file {path} is readable by group or others: only removed keys are applied, "
            f"no key is added or changed until you run: chmod 600 {path}",
        )
    return Keyring(keys), KeysFileStatus()
