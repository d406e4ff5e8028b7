"""Tests for sanic_ota.errors: one hierarchy, each error carrying its HTTP status."""

from __future__ import annotations

import pytest

from sanic_ota import errors


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (errors.BadRequest, 400),
        (errors.Unauthorized, 401),
        (errors.Forbidden, 403),
        (errors.TooManyRequests, 429),
        (errors.NotFound, 404),
        (errors.MethodNotAllowed, 405),
        (errors.ConfigurationError, 500),
        (errors.KeysFileError, 500),
        (errors.ImageError, 500),
        (errors.IntegrityError, 500),
        (errors.ContainmentError, 500),
        (errors.ManifestError, 503),
        (errors.SignatureError, 503),
        (errors.Unavailable, 503),
    ],
)
def test_each_error_is_an_ota_error_with_its_status(cls: type[errors.OtaError], status: int) -> None:
    error = cls("what happened")
    assert isinstance(error, errors.OtaError)
    assert error.status == status
    assert error.message == "what happened" == str(error)


def test_too_many_requests_says_when_to_retry() -> None:
    error = errors.TooManyRequests("slow down", retry_after=30)
    assert error.retry_after == 30
    assert error.headers == {"Retry-After": "30"}
    assert errors.NotFound("x").headers == {}


def test_narrower_errors_are_caught_by_their_family() -> None:
    assert issubclass(errors.KeysFileError, errors.ConfigurationError)
    assert issubclass(errors.SignatureError, errors.ManifestError)
    assert issubclass(errors.ContainmentError, errors.IntegrityError)
