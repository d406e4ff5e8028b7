"""Channels and rollouts as pure decisions: buckets, percentages, halts, no downgrade, the file."""

from __future__ import annotations

import json

import pytest

from sanic_ota.channels import (
    BUCKETS,
    Channel,
    ChannelError,
    Channels,
    Rollout,
    Step,
    Unusable,
    advance_rollout,
    bucket,
    caller_id,
    dump,
    halt_rollout,
    offer,
    offers_rollout,
    parse,
    set_pin,
    start_rollout,
)
from sanic_ota.errors import Unavailable
from sanic_ota.manifest import Manifest
from sanic_ota.releases import Index, Release

CALLERS = [f"10.0.{i // 250}.{i % 250}" for i in range(4000)]
NOW = 1_800_000_000.0


def test_a_bucket_is_stable_and_spread_evenly() -> None:
    buckets = [bucket("v2@t", "plant-7", c) for c in CALLERS]
    assert buckets == [bucket("v2@t", "plant-7", c) for c in CALLERS]
    assert all(0 <= b < BUCKETS for b in buckets)
    quarter = sum(b < 2500 for b in buckets)
    assert 900 <= quarter <= 1100  # a quarter of 4,000, give or take 3.5 sigma
    assert buckets != [bucket("v2@t", "plant-8", c) for c in CALLERS]  # the key takes part


def test_raising_the_percentage_only_adds_callers() -> None:
    rollout = Rollout("v2.0.0", 10, NOW)
    at = {p: {c for c in CALLERS if offers_rollout(Rollout("v2.0.0", p, NOW), "v1.0.0", "k", c, NOW, False)}
          for p in (0, 10, 25, 50, 100)}
    assert at[0] == set() and at[100] == set(CALLERS)
    assert at[10] <= at[25] <= at[50] <= at[100]
    assert {c for c in CALLERS if offers_rollout(rollout, "v1.0.0", "k", c, NOW, False)} == at[10]


def test_a_schedule_raises_the_percentage_when_its_steps_are_due() -> None:
    rollout = Rollout("v2.0.0", 10, NOW, (Step(NOW + 60, 50), Step(NOW + 120, 100)))
    assert [rollout.percent_at(NOW + s) for s in (0, 59, 60, 119, 120)] == [10, 10, 50, 50, 100]


def test_a_halted_rollout_offers_only_to_callers_offered_before() -> None:
    halted = Rollout("v2.0.0", 100, NOW, halted=True)
    assert not offers_rollout(halted, "v1.0.0", "k", "10.0.0.1", NOW, offered_before=False)
    assert offers_rollout(halted, "v1.0.0", "k", "10.0.0.1", NOW, offered_before=True)


def test_never_a_downgrade() -> None:
    rollout = Rollout("v1.0.0", 100, NOW)
    assert not offers_rollout(rollout, "v1.0.0", "k", "c", NOW, True)
    assert not offers_rollout(rollout, "v1.1.0", "k", "c", NOW, True)
    assert not offers_rollout(Rollout("nightly", 100, NOW), "v1.0.0", "k", "c", NOW, True)  # not a version


def _index(*versions: str, channels: Channels | None = None, pinned: str | None = None) -> Index:
    releases = {v: Release(v, Manifest(v, 1, "2026-01-01T00:00:00Z", {}), b"{}") for v in versions}
    return Index(releases=releases, pinned=pinned, channels=channels or Channels())


def test_stable_is_latest_and_another_channel_its_pin_or_the_newest() -> None:
    channels = Channels({"beta": Channel("beta", pin="v1.0.0")}, {"broken": "not valid JSON"})
    index = _index("v1.0.0", "v1.1.0", channels=channels, pinned="v1.0.0")
    assert index.base("stable").version == "v1.0.0"  # partitions/LATEST
    assert index.base("beta").version == "v1.0.0"
    assert index.base("gamma").version == "v1.1.0"  # no file: the newest
    with pytest.raises(Unusable):
        index.base("broken")  # a refused channel file: 503, never a guess
    with pytest.raises(Unavailable):
        _index("v1.1.0", channels=channels).base("beta")  # pinned to a release that is not served


def test_the_channel_file_round_trips_and_refuses_what_it_cannot_use() -> None:
    channel = start_rollout(Channel("beta", pin="v1.0.0"), "v1.1.0", 10,
                            [{"at": "2026-12-01T08:00:00Z", "percent": 50}], "ops", NOW).channel
    assert channel is not None and parse("beta", dump(channel)) == channel
    for bad in (b"\xff", b"[]", b'{"pin": "../x"}', b'{"rollout": {"version": "v2", "percent": 101, '
                b'"started": "2026-12-01T08:00:00Z"}}', b'{"rollout": {"version": "v2", "percent": 5}}'):
        with pytest.raises(ChannelError):
            parse("beta", bad)
    with pytest.raises(ChannelError, match="partitions/LATEST"):
        parse("stable", json.dumps({"pin": "v1.0.0"}).encode())


def test_changes_say_what_changed_and_a_rollout_only_rises() -> None:
    started = start_rollout(Channel("beta"), "v1.1.0", 25, None, "ops", NOW)
    assert started.what == "rollout-start:beta=v1.1.0@25.0%"
    assert started.channel is not None
    with pytest.raises(ChannelError, match="only rises"):
        advance_rollout(started.channel, 10, "ops", NOW)
    assert advance_rollout(started.channel, 50, "ops", NOW).what == "rollout-advance:beta=v1.1.0@50.0%"
    halted = halt_rollout(started.channel, "ops", NOW)
    assert halted.channel is not None and halted.channel.rollout is not None and halted.channel.rollout.halted
    assert set_pin(Channel("beta", pin="v1"), None, "ops", NOW).channel is None  # nothing left: no file
    with pytest.raises(ChannelError):
        halt_rollout(Channel("beta"), "ops", NOW)


def test_a_rollout_on_stable_rolls_past_latest_and_a_halt_keeps_who_had_it() -> None:
    rollout = Rollout("v1.1.0", 50, NOW)
    index = _index("v1.0.0", "v1.1.0", pinned="v1.0.0",
                   channels=Channels({"stable": Channel("stable", rollout=rollout)}))
    answers = {c: offer(index, "plant", "stable", c, NOW, lambda _: False)[0].version for c in CALLERS[:400]}
    offered = {c for c, v in answers.items() if v == "v1.1.0"}
    assert set(answers.values()) == {"v1.0.0", "v1.1.0"} and 150 <= len(offered) <= 250
    halted = _index("v1.0.0", "v1.1.0", pinned="v1.0.0",
                    channels=Channels({"stable": Channel("stable", rollout=Rollout("v1.1.0", 50, NOW, halted=True))}))
    remembered = {caller_id(rollout.id, "plant", c) for c in offered}
    after = {c: offer(halted, "plant", "stable", c, NOW, remembered.__contains__)[0].version for c in CALLERS[:400]}
    assert after == answers  # the same callers have it; nobody new gets it
    unserved = _index("v1.0.0", pinned="v1.0.0", channels=Channels({"stable": Channel("stable", rollout=rollout)}))
    assert offer(unserved, "plant", "stable", "c", NOW, lambda _: True) == (unserved.releases["v1.0.0"], None)
