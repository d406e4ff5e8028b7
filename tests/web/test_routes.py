"""The routes in process, through sanic-testing, with real files and keys."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import TOKEN, VERSION, write_release
from sanic import Sanic

from sanic_ota.errors import NotFound, Unavailable
from sanic_ota.manifest import Manifest
from sanic_ota.mirror_status import StoreStatus
from sanic_ota.releases import Index, Release
from sanic_ota.settings import Settings
from sanic_ota.web.routes import listing_body, module_download, nothing_to_offer
from sanic_ota.web.server import create_app

AUTH = {"Authorization": f"token {TOKEN}"}


@pytest.fixture
def app(settings: Settings) -> Sanic:
    return create_app(settings)


def get(app: Sanic, url: str, headers: dict[str, str] | None = None):
    _, response = app.test_client.get(url, headers=AUTH if headers is None else headers)
    return response


def download_url(version: str = VERSION, filename: str = "ota.bin") -> str:
    return f"/v1/device/rom/?action=download_rom&version={version}&filename={filename}"


@pytest.mark.parametrize(("query", "target"), [
    ("action=download_rom&version=v1.0.0&filename=ota.bin", ("v1.0.0", "ota.bin")),
    ("filename=mqtt_ca.bin&version=v1.0.0&action=download_rom", ("v1.0.0", "mqtt_ca.bin")),
    ("action=download_rom&version=v1%2E0%2E0&filename=ota.bin", ("v1.0.0", "ota.bin")),  # decoded as Sanic does
    ("action=download_rom&version=v1.0.0&filename=ota.bin&filename=x.bin", None),  # repeated: a 400, said in full
    ("action=download_rom&version=v1.0.0&filename=ota.bin&sig=abc", None),  # a signed URL
    ("action=download_rom&version=v1.0.0", None),
    ("action=upload&version=v1.0.0&filename=ota.bin", None),
    ("action=download_rom&version=..&filename=ota.bin", None),
    ("action=download_rom&version=v1.0.0&filename=%2Fetc%2Fpasswd", None),
    ("action=download_rom&version=&filename=ota.bin", None),
])
def test_only_a_plain_module_download_query_is_read_the_short_way(query: str, target: tuple[str, str] | None) -> None:
    assert module_download(query) == target


@pytest.mark.parametrize("query", [
    "action=download_rom&version=v1.0.0&filename=ota.bin&filename=ota.bin",
    "action=download_rom&version=..&filename=ota.bin",
    "action=download_rom&filename=ota.bin",
])
def test_a_query_not_read_the_short_way_still_gets_its_400(app: Sanic, query: str) -> None:
    response = get(app, f"/v1/device/rom/?{query}")
    assert response.status == 400 and response.json["status"] == 400


def test_download_is_exact_and_not_chunked(app: Sanic, workdir: Path) -> None:
    response = get(app, download_url())
    assert response.status == 200
    assert response.body == (workdir / "partitions" / VERSION / "ota.bin").read_bytes()
    assert response.headers["content-length"] == str(len(response.body))
    assert "transfer-encoding" not in response.headers
    assert "content-encoding" not in response.headers


def test_headers_and_first_body_bytes_leave_in_one_write(app: Sanic) -> None:
    writes: list[bytes] = []

    @app.signal("http.lifecycle.send")
    async def record(data: bytes) -> None:
        writes.append(bytes(data))

    response = get(app, download_url())
    assert response.status == 200
    first = writes[0]
    head, sep, body_start = first.partition(b"\r\n\r\n")
    assert sep and b"\r\nContent-Length: " in head
    assert len(head) + len(sep) + 2 <= 1024  # the module's first read holds headers and magic
    assert body_start[:1] == b"\xe9" and response.body.startswith(body_start)
    assert b"".join(writes).endswith(response.body)


def test_version_query_shape_fits_the_module(app: Sanic) -> None:
    response = get(app, "/v1/device/rom/?is_format_simple=true")
    assert response.status == 200
    text = response.body.decode()
    assert text.startswith('{"status": 200, "rom_version": "v1.0.0", ')
    assert json.loads(text)["rom_version"] == VERSION


def test_version_query_order_and_pin(app: Sanic, workdir: Path) -> None:
    for version in ("v1.9.2", "v1.10.0", "v1.2.0"):
        write_release(workdir / "partitions", version)
    assert get(app, "/v1/device/rom/").json["rom_version"] == "v1.10.0"
    (workdir / "partitions" / "LATEST").write_text("v1.9.2\n")
    assert get(app, "/v1/device/rom/").json["rom_version"] == "v1.9.2"
    (workdir / "partitions" / "LATEST").write_text("v7\n")
    response = get(app, "/v1/device/rom/")
    assert response.status == 503 and "LATEST pins release v7" in response.json["message"]


def test_listing_items_are_followed_by_comma_space(app: Sanic) -> None:
    response = get(app, "/v1/device/rom")
    assert response.status == 200
    assert f'"version": "{VERSION}", ' in response.body.decode()
    assert response.json["omitted"] == 0


def test_listing_body_is_cut_oldest_first() -> None:
    releases = {
        f"v{n}": Release(f"v{n}", Manifest(f"v{n}", 1, "2026-01-01T00:00:00Z", {}), b"{}")
        for n in range(1, 2000)
    }
    body = listing_body(Index(releases=releases), limit=8192)
    assert len(json.dumps(body)) <= 8192
    versions = [item["version"] for item in body["versions"]]  # type: ignore[index, union-attr]
    assert versions[0] == "v1999" and body["omitted"] == 1999 - len(versions)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "token"}, 401),
        ({"Authorization": f"Bearer {TOKEN}"}, 401),
        ({"Authorization": f"Basic {TOKEN}"}, 401),
        ({"Authorization": f"token {TOKEN} extra"}, 401),
        ({"Authorization": "token " + "0" * 40}, 403),
        ({"Authorization": f"Token {TOKEN}"}, 200),
    ],
)
def test_authentication(app: Sanic, headers: dict[str, str], status: int) -> None:
    response = get(app, download_url(), headers=headers)
    assert response.status == status
    if status != 200:
        assert response.json["status"] == status
        assert TOKEN not in response.body.decode()


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/v1/device/rom/?action=nope", 400),
        ("/v1/device/rom/?action=", 400),
        ("/v1/device/rom/?version=v1.0.0&filename=ota.bin", 400),
        ("/v1/device/rom/?action=download_rom&filename=ota.bin", 400),
        ("/v1/device/rom/?action=download_rom&version=v1.0.0", 400),
        (download_url(version=""), 400),
        (download_url(version=".."), 400),
        (download_url(version="%2e%2e"), 400),
        (download_url(version="..%2f..%2fetc"), 400),
        (download_url(filename="..%2fv1.0.0%2fota.bin"), 400),
        (download_url(filename="%2fetc%2fpasswd"), 400),
        (download_url(filename="..%5c..%5cota.bin"), 400),
        (download_url(filename="ota.bin%00"), 400),
        (download_url(version="v" * 65), 400),
        (download_url(version="v9.9.9"), 404),
        (download_url(filename="nope.bin"), 404),
        ("/v1/device/rom/?action=download_rom&version=v1.0.0&version=v1.0.0&filename=ota.bin", 400),
        ("/v1/nothing", 404),
    ],
)
def test_bad_input_gets_json_error(app: Sanic, url: str, status: int) -> None:
    response = get(app, url)
    assert response.status == status
    assert response.json == {"status": status, "message": response.json["message"]}
    assert response.json["message"]


def test_unlisted_file_is_not_served(app: Sanic, workdir: Path) -> None:
    assert get(app, "/v1/manifest/v1.0.0").status == 200  # signs the manifest
    (workdir / "partitions" / VERSION / "extra.bin").write_bytes(b"\xf1\xf1 not signed")
    offline = create_app(replace(app.ctx.settings, sign_manifests=False))
    assert get(offline, download_url(filename="extra.bin")).status == 404
    assert get(offline, download_url()).status == 200


def test_changed_file_is_refused_never_served(app: Sanic, workdir: Path) -> None:
    assert get(app, download_url()).status == 200
    path = workdir / "partitions" / VERSION / "ota.bin"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    # offline mode: the server may not re-sign, so the signed manifest no longer fits
    response = get(create_app(replace(app.ctx.settings, sign_manifests=False)), download_url())
    assert response.status in (500, 503)
    assert response.body[:1] != b"\xe9"


def test_manifest_endpoints(app: Sanic, workdir: Path) -> None:
    index = get(app, "/v1/manifest/").json
    assert index["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    entry = index["versions"][0]
    assert entry["version"] == VERSION and entry["serial"] == 1
    document = get(app, f"/v1/manifest/{VERSION}")
    assert document.body == (workdir / "manifests" / f"{VERSION}.json").read_bytes()
    assert hashlib.sha256(document.body).hexdigest() == entry["sha256"]
    assert get(app, "/v1/manifest/v9").status == 404
    assert get(app, "/v1/manifest/", headers={}).status == 401


def _large_file_app(workdir: Path) -> tuple[Sanic, bytes, list[bytes]]:
    """An app whose 64 KiB cache cannot hold v7.0.0's 700 kB ota.bin, recording each transport write."""
    from conftest import example, settings_for

    image = example.build_app_image("v7.0.0", size=700_000)
    (workdir / "partitions" / "v7.0.0").mkdir()
    (workdir / "partitions" / "v7.0.0" / "ota.bin").write_bytes(image)
    app = create_app(settings_for(workdir, cache_bytes=64 * 1024))
    writes: list[bytes] = []

    @app.signal("http.lifecycle.send")
    async def record(data: bytes) -> None:
        writes.append(bytes(data))

    return app, image, writes


