"""One error shape for every status, whoever raised the error."""

from __future__ import annotations

import json

import pytest
from sanic import Sanic
from sanic.exceptions import SanicException

from sanic_ota import errors
from sanic_ota.web.responses import esp_json, handle_exception

ALL_ERRORS = [cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.OtaError)]


@pytest.fixture
def request_stub():
    app = Sanic("responses_test")
    request, _ = app.test_client.get("/missing")  # a real request object from a real app
    return request


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_every_project_error_has_the_one_shape(cls: type[errors.OtaError], request_stub) -> None:
    response = handle_exception(request_stub, cls("what went wrong"))
    assert response.status == cls.status
    assert json.loads(response.body) == {"status": cls.status, "message": "what went wrong"}


@pytest.mark.parametrize("status", [400, 404, 405, 408, 413, 500, 503])
def test_sanic_errors_have_the_same_shape(status: int, request_stub) -> None:
    response = handle_exception(request_stub, SanicException("sanic said so", status_code=status))
    assert json.loads(response.body) == {"status": status, "message": "sanic said so"}


def test_unexpected_errors_do_not_leak_details(request_stub) -> None:
    response = handle_exception(request_stub, RuntimeError("secret token abc"))
    assert json.loads(response.body) == {"status": 500, "message": "internal server error"}


def test_json_uses_the_separators_the_module_searches_for() -> None:
    assert esp_json({"status": 200, "rom_version": "v1"}).body == b'{"status": 200, "rom_version": "v1"}'
