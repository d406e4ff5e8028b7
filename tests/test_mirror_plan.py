"""mirror_plan: a bucket listing read as releases, and what the mirror does about it (no network)."""

from __future__ import annotations

from sanic_ota.mirror_plan import Held, Listed, channels_in, choose, named_by_channel, plan, plan_channels, releases_in
from sanic_ota.store.s3 import ObjectInfo


def info(etag: str, size: int = 100) -> ObjectInfo:
    return ObjectInfo(f'"{etag}"', size)


def test_a_release_is_its_manifest_with_the_files_beside_it() -> None:
    listing = {
        "manifests/v1.0.0.json": info("m1", 10),
        "partitions/v1.0.0/ota.bin": info("a"),
        "partitions/v1.0.0/mqtt_ca.bin": info("b"),
        "partitions/v1.0.0/notes.txt": info("c"),  # not a release file
        "partitions/v1.0.0/deep/ota.bin": info("d"),  # too deep
        "partitions/v2.0.0/ota.bin": info("e"),  # no manifest (yet): not a release
        "manifests/..json": info("f"),  # not a plain name
        "manifests/v3.txt": info("g"),
        "partitions/LATEST": info("pin", 7),
        "elsewhere/x": info("h"),
    }
    releases, pin = releases_in(listing)
    assert set(releases) == {"v1.0.0"}
    assert dict(releases["v1.0.0"].files) == {"ota.bin": info("a"), "mqtt_ca.bin": info("b")}
    assert releases["v1.0.0"].size == 210
    assert pin == info("pin", 7)
    assert releases_in({})[1] is None


def listed(*versions: str, size: int = 100) -> dict[str, Listed]:
    return {v: Listed(info("m" + v, 0), {"ota.bin": info(v, size)}) for v in versions}


def test_the_oldest_are_left_out_first_never_the_newest_or_the_pinned() -> None:
    releases = listed("v1.0.0", "v2.0.0", "v3.0.0", "v4.0.0", "beta")
    assert choose(releases, (), 1000) == ({"v1.0.0", "v2.0.0", "v3.0.0", "v4.0.0", "beta"}, [])
    assert choose(releases, (), 250) == ({"v4.0.0", "v3.0.0"}, ["v2.0.0", "v1.0.0", "beta"])
    assert choose(releases, {"v1.0.0"}, 250) == ({"v4.0.0", "v1.0.0"}, ["v3.0.0", "v2.0.0", "beta"])
    # the newest is held even when it alone is over the bound
    assert choose(releases, (), 10) == ({"v4.0.0"}, ["v3.0.0", "v2.0.0", "v1.0.0", "beta"])
    assert choose(releases, {"v9.0.0"}, 10)[0] == {"v4.0.0"}  # a pin naming nothing listed holds nothing
    assert choose(releases, {"v1.0.0", "v2.0.0"}, 10)[0] == {"v4.0.0", "v2.0.0", "v1.0.0"}  # channels' too


def test_a_channel_file_names_its_pin_and_its_rollouts_release() -> None:
    rollout = b'{"rollout": {"version": "v3.0.0", "percent": 5, "started": "2026-11-30T08:00:00Z"}}'
    assert named_by_channel("beta", b'{"pin": "v1.0.0"}') == {"v1.0.0"}
    assert named_by_channel("beta", rollout) == {"v3.0.0"}
    assert named_by_channel("beta", b"not json") == set() == named_by_channel("beta", b"")


