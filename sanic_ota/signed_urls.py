"""Signed download URLs, for clients that cannot send ``Authorization: token`` (AT+USEROTA).

A signed URL is the ordinary download URL with three more query parameters::

    /v1/device/rom/?action=download_rom&version=V&filename=F&key=NAME&expires=UNIX&sig=HEX

``sig`` is the HMAC-SHA256, keyed with the key's current token, of a fixed
domain-separation prefix followed by the key name, version, file name and expiry,
each as its length and its bytes, so no two different field sets sign the same
message (``a`` + ``bc`` is not ``ab`` + ``c``) and a signature made for anything else
in this project can never pass as one. The token is the key: removing a key, or
giving it a new token, invalidates every URL signed for it at once, with no list of
issued URLs to keep. A signature says nothing about any other file or release.

Pure: no Sanic, no clock of its own (``now`` is passed in), no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Container, Iterable
from urllib.parse import urlencode

from sanic_ota.errors import Forbidden
from sanic_ota.keys import Key

#: Query parameters a signed URL adds to the download URL.
KEY_PARAM, EXPIRES_PARAM, SIG_PARAM = "key", "expires", "sig"
#: Signed URLs live 7 days unless asked otherwise (``tools/sign_url.py --expires``).
DEFAULT_LIFETIME = 7 * 24 * 3600
#: The longest lifetime the tool and the admin endpoint mint: a URL cannot be recalled
#: except by replacing its key's token, so it should not outlive a release by years.
MAX_LIFETIME = 366 * 24 * 3600
#: Bound on ``expires`` digits: a year past 9999 is an altered URL, not a long-lived one.
MAX_EXPIRES_DIGITS = 12
#: Separates these signatures from any other HMAC keyed with a token; bump on any format change.
DOMAIN = b"sanic-ota signed download URL v1\x00"

_HEX_SIG = re.compile(r"[0-9a-f]{64}")
#: ``sig=`` and its value as it may appear in a logged URL or query string.
#: ``sig=`` with the name spelled plainly or percent-encoded (``si%67=`` is the same parameter).
_SIG_IN_TEXT = re.compile(r"(?i)((?<!\w)(?:s|%[57]3)(?:i|%[46]9)(?:g|%[46]7)=)[^&\s\"'#<>]+")
REDACTED = "REDACTED"
_DIGITS = re.compile(rf"[0-9]{{1,{MAX_EXPIRES_DIGITS}}}")


class SignedUrlError(Forbidden):
    """A signed URL that does not open its file: 403, never 401.

    Never 401: ESP-IDF's client retries a 401 ten times on the same connection, and
    a signed URL has nothing better to send the second time. The message names the
    key at most, never the signature.
    """


class MalformedSignedUrl(SignedUrlError):
    """``key``, ``expires`` or ``sig`` missing, repeated, or not of their shape."""


class UnknownSigningKey(SignedUrlError):
    """No key of that name (removed from the keys file), or more than one."""


class BadSignature(SignedUrlError):
    """The signature does not match: a field was altered, the URL is for another
    file or release, or the key's token was replaced since it was signed."""


class ExpiredUrl(SignedUrlError):
    """A genuine signature whose ``expires`` has passed."""


def _field(value: str) -> bytes:
    data = value.encode("utf-8", "surrogateescape")
    return len(data).to_bytes(4, "big") + data


def message(key_name: str, version: str, filename: str, expires: int) -> bytes:
    """The signed bytes: prefix, then each field length-prefixed, in a fixed order."""
    return DOMAIN + b"".join(_field(v) for v in (key_name, version, filename, str(expires)))


def signature(key: Key, version: str, filename: str, expires: int) -> str:
    """The ``sig`` parameter, lowercase hex, for ``key`` and its current token."""
    token = key.token.encode("utf-8", "surrogateescape")
    return hmac.new(token, message(key.name, version, filename, expires), hashlib.sha256).hexdigest()


def query(key: Key, version: str, filename: str, expires: int) -> str:
    """The whole query string of a signed download URL (parameters percent-encoded)."""
    return urlencode({
        "action": "download_rom", "version": version, "filename": filename,
        KEY_PARAM: key.name, EXPIRES_PARAM: str(expires), SIG_PARAM: signature(key, version, filename, expires),
    })


def url(base: str, key: Key, version: str, filename: str, expires: int) -> str:
    """``base`` (scheme, host, port, e.g. ``http://ota.example:8000``) plus path and query."""
    return f"{base.rstrip('/')}/v1/device/rom/?{query(key, version, filename, expires)}"


def redact(text: str) -> str:
    """``text`` with the value of every ``sig=`` replaced, for any line about to be logged."""
    return _SIG_IN_TEXT.sub(rf"\g<1>{REDACTED}", text)


def is_signed(params: Container[str]) -> bool:
    """Whether a request's parameter names ask for signed-URL authentication."""
    return SIG_PARAM in params


def _key_named(keys: Iterable[Key], name: str) -> Key:
    found = [k for k in keys if hmac.compare_digest(k.name.encode("utf-8", "surrogateescape"),
                                                    name.encode("utf-8", "surrogateescape"))]
    if len(found) != 1:  # none: removed; several: the keys file is ambiguous, refuse both
        raise UnknownSigningKey("signed URL for an unknown key")  # the name may be a mistyped token
    return found[0]


def check(
    keys: Iterable[Key], key_name: str | None, version: str, filename: str,
    expires: str | None, sig: str | None, now: float,
) -> Key:
    """The key that signed this URL for exactly ``version``/``filename``, or a ``SignedUrlError``.

    ``version`` and ``filename`` are the request's, already checked as plain names.
    The signature is checked before the expiry, so "expired" is only ever said of a
    URL that was genuinely signed; an altered ``expires`` is a bad signature.
    """
    if not key_name or expires is None or sig is None:
        raise MalformedSignedUrl(f"a signed URL needs {KEY_PARAM}, {EXPIRES_PARAM} and {SIG_PARAM}")
    if not _DIGITS.fullmatch(expires):
        raise MalformedSignedUrl(f"{EXPIRES_PARAM} must be a Unix time in seconds")
    if not _HEX_SIG.fullmatch(sig):
        raise MalformedSignedUrl(f"{SIG_PARAM} must be 64 lowercase hex digits")
    key = _key_named(keys, key_name)
    if not hmac.compare_digest(signature(key, version, filename, int(expires)), sig):
        raise BadSignature(f"signed URL of key {key.name!r} does not match this file or was altered")
    if int(expires) <= now:
        raise ExpiredUrl(f"signed URL of key {key.name!r} expired")
    return key
