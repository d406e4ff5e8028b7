"""The bucket side of an S3-compatible store: where objects are, listing, fetching, putting.

A replica never serves from the bucket. ``mirror`` copies what the bucket holds into
the replica's cache directory, laid out as ``partitions/`` and ``manifests/``, and the
server serves that copy through ``store.local.LocalStore`` exactly as it serves a
local disk: every release is checked against its signed manifest by the indexer, and
every byte again when it is served. So a bucket that lies can make a release
unservable, never make a device get a wrong byte. ``tools/publish.py`` writes the
bucket with the same calls.

The layout in the bucket is the one on disk, under a prefix:
``<prefix>/partitions/<version>/<name>.bin``, ``<prefix>/manifests/<version>.json``,
``<prefix>/partitions/LATEST`` and ``<prefix>/channels/<name>.json``. A replica's admin
API writes the last two (``channel_writer``); nothing else here is written by a replica.

The client is aiobotocore (botocore's async twin): it reads the endpoint, region and
credentials the standard way (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_PROFILE`` and ``~/.aws/config``), so an
operator has nothing of ours to learn, and the event loop never waits on the network.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sanic_ota.errors import ConfigurationError

#: What each S3 call may take before the store counts as down (seconds).
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30
#: Bytes per read when streaming an object to disk.
CHUNK = 256 * 1024

#: Error codes that no retry fixes: the operator's settings are wrong.
_CREDENTIAL_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch",
                               "InvalidToken", "ExpiredToken", "AuthorizationHeaderMalformed"})


class StoreUnreachable(OSError):
    """The store did not answer (connection refused, timeout, 5xx): worth retrying."""


class StoreRefused(ConfigurationError):
    """The store answered, and says our settings are wrong: credentials or bucket."""


class ObjectChanged(OSError):
    """An object was replaced between listing it and reading it (its ETag moved on)."""


class ObjectMissing(ObjectChanged):
    """The object is not there (NoSuchKey): never written, or removed since it was listed."""


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix``: a bucket and the key prefix the layout lives under."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Location:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ConfigurationError(f"SANIC_OTA_STORE={url!r}: expected s3://bucket or s3://bucket/prefix")
        return cls(parts.netloc, parts.path.strip("/"))

    def key(self, *parts: str) -> str:
        """The object key of a path inside the layout (``partitions``, ``v1``, ``ota.bin``)."""
        return "/".join(p for p in (self.prefix, *parts) if p)

    def relative(self, key: str) -> str | None:
        """A key's path inside the layout, None for keys outside the prefix."""
        if not self.prefix:
            return key
        head = self.prefix + "/"
        return key[len(head):] if key.startswith(head) else None

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True)
class ObjectInfo:
    """An object as a listing shows it: enough to know whether it changed."""

    etag: str
    size: int


def _code(error: BaseException) -> str:
    response: Any = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def classify(error: BaseException, location: S3Location) -> Exception:
    """An S3 failure as one of ours: refused (settings), changed, or unreachable (retry).

    The message names the setting to fix and never carries a secret or a signature.
    """
    import botocore.exceptions

    code = _code(error)
    if code == "AccessDenied":
        return StoreRefused("the store denied access (AccessDenied): check that AWS_ACCESS_KEY_ID and "
                            f"AWS_SECRET_ACCESS_KEY (or the AWS profile) may use bucket {location.bucket!r}")
    if code in _CREDENTIAL_CODES:
        return StoreRefused(f"the store refused our credentials ({code}): check AWS_ACCESS_KEY_ID, "
                            "AWS_SECRET_ACCESS_KEY (or the AWS profile) for this replica")
    if code == "NoSuchBucket":
        return StoreRefused(f"bucket {location.bucket!r} does not exist: check SANIC_OTA_STORE")
    if code in ("NoSuchKey", "404"):
        return ObjectMissing("the object is not in the store")
    if code in ("PreconditionFailed", "412"):
        return ObjectChanged("the object changed while it was read")
    if isinstance(error, botocore.exceptions.ClientError):
        return StoreUnreachable(f"the store answered {code or 'an error'}")
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return StoreRefused("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                            "(or an AWS profile) for this replica")
    return StoreUnreachable(f"the store did not answer ({type(error).__name__})")


class Bucket:
    """One bucket and prefix, through one open client. Async: every call is network I/O."""

    def __init__(self, client: Any, location: S3Location) -> None:
        self._client = client
        self.location = location

    async def list(self, *under: str) -> dict[str, ObjectInfo]:
        """Every object under the layout path ``under``: its path in the layout → ETag and size.

        One ListObjectsV2 round trip per 1,000 objects, no GET.
        """
        prefix = self.location.key(*under)
        found: dict[str, ObjectInfo] = {}
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.location.bucket, Prefix=prefix + "/" if prefix else ""):
                for item in page.get("Contents", ()):
                    path = self.location.relative(item["Key"])
                    if path is not None:
                        found[path] = ObjectInfo(str(item["ETag"]), int(item["Size"]))
        except Exception as e:  # botocore and aiohttp raise many types; classify says which
            raise self._failure(e) from e
        return found

    async def fetch(self, path: str, etag: str | None, write: Callable[[bytes], object],
                    limit: int | None = None) -> None:
        """Stream one object to ``write``; ``If-Match`` the listed ETag so one version is read.

        ``limit`` refuses an object larger than expected before it fills a disk.
        """
        arguments: dict[str, Any] = {"Bucket": self.location.bucket, "Key": self.location.key(path)}
        if etag is not None:
            arguments["IfMatch"] = etag
        try:
            answer = await self._client.get_object(**arguments)
            taken = 0
            async with answer["Body"] as body:
                while chunk := await body.read(CHUNK):
                    taken += len(chunk)
                    if limit is not None and taken > limit:
                        raise ObjectChanged("the object is longer than listed")
                    write(chunk)
        except (ObjectChanged, StoreUnreachable):
            raise
        except Exception as e:
            raise self._failure(e) from e

    async def read(self, path: str, etag: str | None = None, limit: int = 1 << 20) -> bytes:
        """A small object's bytes (a manifest, the pin), at most ``limit`` of them."""
        parts: list[bytes] = []
        await self.fetch(path, etag, parts.append, limit)
        return b"".join(parts)

    async def put(self, path: str, source: Path | bytes) -> None:
        """Write one object (a file is streamed from disk, not read into memory)."""
        key = self.location.key(path)
        try:
            if isinstance(source, bytes):
                await self._client.put_object(Bucket=self.location.bucket, Key=key, Body=source)
            else:
                with open(source, "rb") as f:
                    await self._client.put_object(Bucket=self.location.bucket, Key=key, Body=f)
        except Exception as e:
            raise self._failure(e) from e

    async def delete(self, path: str) -> None:
        try:
            await self._client.delete_object(Bucket=self.location.bucket, Key=self.location.key(path))
        except Exception as e:
            raise self._failure(e) from e

    def _failure(self, error: BaseException) -> Exception:
        return classify(error, self.location)


@asynccontextmanager
async def open_bucket(location: S3Location) -> AsyncIterator[Bucket]:
    """A client for ``location`` configured from the standard AWS settings, closed on exit.

    A plain ``http://`` endpoint (a local SeaweedFS or MinIO) works as it is; without
    a region in the environment or config, ``us-east-1`` (what such servers expect).
    """
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    session = get_session()
    region = session.get_config_variable("region") or "us-east-1"
    config = AioConfig(connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                       retries={"max_attempts": 2, "mode": "standard"})
    async with session.create_client("s3", region_name=region, config=config) as client:
        yield Bucket(client, location)

