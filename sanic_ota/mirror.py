"""A replica's copy of its bucket: releases fetched, checked, and laid out for ``LocalStore``.

With ``SANIC_OTA_STORE=s3://bucket/prefix`` the server serves ``<cache>/partitions/`` and
``<cache>/manifests/`` through the same ``LocalStore``, indexer, watcher and verified
cache as a local disk; this module is what writes them. So every fail-closed rule of
a local disk holds for a bucket, and one verifier serves both modes: a release is
served only once the indexer found its manifest signed by our key and every file
equal to it, and every byte is checked again as it is sent. (A device could not be
redirected to the bucket anyway: AT+CIUPDATE follows no redirect.)

Every ``poll_seconds``, one paged ListObjectsV2 of the prefix (``mirror_plan`` reads it);
nothing is fetched unless a manifest's or file's ETag differs from what was installed,
kept in ``<cache>/.mirror.json``. For a new or changed release: the manifest (If-Match
its listed ETag), its signature checked with the public key, then each file it lists
into a temporary directory inside ``partitions/`` (If-Match, at most the manifest's
length), hashed as it is written. Then the manifest is installed, then the files (a
new release: one rename of the directory; a changed one: each file replaced), so
the indexer never sees a release without its manifest, and any mixed moment is
refused by verification, never served.

A file missing, truncated or tampered with in the bucket, or a manifest that does not
verify: what was fetched is installed all the same, so the index holds the release as
present but not servable: the version query answers 503 rather than an older release,
and /status says why. The mirror logs which object failed and why, reports it in
``<cache>/.store-status.json`` (``mirror_status``), and fetches the release again after
1 s, 2, 4, ... up to 60 s (at most once per poll), or at once when the bucket changes.

Channel files (``channels/<name>.json``) are copied likewise, byte for byte, into
``<cache>/channels/`` after the releases (an unchanged ETag: no GET; one gone from the
bucket is removed), so the indexer and watcher treat them as local ones and every
replica follows a channel change within one poll.

A release whose manifest leaves the bucket leaves the cache at the next poll
(manifest first, then its directory). Past ``cache_dir_bytes`` the oldest releases are
left out (never the newest, the pinned one, or one a channel file names): this
replica no longer lists them, and one a device asks for (``mirror_status.want``) is fetched back before newer ones.
The store unreachable: nothing changes on disk, the verified releases are served on,
and the status says the store is down until a listing succeeds again.

Only one worker per replica talks to the bucket: the one holding a non-blocking
``flock`` on ``<cache>/.mirror.lock``; the others try to take it every poll, so a
worker that died hands the duty on. Network calls are aiobotocore's (the event loop
never waits on the network); files are written on the event loop chunk by chunk
(256 KiB into the page cache), and every fsync, rename and removal runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sanic_ota import manifest as manifests
from sanic_ota.errors import ContainmentError, ManifestError
from sanic_ota.files import write_atomic
from sanic_ota.manifest import FileEntry
from sanic_ota.mirror_plan import (
    PIN_PATH,
    ChannelPlan,
    Held,
    Listed,
    channel_path,
    channels_in,
    file_path,
    manifest_path,
    named_by_channel,
    plan,
    plan_channels,
    releases_in,
)
from sanic_ota.mirror_status import StoreStatus, wanted, write_status
from sanic_ota.settings import ENV_PREFIX, Settings
from sanic_ota.signing import Verifier
from sanic_ota.store.local import CHANNEL_LIMIT, MANIFEST_LIMIT, PIN_LIMIT, LocalStore
from sanic_ota.store.s3 import (
    Bucket,
    ObjectChanged,
    ObjectInfo,
    S3Location,
    StoreRefused,
    StoreUnreachable,
    open_bucket,
)
from sanic_ota.trust import Measure, check_file
from sanic_ota.versions import is_plain_name

logger = logging.getLogger("sanic_ota.mirror")

MIRROR_FILE = ".mirror.json"
LOCK_FILE = ".mirror.lock"
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0


@dataclass(frozen=True)
class Retry:
    """A release that failed: why (object → reason), when it is fetched again, and the
    listing it failed on."""

    at: float
    delay: float
    listed: Held
    problems: dict[str, str]


async def check_store(settings: Settings) -> None:
    """One listing at start. Settings the store refuses (credentials, bucket) stop the
    start with ``StoreRefused`` naming what to fix; an unreachable store only warns."""
    location = S3Location.parse(settings.store)
    try:
        async with open_bucket(location) as bucket:
            await bucket.list("manifests")
    except StoreRefused as e:
        raise StoreRefused(f"{ENV_PREFIX}STORE={location}: {e.message}") from None
    except StoreUnreachable as e:
        logger.warning("store %s is unreachable at start (%s): serving what %s holds, catching up when it "
                       "returns", location, e, settings.cache_dir)
    else:
        logger.info("store %s answers; releases are mirrored into %s", location, settings.cache_dir)


class Mirror:
    """The loop that keeps the cache directory equal to the bucket (see the module's docstring)."""

    def __init__(self, settings: Settings, verifier: Verifier) -> None:
        self.location = S3Location.parse(settings.store)
        self.cache = Path(settings.cache_dir)
        self.store = LocalStore.from_settings(settings)  # the one that knows where files go
        self.limit = settings.cache_dir_bytes
        self.poll_seconds = settings.poll_seconds
        self.verifier = verifier
        self.stop_event = asyncio.Event()
        self.held: dict[str, Held] = {}
        self.pin_etag: str | None = None
        self.pinned: str | None = None
        #: channel name → the ETag of the channel file copied into the cache
        self.channel_etags: dict[str, str] = {}
        #: channel name → the releases its file names (kept in a full cache)
        self.channel_names: dict[str, set[str]] = {}
        #: each failed release: why, and when it is fetched again
        self.retries: dict[str, Retry] = {}
        self.status = StoreStatus(str(self.location))
        self._saved = b""
        self._lock_fd: int | None = None

    def stop(self) -> None:
        self.stop_event.set()

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Take the lock (or wait for it), then poll until stopped; nothing ends it early."""
        try:
            while not self.stop_event.is_set():
                try:
                    if await asyncio.to_thread(self._take_lock):
                        await self._hold()
                except Exception:  # the mirror outlives any bug; the served releases stay
                    logger.exception("mirror failed; starting again")
                await self._sleep(self.poll_seconds)
        except asyncio.CancelledError:
            pass  # shutdown
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    async def _hold(self) -> None:
        logger.info("this worker mirrors %s into %s every %g s", self.location, self.cache, self.poll_seconds)
        await asyncio.to_thread(self.load)
        async with open_bucket(self.location) as bucket:
            while not self.stop_event.is_set():
                try:
                    await self.poll(bucket)
                except Exception:
                    logger.exception("mirror poll failed; carrying on")
                await self._sleep(self.poll_seconds)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), seconds)

    def _take_lock(self) -> bool:
        """Hold ``.mirror.lock`` (kept until the loop ends); False if another worker holds it."""
        if self._lock_fd is not None:  # ours already (a failed round keeps it)
            return True
        self.cache.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.cache / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    # -- one poll -----------------------------------------------------------------------

    async def poll(self, bucket: Bucket) -> None:
        """List the bucket once and bring the cache in line with it."""
        try:
            listing = await bucket.list()
            listed, pin = releases_in(listing)
            pin_document = await self._read_pin(bucket, pin)
            now = time.monotonic()
            failed = {v: retry.listed for v, retry in self.retries.items()}
            due = {v for v, retry in self.retries.items() if retry.at <= now}
            asked = await asyncio.to_thread(wanted, self.cache, time.time())
            channel_todo, copies = await self._read_channels(bucket, channels_in(listing))
            kept = self._named_by_channels(copies, channel_todo.remove) | ({self.pinned} if self.pinned else set())
            todo = plan(listed, self.held, kept, self.limit, failed, due, asked)
            for version in todo.remove:
                why = "left out: the cache is over its bound" if version in todo.left_out else "gone from the bucket"
                await asyncio.to_thread(self._remove, version)
                logger.info("release %s removed from the cache (%s)", version, why)
            for version in todo.fetch:
                await self._fetch(bucket, version, listed[version])
            # after the releases: a pin or channel naming a new release names it once it is in place
            await asyncio.to_thread(self._write_pin, pin, pin_document)
            if copies or channel_todo.remove:
                await asyncio.to_thread(self._copy_channels, copies, channel_todo.remove)
        except (StoreUnreachable, StoreRefused) as e:
            self._went_down(str(e))
        else:
            self._went_up(todo.left_out, listed.keys())
        await asyncio.to_thread(self._save)

    def _went_down(self, message: str) -> None:
        if self.status.up or self.status.message != message:
            logger.error("store %s is down (%s): serving what the cache holds", self.location, message)
        self.status.up, self.status.message = False, message

    def _went_up(self, left_out: list[str], listed: Collection[str]) -> None:
        if not self.status.up and self.status.last_sync is not None:
            logger.info("store %s answers again", self.location)
        if left_out != self.status.left_out and left_out:
            logger.warning("left out of the cache, over %sCACHE_DIR_BYTES=%d (not listed by this replica; "
                           "fetched back when a device asks for one): %s",
                           ENV_PREFIX, self.limit, ", ".join(left_out))
        for version in set(self.retries) - set(listed):
            self.retries.pop(version)
        self.status.up, self.status.message, self.status.last_sync = True, "", time.time()
        self.status.left_out = left_out

    async def _read_pin(self, bucket: Bucket, pin: ObjectInfo | None) -> bytes | None:
        """The pin's bytes if it changed in the bucket (None: unchanged or gone); the version
        it names is planned now, and it is written once the releases are in place."""
        if pin is None or pin.etag == self.pin_etag:
            return None
        try:
            document = await bucket.read(PIN_PATH, pin.etag, PIN_LIMIT)
        except ObjectChanged:
            return None  # replaced since the listing: the next poll reads the new one
        text = document.decode("ascii", "replace").strip()
        self.pinned = text if is_plain_name(text) else None
        return document

    def _write_pin(self, pin: ObjectInfo | None, document: bytes | None) -> None:
        if pin is None and self.pin_etag is not None:
            self.store.copy_pin(None)
            self.pin_etag = self.pinned = None
            logger.info("pin removed (gone from the bucket)")
        elif pin is not None and document is not None:
            self.store.copy_pin(document)
            self.pin_etag = pin.etag
            logger.info("pin mirrored: %s", self.pinned or "(not a plain version name: refused by the index)")

    async def _read_channels(self, bucket: Bucket, listed: dict[str, ObjectInfo]
                             ) -> tuple[ChannelPlan, dict[str, tuple[bytes, str]]]:
        """The channel files that changed in the bucket (unchanged ETags: no GET), read
        before the releases are planned (a full cache keeps what they name) and copied,
        byte for byte, after the releases are in place."""
        todo = plan_channels(listed, self.channel_etags, CHANNEL_LIMIT)
        copies: dict[str, tuple[bytes, str]] = {}
        for name in todo.fetch:
            try:
                copies[name] = (await bucket.read(channel_path(name), listed[name].etag, CHANNEL_LIMIT),
                                listed[name].etag)
            except ObjectChanged:
                logger.info("channel file %s changed in the bucket while it was read; the next poll reads it", name)
        for name in todo.too_large:
            logger.error("channel file %s in %s is %d bytes, more than a channel file may be (%d): not fetched; "
                         "the channel's callers get 503 until it is fixed", name, self.location, listed[name].size,
                         CHANNEL_LIMIT)
            copies[name] = (b"", listed[name].etag)  # not JSON: the index refuses the channel
        return todo, copies

    def _named_by_channels(self, copies: dict[str, tuple[bytes, str]], gone: list[str]) -> set[str]:
        """Every release the channel files name, with this poll's copies and removals."""
        for name, (document, _) in copies.items():
            self.channel_names[name] = named_by_channel(name, document)
        for name in gone:
            self.channel_names.pop(name, None)
        return set().union(*self.channel_names.values())

    def _copy_channels(self, copies: dict[str, tuple[bytes, str]], gone: list[str]) -> None:
        for name, (document, etag) in sorted(copies.items()):
            self.store.write_channel(name, document)
            self.channel_etags[name] = etag
            logger.info("channel file %s mirrored", name)
        for name in gone:
            self.store.write_channel(name, None)
            self.channel_etags.pop(name, None)
            logger.info("channel file %s removed (gone from the bucket)", name)

    # -- one release --------------------------------------------------------------------

    async def _fetch(self, bucket: Bucket, version: str, listed: Listed) -> None:
        """Fetch a release into a temporary directory, check it, install it (even if bad)."""
        if listed.manifest.size > MANIFEST_LIMIT:  # as listed: not fetched at all
            self._record(version, listed, {"manifest": f"{listed.manifest.size} bytes, more than a manifest may be "
                                                      f"({MANIFEST_LIMIT})"})
            return
        try:
            document = await bucket.read(manifest_path(version), listed.manifest.etag, MANIFEST_LIMIT)
        except ObjectChanged:
            logger.info("manifest of %s changed while it was read; the next poll fetches it", version)
            return
        problems: dict[str, str] = {}
        try:
            manifest = manifests.verify(document, self.verifier, version)
            expected: dict[str, tuple[int, FileEntry | None]] = {n: (e.length, e) for n, e in manifest.files.items()}
        except ManifestError as e:  # installed all the same: the index refuses it and says why
            problems["manifest"] = e.message
            expected = {name: (info.size, None) for name, info in listed.files.items()}
        temporary = await asyncio.to_thread(self.store.staging, version)
        try:
            try:
                for name, (length, entry) in sorted(expected.items()):
                    info = listed.files.get(name)
                    if info is None:
                        problems[name] = "missing from the bucket"
                    elif info.size != length:
                        problems[name] = f"{info.size} bytes in the bucket, the manifest says {length}"
                    elif problem := await self._fetch_file(bucket, file_path(version, name), info.etag, length,
                                                           entry, temporary / name):
                        problems[name] = problem
                await asyncio.to_thread(self.store.install, version, document, temporary)
            except BaseException:
                await asyncio.to_thread(shutil.rmtree, temporary, True)
                raise
        except ObjectChanged:
            logger.info("release %s changed in the bucket while it was fetched; the next poll fetches it", version)
            return
        except (StoreUnreachable, StoreRefused):
            raise
        except OSError as e:  # the cache directory: a full disk, an I/O error
            self._record(version, listed, {"(cache directory)": f"cannot write it: {e.strerror}"})
            return
        self.held[version] = listed.held()
        self._record(version, listed, problems)

    def _record(self, version: str, listed: Listed, problems: dict[str, str]) -> None:
        if not problems:
            if self.retries.pop(version, None) is not None:
                logger.info("release %s mirrored in full after earlier failures", version)
            else:
                logger.info("release %s mirrored (%d file(s))", version, len(listed.files))
            return
        previous = self.retries.get(version)
        delay = RETRY_FIRST_SECONDS if previous is None else min(previous.delay * 2, RETRY_MAX_SECONDS)
        self.retries[version] = Retry(time.monotonic() + delay, delay, listed.held(), problems)
        for name, why in sorted(problems.items()):
            logger.error("release %s: %s in %s is not good: %s; the release is NOT served; fetching it "
                         "again in %g s", version, name, self.location, why, delay)

    async def _fetch_file(self, bucket: Bucket, path: str, etag: str, length: int, entry: FileEntry | None,
                          target: Path) -> str | None:
        """Stream one object into ``target``, measured as it is written; why it is not as the
        manifest's ``entry`` says (``trust.check_file``), or None. Without an entry (a manifest
        that did not verify) only the length is compared. ``ObjectChanged``: replaced since
        the listing."""
        measure = Measure()
        handle: BinaryIO = open(target, "wb")  # noqa: SIM115 (closed below, in a thread after its fsync)

        def write(chunk: bytes) -> None:
            handle.write(chunk)
            measure.update(chunk)

        try:
            await bucket.fetch(path, etag, write, limit=length)
        finally:
            await asyncio.to_thread(_close_durably, handle)
        seen = measure.observed()
        if entry is None:
            return None if seen.length == length else f"{seen.length} bytes, the manifest says {length}"
        problem = check_file(path, entry, seen)
        return None if problem is None else problem.detail

    # -- the cache directory (blocking: called in a thread) ---------------------------------

    def _remove(self, version: str) -> None:
        self.store.remove(version)
        self.held.pop(version, None)
        self.retries.pop(version, None)

    def load(self) -> None:
        """What an earlier run installed, checked against the disk. A release on disk the
        record does not know is fetched again (or removed) at the first listing."""
        self.store.clear_staging()
        held: dict[str, Held] = {}
        try:
            record = json.loads((self.cache / MIRROR_FILE).read_bytes())
            for version, item in record["releases"].items():
                held[str(version)] = Held(str(item["manifest"]), {str(k): str(v) for k, v in item["files"].items()})
            pin_etag = record["pin"]
            channel_etags = {str(k): str(v) for k, v in record.get("channels", {}).items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            held, pin_etag, channel_etags = {}, None, {}
        directories, manifests_present = self.store.installed()
        for version in directories | manifests_present:
            if version not in held or version not in directories or version not in manifests_present:
                held[version] = Held("", {})
        self.held = {v: h for v, h in held.items() if v in directories | manifests_present}
        try:
            pinned = self.store.read_pin()
        except ContainmentError:
            pinned = None
        # a channel file on disk the record does not know ("": never a listed ETag) is
        # fetched again at the first listing, or removed if the bucket has none
        on_disk = self.store.list_channels()
        self.channel_etags = {name: channel_etags.get(name, "") for name in on_disk}
        self.channel_names = {name: named_by_channel(name, self._cached_channel(name)) for name in on_disk}
        if pinned is None or not isinstance(pin_etag, str):
            self.store.copy_pin(None)  # not known to come from the bucket: read it again
            self.pin_etag = self.pinned = None
        else:
            self.pin_etag, self.pinned = pin_etag, pinned

    def _cached_channel(self, name: str) -> bytes:
        try:
            return self.store.read_channel(name) or b""
        except (ContainmentError, OSError):
            return b""

    def _save(self) -> None:
        """The record of what is installed (when it changed), and the status (every poll)."""
        record = json.dumps({
            "releases": {v: {"manifest": h.manifest, "files": dict(h.files)}
                         for v, h in sorted(self.held.items())},
            "pin": self.pin_etag,
            "channels": dict(sorted(self.channel_etags.items())),
        }, indent=1).encode()
        if record != self._saved:
            write_atomic(self.cache / MIRROR_FILE, record)
            self._saved = record
        self.status.failures = {v: dict(r.problems) for v, r in self.retries.items()}
        self.status.mirrored = sorted(self.held)
        write_status(self.cache, self.status)


def _close_durably(handle: BinaryIO) -> None:
    try:
        handle.flush()
        os.fsync(handle.fileno())
    finally:
        handle.close()
