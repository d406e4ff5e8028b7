"""A release uploaded through the admin API: unpacked, checked, and moved in whole or not at all.

The upload is a tar of the release's files (``<partition>.bin``, directly in the
archive or under ``./``), optionally with the release's signed ``manifest.json``.
Anything else in it (a link, a directory below the top, a device, another name, a
name twice) refuses the whole upload. The files are written into a stage
(``ReleaseStore.stage_release``: for a local store a dot-directory in
``partitions/`` that is never indexed), and checked there:
- every file as the module would check it (``FileEntry.describe``: magic bytes, the
  whole application image), so a tampered image is refused;
- with a ``manifest.json``: it must verify with the server's key, name this release,
  and list exactly these files with their lengths and SHA-256;
- without one, the server must be signing manifests itself (offline signing needs
  the signed manifest).
Only then is the stage committed (renamed into place); a refused upload leaves
nothing behind. No Sanic here: the web layer hands over the spooled archive.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from sanic_ota import manifest as manifests
from sanic_ota.errors import BadRequest, Conflict, ImageError, ManifestError
from sanic_ota.manifest import FileEntry
from sanic_ota.signing import Verifier
from sanic_ota.store import ReleaseStore
from sanic_ota.store.local import MANIFEST_LIMIT
from sanic_ota.trust import Observed, check_files
from sanic_ota.versions import is_plain_name, is_release_file

MANIFEST_NAME = "manifest.json"
READ_SIZE = 1 << 20


class UploadRefused(BadRequest):
    """The archive or a file in it is not a release the server would serve."""


@dataclass(frozen=True)
class Uploaded:
    version: str
    files: dict[str, FileEntry]
    manifest: bytes | None  # the signed manifest that came with it, written before the commit


def _member_name(member: tarfile.TarInfo) -> str | None:
    """The plain name of a top-level member; None for the archive's own ``.`` directory."""
    name = member.name.removeprefix("./")
    if name in ("", "."):
        if member.isdir():
            return None
        raise UploadRefused("the archive holds an entry without a name")
    if not is_plain_name(name):
        raise UploadRefused(f"{name[:64]!r} is not a plain file name at the archive's top")
    if not member.isfile():
        raise UploadRefused(f"{name} is not a regular file (links and directories are refused)")
    return name


def unpack(store: ReleaseStore, version: str, archive: IO[bytes], verifier: Verifier, signing: bool) -> Uploaded:
    """Check and publish the release in ``archive``; raises and leaves nothing behind if refused."""
    if version in store.list_releases():
        raise Conflict(f"release {version} exists; a release is never replaced by an upload")
    files: dict[str, FileEntry] = {}
    document: bytes | None = None
    with store.stage_release(version) as stage:
        try:
            with tarfile.open(fileobj=archive, mode="r:*") as tar:
                for member in tar:
                    name = _member_name(member)
                    if name is None:
                        continue
                    if name in files or (name == MANIFEST_NAME and document is not None):
                        raise UploadRefused(f"{name} is in the archive twice")
                    handle = tar.extractfile(member)
                    assert handle is not None  # a regular file
                    if name == MANIFEST_NAME:
                        document = handle.read(MANIFEST_LIMIT + 1)
                        if len(document) > MANIFEST_LIMIT:
                            raise UploadRefused(f"{MANIFEST_NAME} is too large")
                        continue
                    if not is_release_file(name):
                        raise UploadRefused(f"{name} is not a release file (<partition>.bin) or {MANIFEST_NAME}")
                    stage.add(name, _chunks(handle))
                    try:
                        files[name] = FileEntry.describe(name, stage.read(name))
                    except ImageError as e:
                        raise UploadRefused(f"refused, the module would reject it: {e.message}") from None
        except tarfile.TarError as e:
            raise UploadRefused(f"not a tar archive the server can read ({type(e).__name__})") from None
        if not files:
            raise UploadRefused("the archive holds no release file (<partition>.bin)")
        if document is not None:
            _check_manifest(document, version, files, verifier)
        elif not signing:
            raise UploadRefused(f"this server verifies manifests signed elsewhere: upload {MANIFEST_NAME} too")
        if version in store.list_releases():
            raise Conflict(f"release {version} exists; a release is never replaced by an upload")
        if document is not None:
            store.write_manifest(version, document)
        try:
            stage.commit()
        except FileExistsError:
            raise Conflict(f"release {version} exists; a release is never replaced by an upload") from None
    return Uploaded(version, files, document)


def _chunks(handle: IO[bytes]) -> Iterator[bytes]:
    while chunk := handle.read(READ_SIZE):
        yield chunk


def _check_manifest(document: bytes, version: str, files: dict[str, FileEntry], verifier: Verifier) -> None:
    try:
        manifest = manifests.verify(document, verifier, version)
    except ManifestError as e:
        raise UploadRefused(f"{MANIFEST_NAME} refused: {e.message}") from None
    problems, unlisted = check_files(manifest, {n: Observed(e.length, e.sha256) for n, e in files.items()})
    if problems or unlisted:
        detail = "; ".join([p.message for p in problems] + [f"{n} is not in the manifest" for n in unlisted])
        raise UploadRefused(f"the files do not match {MANIFEST_NAME}: {detail}")
