"""Where the admin API writes a channel change or the stable pin: the local store, or the bucket.

On one server a change is a channel file (or ``partitions/LATEST``) written atomically
through ``LocalStore`` in a thread, and every worker's watcher re-reads it.

On a replica (``SANIC_OTA_STORE=s3://bucket/prefix``) the cache directory is the
mirror's copy of the bucket: a change written only there would never reach the other
replicas, and this replica's mirror would overwrite it with the bucket's copy. So the
change is written to the bucket (a PUT of ``channels/<name>.json`` or
``partitions/LATEST``, a DELETE to remove one, on the event loop through aiobotocore),
then the same bytes are copied into this replica's cache at once so it answers with
the change; every other replica's mirror copies it within one poll. The read before a
change (``read_channel``) also asks the bucket, not a copy up to a poll old.

A replica whose credentials may not write those keys, or a store that does not
answer, changes nothing: the admin gets a JSON error saying what to do
(``WriteRefused``, 503; ``StoreDown``, 502). Releases are never written here: a
replica refuses uploads, they are published to the bucket (``tools/publish.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from sanic_ota.errors import OtaError
from sanic_ota.mirror_plan import PIN_PATH, channel_path
from sanic_ota.store.local import CHANNEL_LIMIT, LocalStore, pin_document
from sanic_ota.store.s3 import ObjectChanged, ObjectMissing, S3Location, StoreRefused, StoreUnreachable, open_bucket

logger = logging.getLogger("sanic_ota.channel_writer")


class WriteRefused(OtaError):
    """503: the store refuses this replica's write (read-only credentials). Not worth a retry
    here: this server cannot make changes until its credentials change."""

    status = 503


class StoreDown(OtaError):
    """502: the store behind this replica did not take the change (unreachable, or an error
    answer); worth trying again."""

    status = 502


class ChannelWriter:
    """A local store's channel files and pin, written in a thread."""

    #: whether releases may be uploaded here (``PUT /v1/admin/releases/<v>``)
    takes_uploads = True

    def __init__(self, store: LocalStore) -> None:
        self.store = store

    async def read_channel(self, name: str) -> bytes | None:
        return await asyncio.to_thread(self.store.read_channel, name)

    async def write_channel(self, name: str, document: bytes | None) -> None:
        await asyncio.to_thread(self.store.write_channel, name, document)

    async def write_pin(self, version: str | None) -> None:
        await asyncio.to_thread(self.store.write_pin, version)


class BucketChannelWriter(ChannelWriter):
    """A replica's: the bucket first, then this replica's copy (see the module's docstring)."""

    takes_uploads = False

    def __init__(self, store: LocalStore, location: S3Location) -> None:
        super().__init__(store)
        self.location = location

    async def read_channel(self, name: str) -> bytes | None:
        with self._failures("read"):
            async with open_bucket(self.location) as bucket:
                try:
                    return await bucket.read(channel_path(name), limit=CHANNEL_LIMIT)
                except ObjectMissing:
                    return None

    async def write_channel(self, name: str, document: bytes | None) -> None:
        await self._put(channel_path(name), document)
        await asyncio.to_thread(self.store.write_channel, name, document)

    async def write_pin(self, version: str | None) -> None:
        document = None if version is None else pin_document(version)
        await self._put(PIN_PATH, document)
        await asyncio.to_thread(self.store.copy_pin, document)

    async def _put(self, path: str, document: bytes | None) -> None:
        """Write (None: delete) one object in the bucket; the store's failures as the admin's errors."""
        with self._failures("write"):
            async with open_bucket(self.location) as bucket:
                if document is None:
                    await bucket.delete(path)
                else:
                    await bucket.put(path, document)

    @contextlib.contextmanager
    def _failures(self, doing: str) -> Iterator[None]:
        """The store's failures as the admin's errors; the log keeps the store's own reason."""
        try:
            yield
        except StoreRefused as e:
            logger.error("store %s refused this replica's %s: %s", self.location, doing, e.message)
            raise WriteRefused(
                f"this replica may not change channels: the store {self.location} refused its {doing} "
                "(read-only credentials?); nothing was changed. Give the replicas' credentials write access "
                "to the bucket's channels/ and partitions/LATEST keys, or make the change on a server "
                "that has it") from None
        except (StoreUnreachable, ObjectChanged) as e:
            logger.error("store %s did not take this replica's %s: %s", self.location, doing, e)
            raise StoreDown(f"the store {self.location} did not answer this replica's {doing}; nothing was "
                            "changed: try again when the store answers (see /status)") from None
