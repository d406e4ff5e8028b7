"""Tests for tools/publish.py (sanic_ota.tools.publish) against a real S3 engine (SeaweedFS).

The command runs as the operator runs it, as a process; the order of the store calls
(files before the manifest, the manifest before the files when deleting) and a publish
cut short half-way are checked in-process, on the same real bucket.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, VERSION, env_for, write_release

from sanic_ota import manifest as manifests
from sanic_ota.settings import Settings
from sanic_ota.signing import create_key_pair, load_verifier
from sanic_ota.store.s3 import Bucket, S3Location, StoreUnreachable, open_bucket
from sanic_ota.tools import publish as tool
from sanic_ota.tools.build_manifest import sign_release
from sanic_ota.tools.s3_dev import Identity, SeaweedFS

TOOL = REPO / "tools" / "publish.py"
V2 = "v2.0.0"


def run_publish(settings: Settings, identity: Identity, endpoint: str, *args: str,
                store: str | None = None) -> subprocess.CompletedProcess[str]:
    env = env_for(settings) | identity.environ(endpoint)
    if store is not None:
        env[tool.STORE_VARIABLE] = store
    return subprocess.run([sys.executable, str(TOOL), *args], cwd=settings.partitions_dir.parent, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


@pytest.fixture
def publisher(seaweed: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> Iterator[Identity]:
    """The publisher identity, in this process's environment too (to look into the bucket)."""
    for name, value in seaweed.publisher.environ(seaweed.endpoint).items():
        monkeypatch.setenv(name, value)
    yield seaweed.publisher


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    """The private key is here: publish signs first."""
    create_key_pair(settings.signing_key, settings.public_key_path)
    return settings


@pytest.fixture
def ci(keyed: Settings) -> Settings:
    """A CI machine: v1.0.0's manifest signed elsewhere, only the public key here."""
    sign_release(keyed, VERSION)
    keyed.signing_key.unlink()
    return keyed


def bucket_contents(location: str) -> dict[str, bytes]:
    """Every object under ``location``: its path in the layout and its bytes."""
    async def go() -> dict[str, bytes]:
        async with open_bucket(S3Location.parse(location)) as bucket:
            return {path: await bucket.read(path, info.etag, limit=1 << 24)
                    for path, info in (await bucket.list()).items()}
    return asyncio.run(go())


def release_objects(settings: Settings, version: str) -> dict[str, bytes]:
    """What the bucket should hold for ``version``, from the local release and manifest."""
    objects = {f"partitions/{version}/{path.name}": path.read_bytes()
               for path in (settings.partitions_dir / version).glob("*.bin")}
    return objects | {f"manifests/{version}.json": (settings.manifests_dir / f"{version}.json").read_bytes()}


def test_publishes_signed_here_then_does_nothing_again(keyed: Settings, seaweed: SeaweedFS,
                                                       publisher: Identity, s3_location: str) -> None:
    result = run_publish(keyed, publisher, seaweed.endpoint, VERSION, "--to", s3_location)
    assert result.returncode == 0, result.stderr
    assert "signed here" in result.stdout and f"{VERSION} is published" in result.stdout
    assert bucket_contents(s3_location) == release_objects(keyed, VERSION)
    manifest = manifests.verify((keyed.manifests_dir / f"{VERSION}.json").read_bytes(),
                                load_verifier(keyed.public_key_path), VERSION)
    assert manifest.serial == 1  # signed as `make manifest` signs

    again = run_publish(keyed, publisher, seaweed.endpoint, VERSION, store=s3_location)  # --to from the setting
    assert again.returncode == 0, again.stderr
    assert "already published" in again.stdout and "nothing to do" in again.stdout
    assert "uploaded" not in again.stdout


