"""Tests for sanic_ota.keys: the original keys file, kept whole, looked up by token."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import OTHER_TOKEN, TOKEN

from sanic_ota.errors import KeysFileError
from sanic_ota.keys import (
    Key,
    Keyring,
    dump_keys,
    load_keys,
    new_token,
    parse_keys,
    reload,
    removals_only,
    save_keys,
    with_key,
)

#: The original server's file, as operators have it today (no extra fields).
ORIGINAL = f"""[
    {{"Name": "device-1", "Token": "{TOKEN}"}},
    {{"Name": "device-2", "Token": "{OTHER_TOKEN}"}}
]
"""


def test_original_format_parses() -> None:
    keys = parse_keys(ORIGINAL)
    assert [(k.name, k.token) for k in keys] == [("device-1", TOKEN), ("device-2", OTHER_TOKEN)]
    assert all(k.extra == {} and k.role == "device" for k in keys)


def test_empty_text_is_no_key() -> None:
    assert parse_keys("") == [] and parse_keys(" \n") == []


def test_extra_fields_survive_save_and_load(tmp_path: Path) -> None:
    entries = [
        {"Name": "admin", "Token": TOKEN, "Role": "admin", "Note": "ops laptop", "Since": [2024, 1]},
        {"Name": "device-2", "Token": OTHER_TOKEN},
    ]
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(entries))
    keys = load_keys(path)
    assert keys[0].role == "admin"
    save_keys(path, keys)
    assert json.loads(path.read_text()) == entries
    assert load_keys(path) == keys
    assert [k.extra for k in load_keys(path)] == [k.extra for k in keys]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[{", "not valid JSON"),
        ('{"Name": "a", "Token": "b"}', "must hold a JSON list, found dict"),
        ('"text"', "found str"),
        ('[["a", "b"]]', "entry 0 is list, expected an object"),
        ('[{"Name": "a", "Token": "b"}, {"Token": "c"}]', 'entry 1 has no "Name"'),
        ('[{"Name": "", "Token": "c"}]', 'entry 0 has no "Name"'),
        ('[{"Name": "a"}]', 'entry 0 \\("a"\\) has no "Token"'),
        ('[{"Name": "a", "Token": 12}]', 'has no "Token"'),
        ('[{"Name": "a", "Token": ""}]', 'has no "Token"'),
    ],
)
def test_bad_keys_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(text)
    with pytest.raises(KeysFileError, match=message):
        load_keys(path)


def test_bad_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("{}")
    with pytest.raises(KeysFileError) as caught:
        load_keys(path)
    assert str(path) in caught.value.message


def test_missing_keys_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(KeysFileError, match="not found.*keygen"):
        load_keys(tmp_path / "absent.json")


def test_undecodable_keys_file_is_a_keys_file_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_bytes(b'[{"Name": "\xff"}]')
    with pytest.raises(KeysFileError, match="cannot read"):
        load_keys(path)


def test_keyring_finds_by_token_and_refuses_others() -> None:
    ring = Keyring(parse_keys(ORIGINAL))
    assert len(ring) == 2
    found = ring.find(TOKEN)
    assert found is not None and found.name == "device-1"
    assert ring.find(OTHER_TOKEN).name == "device-2"  # type: ignore[union-attr]
    for guess in ("", TOKEN[:-1], TOKEN + "0", TOKEN.upper(), " " + TOKEN, "device-1", "\udcff"):
        assert ring.find(guess) is None


def test_find_named_needs_both_name_and_token() -> None:
    ring = Keyring(parse_keys(ORIGINAL))
    assert ring.find_named("device-1", TOKEN).name == "device-1"  # type: ignore[union-attr]
    assert ring.find_named("device-2", TOKEN) is None
    assert ring.find_named("device-1", OTHER_TOKEN) is None
    assert ring.find_named("", "") is None


def test_a_token_that_is_not_encodable_text_is_a_keys_file_error(tmp_path: Path) -> None:
    # JSON can spell a lone surrogate ("\ud800"); such a token can never be sent in
    # a header, and must be refused as a bad keys file, not crash the keyring later.
    path = tmp_path / "keys.json"
    path.write_text('[{"Name": "a", "Token": "0123\\ud800"}]')
    with pytest.raises(KeysFileError, match="Token"):
        Keyring(load_keys(path))


def test_key_repr_never_shows_the_token() -> None:
    key = Key("device-1", TOKEN, {"Role": "admin"})
    assert TOKEN not in repr(key)


def test_save_keys_writes_mode_0600_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("[]")
    path.chmod(0o644)
    save_keys(path, [Key("a", TOKEN)])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]
    assert load_keys(path) == [Key("a", TOKEN)]


#: Save many keys over a small file while the process may not write past 4 KiB:
#: the write fails part-way (EFBIG), as it would on a full disk.
_SAVE_WITH_FILE_SIZE_LIMIT = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from sanic_ota.keys import Key, save_keys
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    try:
        save_keys(Path(sys.argv[1]), [Key(f"device-{i}", "0" * 40) for i in range(500)])
    except OSError as e:
        print(e.errno)
        sys.exit(3)
    """
)


