"""How a request ended is decided in one place, and a record is counted once."""

from __future__ import annotations

import pytest

from sanic_ota.accounting import CLIENT_CLOSED, AuthFailure, Kind, Outcome, RequestRecord, decide


@pytest.mark.parametrize(
    ("status", "sent", "length", "client_gone", "outcome"),
    [
        (200, 1000, 1000, False, Outcome.COMPLETED),  # the whole image
        (200, 0, 0, False, Outcome.COMPLETED),  # an empty partition image
        (200, 1000, 1000, True, Outcome.COMPLETED),  # gone after the last byte was handed over
        (200, 400, 1000, True, Outcome.ABORTED),  # the module left half-way
        (200, 0, 1000, True, Outcome.ABORTED),  # ... before the first body byte
        (200, 400, 1000, False, Outcome.ERROR),  # the server stopped sending: a read failed
        (CLIENT_CLOSED, 0, 0, True, Outcome.ABORTED),  # gone before any answer
        (401, 60, 60, False, Outcome.REFUSED),
        (404, 60, 60, False, Outcome.REFUSED),
        (429, 60, 60, False, Outcome.REFUSED),
        (500, 40, 40, False, Outcome.ERROR),
        (503, 40, 40, False, Outcome.ERROR),
        (304, 0, 0, False, Outcome.COMPLETED),
    ],
)
def test_outcome(status: int, sent: int, length: int, client_gone: bool, outcome: Outcome) -> None:
    assert decide(status, sent, length, client_gone) is outcome


def test_a_record_is_closed_once() -> None:
    record = RequestRecord(client="x", kind=Kind.DOWNLOAD, handled=True)
    assert record.close(200, 10, 10) and record.outcome is Outcome.COMPLETED
    assert not record.close(500, 0, 0)  # a second account of the same request is refused
    assert (record.status, record.sent, record.outcome) == (200, 10, Outcome.COMPLETED)


def test_half_a_request_is_no_request() -> None:
    half = RequestRecord(client="x", client_gone=True)  # no handler took it up
    assert not half.is_request and not half.close(CLIENT_CLOSED, 0, 0) and half.outcome is None
    given_up = RequestRecord(client="x", kind=Kind.DOWNLOAD, handled=True, client_gone=True)
    assert given_up.close(CLIENT_CLOSED, 0, 0) and given_up.outcome is Outcome.ABORTED
    unknown_path = RequestRecord(client="x")  # never handled, but answered (404): a request
    assert unknown_path.close(404, 50, 50) and unknown_path.outcome is Outcome.REFUSED


@pytest.mark.parametrize(
    ("kind", "credentials", "auth_failure", "status", "failure"),
    [
        (Kind.DOWNLOAD, True, None, 200, None),
        (Kind.DOWNLOAD, True, None, 404, "refused"),  # a module refused its download
        (Kind.DOWNLOAD, True, None, 503, "error"),
        (Kind.MANIFEST, True, None, 404, None),  # an auditor asking for a release that is not there
        (Kind.VERSION_QUERY, True, None, 503, "error"),
        (Kind.DOWNLOAD, True, AuthFailure.UNKNOWN_TOKEN, 403, "auth: unknown_token"),
        (Kind.DOWNLOAD, False, AuthFailure.MALFORMED, 401, "auth: malformed"),
        (Kind.LISTING, True, AuthFailure.RATE_LIMITED, 429, "auth: rate_limited"),
        (Kind.STATUS, False, AuthFailure.MALFORMED, 401, None),  # the browser's first, Basic challenge
        (Kind.METRICS, False, AuthFailure.MALFORMED, 401, None),
        (Kind.STATUS, True, AuthFailure.MALFORMED, 401, "auth: malformed"),
        (Kind.STATUS, True, AuthFailure.NOT_ADMIN, 403, "auth: not_admin"),
    ],
)
def test_what_the_status_page_lists(
    kind: Kind, credentials: bool, auth_failure: AuthFailure | None, status: int, failure: str | None
) -> None:
    record = RequestRecord(client="x", credentials=credentials, kind=kind, handled=True, auth_failure=auth_failure)
    record.close(status, 60, 60)
    assert record.failure == failure
