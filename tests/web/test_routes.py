"""The routes in process, through sanic-testing, with real files and keys."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import TOKEN, VERSION, write_release
from sanic import Sanic

from sanic_ota.manifest import Manifest
from sanic_ota.releases import Index, Release
from sanic_ota.settings import Settings
from sanic_ota.web.routes import listing_body
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


def test_a_file_larger_than_the_cache_goes_out_like_any_other(workdir: Path) -> None:
    """From a verified copy: exact bytes, headers with the first bytes, a small last write."""
    from conftest import example, settings_for

    from sanic_ota.web.responses import LAST_CHUNK_SIZE

    image = example.build_app_image("v7.0.0", size=700_000)
    (workdir / "partitions" / "v7.0.0").mkdir()
    (workdir / "partitions" / "v7.0.0" / "ota.bin").write_bytes(image)
    app = create_app(settings_for(workdir, cache_bytes=64 * 1024))
    writes: list[bytes] = []

    @app.signal("http.lifecycle.send")
    async def record(data: bytes) -> None:
        writes.append(bytes(data))

    for _ in range(2):  # the first loads and copies, the second is served from the copy
        writes.clear()
        response = get(app, download_url("v7.0.0"))
        assert response.status == 200 and response.body == image
        assert response.headers["content-length"] == str(len(image))
        head, sep, body_start = writes[0].partition(b"\r\n\r\n")
        assert b"\r\nContent-Length: " in head and body_start[:1] == b"\xe9"
        assert len(writes[-1]) <= LAST_CHUNK_SIZE
