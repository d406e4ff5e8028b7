"""Where release bytes live: the one seam between the server and its storage.

Everything that reads or writes a release, its manifest or the pin goes through a
``ReleaseStore``; nothing else knows a directory layout or builds a path to a release
file. ``store.local.LocalStore`` is the implementation for ``partitions/`` and
``manifests/`` on a local disk, and the only code that knows that layout and its
containment rules. A second implementation (an S3-compatible bucket) implements the
same calls; the index, the verified cache and the web layer do not change.

The calls are blocking, and their callers never run them on the event loop:
- the indexer calls them from a worker thread, next to hashing and image checks
  that are CPU work and need that thread anyway (an ``await`` per file would add a
  thread hop per file, thousands at start, for nothing);
- the command-line tools are plain blocking programs;
- the web layer never calls a store: it awaits ``filecache.VerifiedFiles.image``,
  the async facade that runs store calls in a thread. That one ``await`` is where
  a store on the network plugs into request handling.
So a network store can be written with a blocking client (boto3, obstore's sync
calls) and needs no event loop of its own.

A store answers "what is there" cheaply (a listing, a ``stat``: a ``FileInfo`` with
an identity that changes whenever the bytes may have) and "what are the bytes" (a
handle read in chunks). Whether bytes may be served is never its business: that is
``trust.decide`` against the signed manifest, and ``filecache`` for every download.
The server's own records (highest serials, file identities, the writers' lock) are
not the store's either (see ``records``): they must stay where the verifier runs, so
that whoever can write the store cannot also reset what the server remembers.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

#: What a file is now, cheaply: equal identities mean the bytes were not touched.
#: Local disk: (device, inode, size, mtime_ns, ctime_ns); a bucket: (ETag, size).
Identity = tuple[int | str, ...]


@dataclass(frozen=True)
class FileInfo:
    """A release file as a listing or ``stat`` sees it, without reading a byte."""

    length: int
    identity: Identity
    #: when the bytes last changed (ns since the epoch): an identity taken within a
    #: timestamp tick of a write may not change with the next write in that tick
    changed_ns: int


class ReleaseFile(Protocol):
    """An open release file: its ``FileInfo`` as opened, and its bytes in chunks."""

    @property
    def info(self) -> FileInfo: ...

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is left for -1); ``b""`` at the end."""
        ...


class ReleaseView(Protocol):
    """One release, seen at one moment: its files' names, their identities, their bytes.

    Names, identities and bytes all come from the same release (a local store holds
    the directory open; a bucket would fetch each object as listed), so a release
    replaced while it is read is never read half from each.
    """

    def names(self) -> list[str]:
        """The release's files (``<partition>.bin``), sorted; nothing else it holds."""
        ...

    def stat(self, name: str) -> FileInfo: ...

    def open(self, name: str) -> AbstractContextManager[ReleaseFile]: ...


class ReleaseStage(Protocol):
    """A release being uploaded: invisible until committed, whole or not at all."""

    def add(self, name: str, chunks: Iterable[bytes]) -> int:
        """Write one release file (``<partition>.bin``) from ``chunks``; its length."""
        ...

    def read(self, name: str) -> bytes:
        """A staged file's bytes, to check them before the commit."""
        ...

    def commit(self) -> None:
        """Make the release appear at once and whole; refused if the release exists."""
        ...


class ReleaseStore(Protocol):
    """Releases, their manifests and the pin. Blocking: see the module's docstring.

    Every method refuses, with ``ContainmentError``, what its store's rules forbid
    (for a local disk: links, non-regular files, names that are not plain); plain
    I/O failures are ``OSError``, which callers treat as worth retrying.
    """

    def list_releases(self) -> set[str]:
        """The releases present now (plain names); cheap: one listing."""
        ...

    def release(self, version: str) -> AbstractContextManager[ReleaseView]: ...

    def stat(self, version: str, name: str) -> FileInfo:
        """One file's identity, cheap enough to ask often (the cache re-checks with it)."""
        ...

    def open(self, version: str, name: str) -> AbstractContextManager[ReleaseFile]: ...

    def read_manifest(self, version: str) -> bytes | None:
        """The release's manifest document as stored, None if there is none."""
        ...

    def read_pin(self) -> str | None:
        """The version plain ``AT+CIUPDATE`` is pinned to; None without a pin."""
        ...

    def write_manifest(self, version: str, document: bytes, durable: bool = True) -> None:
        """Replace the release's manifest atomically: readers see the old one or the new one.

        ``durable=False`` may return before the bytes are safe from a power cut;
        ``sync_manifests`` then makes a batch of them safe at once.
        """
        ...

    def sync_manifests(self, versions: Iterable[str]) -> None: ...

    def write_pin(self, version: str | None) -> None:
        """Pin plain ``AT+CIUPDATE`` (the ``stable`` channel) to ``version``; None removes the pin."""
        ...

    def list_channels(self) -> set[str]:
        """The channels that have a channel file (plain names); cheap: one listing."""
        ...

    def read_channel(self, name: str) -> bytes | None:
        """A channel file as stored (its pin and rollout), None if there is none."""
        ...

    def write_channel(self, name: str, document: bytes | None) -> None:
        """Replace a channel file atomically; None removes it (the channel follows the newest)."""
        ...

    def stage_release(self, version: str) -> AbstractContextManager[ReleaseStage]:
        """A place to write a new release that nobody sees until ``ReleaseStage.commit``;
        left without a commit, it is removed."""
        ...

    def where(self, version: str, name: str | None = None) -> str:
        """Where a release (file) is, for log lines and the operator: never opened by it."""
        ...

    def where_manifest(self, version: str) -> str: ...

    def where_pin(self) -> str: ...

    def where_channel(self, name: str) -> str: ...