def test_other_bytes_under_a_published_version_are_refused_unless_forced(
        keyed: Settings, seaweed: SeaweedFS, publisher: Identity, s3_location: str) -> None:
    assert run_publish(keyed, publisher, seaweed.endpoint, VERSION, "--to", s3_location).returncode == 0
    published = bucket_contents(s3_location)
    write_release(keyed.partitions_dir, VERSION, app_version="v1.0.0-rebuilt")  # new bytes, same version

    refused = run_publish(keyed, publisher, seaweed.endpoint, VERSION, "--to", s3_location)
    assert refused.returncode == 1
    assert "releases are immutable" in refused.stderr and "ota.bin differs" in refused.stderr
    assert "--force" in refused.stderr
    assert bucket_contents(s3_location) == published

    forced = run_publish(keyed, publisher, seaweed.endpoint, VERSION, "--to", s3_location, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "--force: replacing" in forced.stdout and "re-verify" in forced.stdout
    assert bucket_contents(s3_location) == release_objects(keyed, VERSION) != published


def test_without_the_private_key_only_a_release_signed_elsewhere_is_published(
        ci: Settings, seaweed: SeaweedFS, publisher: Identity, s3_location: str) -> None:
    write_release(ci.partitions_dir, V2)  # never signed
    unsigned = run_publish(ci, publisher, seaweed.endpoint, V2, "--to", s3_location)
    assert unsigned.returncode == 1
    assert "unsigned release is never published" in unsigned.stderr
    assert f"make manifest VERSION={V2}" in unsigned.stderr
    assert not (ci.manifests_dir / f"{V2}.json").exists()  # nothing signed here either

    result = run_publish(ci, publisher, seaweed.endpoint, VERSION, "--to", s3_location)
    assert result.returncode == 0, result.stderr
    assert "signed elsewhere" in result.stdout
    assert bucket_contents(s3_location) == release_objects(ci, VERSION)


def test_a_release_that_does_not_match_its_manifest_uploads_nothing(
        ci: Settings, seaweed: SeaweedFS, publisher: Identity, s3_location: str) -> None:
    ota = ci.partitions_dir / VERSION / "ota.bin"
    good = ota.read_bytes()
    ota.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    changed = run_publish(ci, publisher, seaweed.endpoint, VERSION, "--to", s3_location)
    assert changed.returncode == 1
    assert "ota.bin does not match its manifest" in changed.stderr and "nothing uploaded" in changed.stderr

    ota.write_bytes(good)
    ca = ci.partitions_dir / VERSION / "mqtt_ca.bin"
    outside = ci.partitions_dir.parent / "elsewhere.bin"
    outside.write_bytes(ca.read_bytes())  # the same bytes, but through a link: never read
    ca.unlink()
    ca.symlink_to(outside)
    linked = run_publish(ci, publisher, seaweed.endpoint, VERSION, "--to", s3_location)
    assert linked.returncode == 1 and "mqtt_ca.bin is a symbolic link" in linked.stderr

    ca.unlink()
    (ci.manifests_dir / f"{VERSION}.json").write_text('{"signed": {}, "signatures": []}')
    forged = run_publish(ci, publisher, seaweed.endpoint, VERSION, "--to", s3_location)
    assert forged.returncode == 1 and "publish: v1.0.0:" in forged.stderr
    assert bucket_contents(s3_location) == {}


class Recording(Bucket):
    """The real bucket, remembering each write and delete; ``fail_after`` puts, the store goes away."""

    def __init__(self, bucket: Bucket, fail_after: int | None = None) -> None:
        super().__init__(bucket._client, bucket.location)
        self.calls: list[str] = []
        self.fail_after = fail_after

    async def put(self, path: str, source: Path | bytes) -> None:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise StoreUnreachable("the store did not answer (ServerDisconnectedError)")
        await super().put(path, source)
        self.calls.append(f"put {path}")

    async def delete(self, path: str) -> None:
        await super().delete(path)
        self.calls.append(f"delete {path}")


def test_the_manifest_goes_last_and_a_publish_cut_short_leaves_no_release(
        keyed: Settings, publisher: Identity, s3_location: str) -> None:
    release = tool.check_release(keyed, VERSION)
    said: list[str] = []

    async def go() -> tuple[list[str], list[str]]:
        async with open_bucket(S3Location.parse(s3_location)) as bucket:
            cut = Recording(bucket, fail_after=1)
            with pytest.raises(StoreUnreachable):
                await tool.publish(cut, release, said.append)
            assert set(await bucket.list()) == {f"partitions/{VERSION}/mqtt_ca.bin"}  # no manifest: no release
            whole = Recording(bucket)
            await tool.publish(whole, release, said.append)
            gone = Recording(bucket)
            await tool.delete(gone, VERSION, said.append)
            assert await bucket.list() == {}
            return whole.calls, gone.calls

    published, deleted = asyncio.run(go())
    assert any("unfinished publish" in line for line in said)
    assert published == [f"put partitions/{VERSION}/mqtt_ca.bin", f"put partitions/{VERSION}/ota.bin",
                         f"put manifests/{VERSION}.json"]
    assert deleted[0] == f"delete manifests/{VERSION}.json" and len(deleted) == 3


def test_delete_and_pin(keyed: Settings, seaweed: SeaweedFS, publisher: Identity, s3_location: str) -> None:
    write_release(keyed.partitions_dir, V2)
    assert run_publish(keyed, publisher, seaweed.endpoint, VERSION, "--to", s3_location, "--pin").returncode == 0
    assert bucket_contents(s3_location)["partitions/LATEST"] == f"{VERSION}\n".encode()
    assert run_publish(keyed, publisher, seaweed.endpoint, V2, "--to", s3_location).returncode == 0

    pinned = run_publish(keyed, publisher, seaweed.endpoint, VERSION, "--to", s3_location, "--delete")
    assert pinned.returncode == 1 and "pins v1.0.0: pin another release first" in pinned.stderr
    repin = run_publish(keyed, publisher, seaweed.endpoint, V2, "--to", s3_location, "--pin")
    assert repin.returncode == 0 and "nothing to do" in repin.stdout and "now pins v2.0.0" in repin.stdout

    deleted = run_publish(keyed, publisher, seaweed.endpoint, VERSION, "--to", s3_location, "--delete")
    assert deleted.returncode == 0, deleted.stderr
    assert "replicas stop offering v1.0.0 at their next poll" in deleted.stdout
    left = bucket_contents(s3_location)
    assert left == release_objects(keyed, V2) | {"partitions/LATEST": f"{V2}\n".encode()}

    again = run_publish(keyed, publisher, seaweed.endpoint, VERSION, "--to", s3_location, "--delete")
    assert again.returncode == 1 and "holds no release v1.0.0" in again.stderr


def test_a_read_only_identity_is_refused_and_its_secret_never_shown(
        keyed: Settings, seaweed: SeaweedFS, publisher: Identity, s3_location: str) -> None:
    result = run_publish(keyed, seaweed.replica, seaweed.endpoint, VERSION, "--to", s3_location)
    assert result.returncode == 1
    assert "denied access" in result.stderr and "AWS_ACCESS_KEY_ID" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert seaweed.replica.secret_key not in result.stdout + result.stderr
    assert f"manifests/{VERSION}.json" not in bucket_contents(s3_location)


def test_usage_errors(keyed: Settings, seaweed: SeaweedFS, publisher: Identity) -> None:
    nowhere = run_publish(keyed, publisher, seaweed.endpoint, VERSION)
    assert nowhere.returncode == 2 and "SANIC_OTA_STORE" in nowhere.stderr
    wrong = run_publish(keyed, publisher, seaweed.endpoint, VERSION, "--to", "https://bucket/prefix")
    assert wrong.returncode == 1 and "expected s3://bucket" in wrong.stderr
    outside = run_publish(keyed, publisher, seaweed.endpoint, "../v1", "--to", f"s3://{seaweed.bucket}/x")
    assert outside.returncode == 1 and "plain name" in outside.stderr


def test_with_no_key_at_all_it_says_how_to_sign(settings: Settings, seaweed: SeaweedFS, publisher: Identity,
                                                 s3_location: str) -> None:
    result = run_publish(settings, publisher, seaweed.endpoint, VERSION, "--to", s3_location)
    assert result.returncode == 1
    assert "no private key here" in result.stderr and f"make manifest VERSION={VERSION}" in result.stderr
    assert not settings.signing_key.exists()  # a key pair is made by `make manifest`, never by publish


def test_lost_files_are_put_back_and_an_older_serial_is_never_forced(
        keyed: Settings, publisher: Identity, s3_location: str) -> None:
    first = tool.check_release(keyed, VERSION)  # serial 1
    write_release(keyed.partitions_dir, VERSION, app_version="v1.0.0-rebuilt")
    second = tool.check_release(keyed, VERSION)  # the files changed: signed again, serial 2
    assert (first.manifest.serial, second.manifest.serial) == (1, 2)
    said: list[str] = []

    async def go() -> None:
        async with open_bucket(S3Location.parse(s3_location)) as bucket:
            await tool.publish(bucket, first, said.append)
            await bucket.delete(f"partitions/{VERSION}/ota.bin")  # lost from the bucket
            await tool.publish(bucket, first, said.append)
            assert await bucket.read(f"partitions/{VERSION}/ota.bin") == first.files["ota.bin"]
            await tool.publish(bucket, second, said.append, force=True)
            with pytest.raises(tool.Refused, match="serial 2, this one has serial 1"):
                await tool.publish(bucket, first, said.append, force=True)
            assert await bucket.read(f"manifests/{VERSION}.json") == second.document

    asyncio.run(go())
    assert any("missing or cut short: uploading them again" in line for line in said)
