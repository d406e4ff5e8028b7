"""Publish a release to an S3-compatible store (``make publish VERSION=v1 STORE=s3://bucket/prefix``).

Installed as ``sanic-ota-publish``; ``tools/publish.py`` runs it from a checkout:

    publish v1 --to s3://bucket/prefix            # partitions/v1/ and its signed manifest
    publish v1 --to s3://bucket/prefix --pin      # ... and point partitions/LATEST at v1
    publish v1 --to s3://bucket/prefix --delete   # take v1 off every replica
    publish v1 --to s3://bucket/prefix --force    # emergencies only: replace a published v1

``--to`` defaults to SANIC_OTA_STORE. The endpoint and credentials are the standard
AWS settings (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION
or an AWS profile); the identity needs to read, list, write and delete in the bucket.

Where the private key is (SANIC_OTA_SIGNING_KEY exists) the release is signed first,
exactly as ``make manifest`` does. Without it (a CI machine) manifests/VERSION.json
must have been signed where the key lives; an unsigned release is refused. Either way
the manifest is checked with the public key, and every file, read the way the server
reads it (no symlink, no hard link), against its length and SHA-256, before anything
is sent. The bytes checked are the bytes uploaded: each file is read once.

Then the files are uploaded and the manifest last: it is the commit point, so a
replica never sees a release whose files are not all there yet, and a publish that
fails half-way leaves no release (run it again to finish it).

Releases are immutable: publishing the same files again does nothing, publishing
different files under a version the store already holds is refused. ``--force``
replaces it (for emergencies: devices that already downloaded the old bytes keep
them; replicas re-verify the new ones). ``--delete`` removes the manifest first, so
every replica drops the release at its next poll, then the files.

Exit codes: 0 done (or nothing to do), 1 refused or failed (stderr says why in one
line), 2 wrong usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sanic_ota import manifest as manifests
from sanic_ota.errors import OtaError
from sanic_ota.manifest import Manifest
from sanic_ota.mirror_plan import PIN_PATH, file_path, manifest_path
from sanic_ota.settings import ENV_PREFIX, Settings
from sanic_ota.signing import Verifier, load_verifier
from sanic_ota.store.local import MANIFEST_LIMIT, PIN_LIMIT, LocalStore, pin_document
from sanic_ota.store.s3 import Bucket, ObjectChanged, ObjectMissing, S3Location, StoreUnreachable, open_bucket
from sanic_ota.tools.build_manifest import sign_release
from sanic_ota.trust import Observed, check_files
from sanic_ota.versions import check_name

#: The setting a replica reads its store from; ``--to`` defaults to it.
STORE_VARIABLE = ENV_PREFIX + "STORE"

Say = Callable[[str], object]


class Refused(OtaError):
    """Publishing (or deleting) would break a rule: nothing was changed in the store."""


@dataclass(frozen=True)
class Checked:
    """A release as it will be uploaded: its signed manifest and every file's bytes, checked."""

    version: str
    manifest: Manifest
    document: bytes
    files: dict[str, bytes]
    #: the public key it was checked with: the store's manifest is checked with it too
    verifier: Verifier
    signed_here: bool


def _read_files(store: LocalStore, version: str) -> dict[str, bytes]:
    """Every ``.bin`` of the release, read as the server reads it: no link, nothing outside."""
    files = {}
    try:
        with store.release(version) as release:
            for name in release.names():
                with release.open(name) as opened:
                    files[name] = opened.read()
    except FileNotFoundError as e:
        raise Refused(f"no release directory {store.where(version)}") from e
    except OSError as e:
        raise Refused(f"cannot read {store.where(version)}: {e.strerror}") from e
    if not files:
        raise Refused(f"{store.where(version)} holds no .bin file")
    return files


