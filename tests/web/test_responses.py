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
    Answers,
    PreparedAnswer,
    body_spans,
    byte_range,
    esp_json,
    for_the_module,
    handle_exception,
    image_headers,
    prepare,
    prepare_download,
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


def _wire_head(request_stub, response, keep_alive: bool = True) -> bytes:
    """The header block as Sanic's HTTP/1.1 writer makes it, after the response middleware."""
    for_the_module(request_stub, response)
    if response.body:
        response.headers["content-length"] = len(response.body)
    response.headers["connection"] = "keep-alive" if keep_alive else "close"
    return format_http1_response(response.status, response.processed_headers)


def test_a_prepared_answer_leaves_as_the_same_bytes_as_one_built_per_request(request_stub) -> None:
    body = {"status": 200, "rom_version": "v1.0.0", "pinned": False}
    for keep_alive in (True, False):
        prepared = _wire_head(request_stub, PreparedAnswer(prepare(body)), keep_alive)
        built = _wire_head(request_stub, esp_json(body), keep_alive)
        assert prepared == built
        assert prepared.startswith(b"HTTP/1.1 200 OK\r\nContent-Length: 57\r\n")


@pytest.mark.parametrize("prepared", [
    prepare({"status": 200, "rom_version": "v1.0.0", "pinned": False}),
    prepare({"status": 429, "message": "slow down"}, 429, {"Retry-After": "7"}),
], ids=["version query", "429"])
def test_the_fast_lane_writes_the_bytes_sanic_writes_for_a_prepared_answer(request_stub, prepared) -> None:
    for keep_alive in (True, False):
        built = _wire_head(request_stub, esp_json(json.loads(prepared.body), prepared.status), keep_alive)
        if prepared.status == 429:  # the error's own header, where Sanic puts a handler's headers
            built = built.replace(b"\r\nconnection", b"\r\nRetry-After: 7\r\nconnection")
        assert prepared.wire(keep_alive) == built + prepared.body


def test_a_prepared_answer_given_another_header_still_spells_content_length(request_stub) -> None:
    response = PreparedAnswer(prepare({"status": 429, "message": "slow down"}, 429))
    response.headers["Retry-After"] = "7"  # what handle_exception adds to a 429
    head = _wire_head(request_stub, response)
    assert f"\r\nContent-Length: {len(response.body)}\r\n".encode() in head
    assert b"\r\nRetry-After: 7\r\n" in head and b"content-type: application/json" in head
    assert b"content-length" not in head


def test_a_prepared_download_block_is_the_one_built_per_request(request_stub) -> None:
    extra = {"ETag": '"abc"', "Accept-Ranges": "bytes"}
    response = PreparedAnswer(prepare_download(4096, extra))
    assert response.headers["content-length"] == "4096"  # what Sanic counts the streamed body against
    response.headers["connection"] = "keep-alive"
    head = format_http1_response(200, response.processed_headers)
    lines = head.decode().split("\r\n")
    assert lines[1:-2] == [f"{k}: {v}" for k, v in image_headers(4096, None, extra).items()] + [
        "connection: keep-alive", "content-type: application/octet-stream"]


def test_answers_are_built_once_per_index_and_key_and_again_for_a_new_index() -> None:
    answers, built = Answers(), []

    def build(version: str) -> dict[str, object]:
        built.append(version)
        return {"status": 200, "rom_version": version}

    first, second = object(), object()
    a = answers.json(first, ("query", "v1"), lambda: build("v1"))
    b = answers.json(first, ("query", "v1"), lambda: build("v1"))
    assert a.body == b.body == b'{"status": 200, "rom_version": "v1"}' and built == ["v1"]
    answers.json(first, ("query", "v2"), lambda: build("v2"))  # another key: its own answer
    assert built == ["v1", "v2"]
    c = answers.json(second, ("query", "v1"), lambda: build("v1 again"))  # a new index: nothing kept
    assert c.body == b'{"status": 200, "rom_version": "v1 again"}' and built == ["v1", "v2", "v1 again"]
