"""Device keys: the original server's keys file, read once and looked up in constant time.

The file is the original format, a JSON list of ``{"Name": ..., "Token": ...}``
objects. Entries may carry more fields (``"Role"``, notes); they are kept as they
are when the file is rewritten, so an upgrade never drops what an operator wrote.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sanic_ota.errors import KeysFileError
from sanic_ota.files import write_atomic

#: ESP-AT firmware is configured with a 40-hex-character token by default.
TOKEN_BYTES = 20


@dataclass(frozen=True)
class Key:
    name: str
    token: str = field(repr=False)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def role(self) -> str:
        return str(self.extra.get("Role", "device"))

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
        return cls(name=name, token=token, extra=extra)


def new_token() -> str:
    return secrets.token_hex(TOKEN_BYTES)


def parse_keys(text: str, source: str = "keys file") -> list[Key]:
    """Parse the keys file's JSON; an empty text is an empty list."""
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
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


def with_key(keys: Iterable[Key], name: str, token: str) -> list[Key]:
    """The list with a key named ``name`` set to ``token``, in place of any of that name."""
    result, replaced = [], False
    for key in keys:
        if key.name == name:
            result.append(Key(name=name, token=token, extra=key.extra))
            replaced = True
        else:
            result.append(key)
    if not replaced:
        result.append(Key(name=name, token=token))
    return result


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class Keyring:
    """The loaded keys, looked up by token.

    Lookup goes through the SHA-256 of the token, so the time it takes says nothing
    about how many leading characters of a guess were right; the final comparison is
    ``hmac.compare_digest`` as well.
    """

    def __init__(self, keys: Iterable[Key]) -> None:
        self.keys = list(keys)
        self._by_digest = {_digest(k.token): k for k in self.keys}

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, token: str) -> Key | None:
        key = self._by_digest.get(_digest(token))
        if key is not None and hmac.compare_digest(_digest(key.token), _digest(token)):
            return key
        return None

    def find_named(self, name: str, token: str) -> Key | None:
        """For HTTP Basic: the key only if both its name and token match."""
        key = self.find(token)
        if key is not None and hmac.compare_digest(key.name.encode(), name.encode()):
            return key
        return None