def check_release(settings: Settings, version: str) -> Checked:
    """Sign (where the private key is) and verify ``version`` locally; raises ``OtaError`` why not."""
    check_name(version, "version")
    store = LocalStore.from_settings(settings)
    signed_here = Path(settings.signing_key).exists()
    verifier: Verifier
    if signed_here:
        _, verifier = sign_release(settings, version)
    elif not settings.public_key_path.exists():
        raise Refused(f"no private key here ({settings.signing_key}) and no public key "
                      f"({settings.public_key_path}): sign the release with `make manifest VERSION={version}` "
                      "where the private key lives (the first run creates the pair); elsewhere set "
                      "SANIC_OTA_PUBLIC_KEY to the public key")
    else:
        verifier = load_verifier(settings.public_key_path)
    document = store.read_manifest(version)
    if document is None:
        raise Refused(f"no manifest {store.where_manifest(version)}, and no private key here "
                      f"({settings.signing_key}) to sign one: an unsigned release is never published; "
                      f"run `make manifest VERSION={version}` where the private key lives and bring "
                      f"manifests/{version}.json along")
    manifest = manifests.verify(document, verifier, version)
    files = _read_files(store, version)
    problems, unlisted = check_files(manifest, {name: Observed.of(data) for name, data in files.items()})
    if problems:
        raise Refused("; ".join(problem.message for problem in problems) + "; nothing uploaded")
    if unlisted:
        raise Refused(f"{', '.join(unlisted)} in {store.where(version)} not in its manifest; sign the "
                      "release again where the private key lives, or remove them; nothing uploaded")
    return Checked(version, manifest, document, files, verifier, signed_here)


# -- the store side --------------------------------------------------------------------


async def _read_if_there(bucket: Bucket, path: str, limit: int = 1 << 20) -> bytes | None:
    """One object's bytes, None if the bucket has no such object: one GET, no listing."""
    try:
        return await bucket.read(path, limit=limit)
    except ObjectMissing:
        return None


def differences(ours: Manifest, theirs: Manifest) -> list[str]:
    """How the files of two manifests of one release differ (empty: the same release)."""
    found = []
    for name in sorted(set(ours.files) | set(theirs.files)):
        mine, published = ours.files.get(name), theirs.files.get(name)
        if published is None:
            found.append(f"{name} is new")
        elif mine is None:
            found.append(f"{name} is gone")
        elif (mine.length, mine.sha256) != (published.length, published.sha256):
            found.append(f"{name} differs")
    return found


async def publish(bucket: Bucket, release: Checked, say: Say, force: bool = False, pin: bool = False) -> None:
    """Upload ``release``: its files, then its manifest. Raises ``Refused`` for a changed release."""
    version, where = release.version, f"{bucket.location}"
    listed = await bucket.list("partitions", version)
    there = await _read_if_there(bucket, manifest_path(version))
    if there is not None:
        published: Manifest | None = None
        try:  # checked as a replica checks it
            published = manifests.verify(there, release.verifier, version)
            changed = differences(release.manifest, published)
        except OtaError as e:
            changed = [f"its manifest there does not verify: {e.message}"]
        missing = [name for name, data in release.files.items()
                   if (info := listed.get(file_path(version, name))) is None or info.size != len(data)]
        if not changed and not missing:
            say(f"{version} is already published in {where} with these files: nothing to do")
            if pin:
                await _pin(bucket, version, say)
            return
        if changed and not force:
            raise Refused(f"{where} already has release {version} with other files ({'; '.join(changed)}); "
                          "releases are immutable: publish them under a new version "
                          "(--force replaces a published release, for emergencies)")
        if not changed:  # the same release, some of its files lost: put them back under its manifest
            say(f"{version} is published in {where} but {len(missing)} file(s) are missing or cut short: "
                "uploading them again")
            for name in sorted(release.files):
                await _upload(bucket, version, name, release.files[name], say)
            say(f"repaired {version} in {where}")
            if pin:
                await _pin(bucket, version, say)
            return
        if published is not None and published.serial > release.manifest.serial:
            raise Refused(f"{where} has {version} with manifest serial {published.serial}, this one has "
                          f"serial {release.manifest.serial}: replicas refuse an older serial (a replayed "
                          "manifest), even with --force; sign the release again where the private key lives")
        say(f"--force: replacing published release {version} in {where} ({'; '.join(changed)})")
    elif listed:
        say(f"{len(listed)} object(s) of an unfinished publish of {version} in {where}: replacing them")
    for name in sorted(release.files):
        await _upload(bucket, version, name, release.files[name], say)
    await bucket.put(manifest_path(version), release.document)  # the commit point
    say(f"uploaded {manifest_path(version)} (serial {release.manifest.serial}): {version} is published")
    stale = sorted(set(listed) - {file_path(version, name) for name in release.files})
    for path in stale:  # files the old release had and the new one does not
        await bucket.delete(path)
        say(f"deleted {path} (not in the new manifest)")
    if there is not None:
        say("replicas that hold the old release re-verify the new one at their next poll; "
            "devices that already downloaded the old bytes keep them")
    if pin:
        await _pin(bucket, version, say)


