"""What a replica's mirror must do, from one bucket listing: pure, no I/O, no event loop.

A listing (``store.s3.Bucket.list``: layout path → ETag and size) is read as releases:
a release exists iff its manifest ``manifests/<version>.json`` is listed (the
publisher uploads it last: it is the commit point), with whatever
``partitions/<version>/<name>.bin`` objects are listed beside it. ``plan`` compares
that with what the mirror holds (the ETags it installed) and says which releases to
fetch, which to remove, and which are left out to keep the cache within its bound.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from sanic_ota import channels
from sanic_ota.store.s3 import ObjectInfo
from sanic_ota.versions import is_plain_name, is_release_file, newest, newest_first

PIN_PATH = "partitions/LATEST"
MANIFEST_SUFFIX = ".json"


def manifest_path(version: str) -> str:
    return f"manifests/{version}{MANIFEST_SUFFIX}"


def file_path(version: str, name: str) -> str:
    return f"partitions/{version}/{name}"


@dataclass(frozen=True)
class Listed:
    """One release as the bucket lists it: its manifest object and its files' objects."""

    manifest: ObjectInfo
    files: Mapping[str, ObjectInfo] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """The bytes the release takes in the cache (its files and its manifest)."""
        return self.manifest.size + sum(info.size for info in self.files.values())

    def held(self) -> Held:
        """What the mirror records once it installed this listing."""
        return Held(self.manifest.etag, {name: info.etag for name, info in self.files.items()})


@dataclass(frozen=True)
class Held:
    """A release the mirror installed: the ETags it fetched (its size is the listing's).

    An ETag of "" stands for "found on disk, not known to the mirror": never equal
    to a listed one, so such a release is fetched again or removed.
    """

    manifest: str
    files: Mapping[str, str]

    def same(self, listed: Listed) -> bool:
        return self.manifest == listed.manifest.etag and dict(self.files) == {
            name: info.etag for name, info in listed.files.items()
        }


def releases_in(listing: Mapping[str, ObjectInfo]) -> tuple[dict[str, Listed], ObjectInfo | None]:
    """The releases a listing holds, and the pin object (None: no pin).

    Objects that are not in the layout (other names, deeper paths, files of a release
    without a manifest) are not part of any release and are never fetched.
    """
    manifests: dict[str, ObjectInfo] = {}
    files: dict[str, dict[str, ObjectInfo]] = {}
    for path, info in listing.items():
        parts = path.split("/")
        if len(parts) == 2 and parts[0] == "manifests" and parts[1].endswith(MANIFEST_SUFFIX):
            version = parts[1][: -len(MANIFEST_SUFFIX)]
            if is_plain_name(version):
                manifests[version] = info
        elif len(parts) == 3 and parts[0] == "partitions" and is_plain_name(parts[1]) and is_release_file(parts[2]):
            files.setdefault(parts[1], {})[parts[2]] = info
    releases = {v: Listed(m, files.get(v, {})) for v, m in manifests.items()}
    return releases, listing.get(PIN_PATH)


def choose(listed: Mapping[str, Listed], kept: Collection[str], limit: int,
           wanted: Collection[str] = ()) -> tuple[set[str], list[str]]:
    """The releases to hold within ``limit`` bytes, and those left out (newest first).

    The newest release and those ``kept`` (the pin's, and those a channel pins or rolls
    out) are always held, whatever their size: they are what version queries answer,
    and a device told to install one must find it. Then the releases devices asked for although
    they were left out (``wanted``), then the others, newest first, while they fit; the
    oldest (and names that are not versions) are left out first.
    """
    must = set(newest(listed)) | (set(kept) & listed.keys())
    held, used = set(must), sum(listed[v].size for v in must)
    order = newest_first(listed)
    left_out = []
    for version in [v for v in order if v in wanted] + [v for v in order if v not in wanted]:
        if version in must:
            continue
        if used + listed[version].size <= limit:
            held.add(version)
            used += listed[version].size
        else:
            left_out.append(version)
    return held, [v for v in order if v in left_out]


@dataclass(frozen=True)
class Plan:
    fetch: list[str]  # newest first: what devices ask for first arrives first
    remove: list[str]  # held, but gone from the bucket or left out
    left_out: list[str]


def plan(
    listed: Mapping[str, Listed], held: Mapping[str, Held], kept: Collection[str], limit: int,
    failed: Mapping[str, Held] | None = None, due: Collection[str] = (), wanted: Collection[str] = (),
) -> Plan:
    """What to do now: fetch releases new or changed in the bucket; remove those the
    bucket no longer lists or that no longer fit.

    A release whose last fetch failed (``failed``: the listing it failed on) is
    fetched again when its retry is ``due``, or at once if the bucket changed since;
    not at every poll, which would fetch a broken release again and again.
    ``kept`` and ``wanted``: see ``choose``.
    """
    failed = failed or {}
    keep, left_out = choose(listed, kept, limit, wanted)

    def to_fetch(version: str) -> bool:
        if version in failed:
            return version in due or not failed[version].same(listed[version])
        return version not in held or not held[version].same(listed[version])

    fetch = [v for v in newest_first(keep) if to_fetch(v)]
    remove = sorted(v for v in held if v not in keep)
    return Plan(fetch, remove, left_out)


CHANNELS = "channels"
CHANNEL_SUFFIX = ".json"


def named_by_channel(name: str, document: bytes) -> set[str]:
    """The releases a channel file names (its pin, its rollout's release): a full cache
    keeps them. None for a file the index would refuse anyway."""
    try:
        channel = channels.parse(name, document)
    except channels.ChannelError:
        return set()
    return channel.named


def channel_path(name: str) -> str:
    return f"{CHANNELS}/{name}{CHANNEL_SUFFIX}"


def channels_in(listing: Mapping[str, ObjectInfo]) -> dict[str, ObjectInfo]:
    """The channel files a listing holds: ``channels/<name>.json`` with a plain name, by name.

    Other objects under ``channels/`` (deeper paths, other suffixes) are not channel
    files, exactly as in a local ``channels/`` directory, and are never fetched.
    """
    found = {}
    for path, info in listing.items():
        parts = path.split("/")
        if len(parts) == 2 and parts[0] == CHANNELS and parts[1].endswith(CHANNEL_SUFFIX):
            name = parts[1][: -len(CHANNEL_SUFFIX)]
            if is_plain_name(name):
                found[name] = info
    return found


@dataclass(frozen=True)
class ChannelPlan:
    fetch: list[str]  # new or changed in the bucket (by ETag)
    remove: list[str]  # held, gone from the bucket
    too_large: list[str]  # changed, but over ``limit``: never fetched, the copy is made unusable


def plan_channels(listed: Mapping[str, ObjectInfo], held: Mapping[str, str], limit: int) -> ChannelPlan:
    """Which channel files to copy, remove, or refuse, from their listed and held ETags.

    An unchanged ETag means no GET. A file over ``limit`` bytes (what a local channel
    file may be) is not fetched; the mirror replaces its copy with one the index
    refuses, so the channel's callers get 503 rather than an older pin or rollout.
    """
    changed = sorted(name for name, info in listed.items() if held.get(name) != info.etag)
    return ChannelPlan(
        fetch=[name for name in changed if listed[name].size <= limit],
        remove=sorted(set(held) - set(listed)),
        too_large=[name for name in changed if listed[name].size > limit],
    )
