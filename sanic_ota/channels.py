"""Channels and staged rollouts: which release a caller is offered, decided without I/O.

A key in the keys file stands for a product build (ESP-AT compiles one OTA token into
the firmware), so a channel is named per key (``"channel"`` in its entry; ``stable``
without one). A channel follows the newest release or is pinned to one; ``stable``'s
pin is ``partitions/LATEST``, exactly as before channels existed. A channel may also
carry a rollout: a release offered to a percentage of the channel's callers.

AT+CIUPDATE sends no device identity, so a caller is the key plus the client address
(approximate: modules behind one NAT, or a reverse proxy, share an address). A caller
falls in a bucket ``0..9999`` from a SHA-256 of the rollout's id, the key name and
that address; it is offered the rollout's release iff its bucket is below
``percent * 100``. So one caller keeps its answer while the percentage stays, and
raising the percentage only adds callers.

A halted rollout offers its release to nobody new: only callers already offered it
before the halt (remembered by the fleet counts, see ``fleet``) keep getting it, so
that nobody who may have installed it is sent back to an older release. A rollout
never offers a release that is not newer than the channel's base (its pin or the
newest release): nobody is offered a downgrade.

The channel file (``channels/<name>.json``, read and written only by the store) is
small JSON; ``parse`` refuses anything else with ``ChannelError``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sanic_ota.errors import OtaError
from sanic_ota.versions import is_plain_name, parse_version

if TYPE_CHECKING:
    from collections.abc import Callable

    from sanic_ota.releases import Index, Release

DEFAULT_CHANNEL = "stable"
#: Buckets per rollout: a percentage has two decimals of resolution.
BUCKETS = 10_000
#: A schedule has at most this many steps: it is a plan an operator writes by hand.
MAX_STEPS = 32


class ChannelError(OtaError):
    """A channel file or a channel change that cannot be used; status 400 for the admin API."""

    status = 400


def check_channel(name: object) -> str:
    """A channel name is a plain name (letters, digits, ``.``, ``_``, ``+``, ``-``, at most 64)."""
    if not isinstance(name, str) or not is_plain_name(name):
        raise ChannelError("a channel name must be a plain name (letters, digits, '.', '_', '+', '-'; "
                           "at most 64 characters)")
    return name


def check_percent(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise ChannelError("percent must be a number from 0 to 100")
    return round(float(value), 2)


def utc_text(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(value: object, what: str) -> float:
    if not isinstance(value, str):
        raise ChannelError(f"{what} must be a time like 2026-12-01T08:00:00Z")
    try:
        parsed = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise ChannelError(f"{what} must be a time like 2026-12-01T08:00:00Z") from None
    return parsed.timestamp()


@dataclass(frozen=True)
class Step:
    """From ``at`` (Unix time) on, the rollout offers to at least ``percent``."""

    at: float
    percent: float

    def to_dict(self) -> dict[str, Any]:
        return {"at": utc_text(self.at), "percent": self.percent}


@dataclass(frozen=True)
class Rollout:
    version: str
    percent: float
    started: float
    steps: tuple[Step, ...] = ()
    halted: bool = False

    @property
    def id(self) -> str:
        """Buckets are drawn per rollout: a new rollout of the same release starts afresh."""
        return f"{self.version}@{utc_text(self.started)}"

    def percent_at(self, now: float) -> float:
        """The percentage offered now: the last set by hand, raised by every step that is due."""
        return max([self.percent, *(s.percent for s in self.steps if s.at <= now)])

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"version": self.version, "percent": self.percent, "started": utc_text(self.started),
                                "steps": [s.to_dict() for s in self.steps], "halted": self.halted}
        if now is not None:
            data["percent_now"] = self.percent_at(now)
        return data


@dataclass(frozen=True)
class Channel:
    name: str
    pin: str | None = None
    rollout: Rollout | None = None
    #: who changed it last (an admin key's name) and when, for the operator
    updated: str = ""
    by: str = ""

    @property
    def named(self) -> set[str]:
        """The releases this channel names (its pin, its rollout's release): a server
        reads them before it serves, a replica's full cache keeps them."""
        return {v for v in (self.pin, self.rollout.version if self.rollout else None) if v}

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        return {"name": self.name, "pin": self.pin,
                "rollout": None if self.rollout is None else self.rollout.to_dict(now),
                "updated": self.updated, "by": self.by}


def _version(value: object, what: str) -> str:
    if not isinstance(value, str) or not is_plain_name(value):
        raise ChannelError(f"{what} must be a release name")
    return value


def parse_steps(value: object) -> tuple[Step, ...]:
    if not isinstance(value, list) or len(value) > MAX_STEPS:
        raise ChannelError(f"steps must be a list of at most {MAX_STEPS} {{\"at\": TIME, \"percent\": N}}")
    steps = []
    for item in value:
        if not isinstance(item, dict):
            raise ChannelError('each step must be {"at": TIME, "percent": N}')
        steps.append(Step(_time(item.get("at"), "a step's at"), check_percent(item.get("percent"))))
    return tuple(sorted(steps, key=lambda s: s.at))


def parse(name: str, data: bytes) -> Channel:
    """A channel file's bytes as a ``Channel``; ``ChannelError`` for anything else."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ChannelError(f"channel {name}: not valid JSON") from None
    if not isinstance(doc, dict):
        raise ChannelError(f"channel {name}: must hold a JSON object")
    pin = doc.get("pin")
    if pin is not None:
        pin = _version(pin, f"channel {name}: pin")
        if name == DEFAULT_CHANNEL:
            raise ChannelError(f"channel {name}: its pin is partitions/LATEST, not a pin in its channel file")
    rollout = None
    if (raw := doc.get("rollout")) is not None:
        if not isinstance(raw, dict):
            raise ChannelError(f"channel {name}: rollout must be an object")
        halted = raw.get("halted", False)
        if not isinstance(halted, bool):
            raise ChannelError(f"channel {name}: rollout halted must be true or false")
        try:
            rollout = Rollout(_version(raw.get("version"), "rollout version"), check_percent(raw.get("percent")),
                              _time(raw.get("started"), "rollout started"), parse_steps(raw.get("steps", [])),
                              halted)
        except ChannelError as e:
            raise ChannelError(f"channel {name}: {e.message}") from None
    updated, by = doc.get("updated", ""), doc.get("by", "")
    return Channel(name, pin, rollout, updated if isinstance(updated, str) else "", by if isinstance(by, str) else "")


def dump(channel: Channel) -> bytes:
    data = channel.to_dict()
    del data["name"]  # the file's name is the channel's
    return (json.dumps(data, indent=2) + "\n").encode()


def bucket(rollout_id: str, key: str, caller: str) -> int:
    """The caller's bucket, ``0..BUCKETS-1``: stable for one rollout, spread evenly across callers."""
    digest = hashlib.sha256("\0".join((rollout_id, key, caller)).encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def caller_id(rollout_id: str, key: str, caller: str) -> str:
    """What the fleet remembers of a caller offered a rollout: a hash, never the address."""
    text = "\0".join(("offered", rollout_id, key, caller))
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def is_newer(candidate: str, base: str) -> bool:
    new, old = parse_version(candidate), parse_version(base)
    return new is not None and old is not None and new > old


def offers_rollout(rollout: Rollout, base: str, key: str, caller: str, now: float, offered_before: bool) -> bool:
    """Whether this caller is offered the rollout's release instead of the channel's ``base``.

    Never a release that is not newer than ``base``. Halted: only callers offered it
    before. Otherwise: the caller's bucket is below the percentage now.
    """
    if not is_newer(rollout.version, base):
        return False
    if rollout.halted:
        return offered_before
    return bucket(rollout.id, key, caller) < rollout.percent_at(now) * 100


# -- the changes the admin API makes: pure functions from one Channel to the next ------

@dataclass(frozen=True)
class Change:
    """A new channel and the audit text that says what changed (no spaces: one audit field)."""

    channel: Channel | None  # None: the channel file is removed
    what: str


def set_pin(channel: Channel, version: str | None, by: str, now: float) -> Change:
    if channel.name == DEFAULT_CHANNEL:
        raise ChannelError("the stable channel's pin is partitions/LATEST")  # the admin API writes that
    if version is not None:
        _version(version, "version")
    new = replace(channel, pin=version, updated=utc_text(now), by=by)
    what = f"pin:{channel.name}={version}" if version else f"unpin:{channel.name}"
    return Change(_kept(new), what)


def start_rollout(channel: Channel, version: str, percent: object, steps: object, by: str, now: float) -> Change:
    rollout = Rollout(_version(version, "version"), check_percent(percent), float(int(now)),
                      parse_steps(steps if steps is not None else []))
    return Change(replace(channel, rollout=rollout, updated=utc_text(now), by=by),
                  f"rollout-start:{channel.name}={version}@{rollout.percent}%")


def advance_rollout(channel: Channel, percent: object, by: str, now: float) -> Change:
    rollout = _active(channel)
    new_percent = check_percent(percent)
    if new_percent < rollout.percent_at(now):
        raise ChannelError(f"a rollout only rises: it offers {rollout.percent_at(now)}% now; "
                           "halt it to stop new offers")
    rollout = replace(rollout, percent=new_percent, halted=False)
    return Change(replace(channel, rollout=rollout, updated=utc_text(now), by=by),
                  f"rollout-advance:{channel.name}={rollout.version}@{new_percent}%")


def halt_rollout(channel: Channel, by: str, now: float) -> Change:
    rollout = _active(channel)
    return Change(replace(channel, rollout=replace(rollout, halted=True), updated=utc_text(now), by=by),
                  f"rollout-halt:{channel.name}={rollout.version}")


def _active(channel: Channel) -> Rollout:
    if channel.rollout is None:
        raise ChannelError(f"channel {channel.name} has no rollout")
    return channel.rollout


def _kept(channel: Channel) -> Channel | None:
    """A channel with neither pin nor rollout needs no file."""
    return channel if channel.pin is not None or channel.rollout is not None else None


@dataclass(frozen=True)
class Channels:
    """Every channel file as last read: the usable ones, and why the others are not."""

    channels: Mapping[str, Channel] = field(default_factory=dict)
    problems: Mapping[str, str] = field(default_factory=dict)

    def get(self, name: str) -> Channel:
        """The channel's settings; a channel without a file follows the newest release."""
        if name in self.problems:
            raise Unusable(f"channel {name} cannot be used; the server log and /status say why")
        return self.channels.get(name) or _plain(name)


@functools.lru_cache(maxsize=256)
def _plain(name: str) -> Channel:
    """A channel without a file (``stable``, usually), made once: every version query asks."""
    return Channel(name)


class Unusable(OtaError):
    """A channel whose file is refused: its callers get 503, never a guess."""

    status = 503



def offer(index: Index, key: str, channel: str, caller: str, now: float,
          offered_before: Callable[[str], bool]) -> tuple[Release, Rollout | None]:
    """What the version query answers this caller: the channel's base release (``Index.base``),
    or its rollout's release, with the rollout that decided it (None: the base).

    A rollout whose release is not servable offers nothing; its callers get the base.
    ``offered_before`` answers for a ``caller_id`` whether it was offered the rollout
    before (asked only for a halted rollout).
    """
    base = index.base(channel)
    rollout = index.channels.get(channel).rollout
    if rollout is None or rollout.version not in index.releases:
        return base, None
    before = rollout.halted and offered_before(caller_id(rollout.id, key, caller))
    if offers_rollout(rollout, base.version, key, caller, now, before):
        return index.releases[rollout.version], rollout
    return base, None