def test_a_file_larger_than_the_cache_goes_out_like_any_other(workdir: Path) -> None:
    """From a verified copy: exact bytes, headers with the first bytes, a small last write."""

    from sanic_ota.web.responses import LAST_CHUNK_SIZE

    app, image, writes = _large_file_app(workdir)

    for _ in range(2):  # the first loads and copies, the second is served from the copy
        writes.clear()
        response = get(app, download_url("v7.0.0"))
        assert response.status == 200 and response.body == image
        assert response.headers["content-length"] == str(len(image))
        head, sep, body_start = writes[0].partition(b"\r\n\r\n")
        assert b"\r\nContent-Length: " in head and body_start[:1] == b"\xe9"
        assert len(writes[-1]) <= LAST_CHUNK_SIZE


def ota_bytes(workdir: Path) -> bytes:
    return (workdir / "partitions" / VERSION / "ota.bin").read_bytes()


def etag_of(data: bytes) -> str:
    return f'"{hashlib.sha256(data).hexdigest()}"'


@pytest.mark.parametrize(("range_header", "first", "last"), [
    ("bytes=0-9", 0, 9),
    ("bytes=5-", 5, None),
    ("bytes=-7", None, None),
    ("bytes=10-99999999", 10, None),  # clamped to the end
])
def test_a_byte_range_is_206_with_content_range_from_the_same_bytes(
    app: Sanic, workdir: Path, range_header: str, first: int | None, last: int | None
) -> None:
    data = ota_bytes(workdir)
    total = len(data)
    start = total - 7 if first is None else first
    stop = total if last is None else last + 1
    response = get(app, download_url(), {**AUTH, "Range": range_header})
    assert response.status == 206
    assert response.body == data[start:stop]
    assert response.headers["content-range"] == f"bytes {start}-{stop - 1}/{total}"
    assert response.headers["content-length"] == str(stop - start)
    assert response.headers["etag"] == etag_of(data)
    assert response.headers["accept-ranges"] == "bytes"


