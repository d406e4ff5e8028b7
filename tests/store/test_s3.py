"""store/s3.py against a real S3 engine (SeaweedFS): listing, If-Match reads, and errors
that name the setting to fix."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from sanic_ota.errors import ConfigurationError
from sanic_ota.store.s3 import ObjectChanged, S3Location, StoreRefused, StoreUnreachable, open_bucket
from sanic_ota.tools.s3_dev import SeaweedFS, free_port


@pytest.fixture
def publisher_env(seaweed: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in seaweed.publisher.environ(seaweed.endpoint).items():
        monkeypatch.setenv(name, value)
    yield


def test_parse_locations() -> None:
    assert S3Location.parse("s3://b/fleet/eu/") == S3Location("b", "fleet/eu")
    assert S3Location.parse("s3://b").key("partitions", "v1", "ota.bin") == "partitions/v1/ota.bin"
    assert S3Location("b", "p").relative("p/manifests/v1.json") == "manifests/v1.json"
    assert S3Location("b", "p").relative("pq/manifests/v1.json") is None
    for bad in ("b/p", "https://b/p", "s3:///p", "s3://b/p?x=1"):
        with pytest.raises(ConfigurationError, match="SANIC_OTA_STORE"):
            S3Location.parse(bad)


def test_list_read_and_if_match(publisher_env: None, s3_location: str) -> None:
    location = S3Location.parse(s3_location)

    async def go() -> None:
        async with open_bucket(location) as bucket:
            await bucket.put("partitions/v1/ota.bin", b"\xe9" * 1000)
            await bucket.put("manifests/v1.json", b"{}")
            listed = await bucket.list()
            assert set(listed) == {"partitions/v1/ota.bin", "manifests/v1.json"}
            assert listed["partitions/v1/ota.bin"].size == 1000
            assert await bucket.list("manifests") == {"manifests/v1.json": listed["manifests/v1.json"]}
            etag = listed["partitions/v1/ota.bin"].etag
            assert await bucket.read("partitions/v1/ota.bin", etag) == b"\xe9" * 1000
            await bucket.put("partitions/v1/ota.bin", b"\x00" * 1000)  # replaced after the listing
            with pytest.raises(ObjectChanged):
                await bucket.read("partitions/v1/ota.bin", etag)
            with pytest.raises(ObjectChanged):  # longer than the caller allows
                await bucket.read("partitions/v1/ota.bin", None, limit=999)

    asyncio.run(go())


def test_settings_errors_name_what_to_fix(seaweed: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in seaweed.replica.environ(seaweed.endpoint).items():
        monkeypatch.setenv(name, value)

    async def listing(url: str) -> None:
        async with open_bucket(S3Location.parse(url)) as bucket:
            await bucket.list()

    with pytest.raises(StoreRefused, match="SANIC_OTA_STORE"):
        asyncio.run(listing("s3://no-such-bucket/p"))
    with pytest.raises(StoreRefused, match="may use bucket"):  # the replica identity may not write
        async def write() -> None:
            async with open_bucket(S3Location.parse(f"s3://{seaweed.bucket}/p")) as bucket:
                await bucket.put("x", b"1")
        asyncio.run(write())
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(StoreRefused, match="AWS_SECRET_ACCESS_KEY") as refused:
        asyncio.run(listing(f"s3://{seaweed.bucket}/p"))
    assert "not-the-secret" not in str(refused.value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StoreUnreachable):
        asyncio.run(listing(f"s3://{seaweed.bucket}/p"))