def test_save_keys_failing_mid_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    save_keys(path, [Key("device-1", TOKEN, {"Role": "admin"})])
    before = path.read_bytes()
    result = subprocess.run(
        [sys.executable, "-c", _SAVE_WITH_FILE_SIZE_LIMIT, str(path)],
        capture_output=True, text=True, timeout=30, cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 3, result.stderr
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]


def test_with_key_replaces_by_name_and_keeps_extra_fields() -> None:
    keys = [Key("a", "1" * 40, {"Role": "admin", "Note": "x"}), Key("b", "2" * 40)]
    updated = with_key(keys, "a", "3" * 40)
    assert [(k.name, k.token) for k in updated] == [("a", "3" * 40), ("b", "2" * 40)]
    assert updated[0].extra == {"Role": "admin", "Note": "x"}
    assert keys[0].token == "1" * 40  # the input list is not changed
    added = with_key(keys, "c", "4" * 40)
    assert [k.name for k in added] == ["a", "b", "c"] and added[2].extra == {}


def test_dump_keys_is_the_original_format() -> None:
    text = dump_keys([Key("a", TOKEN, {"Role": "admin"})])
    assert json.loads(text) == [{"Name": "a", "Token": TOKEN, "Role": "admin"}]
    assert text.endswith("\n")


def test_new_token_is_40_lower_hex_and_fresh() -> None:
    tokens = {new_token() for _ in range(20)}
    assert len(tokens) == 20
    assert all(len(t) == 40 and set(t) <= set("0123456789abcdef") for t in tokens)


def test_a_bad_entry_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text('[{"Name": "a"}]')
    with pytest.raises(KeysFileError, match=rf"^{re.escape(str(path))}: entry 0"):
        load_keys(path)


@pytest.mark.parametrize("text", ['[{"Name": "a", "Token": "b", "n": ' + "9" * 5000 + "}]",
                                  "[" * 100_000 + "]" * 100_000], ids=["5000-digit number", "deep nesting"])
def test_json_python_refuses_is_a_keys_file_error(text: str) -> None:
    with pytest.raises(KeysFileError, match="not valid JSON"):
        parse_keys(text)


ADMIN = "ad" * 20
NEW = "ee" * 20


def _ring() -> Keyring:
    return Keyring([Key("device-1", TOKEN), Key("device-2", OTHER_TOKEN), Key("ops", ADMIN, {"Role": "admin"})])


