"""Who is asking: ``Authorization: token <T>`` from modules, Basic or token from admins.

Failures are logged with the client address and never the token or a guessed key
name; an address that keeps failing is slowed down (see ``ratelimit``).
"""

from __future__ import annotations

import base64
import binascii
import logging
import time

from sanic import Request

from sanic_ota.accounting import AuthFailure
from sanic_ota.errors import Forbidden, OtaError, TooManyRequests, Unauthorized
from sanic_ota.keys import ADMIN_ROLE, Key, Keyring
from sanic_ota.ratelimit import FailureLimiter
from sanic_ota.signed_urls import EXPIRES_PARAM, KEY_PARAM, SIG_PARAM, SignedUrlError, check
from sanic_ota.web import connections
from sanic_ota.web.accountant import record_of

logger = logging.getLogger("sanic_ota.auth")

SCHEME = "token"
#: Sent with 401 on admin pages so browsers and Prometheus offer Basic auth.
BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="sanic_ota", charset="UTF-8"'}


def _header(request: Request) -> str:
    values = request.headers.getall("authorization", [])
    if not values:
        raise Unauthorized('missing header "Authorization: token <TOKEN>"')
    if len(values) > 1:
        raise Unauthorized("more than one Authorization header")
    return values[0].strip()


def _token(credentials: str) -> str:
    token = credentials.strip()
    if len(token.split(None, 1)) != 1:  # empty, or white space inside
        raise Unauthorized('Authorization must be "token <TOKEN>" with one token')
    return token


def _lookup(request: Request, keyring: Keyring, basic: bool) -> Key | OtaError:
    """The key named by the header, or the error to answer (returned, not raised: a fleet
    with a wrong token asks again and again); the scheme is matched case-insensitively
    (RFC 9110). A header that cannot be read raises its 401."""
    scheme, _, credentials = _header(request).partition(" ")
    if scheme.lower() == SCHEME:
        key = keyring.find(_token(credentials), admin_page=basic)  # basic: only admin pages allow it
    elif basic and scheme.lower() == "basic":
        try:
            name, sep, token = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed Basic credentials") from None
        if not sep:
            raise Unauthorized("malformed Basic credentials")
        key = keyring.find_named(name, token)
    else:
        raise Unauthorized('Authorization must use the "token" scheme: "token <TOKEN>"')
    if key is None:
        return Forbidden("unknown token") if scheme.lower() == SCHEME else Unauthorized("unknown name or token")
    return key


def _failed(request: Request, limiter: FailureLimiter, e: OtaError, failure: AuthFailure) -> TooManyRequests | None:
    """Log and count a failed authentication; the 429 to raise once the address is over its limit.

    Each failure is logged until its address is over the limit, then once more saying
    so; the failures answered 429 after that are in the audit log (status 429) and the
    metrics, not one warning each: an address that keeps trying would flood the log.
    """
    record = record_of(request)
    address = record.client
    record.auth_failure = failure
    over = limiter.fail(address)
    if over is None:
        logger.warning("auth failed from %s: %s", address, e.message)
        return None
    if over.first:
        logger.warning("auth failed from %s: %s; over %d failures within %g s: its failures are answered 429, "
                       "and no longer logged here one by one, until it stops failing",
                       address, e.message, limiter.limit, limiter.window)
    record.auth_failure = AuthFailure.RATE_LIMITED
    return TooManyRequests("too many failed authentications; retry later", over.wait)


def authenticate(request: Request, keyring: Keyring, limiter: FailureLimiter, basic: bool = False) -> Key:
    """The key that sent ``request``, or the error to answer with (401, 403 or 429)."""
    try:
        found = _lookup(request, keyring, basic)
    except OtaError as e:
        found = e
    if isinstance(found, OtaError):
        failure = AuthFailure.UNKNOWN_TOKEN if isinstance(found, Forbidden) else AuthFailure.MALFORMED
        try:
            raise _failed(request, limiter, found, failure) or found
        finally:
            # The error's traceback holds this frame: without this, each refusal would be a
            # reference cycle (the request included) left for the garbage collector, which
            # a fleet with a wrong token made the slowest answer of all (bench/README.md).
            del found
    connections.authenticated(request)  # no longer counts toward the per-address cap
    return found


def authenticate_signed(
    request: Request, keyring: Keyring, limiter: FailureLimiter, version: str, filename: str,
) -> Key:
    """The key whose signed URL this download request carries (see ``signed_urls``).

    Only for a request without an Authorization header. A URL that does not open
    this file (403) counts toward the address's failure limit exactly like an
    unknown token. The signature is never logged: messages name the key at most,
    and ``responses`` logs ``request.path``, which has no query string.
    """
    args = request.get_args(keep_blank_values=True)

    def single(name: str) -> str | None:
        values = args.getlist(name)
        return values[0] if len(values) == 1 else None  # repeated: malformed, refused by ``check``

    try:
        key = check(keyring.keys, single(KEY_PARAM), version, filename,
                    single(EXPIRES_PARAM), single(SIG_PARAM), time.time())
    except SignedUrlError as e:
        limited = _failed(request, limiter, e, AuthFailure.SIGNED_URL)
        if limited is None:
            raise
        try:
            raise limited from e
        finally:
            del limited  # no reference cycle through this frame (see ``authenticate``)
    connections.authenticated(request)
    return key


def authenticate_admin(request: Request, keyring: Keyring, limiter: FailureLimiter) -> Key:
    """An admin key (``"Role": "admin"`` in the keys file), by token or HTTP Basic."""
    try:
        key = authenticate(request, keyring, limiter, basic=True)
    except Unauthorized as e:
        e.headers = BASIC_CHALLENGE
        raise
    return require_admin(request, key)


def require_admin(request: Request, key: Key) -> Key:
    """``key`` if it is an admin key (``"Role": "admin"``), else 403, counted as such."""
    if key.role != ADMIN_ROLE:
        record_of(request).auth_failure = AuthFailure.NOT_ADMIN
        raise Forbidden(f'key {key.name!r} is not an admin key ("Role": "admin")')
    return key