def test_nothing_is_fetched_unless_an_etag_changed() -> None:
    releases = listed("v1.0.0", "v2.0.0")
    held = {v: r.held() for v, r in releases.items()}
    assert plan(releases, held, (), 1 << 30).fetch == []
    changed = dict(releases, **{"v1.0.0": Listed(info("mv1.0.0", 0), {"ota.bin": info("new")})})
    assert plan(changed, held, (), 1 << 30).fetch == ["v1.0.0"]
    added = dict(releases, **{"v1.0.0": Listed(info("mv1.0.0", 0), {"ota.bin": info("v1.0.0"), "x.bin": info("x")})})
    assert plan(added, held, (), 1 << 30).fetch == ["v1.0.0"]
    new_manifest = dict(releases, **{"v2.0.0": Listed(info("other", 0), {"ota.bin": info("v2.0.0")})})
    assert plan(new_manifest, held, (), 1 << 30).fetch == ["v2.0.0"]
    # a failed release is fetched again when its retry is due, or when the bucket changed
    failed = {"v1.0.0": releases["v1.0.0"].held()}
    assert plan(releases, held, (), 1 << 30, failed, due=set()).fetch == []
    assert plan(releases, held, (), 1 << 30, failed, due={"v1.0.0"}).fetch == ["v1.0.0"]
    assert plan(changed, held, (), 1 << 30, failed, due=set()).fetch == ["v1.0.0"]
    # also one that failed before anything of it was installed (a full disk)
    assert plan(releases, {}, (), 1 << 30, failed, due=set()).fetch == ["v2.0.0"]


def test_new_releases_newest_first_and_what_is_removed() -> None:
    releases = listed("v1.0.0", "v2.0.0", "v3.0.0")
    todo = plan(releases, {}, (), 1 << 30)
    assert todo.fetch == ["v3.0.0", "v2.0.0", "v1.0.0"] and todo.remove == []
    held = {v: r.held() for v, r in releases.items()} | {"v0.9.0": Held("x", {}), "old": Held("", {})}
    todo = plan(releases, held, (), 250)
    assert todo.remove == ["old", "v0.9.0", "v1.0.0"]  # gone from the bucket, and left out for space
    assert todo.left_out == ["v1.0.0"] and todo.fetch == []
    # found on disk but not known to the mirror (ETag ""): fetched again
    assert plan(releases, {"v3.0.0": Held("", {})}, (), 1 << 30).fetch[0] == "v3.0.0"


def test_a_release_devices_ask_for_is_held_before_newer_ones() -> None:
    releases = listed("v1.0.0", "v2.0.0", "v3.0.0", "v4.0.0")
    assert choose(releases, (), 250, wanted={"v1.0.0"}) == ({"v4.0.0", "v1.0.0"}, ["v3.0.0", "v2.0.0"])
    held = {v: releases[v].held() for v in ("v4.0.0", "v3.0.0")}
    todo = plan(releases, held, (), 250, wanted={"v1.0.0", "v9.0.0"})  # v9.0.0: not in the bucket
    assert todo.fetch == ["v1.0.0"] and todo.remove == ["v3.0.0"]


def test_channel_files_are_plain_names_under_channels() -> None:
    listing = {
        "channels/beta.json": info("b", 50),
        "channels/stable.json": info("s", 40),
        "channels/..json": info("x"),  # not a plain name
        "channels/beta.txt": info("y"),  # not a channel file
        "channels/deep/beta.json": info("z"),  # too deep
        "partitions/channels/beta.json": info("w"),
        "manifests/v1.0.0.json": info("m"),
    }
    assert channels_in(listing) == {"beta": info("b", 50), "stable": info("s", 40)}
    assert releases_in(listing)[0].keys() == {"v1.0.0"}  # channel files are no release


def test_a_channel_file_is_fetched_when_its_etag_changed_and_removed_when_gone() -> None:
    listed = {"beta": info("b2"), "same": info("s"), "new": info("n"), "huge": info("h", 70_000)}
    held = {"beta": '"b1"', "same": '"s"', "gone": '"g"', "unknown": ""}
    todo = plan_channels(listed, held, 65_536)
    assert todo.fetch == ["beta", "new"]  # "same": unchanged ETag, no GET
    assert todo.remove == ["gone", "unknown"]
    assert todo.too_large == ["huge"]  # never fetched: its copy is made unusable
    assert plan_channels(listed, {**held, "huge": '"h"'}, 65_536).too_large == []  # refused once, not every poll
    assert plan_channels({}, {}, 65_536) == plan_channels({}, {}, 1)
