#!/usr/bin/env python3
"""Serving from a replica's cache against local mode (issue 14: "as fast as local mode").

    .venv/bin/python bench/replica.py [--rounds 3] [--duration 5s] [--connections 32] [--keep]

Builds a throw-away directory in /tmp holding the release ``compare.py`` measures (a
1.6 MB application image from ``sanic_ota.example_release``, a 4 KiB ``0xF1 0xF1``
certificate partition), a keys file and a key pair, and signs the release
(``tools/build_manifest.py``). Then it starts SeaweedFS on loopback
(``sanic_ota.tools.s3_dev.SeaweedFS``), publishes the release into it with
``tools/publish.py`` as an operator does, and starts two servers, one worker each:

- ``local``: ``sanic sanic_ota.app`` serving ``partitions/`` from disk, verifying the
  same signed manifest (offline signing: ``SANIC_OTA_SIGN_MANIFESTS=false``);
- ``replica``: the same command with ``SANIC_OTA_STORE`` (read-only identity), started
  in an empty directory so it has nothing to serve but what it mirrors into its
  ``SANIC_OTA_CACHE_DIR``.

It waits until the replica serves both files byte-exact and its cache holds them, then
measures the two alternately (local first in even rounds, the replica first in odd
ones) with ``wrk -c 32 -t 2 -d 5s`` (a Python load loop, far slower, if wrk is
missing): the image in MB/s and the certificate partition in requests/s, with the
``Authorization`` header. The table shows medians and the ratio replica / local; the
target is >= 0.9x (the same code serves both from a local file; 2 shared cores make
a few per cent of noise). Exit code 1 when a target is missed.

Everything binds to 127.0.0.1; the directory, the servers and SeaweedFS are removed and
stopped on exit (``--keep`` keeps the directory and its logs).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from sanic_ota.example_release import build_app_image, build_cert_partition
from sanic_ota.tools.s3_dev import SeaweedFS, free_port

REPO = Path(__file__).resolve().parent.parent
VERSION = "v1.0.0"
IMAGE_SIZE = 1_600_000  # the same image and partition as compare.py's figures 1 and 2
CERT_SIZE = 4096
HOST = "127.0.0.1"
TARGET = 0.9
SANIC = Path(sys.executable).with_name("sanic")


def make_release(root: Path) -> tuple[str, dict[str, bytes]]:
    """The release, a device key (its token returned) and a signed manifest, in ``root``."""
    text = (b"sanic_ota bench CA placeholder text, not a certificate.\n" * 100)[: CERT_SIZE - 12]
    files = {"ota.bin": build_app_image(VERSION, size=IMAGE_SIZE), "mqtt_ca.bin": build_cert_partition(text)}
    assert len(files["mqtt_ca.bin"]) == CERT_SIZE
    release = root / "partitions" / VERSION
    release.mkdir(parents=True)
    for name, data in files.items():
        (release / name).write_bytes(data)
    keys = root / "authorisation_keys.json"
    token = subprocess.run([sys.executable, str(REPO / "tools" / "keygen.py"), "bench", "--keys", str(keys)],
                           check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([sys.executable, str(REPO / "tools" / "build_manifest.py"), VERSION], cwd=root,
                   env=clean_env(), check=True, capture_output=True)
    return token, files


def clean_env() -> dict[str, str]:
    """This environment without settings of ours or AWS's: each process gets exactly its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SANIC_", "AWS_"))}


