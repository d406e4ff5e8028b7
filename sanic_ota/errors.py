"""The project's errors: one small hierarchy, each carrying the HTTP status it maps to.

The core raises these without knowing about HTTP; the web layer turns any of them
into the one JSON error shape (see ``sanic_ota.web.responses``). The status is a plain
integer so the core stays free of Sanic.
"""

from __future__ import annotations

from collections.abc import Mapping


class OtaError(Exception):
    """Base of every error this project raises on purpose."""

    status: int = 500

    def __init__(self, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: extra response headers, such as Retry-After or WWW-Authenticate
        self.headers: dict[str, str] = dict(headers or {})


class BadRequest(OtaError):
    """The request is malformed: a missing parameter or a name that is not plain."""

    status = 400


class Unauthorized(OtaError):
    """No usable ``Authorization: token <T>`` header."""

    status = 401


class Forbidden(OtaError):
    """A well-formed token that no key in the keys file has."""

    status = 403


class TooManyRequests(OtaError):
    """Too many failed authentications from one address; retry after ``retry_after`` s."""

    status = 429

    def __init__(self, message: str, retry_after: int = 60) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers["Retry-After"] = str(retry_after)


class NotFound(OtaError):
    """An unknown route, release or file."""

    status = 404


class MethodNotAllowed(OtaError):
    status = 405


class ConfigurationError(OtaError):
    """Settings or files on disk that the server cannot start with."""


class KeysFileError(ConfigurationError):
    """The keys file is missing, unreadable, or not the expected JSON list."""


class ImageError(OtaError):
    """A partition image the module would reject (bad magic, truncated, corrupt)."""

    status = 500


class ManifestError(OtaError):
    """A manifest that is missing, malformed, or does not describe its release."""

    status = 503


class SignatureError(ManifestError):
    """A manifest whose signature does not verify with our public key."""


class UnknownKeyError(SignatureError):
    """A manifest with no signature by our key at all: signed by another key, or not signed."""


class OtherReleaseError(ManifestError):
    """A manifest, properly signed, of another release (copied over this one's)."""


class IntegrityError(OtaError):
    """A file whose bytes on disk no longer match its signed manifest."""

    status = 500


class ContainmentError(IntegrityError):
    """A path under ``partitions/`` or ``manifests/`` that is not a plain file inside it.

    A symlink, a hard link, a file on another filesystem, a FIFO: never read, never served.
    """


class Conflict(OtaError):
    """The request would replace what may not be replaced (a release), or asks a replica
    for what only the bucket's publisher does."""

    status = 409


class TooLarge(OtaError):
    """A request body over its limit: nothing of it is kept."""

    status = 413


class Unavailable(OtaError):
    """The server knows the request but cannot answer it safely right now."""

    status = 503


class RangeNotSatisfiable(OtaError):
    """A ``Range`` whose first byte is at or past the end of the file (RFC 9110 15.5.17).

    Its answer carries ``Content-Range: bytes */<length>`` (set where it is raised).
    """

    status = 416
