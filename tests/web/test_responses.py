"""One error shape for every status, whoever raised the error."""

from __future__ import annotations

import json

import pytest
from sanic import Sanic
from sanic.exceptions import RequestCancelled, SanicException
from sanic.headers import format_http1_response

from sanic_ota import errors
from sanic_ota.web.responses import (
    CLIENT_CLOSED,
    FIRST_CHUNK_SIZE,
    LAST_CHUNK_SIZE,
    body_spans,
    byte_range,
    esp_json,
    for_the_module,
    handle_exception,
)

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


@pytest.mark.parametrize("error", [errors.IntegrityError("bytes changed"), RuntimeError("boom"),
                                   SanicException("sanic said so", status_code=500)])
def test_a_500_leaves_with_the_exact_bytes_content_length(error: Exception, request_stub) -> None:
    response = handle_exception(request_stub, error)
    for_the_module(request_stub, response)
    response.headers["content-length"] = len(response.body)  # what Sanic's HTTP/1.1 writer does last
    head = format_http1_response(response.status, response.processed_headers)
    assert head.startswith(b"HTTP/1.1 500 ") and f"\r\nContent-Length: {len(response.body)}\r\n".encode() in head
    assert b"content-length" not in head


def test_a_client_gone_before_its_answer_is_marked_not_an_error(request_stub, caplog) -> None:
    response = handle_exception(request_stub, RequestCancelled())
    assert response.status == CLIENT_CLOSED and request_stub.ctx.record.client_gone
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


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


@pytest.mark.parametrize(("header", "length", "span"), [
    (None, 10, None),
    ("bytes=0-0", 10, (0, 1)),
    ("bytes=2-5", 10, (2, 6)),
    ("bytes=2-", 10, (2, 10)),
    ("bytes=9-9", 10, (9, 10)),
    ("bytes=4-10", 10, (4, 10)),  # esp_https_ota's last window, one byte past the end: clamped
    ("bytes=-3", 10, (7, 10)),
    ("bytes=-30", 10, (0, 10)),
    ("BYTES = 1-2", 10, (1, 3)),
    ("bytes=abc", 10, None),
    ("bytes=5-4", 10, None),
    ("bytes=-", 10, None),
    ("bytes=+1-2", 10, None),
    ("bytes=١-2", 10, None),  # not ASCII digits
    ("items=0-1", 10, None),
    ("bytes=0-1,3-4", 10, None),  # several ranges: the whole file
    ("bytes", 10, None),
])
def test_byte_range(header: str | None, length: int, span: tuple[int, int] | None) -> None:
    assert byte_range(header, length) == span


@pytest.mark.parametrize(("header", "length"), [
    ("bytes=10-", 10), ("bytes=10-20", 10), ("bytes=-0", 10), ("bytes=0-", 0),
])
def test_byte_range_past_the_end_is_not_satisfiable(header: str, length: int) -> None:
    with pytest.raises(errors.RangeNotSatisfiable) as raised:
        byte_range(header, length)
    assert raised.value.headers == {"Content-Range": f"bytes */{length}"}


@pytest.mark.parametrize("header", ["bytes=0-" + "9" * 5000, "bytes=" + "9" * 5000 + "-", "bytes=-" + "9" * 5000])
def test_a_range_with_a_number_too_long_to_mean_anything_is_ignored(header: str) -> None:
    assert byte_range(header, 1000) is None  # the whole file, 200; int() of 5000 digits would raise