class Server:
    """``sanic sanic_ota.app`` as an operator runs it, one worker, on a free loopback port."""

    def __init__(self, name: str, cwd: Path, env: dict[str, str]) -> None:
        self.name, self.cwd, self.env = name, cwd, env
        self.port = free_port()
        self.log_path = cwd.parent / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        self.cwd.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(SANIC), "sanic_ota.app", "--host", HOST, "--port", str(self.port), "--workers", "1"],
                cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        return self

    def serves(self, token: str, files: dict[str, bytes], timeout: float = 60.0) -> None:
        """Wait until every file comes back byte-exact (a replica: once it has mirrored them)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            if all(get(self.port, path(name), token) == data for name, data in files.items()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not serve {VERSION} within {timeout:.0f} s; see "
                                   f"{self.log_path} (--keep keeps it; a replica needs a checkout with "
                                   "the mirror, SANIC_OTA_STORE)")
            time.sleep(0.25)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def path(name: str) -> str:
    return f"/v1/device/rom/?action=download_rom&version={VERSION}&filename={name}"


def get(port: int, target: str, token: str) -> bytes | None:
    request = urllib.request.Request(f"http://{HOST}:{port}{target}", headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.read() if answer.status == 200 else None
    except (OSError, urllib.error.HTTPError):
        return None


# ----------------------------------------------------------------------------- load


def wrk(port: int, target: str, token: str, args: argparse.Namespace) -> float:
    """Requests per second, by wrk."""
    out = subprocess.run(["wrk", "-c", str(args.connections), "-t", str(args.threads), "-d", args.duration,
                          "-H", f"Authorization: token {token}", f"http://{HOST}:{port}{target}"],
                         check=True, capture_output=True, text=True).stdout
    if re.search(r"Non-2xx or 3xx responses", out) or re.search(r"Socket errors", out):
        raise RuntimeError(f"wrk saw errors:\n{out}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    return float(found.group(1))


def python_load(port: int, target: str, token: str, args: argparse.Namespace, length: int) -> float:
    """Requests per second from ``connections`` keep-alive connections in threads (no wrk)."""
    seconds = float(args.duration.rstrip("s"))
    done = [0] * args.connections
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=30)
        while time.monotonic() < stop:
            connection.request("GET", target, headers={"Authorization": f"token {token}"})
            answer = connection.getresponse()
            if answer.status != 200 or len(answer.read()) != length:
                raise RuntimeError(f"answer {answer.status} on {target}")
            done[i] += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", default="5s", help="per measurement (wrk -d)")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and its logs")
    args = parser.parse_args(argv)
    use_wrk = shutil.which("wrk") is not None
    if not use_wrk:
        print("bench/replica.py: no wrk (apt-get install wrk); using a Python load loop, far slower",
              file=sys.stderr)
    root = Path(tempfile.mkdtemp(prefix="sanic-ota-replica-bench-"))
    with ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, root, True)
        else:
            print(f"keeping {root}", file=sys.stderr)
        token, files = make_release(root)
        store = stack.enter_context(SeaweedFS(root / "s3"))
        location = f"s3://{store.bucket}/bench"
        published = subprocess.run(
            [sys.executable, str(REPO / "tools" / "publish.py"), VERSION, "--to", location], cwd=root,
            env=clean_env() | store.publisher.environ(store.endpoint), capture_output=True, text=True)
        if published.returncode != 0:
            raise SystemExit(f"publish failed: {published.stderr.strip()}")
        common = clean_env() | {
            "SANIC_OTA_KEYS_FILE": str(root / "authorisation_keys.json"),
            "SANIC_OTA_SIGN_MANIFESTS": "false",
            "SANIC_OTA_PUBLIC_KEY": str(root / "manifest_signing_key.pub.pem"),
        }
        local = Server("local", root / "local", common | {
            "SANIC_OTA_PARTITIONS_DIR": str(root / "partitions"),
            "SANIC_OTA_MANIFESTS_DIR": str(root / "manifests"),
            "SANIC_OTA_STATS_FILE": str(root / "local" / "stats.sqlite3"),
        })
        cache = root / "replica" / "cache"
        replica = Server("replica", root / "replica", common | store.replica.environ(store.endpoint) | {
            "SANIC_OTA_STORE": location,
            "SANIC_OTA_CACHE_DIR": str(cache),
        })
        for server in (local, replica):
            stack.callback(server.stop)
            server.start()
        for server in (local, replica):
            server.serves(token, files)
        for name, data in files.items():  # what the replica serves is its mirrored copy, nothing else
            copy = cache / "partitions" / VERSION / name
            if not copy.is_file() or copy.read_bytes() != data:
                raise SystemExit(f"the replica serves {name} but its cache {cache} does not hold it: "
                                 "is this a checkout with the mirror (SANIC_OTA_STORE)?")

        def measure(server: Server, name: str) -> float:
            if use_wrk:
                return wrk(server.port, path(name), token, args)
            return python_load(server.port, path(name), token, args, len(files[name]))

        results: dict[tuple[str, str], list[float]] = {}
        print(f"{args.rounds} rounds, {'wrk' if use_wrk else 'Python load'} -c {args.connections} "
              f"-d {args.duration}, 1 worker each", file=sys.stderr)
        for round_ in range(args.rounds):
            order = (local, replica) if round_ % 2 == 0 else (replica, local)
            for name in files:
                for server in order:
                    results.setdefault((server.name, name), []).append(measure(server, name))
            print(f"  round {round_ + 1} done", file=sys.stderr)

    missed = False
    print(f"{'figure':<14} | {'local':>17} | {'replica':>17} | ratio | target  | met?")
    for name, label, scale, unit in (("ota.bin", "image 1.6 MB", IMAGE_SIZE / 1e6, "MB/s"),
                                     ("mqtt_ca.bin", "cert 4 KiB", 1.0, "req/s")):
        here = statistics.median(results[("local", name)]) * scale
        there = statistics.median(results[("replica", name)]) * scale
        ratio = there / here
        missed |= ratio < TARGET
        print(f"{label:<14} | {here:>11,.1f} {unit:<5} | {there:>11,.1f} {unit:<5} | {ratio:.2f}x | "
              f">= {TARGET}x | {'yes' if ratio >= TARGET else 'NO'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
