"""Authentication's refusals, as the garbage collector sees them."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from sanic import Request, Sanic
from sanic.compat import Header

from sanic_ota.errors import Forbidden, OtaError, TooManyRequests, Unauthorized
from sanic_ota.keys import Key, Keyring
from sanic_ota.ratelimit import FailureLimiter
from sanic_ota.signed_urls import SignedUrlError
from sanic_ota.web.auth import authenticate, authenticate_signed


@pytest.fixture(scope="module")
def app() -> Iterator[Sanic]:
    yield Sanic("auth_refusals")


def refusal(app: Sanic, authorization: str | None, keyring: Keyring, limiter: FailureLimiter) -> type[OtaError]:
    """The kind of error a module's request is refused with (by its token, or by its signed
    URL without one); none is kept."""
    query = b"?action=download_rom&version=v1&filename=ota.bin&key=device&expires=4102444800&sig=AAAA"
    headers = Header({"authorization": authorization} if authorization else {})
    request = Request(b"/v1/device/rom/" + query, headers, "1.1", "GET", None, app)
    try:
        if authorization:
            authenticate(request, keyring, limiter)
        else:
            authenticate_signed(request, keyring, limiter, "v1", "ota.bin")
    except OtaError as e:
        return type(e)
    raise AssertionError("authenticated")


@pytest.mark.parametrize("authorization, first", [
    ("token wrong", Forbidden), ("bearer wrong", Unauthorized), (None, SignedUrlError)])
def test_a_refusal_leaves_no_reference_cycle(app: Sanic, authorization: str | None, first: type[OtaError]) -> None:
    """A fleet with a wrong token asks again and again. Each refusal was a reference cycle
    (the error's traceback, a frame holding the error), the request in it, that only the
    garbage collector freed: the slowest answer of all (bench/README.md). Freed at once now,
    under the limit and over it."""
    keyring, limiter = Keyring([Key("device", "right")]), FailureLimiter(limit=1)
    gc.collect()
    gc.disable()
    try:
        for expected in (first, TooManyRequests, TooManyRequests):
            assert issubclass(refusal(app, authorization, keyring, limiter), expected)
            assert gc.collect() == 0
    finally:
        gc.enable()
