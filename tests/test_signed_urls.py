"""Tests for sanic_ota.signed_urls: what a signature covers, and every way a URL is refused."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import OTHER_TOKEN, TOKEN, VERSION

from sanic_ota import signed_urls
from sanic_ota.errors import Forbidden
from sanic_ota.keys import Key
from sanic_ota.signed_urls import (
    BadSignature,
    ExpiredUrl,
    MalformedSignedUrl,
    UnknownSigningKey,
    check,
    message,
    signature,
)

KEY = Key("device-1", TOKEN)
KEYS = [KEY, Key("device-2", OTHER_TOKEN)]
NOW = 1_800_000_000
EXPIRES = NOW + 3600


def params(key: Key = KEY, version: str = VERSION, filename: str = "ota.bin", expires: int = EXPIRES) -> dict[str, str]:
    query = signed_urls.query(key, version, filename, expires)
    return {name: values[0] for name, values in parse_qs(query).items()}


def verify(p: dict[str, str], keys: list[Key] = KEYS, version: str = VERSION, filename: str = "ota.bin",
           now: float = NOW) -> Key:
    return check(keys, p.get("key"), version, filename, p.get("expires"), p.get("sig"), now)


def test_a_url_opens_its_file_with_its_key() -> None:
    p = params()
    assert p["action"] == "download_rom" and p["version"] == VERSION and p["filename"] == "ota.bin"
    assert p["key"] == "device-1" and p["expires"] == str(EXPIRES)
    assert verify(p) == KEY


def test_url_is_the_download_path_on_the_base() -> None:
    url = signed_urls.url("https://ota.example:8443/", KEY, VERSION, "ota.bin", EXPIRES)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "ota.example:8443", "/v1/device/rom/")
    assert parse_qs(parts.query)["sig"] == [signature(KEY, VERSION, "ota.bin", EXPIRES)]


def test_expired_only_once_the_time_has_passed() -> None:
    assert verify(params(), now=EXPIRES - 1) == KEY
    with pytest.raises(ExpiredUrl, match="expired"):
        verify(params(), now=EXPIRES)


@pytest.mark.parametrize("field, value", [
    ("key", "device-2"), ("expires", str(EXPIRES + 1)), ("sig", "0" * 64),
])
def test_altering_a_parameter_breaks_the_signature(field: str, value: str) -> None:
    p = dict(params(), **{field: value})
    with pytest.raises(BadSignature):
        verify(p)


def test_other_file_or_other_version_is_refused() -> None:
    with pytest.raises(BadSignature):
        verify(params(), filename="mqtt_ca.bin")
    with pytest.raises(BadSignature):
        verify(params(), version="v1.0.1")


def test_a_flipped_signature_digit_is_refused() -> None:
    p = params()
    p["sig"] = ("1" if p["sig"][0] == "0" else "0") + p["sig"][1:]
    with pytest.raises(BadSignature):
        verify(p)


def test_replaced_token_or_removed_key_invalidates_at_once() -> None:
    p = params()
    with pytest.raises(BadSignature):
        verify(p, keys=[Key("device-1", OTHER_TOKEN)])
    with pytest.raises(UnknownSigningKey, match="unknown key"):
        verify(p, keys=[Key("device-2", OTHER_TOKEN)])


def test_two_keys_of_one_name_are_refused_not_guessed() -> None:
    with pytest.raises(UnknownSigningKey):
        verify(params(), keys=[KEY, Key("device-1", OTHER_TOKEN)])


@pytest.mark.parametrize("field, value", [
    ("key", ""), ("expires", ""), ("expires", "-5"), ("expires", "1e9"), ("expires", "9" * 13),
    ("expires", "１２３"), ("sig", ""), ("sig", "A" * 64), ("sig", "0" * 63), ("sig", "é" * 64),
])
def test_malformed_parameters_are_refused_before_any_key_is_looked_up(field: str, value: str) -> None:
    with pytest.raises(MalformedSignedUrl):
        verify(dict(params(), **{field: value}))


def test_missing_parameters_are_malformed() -> None:
    for field in ("key", "expires", "sig"):
        p = params()
        del p[field]
        with pytest.raises(MalformedSignedUrl):
            verify(p)


def test_every_refusal_is_403_and_never_shows_the_signature() -> None:
    p = params()
    refusals = []
    for attempt in (lambda: verify(p, now=EXPIRES + 1), lambda: verify(p, filename="x.bin"),
                    lambda: verify(p, keys=[]), lambda: verify(dict(p, expires="x"))):
        with pytest.raises(Forbidden) as caught:
            attempt()
        refusals.append(caught.value)
    assert {e.status for e in refusals} == {403}
    assert all(p["sig"] not in e.message for e in refusals)


def test_fields_are_unambiguous_and_domain_separated() -> None:
    assert message("a", "bc", "f", 1) != message("ab", "c", "f", 1)
    assert message("k", "v", "f", 12) != message("k", "v", "f1", 2)
    assert message("k", "v", "f", 1).startswith(signed_urls.DOMAIN)
    # a plain HMAC of the fields, without prefix and lengths, is not the signature
    plain = hmac.new(TOKEN.encode(), b"device-1" + VERSION.encode() + b"ota.bin" + str(EXPIRES).encode(),
                     hashlib.sha256).hexdigest()
    assert plain != signature(KEY, VERSION, "ota.bin", EXPIRES)


def test_names_that_need_percent_encoding_round_trip() -> None:
    key = Key("shop floor/€", TOKEN)
    p = params(key=key)
    assert p["key"] == "shop floor/€"
    assert verify(p, keys=[key]) == key


def test_redact_blanks_every_signature_in_a_line() -> None:
    sig = params()["sig"]
    line = f"GET http://h/v1/device/rom/?action=download_rom&key=k&sig={sig}&expires=1 200 ['?SIG={sig}']"
    clean = signed_urls.redact(line)
    assert sig not in clean and clean.count("REDACTED") == 2 and "key=k&" in clean and "expires=1" in clean


def test_redact_blanks_a_percent_encoded_parameter_name_too() -> None:
    """``si%67=`` and ``%73ig=`` are the same parameter to the server: the log must not show them."""
    sig = params()["sig"]
    line = f"GET /v1/device/rom/?key=k&si%67={sig}&x=1 | /?%73ig={sig} | /?%53%49%47={sig}&design=1"
    clean = signed_urls.redact(line)
    assert sig not in clean and clean.count("REDACTED") == 3 and "design=1" in clean


def test_an_unknown_key_is_not_repeated_in_the_error() -> None:
    """A device that put its token in ``key=`` by mistake must not find it in the log."""
    with pytest.raises(signed_urls.UnknownSigningKey) as refused:
        signed_urls.check([], "0123456789abcdef0123456789abcdef01234567", VERSION, "ota.bin", "1", "0" * 64, 0)
    assert "0123456789abcdef" not in refused.value.message