def test_a_range_past_the_end_is_416_with_the_length(app: Sanic, workdir: Path) -> None:
    total = len(ota_bytes(workdir))
    response = get(app, download_url(), {**AUTH, "Range": f"bytes={total}-"})
    assert response.status == 416
    assert response.headers["content-range"] == f"bytes */{total}"
    assert json.loads(response.body)["status"] == 416
    assert response.headers["content-length"] == str(len(response.body))


@pytest.mark.parametrize("range_header", ["bytes=abc", "bytes=99-0", "items=0-1", "bytes=0-1,4-5", "bytes=-", ""])
def test_a_range_that_is_not_one_byte_range_is_ignored(app: Sanic, workdir: Path, range_header: str) -> None:
    response = get(app, download_url(), {**AUTH, "Range": range_header})
    assert response.status == 200
    assert response.body == ota_bytes(workdir)
    assert "content-range" not in response.headers


def test_if_range_honours_the_range_only_for_the_current_etag(app: Sanic, workdir: Path) -> None:
    data = ota_bytes(workdir)
    same = get(app, download_url(), {**AUTH, "Range": "bytes=0-3", "If-Range": etag_of(data)})
    assert (same.status, same.body) == (206, data[:4])
    for other in (etag_of(b"another file"), f"W/{etag_of(data)}", "Mon, 30 Nov 2026 06:00:00 GMT"):
        mismatch = get(app, download_url(), {**AUTH, "Range": "bytes=0-3", "If-Range": other})
        assert (mismatch.status, mismatch.body) == (200, data)


