"""One error shape for every status, whoever raised the error."""

from __future__ import annotations

import json

import pytest
from sanic import Sanic
from sanic.exceptions import SanicException

from sanic_ota import errors
from sanic_ota.web.responses import FIRST_CHUNK_SIZE, LAST_CHUNK_SIZE, body_spans, esp_json, handle_exception

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


@pytest.mark.parametrize("length", [0, 1, FIRST_CHUNK_SIZE, FIRST_CHUNK_SIZE + 1, FIRST_CHUNK_SIZE + LAST_CHUNK_SIZE,
                                    FIRST_CHUNK_SIZE + LAST_CHUNK_SIZE + 1, 1_000_000, 5 * 1024 * 1024 + 7])
def test_body_spans_cover_the_image_once_small_first_and_last(length: int) -> None:
    spans = body_spans(length, 256 * 1024)
    if length == 0:
        assert spans == []
        return
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert [b for _, b in spans[:-1]] == [a for a, _ in spans[1:]]  # contiguous, in order
    assert all(0 < b - a <= 256 * 1024 for a, b in spans)
    assert spans[0][1] <= FIRST_CHUNK_SIZE and spans[-1][1] - spans[-1][0] <= LAST_CHUNK_SIZE