def test_reload_of_a_good_private_file_applies_it(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    save_keys(path, [Key("device-1", TOKEN), Key("new", NEW)])
    ring, status = reload(_ring(), path)
    assert status.ok and status.problem is None
    assert ring.find(NEW) and ring.find(TOKEN) and not ring.find(OTHER_TOKEN) and not ring.find(ADMIN)


def test_reload_of_a_missing_file_revokes_every_device_key(tmp_path: Path) -> None:
    ring, status = reload(_ring(), tmp_path / "gone.json")
    assert status.problem == "missing" and "gone.json" in status.message
    assert len(ring) == 0 and ring.find(TOKEN) is None and ring.find(ADMIN) is None
    # admin keys open only the admin pages, which say why nothing else works
    assert ring.find(ADMIN, admin_page=True).name == "ops" and ring.find_named("ops", ADMIN)
    assert ring.find(TOKEN, admin_page=True) is None
    again, _ = reload(ring, tmp_path / "gone.json")
    assert again.find(ADMIN, admin_page=True) and again.find(ADMIN) is None


@pytest.mark.parametrize(("content", "problem"), [
    (b"[{", "invalid"),
    (b'[{"Name": "a"}]', "invalid"),
    (b'[{"Name": "a", "Token": "b", "n": ' + b"9" * 5000 + b"}]", "invalid"),
    (b"[" * 100_000, "invalid"),
    (b'[{"Name": "\xff"}]', "invalid"),  # not UTF-8
    (None, "unreadable"),  # a directory where the file should be
])
def test_reload_of_a_bad_file_keeps_the_previous_keys(tmp_path: Path, content: bytes | None, problem: str) -> None:
    path = tmp_path / "keys.json"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
        path.chmod(0o600)
    previous = _ring()
    ring, status = reload(previous, path)
    assert ring is previous
    assert status.problem == problem and "previous keys stay" in status.message
    assert TOKEN not in status.message and "9999" not in status.message


def test_reload_of_a_file_open_to_others_applies_only_removals(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    save_keys(path, [Key("device-1", NEW),  # a changed token: the old one goes, the new one is not trusted
                     Key("ops", ADMIN, {"Role": "admin"}), Key("added", "ab" * 20)])  # device-2 removed
    path.chmod(0o644)
    ring, status = reload(_ring(), path)
    assert status.problem == "open_to_others" and f"chmod 600 {path}" in status.message
    assert [k.name for k in ring.keys] == ["ops"]
    assert not ring.find(TOKEN) and not ring.find(NEW) and not ring.find(OTHER_TOKEN) and not ring.find("ab" * 20)
    path.chmod(0o600)
    ring, status = reload(ring, path)
    assert status.ok and {k.name for k in ring.keys} == {"device-1", "ops", "added"}


def test_an_untrusted_file_may_take_admin_away_but_never_grant_it() -> None:
    previous = Keyring([Key("dev", TOKEN), Key("ops", ADMIN, {"Role": "admin"})])
    found = [Key("dev", TOKEN, {"Role": "admin"}), Key("ops", ADMIN, {"Note": "now a device"})]
    ring = removals_only(previous, found)
    assert ring.find(TOKEN).role == "device" and ring.find(ADMIN).role == "device"


def test_a_key_names_its_channel_and_stable_is_the_default() -> None:
    keys = parse_keys('[{"Name": "a", "Token": "t1"}, {"Name": "b", "Token": "t2", "channel": "beta"}]')
    assert [k.channel for k in keys] == ["stable", "beta"]
    assert keys[1].to_dict() == {"Name": "b", "Token": "t2", "channel": "beta"}


@pytest.mark.parametrize("channel", ['"../x"', '""', "7", '"a b"'])
def test_a_channel_that_is_not_a_plain_name_makes_the_file_invalid(channel: str) -> None:
    with pytest.raises(KeysFileError, match='entry 0 \\("a"\\): "channel"'):
        parse_keys(f'[{{"Name": "a", "Token": "t", "channel": {channel}}}]')


def test_lookup_is_one_keyed_hash_whatever_the_number_of_keys(monkeypatch) -> None:
    """No key's token is compared with the one given, and nobody outside this process can
    compute the digest a lookup goes through (it is keyed by a random per-process key)."""
    import hashlib

    from sanic_ota import keys as keys_module

    ring = Keyring([Key(f"device-{n}", f"{n:040x}") for n in range(10_000)])
    compared: list[tuple[bytes, bytes]] = []
    real_compare = keys_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", spy)
    assert ring.find(f"{1234:040x}").name == "device-1234"
    assert ring.find(f"{1234:039x}0") is None and ring.find("") is None
    assert len(compared) == 1  # one digest comparison for the hit, none for the misses
    token = f"{1234:040x}".encode()
    assert compared[0][0] != hashlib.sha256(token).digest()  # keyed, not the token's plain hash