def test_if_none_match_with_the_etag_is_304_without_body(app: Sanic, workdir: Path) -> None:
    data = ota_bytes(workdir)
    for tag in (etag_of(data), f'"x", W/{etag_of(data)}', "*"):
        response = get(app, download_url(), {**AUTH, "If-None-Match": tag})
        assert response.status == 304
        assert response.body == b""
        assert response.headers["etag"] == etag_of(data)
    other = get(app, download_url(), {**AUTH, "If-None-Match": etag_of(b"old image")})
    assert (other.status, other.body) == (200, data)


@pytest.mark.parametrize(("url", "headers"), [
    (download_url(), {}),
    (download_url(), {"Range": "bytes=3-10"}),
    (download_url(filename="nothing.bin"), {}),
    ("/v1/device/rom/?is_format_simple=true", {}),
    ("/v1/device/rom", {}),
    ("/v1/manifest/", {}),
    (f"/v1/manifest/{VERSION}", {}),
])
def test_head_answers_the_get_headers_without_body(app: Sanic, url: str, headers: dict[str, str]) -> None:
    got = get(app, url, {**AUTH, **headers})
    _, head = app.test_client.head(url, headers={**AUTH, **headers})
    assert head.status == got.status
    assert head.body == b""
    assert head.headers["content-length"] == str(len(got.body))
    ignored = {"content-length", "date"}
    assert {k: v for k, v in head.headers.items() if k not in ignored} == {
        k: v for k, v in got.headers.items() if k not in ignored
    }


def test_ranges_of_a_file_larger_than_the_cache_come_from_the_verified_copy(workdir: Path) -> None:
    """Spans of a verified copy on disk: the same bytes, headers with the first span bytes."""

    app, image, writes = _large_file_app(workdir)

    for start, stop in [(0, 65536), (300_001, 600_000), (650_000, len(image))]:
        writes.clear()
        response = get(app, download_url("v7.0.0"), {**AUTH, "Range": f"bytes={start}-{stop - 1}"})
        assert response.status == 206 and response.body == image[start:stop]
        assert response.headers["content-range"] == f"bytes {start}-{stop - 1}/{len(image)}"
        head, _, body_start = writes[0].partition(b"\r\n\r\n")
        assert f"\r\nContent-Length: {stop - start}\r\n".encode() in head
        assert body_start and image[start:].startswith(body_start)


def test_a_replica_that_holds_nothing_and_has_not_listed_its_store_answers_503() -> None:
    nothing = NotFound("no release")
    assert nothing_to_offer(nothing, None) is nothing  # a local disk with no release: 404, as ever
    assert "has not been listed yet" in nothing_to_offer(nothing, StoreStatus("s3://b/p")).message
    down = StoreStatus("s3://b/p", up=False, message="the store did not answer (X)", last_sync=None)
    assert isinstance(nothing_to_offer(nothing, down), Unavailable)
    assert "its store is down: the store did not answer" in nothing_to_offer(nothing, down).message
    listed = StoreStatus("s3://b/p", up=True, message="", last_sync=1.0)
    assert nothing_to_offer(nothing, listed) is nothing  # listed, and the bucket holds no release
