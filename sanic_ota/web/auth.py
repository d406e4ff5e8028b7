"""Who is asking: the module's ``Authorization: token <T>`` header, checked against the keys."""

from __future__ import annotations

import logging

from sanic import Request

from sanic_ota.errors import Forbidden, Unauthorized
from sanic_ota.keys import Key, Keyring

logger = logging.getLogger("sanic_ota.auth")

SCHEME = "token"


def token_from(request: Request) -> str:
    """The token of a well-formed header, else ``Unauthorized`` saying what is wrong.

    The scheme is matched case-insensitively (RFC 9110); modules send ``token``.
    """
    values = request.headers.getall("authorization", [])
    if not values:
        raise Unauthorized('missing header "Authorization: token <TOKEN>"')
    if len(values) > 1:
        raise Unauthorized("more than one Authorization header")
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != SCHEME:
        raise Unauthorized('Authorization must use the "token" scheme: "token <TOKEN>"')
    token = token.strip()
    if not token or any(c.isspace() for c in token):
        raise Unauthorized('Authorization must be "token <TOKEN>" with one token')
    return token


def authenticate(request: Request, keyring: Keyring) -> Key:
    """The key that sent ``request``; failures are logged with the address, never the token."""
    try:
        token = token_from(request)
    except Unauthorized as e:
        logger.warning("auth failed from %s: %s", request.remote_addr or request.ip, e.message)
        raise
    key = keyring.find(token)
    if key is None:
        logger.warning("auth failed from %s: unknown token", request.remote_addr or request.ip)
        raise Forbidden("unknown token")
    return key
