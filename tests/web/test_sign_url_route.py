"""GET /v1/admin/url in process: admin keys mint signed download URLs, nobody else does."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import TOKEN, VERSION
from sanic import Sanic

from sanic_ota.keys import Key, load_keys, save_keys
from sanic_ota.settings import Settings
from sanic_ota.signed_urls import DEFAULT_LIFETIME, MAX_LIFETIME
from sanic_ota.web.server import create_app

ADMIN = {"Authorization": f"token {'a' * 40}"}
MINT = f"/v1/admin/url?key=device-1&version={VERSION}&filename=ota.bin"


@pytest.fixture
def app(settings: Settings, workdir: Path) -> Sanic:
    save_keys(workdir / "keys.json", load_keys(workdir / "keys.json") + [Key("ops", "a" * 40, {"Role": "admin"})])
    return create_app(settings)


def test_an_admin_mints_a_url_that_downloads_without_a_header(app: Sanic, workdir: Path) -> None:
    before = int(time.time())
    _, response = app.test_client.get(MINT, headers=ADMIN)
    assert response.status == 200, response.body
    data = response.json
    assert (data["key"], data["version"], data["filename"]) == ("device-1", VERSION, "ota.bin")
    assert before + DEFAULT_LIFETIME <= data["expires"] <= int(time.time()) + DEFAULT_LIFETIME
    parts = urlsplit(data["url"])
    assert parts.scheme == "http" and parts.path == "/v1/device/rom/"
    assert parse_qs(parts.query)["expires"] == [str(data["expires"])]
    _, download = app.test_client.get(f"{parts.path}?{parts.query}", headers={})
    assert download.status == 200
    assert download.body == (workdir / "partitions" / VERSION / "ota.bin").read_bytes()


def test_expires_sets_the_lifetime(app: Sanic) -> None:
    _, response = app.test_client.get(MINT + "&expires=60", headers=ADMIN)
    assert response.status == 200 and response.json["expires"] <= int(time.time()) + 60


@pytest.mark.parametrize("headers, status", [
    ({}, 401), ({"Authorization": f"token {TOKEN}"}, 403), ({"Authorization": f"token {'9' * 40}"}, 403),
])
def test_only_admin_keys_may_mint(app: Sanic, headers: dict[str, str], status: int) -> None:
    _, response = app.test_client.get(MINT, headers=headers)
    assert response.status == status and "url" not in response.json
    assert response.json["status"] == status


@pytest.mark.parametrize("query, status, says", [
    ("version=v1.0.0&filename=ota.bin", 400, "missing key"),
    ("key=device-1&version=v1.0.0", 400, "missing filename"),
    ("key=device-1&version=../x&filename=ota.bin", 400, "plain name"),
    (f"key=device-1&version=v1.0.0&filename=ota.bin&expires={MAX_LIFETIME + 1}", 400, "expires must be"),
    ("key=device-1&version=v1.0.0&filename=ota.bin&expires=0", 400, "expires must be"),
    ("key=device-1&version=v1.0.0&filename=ota.bin&expires=-5", 400, "expires must be"),
    ("key=nobody&version=v1.0.0&filename=ota.bin", 404, "no key named 'nobody'"),
    ("key=device-1&version=v9.9.9&filename=ota.bin", 404, "v9.9.9"),
    ("key=device-1&version=v1.0.0&filename=nope.bin", 404, "has no file nope.bin"),
])
def test_bad_requests_get_the_json_error(app: Sanic, query: str, status: int, says: str) -> None:
    _, response = app.test_client.get(f"/v1/admin/url?{query}", headers=ADMIN)
    assert response.status == status, response.body
    assert response.json["status"] == status and "url" not in response.json
    assert says in response.json["message"]


def test_the_audit_line_names_the_admin_and_the_file_never_the_signature(
    app: Sanic, capsys: pytest.CaptureFixture[str],
) -> None:
    _, response = app.test_client.get(MINT, headers=ADMIN)
    sig = parse_qs(urlsplit(response.json["url"]).query)["sig"][0]
    app.ctx.log.stop()  # drain the writer thread
    err = capsys.readouterr().err
    assert f"kind=sign_url key=ops version={VERSION} file=ota.bin range=- status=200" in err
    assert "admin 'ops' signed a URL for key 'device-1'" in err
    assert sig not in err