async def _upload(bucket: Bucket, version: str, name: str, data: bytes, say: Say) -> None:
    await bucket.put(file_path(version, name), data)
    say(f"uploaded {file_path(version, name)} ({len(data)} bytes)")


async def _pin(bucket: Bucket, version: str, say: Say) -> None:
    await bucket.put(PIN_PATH, pin_document(version))
    say(f"{PIN_PATH} now pins {version}: plain AT+CIUPDATE gets it")


async def _pinned(bucket: Bucket) -> str | None:
    document = await _read_if_there(bucket, PIN_PATH, PIN_LIMIT)
    return None if document is None else document.decode("ascii", "replace").strip()


async def delete(bucket: Bucket, version: str, say: Say, force: bool = False) -> None:
    """Remove ``version``: its manifest first (replicas drop the release at once), then its files."""
    check_name(version, "version")
    where = f"{bucket.location}"
    listed = await bucket.list("partitions", version)
    has_manifest = await _read_if_there(bucket, manifest_path(version), MANIFEST_LIMIT) is not None
    if not listed and not has_manifest:
        raise Refused(f"{where} holds no release {version}: nothing deleted")
    pinned = await _pinned(bucket) == version
    if pinned and not force:
        raise Refused(f"{PIN_PATH} in {where} pins {version}: pin another release first "
                      "(publish it with --pin), or --force to delete it anyway")
    if has_manifest:
        await bucket.delete(manifest_path(version))
        say(f"deleted {manifest_path(version)}: replicas stop offering {version} at their next poll")
    for path in sorted(listed):
        await bucket.delete(path)
    say(f"deleted {len(listed)} file(s) of {version} from {where}")
    if pinned:
        say(f"{PIN_PATH} still pins {version}: plain AT+CIUPDATE answers 503 "
            "until another release is pinned")


# -- the command -----------------------------------------------------------------------


async def _run(args: argparse.Namespace, location: S3Location, settings: Settings) -> None:
    say = print
    if args.delete:
        async with open_bucket(location) as bucket:
            await delete(bucket, args.version, say, force=args.force)
        return
    release = check_release(settings, args.version)  # before any connection: nothing leaves unchecked
    how = "signed here" if release.signed_here else "signed elsewhere"
    say(f"{release.version}: manifest serial {release.manifest.serial} ({how}, key {release.verifier.keyid}), "
        f"{len(release.files)} file(s) match it")
    async with open_bucket(location) as bucket:
        await publish(bucket, release, say, force=args.force, pin=args.pin)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version", help="release directory name under partitions/")
    parser.add_argument("--to", default=os.environ.get(STORE_VARIABLE) or None,
                        help=f"s3://bucket/prefix (default: ${STORE_VARIABLE})")
    parser.add_argument("--force", action="store_true",
                        help="replace a published release with other files, or delete a pinned one")
    parser.add_argument("--pin", action="store_true", help="also point partitions/LATEST at this release")
    parser.add_argument("--delete", action="store_true", help="remove the release from the store")
    args = parser.parse_args(argv)
    if args.to is None:
        parser.error(f"where to? --to s3://bucket/prefix or {STORE_VARIABLE}")
    if args.delete and args.pin:
        parser.error("--delete and --pin do not go together")
    try:
        # the local release's settings; the store is --to (a replica's SANIC_OTA_STORE in this
        # shell only supplied its default: it says nothing about how to sign here)
        settings = Settings.from_environ({k: v for k, v in os.environ.items() if k != STORE_VARIABLE})
        location = S3Location.parse(args.to)
        asyncio.run(_run(args, location, settings))
    except OtaError as e:  # refused, a bad release or manifest, or settings (StoreRefused is one)
        print(f"publish: {args.version}: {e.message}", file=sys.stderr)
        return 1
    except ObjectChanged:
        print(f"publish: {args.version}: the store changed while it was read; run it again", file=sys.stderr)
        return 1
    except StoreUnreachable as e:
        print(f"publish: {args.version}: {args.to}: {e}; nothing after that was sent, run it again",
              file=sys.stderr)
        return 1
    except OSError as e:  # reading the release or its manifest here
        print(f"publish: {args.version}: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    return 0
