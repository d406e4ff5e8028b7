"""Tests for sanic_ota.versions: which names are safe as a path, and which is newest."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanic_ota.errors import BadRequest
from sanic_ota.versions import (
    FINAL,
    MAX_NAME_LENGTH,
    STAGES,
    Version,
    check_name,
    is_plain_name,
    is_release_file,
    newest,
    newest_first,
    parse_version,
    version_key,
)


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


@pytest.mark.parametrize(("name", "expected"), [
    ("ota.bin", True), ("mqtt_ca.bin", True), (".ota.bin", False), ("ota.bin~", False), ("ota.bin.swp", False),
    ("ota", False), ("-x.bin", False), ("a/b.bin", False),
])
def test_is_release_file(name: str, expected: bool) -> None:
    assert is_release_file(name) is expected


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


# -- the version grammar ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("v1", Version((1,), FINAL, 0)),
        ("V1.10.0", Version((1, 10), FINAL, 0)),
        ("2024.5", Version((2024, 5), FINAL, 0)),
        ("0.0.0", Version((), FINAL, 0)),
        ("v2.0.0rc1", Version((2,), STAGES["rc"], 1)),
        ("2.0.0-rc.1", Version((2,), STAGES["rc"], 1)),
        ("2.0.0_RC_1", Version((2,), STAGES["rc"], 1)),
        ("2.0.0-beta.2", Version((2,), STAGES["beta"], 2)),
        ("2.0.0b2", Version((2,), STAGES["beta"], 2)),
        ("2.0.0-alpha", Version((2,), STAGES["alpha"], 0)),
        ("2.0.0a7", Version((2,), STAGES["alpha"], 7)),
        ("1.4.dev3", Version((1, 4), STAGES["dev"], 3)),
        ("1.4c1", Version((1, 4), STAGES["rc"], 1)),
        ("1.4-preview2", Version((1, 4), STAGES["rc"], 2)),
        ("v1.0.0+build.7", Version((1,), FINAL, 0)),
        ("1.0.0-rc.1+exp.sha-5114f85", Version((1,), STAGES["rc"], 1)),
        ("v1.01", Version((1, 1), FINAL, 0)),
    ],
)
def test_versions_parse(name: str, expected: Version) -> None:
    assert parse_version(name) == expected


@pytest.mark.parametrize(
    "name",
    ["old", "backup-2019", "latest", "v", "vv1", "1.", ".1", "1..0", "v1.0.0-hotfix", "1.0.0-1", "1.0.0.post1",
     "2019-05-01", "v1.0.0-rc1.2", "1.0.0+", "1.0.0+a..b", "1.0.0+a_b", "v1.0.0 ", " v1", "v1\n", "\u0661",
     "v\uff11", "1.0-release-candidate", "x1.0", "1.0.0-rc-rc", "1" * 65, ""],
)
def test_other_names_are_not_versions(name: str) -> None:
    assert parse_version(name) is None


@pytest.mark.parametrize(
    "ascending",
    [
        ["2.0.0-dev", "2.0.0.dev1", "2.0.0-alpha", "2.0.0a1", "2.0.0-beta.2", "2.0.0b3", "2.0.0-rc.1", "2.0.0rc2",
         "2.0.0-rc.10", "2.0.0", "2.0.1-rc1", "2.0.1", "2.1", "10"],
        ["v1.9.2", "v1.10.0-rc1", "v1.10.0"],
        ["v1.0.0rc1", "v1.0.0"],
    ],
)
def test_versions_sort_as_the_grammar_says(ascending: list[str]) -> None:
    parsed = [parse_version(name) for name in ascending]
    assert all(a is not None and b is not None and a < b for a, b in zip(parsed, parsed[1:], strict=False))


@pytest.mark.parametrize("names", [["v1.0", "1.0.0", "V1.0.0+build.7"], ["2.0rc", "2.0.0-rc.0", "2.0.0RC0"]])
def test_spellings_of_one_version_are_equal(names: list[str]) -> None:
    assert len({parse_version(name) for name in names}) == 1


def test_names_that_are_not_versions_never_come_first() -> None:
    assert newest_first(["old", "v1.0.0", "backup-2019", "v2.0.0rc1", "v2.0.0", "latest"]) == [
        "v2.0.0", "v2.0.0rc1", "v1.0.0", "backup-2019", "latest", "old"]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ([], []),
        (["old", "backup-2019"], []),
        (["v1.0.0", "old", "v2.0.0rc1"], ["v2.0.0rc1"]),
        (["v1.0.0", "v2.0.0", "v2.0.0rc1", "backup-2019"], ["v2.0.0"]),
        (["v1.0.0", "v2.0.0", "2.0.0+ci.7", "v2.0"], ["2.0.0+ci.7", "v2.0", "v2.0.0"]),
    ],
)
def test_newest_names_every_name_of_the_highest_version(names: list[str], expected: list[str]) -> None:
    assert newest(names) == expected


labels = st.sampled_from(sorted(STAGES))
seps = st.sampled_from(["", "-", ".", "_"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=5), st.none() | st.tuples(seps, labels, seps,
       st.none() | st.integers(0, 10**6)), st.sampled_from(["", "v", "V"]), st.sampled_from(["", "+b.1", "+ci-7"]))
def test_generated_versions_parse_to_their_parts(release: list[int], pre, prefix: str, build: str) -> None:
    name = prefix + ".".join(map(str, release))
    if pre is not None:
        sep, label, sep2, number = pre
        name += sep + label + ("" if number is None else sep2 + str(number))
    name += build
    version = parse_version(name)
    assert version is not None
    expected_release = list(release)
    while expected_release and expected_release[-1] == 0:
        expected_release.pop()
    assert version.release == tuple(expected_release)
    if pre is None:
        assert (version.stage, version.number) == (FINAL, 0)
    else:
        assert (version.stage, version.number) == (STAGES[pre[1]], pre[3] or 0)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20))
def test_any_text_parses_or_is_refused_without_error(name: str) -> None:
    version = parse_version(name)
    if version is not None:
        assert name.isascii() and is_plain_name(name)


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
