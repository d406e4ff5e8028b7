"""Tests for sanic_ota.settings: every setting typed, with its default, from SANIC_OTA_*."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import env_for

from sanic_ota.errors import ConfigurationError
from sanic_ota.settings import Settings, describe


def test_defaults_are_the_original_servers_layout() -> None:
    s = Settings()
    assert s.keys_file == Path("authorisation_keys.json")
    assert s.partitions_dir == Path("partitions")
    assert s.manifests_dir == Path("manifests")
    assert s.signing_key == Path("manifest_signing_key.pem")
    assert s.public_key is None
    assert s.sign_manifests is True
    assert s.quiet_seconds == 1.0
    assert s.cache_bytes == 512 * 1024 * 1024
    assert s.state_dir == Path("manifests")  # the server's own records live beside the manifests


def test_public_key_defaults_beside_the_private_key() -> None:
    assert Settings().public_key_path == Path("manifest_signing_key.pub.pem")
    assert Settings(signing_key=Path("/etc/ota/k.pem")).public_key_path == Path("/etc/ota/k.pub.pem")
    assert Settings(signing_key=Path("/etc/ota/key")).public_key_path == Path("/etc/ota/key.pub.pem")
    assert Settings(public_key=Path("/x/pub.pem")).public_key_path == Path("/x/pub.pem")


@pytest.mark.parametrize(("text", "expected"), [
    ("false", False), ("0", False), ("no", False), ("off", False), (" False ", False), (0, False), (False, False),
    ("true", True), ("1", True), ("yes", True), ("ON", True), (1, True), (True, True),
])
def test_booleans_from_config(text: object, expected: bool) -> None:
    assert Settings.from_config({"OTA_SIGN_MANIFESTS": text}).sign_manifests is expected


def test_numbers_and_paths_from_config() -> None:
    s = Settings.from_config({
        "OTA_QUIET_SECONDS": "2.5",
        "OTA_CACHE_BYTES": "1024",
        "OTA_KEYS_FILE": "/srv/keys.json",
        "OTA_PUBLIC_KEY": "pub.pem",
    })
    assert s.quiet_seconds == 2.5 and isinstance(s.quiet_seconds, float)
    assert s.cache_bytes == 1024 and isinstance(s.cache_bytes, int)
    assert s.keys_file == Path("/srv/keys.json")
    assert s.public_key == Path("pub.pem")
    assert Settings.from_config({"OTA_QUIET_SECONDS": 3}).quiet_seconds == 3.0


def test_empty_or_none_means_the_default() -> None:
    s = Settings.from_config({"OTA_PUBLIC_KEY": "", "OTA_KEYS_FILE": None, "OTA_PARTITIONS_DIR": ""})
    assert s.public_key is None
    assert s.keys_file == Path("authorisation_keys.json")
    assert s.partitions_dir == Path("partitions")


@pytest.mark.parametrize(("key", "value"), [
    ("OTA_SIGN_MANIFESTS", "maybe"),
    ("OTA_SIGN_MANIFESTS", "2"),
    ("OTA_QUIET_SECONDS", "soon"),
    ("OTA_CACHE_BYTES", "1.5"),
    ("OTA_CACHE_BYTES", "lots"),
])
def test_bad_values_name_the_variable(key: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=f"SANIC_{key}="):
        Settings.from_config({key: value})


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_a_re_scan_period_must_be_positive(value: str) -> None:
    with pytest.raises(ConfigurationError, match="SANIC_OTA_RESCAN_SECONDS must be more than 0"):
        Settings.from_config({"OTA_RESCAN_SECONDS": value})


def test_path_settings_that_sanic_turned_into_numbers_stay_paths() -> None:
    # Sanic converts SANIC_* values that look like numbers before they reach
    # app.config: SANIC_OTA_PARTITIONS_DIR=2024 arrives as the int 2024. A
    # directory named 2024 is a plain, valid setting and must not stop the server.
    s = Settings.from_config({"OTA_PARTITIONS_DIR": 2024, "OTA_MANIFESTS_DIR": 7})
    assert s.partitions_dir == Path("2024")
    assert s.manifests_dir == Path("7")


def test_from_environ_reads_only_sanic_ota_variables() -> None:
    s = Settings.from_environ({
        "SANIC_OTA_KEYS_FILE": "k.json",
        "SANIC_OTA_SIGN_MANIFESTS": "no",
        "OTA_PARTITIONS_DIR": "ignored",
        "SANIC_PARTITIONS_DIR": "ignored",
        "SANIC_OTA_": "ignored",
        "PARTITIONS_DIR": "ignored",
        "sanic_ota_manifests_dir": "ignored",
    })
    assert s.keys_file == Path("k.json")
    assert s.sign_manifests is False
    assert s.partitions_dir == Path("partitions")
    assert s.manifests_dir == Path("manifests")


#: Every field away from its default, so each one has to make the trip.
CHANGED = Settings(
    keys_file=Path("/k/keys.json"), partitions_dir=Path("007/partitions"), manifests_dir=Path("007/manifests"),
    signing_key=Path("s.pem"), public_key=Path("p.pem"), sign_manifests=False, quiet_seconds=0.25,
    rescan_seconds=7.5, cache_bytes=1234, stats_file=Path("/s.db"), header_timeout=4.5,
    max_unauthenticated_connections=3, log_format="json", extra_ports=(80, 8081),
    store="s3://ota/Fleet/EU", cache_dir=Path("007"), cache_dir_bytes=1 << 20, poll_seconds=0.5,
    channels_dir=Path("007/channels"), upload_max_bytes=4096,
)


def test_to_environ_reads_back_as_the_same_settings() -> None:
    assert all(getattr(CHANGED, f.name) != f.default for f in dataclasses.fields(Settings)), "add the new field"
    assert Settings.from_environ(CHANGED.to_environ()) == CHANGED
    assert Settings.from_environ(Settings().to_environ()) == Settings()
    assert "SANIC_OTA_PUBLIC_KEY" not in Settings().to_environ()  # unset stays unset


def test_a_server_process_gets_every_setting_from_env_for() -> None:
    assert Settings.from_environ(env_for(CHANGED)) == CHANGED


def test_describe_lists_every_field_with_its_default_and_meaning() -> None:
    rows = describe()
    fields = dataclasses.fields(Settings)
    assert [variable for variable, _, _ in rows] == [f"SANIC_OTA_{f.name.upper()}" for f in fields]
    by_name = {variable: (default, doc) for variable, default, doc in rows}
    assert by_name["SANIC_OTA_KEYS_FILE"][0] == "authorisation_keys.json"
    assert by_name["SANIC_OTA_PUBLIC_KEY"][0] == ""
    assert by_name["SANIC_OTA_SIGN_MANIFESTS"][0] == "True"
    assert all(doc.strip() for _, _, doc in rows)


def test_log_format_is_checked_and_normalised() -> None:
    assert Settings().log_format == "text"
    assert Settings.from_config({"OTA_LOG_FORMAT": " JSON "}).log_format == "json"
    with pytest.raises(ConfigurationError, match="SANIC_OTA_LOG_FORMAT must be one of text, json"):
        Settings.from_config({"OTA_LOG_FORMAT": "xml"})


def test_stats_file_defaults_inside_manifests() -> None:
    assert Settings(manifests_dir=Path("/m")).stats_path == Path("/m/.stats.sqlite3")
    assert Settings(stats_file=Path("/s.db")).stats_path == Path("/s.db")


@pytest.mark.parametrize("name", ["2024", "007", "1e3", "true"])
def test_path_settings_survive_sanics_environment_conversion(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    # Sanic converts SANIC_* values that look like numbers or booleans in app.config
    # (007 -> 7, 1e3 -> 1000.0, true -> True); the server must read the raw text.
    from sanic_ota.web.server import create_app

    monkeypatch.setenv("SANIC_OTA_PARTITIONS_DIR", name)
    app = create_app(name=f"settings_conversion_{name.replace('.', '_')}")
    assert app.ctx.settings.partitions_dir == Path(name)


def test_connection_limits_from_config_and_their_bounds() -> None:
    s = Settings.from_config({"OTA_HEADER_TIMEOUT": "2.5", "OTA_MAX_UNAUTHENTICATED_CONNECTIONS": "0"})
    assert s.header_timeout == 2.5 and s.max_unauthenticated_connections == 0  # 0: no cap
    for bad in ({"OTA_HEADER_TIMEOUT": "0"}, {"OTA_HEADER_TIMEOUT": "nan"}, {"OTA_HEADER_TIMEOUT": "inf"},
                {"OTA_MAX_UNAUTHENTICATED_CONNECTIONS": "-1"}):
        with pytest.raises(ConfigurationError):
            Settings.from_config(bad)


def test_a_store_serves_from_the_cache_directory_and_only_verifies() -> None:
    s = Settings.from_environ({"SANIC_OTA_STORE": " s3://ota/Fleet/EU ", "SANIC_OTA_SIGN_MANIFESTS": "false",
                               "SANIC_OTA_CACHE_DIR": "/var/cache/ota"})
    assert s.store == "s3://ota/Fleet/EU"  # object keys are case-sensitive: not lower-cased
    assert s.partitions_dir == Path("/var/cache/ota/partitions")
    assert s.manifests_dir == Path("/var/cache/ota/manifests")
    assert s.channels_dir == Path("/var/cache/ota/channels")  # the mirror's copy of the bucket's channel files
    assert s.state_dir == Path("/var/cache/ota/manifests")  # the records stay with the replica's copy
    assert (s.cache_dir_bytes, s.poll_seconds) == (4 * 1024**3, 5.0)
    assert Settings().store == "" and Settings().partitions_dir == Path("partitions")  # no store: as ever


def test_a_store_only_verifies_unless_told_otherwise_which_is_refused() -> None:
    assert Settings.from_config({"OTA_STORE": "s3://b/p"}).sign_manifests is False
    assert Settings.from_config({}).sign_manifests is True  # a local server signs, as ever


@pytest.mark.parametrize(("values", "message"), [
    ({"OTA_STORE": "s3://b/p", "OTA_SIGN_MANIFESTS": "true"}, "SANIC_OTA_SIGN_MANIFESTS=true cannot go with"),
    ({"OTA_STORE": "https://b/p", "OTA_SIGN_MANIFESTS": "false"}, "expected s3://bucket/prefix"),
    ({"OTA_STORE": "s3://b/p", "OTA_SIGN_MANIFESTS": "false", "OTA_PARTITIONS_DIR": "/srv/partitions"},
     "SANIC_OTA_PARTITIONS_DIR is not used with SANIC_OTA_STORE"),
    ({"OTA_STORE": "s3://b/p", "OTA_SIGN_MANIFESTS": "false", "OTA_MANIFESTS_DIR": "/srv/m"},
     "SANIC_OTA_MANIFESTS_DIR is not used with SANIC_OTA_STORE"),
    ({"OTA_STORE": "s3://b/p", "OTA_SIGN_MANIFESTS": "false", "OTA_CHANNELS_DIR": "/srv/channels"},
     "SANIC_OTA_CHANNELS_DIR is not used with SANIC_OTA_STORE"),
    ({"OTA_STORE": "s3://b/p", "OTA_SIGN_MANIFESTS": "false", "OTA_POLL_SECONDS": "0"}, "SANIC_OTA_POLL_SECONDS"),
    ({"OTA_STORE": "s3://b/p", "OTA_SIGN_MANIFESTS": "false", "OTA_CACHE_DIR_BYTES": "0"},
     "SANIC_OTA_CACHE_DIR_BYTES"),
])
def test_store_settings_that_cannot_work_stop_the_start(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_config(values)
