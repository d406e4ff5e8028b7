"""Tests for sanic_ota.versions: which names are safe as a path, and which is newest."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanic_ota.errors import BadRequest
from sanic_ota.versions import MAX_NAME_LENGTH, check_name, is_plain_name, newest_first, version_key


@pytest.mark.parametrize("name", ["v1", "v1.10.0", "2.0.0-rc1", "ota.bin", "mqtt_ca.bin", "a+b", "A", "x" * 64])
def test_plain_names_are_accepted(name: str) -> None:
    assert check_name(name, "release") == name
    assert is_plain_name(name)


@pytest.mark.parametrize(
    "name",
    ["", None, ".", "..", "a/b", "a\\b", "\x00", "a\x00b", "/abs", "%2e%2e", "v1%2fx", "x" * 65,
     "vé", "v1\u2024", "ｖ1", ".hidden", "-rf", "a..b", "a b", "v1\n", "v1\t"],
)
def test_unsafe_names_are_refused(name: str | None) -> None:
    with pytest.raises(BadRequest):
        check_name(name, "release")
    if name is not None:
        assert not is_plain_name(name)


def test_refusals_say_what_was_wrong() -> None:
    with pytest.raises(BadRequest, match="missing release"):
        check_name(None, "release")
    with pytest.raises(BadRequest, match=f"longer than {MAX_NAME_LENGTH}"):
        check_name("x" * (MAX_NAME_LENGTH + 1), "release")
    with pytest.raises(BadRequest, match="plain name"):
        check_name("../etc", "file name")


@pytest.mark.parametrize(
    "expected",
    [
        ["v1.10.0", "v1.9.2", "v1.2.0"],
        ["v2", "v1.10", "v1.9"],
        ["2.0.0", "2.0.0-rc2", "2.0.0-rc1", "1.99.99"],
        ["v10", "v9", "v1.0.0"],
        ["2.0.0-rc10", "2.0.0-rc9", "2.0.0-beta", "2.0.0-alpha"],
    ],
)
def test_newest_first_is_version_order(expected: list[str]) -> None:
    for _ in range(5):
        shuffled = random.sample(expected, len(expected))
        assert newest_first(shuffled) == expected


def test_leading_v_is_ignored_in_the_comparison() -> None:
    assert newest_first(["v1.2", "1.10", "V1.3"]) == ["1.10", "V1.3", "v1.2"]


plain_names = st.from_regex(r"\A[vV]?[0-9a-z]{1,3}([.+_-][0-9a-zA-Z]{1,4}){0,4}\Z")
any_names = st.one_of(plain_names, st.text(max_size=12))


@settings(max_examples=60, deadline=None)
@given(any_names, any_names, any_names)
def test_version_key_is_a_total_order(a: str, b: str, c: str) -> None:
    ka, kb, kc = version_key(a), version_key(b), version_key(c)
    assert (ka < kb) + (ka == kb) + (ka > kb) == 1
    assert (ka == kb) == (a == b)
    if ka <= kb and kb <= kc:
        assert ka <= kc


@settings(max_examples=60, deadline=None)
@given(st.lists(plain_names, max_size=20), st.randoms())
def test_newest_first_does_not_depend_on_input_order(versions: list[str], rnd: random.Random) -> None:
    shuffled = list(versions)
    rnd.shuffle(shuffled)
    assert newest_first(shuffled) == newest_first(versions)
    assert sorted(newest_first(versions)) == sorted(versions)
