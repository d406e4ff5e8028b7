#!/usr/bin/env python3
"""How long the server takes to answer its first version query with many releases.

    .venv/bin/python bench/startup.py [--releases 5000] [--size 4096] [--workers 1,2]

Builds ``--releases`` releases (an ``ota.bin`` of ``--size`` bytes made with esptool's
image writer, and a certificate partition) in a temporary directory, then starts
``sanic sanic_ota.app`` as an operator does and measures the time from starting the
process to the first version query that answers the newest release:

- first start: no ``manifests/`` at all, so the server signs every release
  (server-signs mode), or checks every file against manifests made elsewhere with
  no record of its own yet (offline mode);
- restart: the same directory again, manifests and the server's records present.

"all served" is when the oldest release was served too: with more than 100
releases the server answers once the newest is checked and reads the others next
(``Indexer.start``), so the first answer comes before the last release is read.

Besides the wall time it prints the CPU time the server's processes (Sanic's main
process, its manager, the workers) had spent when the first right answer came
(``/proc``): on a machine shared with other jobs the wall time moves with the
neighbours' load, the CPU time much less; on a quiet machine with a single worker
the two are close, since the processes start one after the other. The load average
is printed before and after.

Each case runs with 1 and 2 workers. Sanic kills a start whose workers have not
acknowledged within 30 s (its worker-ack limit), so a case that takes longer
fails here. Not part of ``make test``: it takes minutes and asserts nothing.
Everything binds to 127.0.0.1; the temporary directory is removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from wire import request_bytes
from workspace import HOST, free_port

from sanic_ota.example_release import build_app_image, build_cert_partition
from sanic_ota.keys import Key, save_keys

TOKEN = "0123456789abcdef0123456789abcdef01234567"
SANIC = Path(sys.executable).with_name("sanic")
#: Sanic's own limit for a worker's start-up acknowledgement.
WORKER_ACK_SECONDS = 30


def version_name(i: int) -> str:
    return f"v1.{i}.0"


def build_releases(partitions: Path, count: int, size: int) -> None:
    """``count`` releases sharing one image's bytes (what differs is the directory)."""
    image = build_app_image("v1.0.0", size=size)
    cert = build_cert_partition(b"-----BEGIN CERTIFICATE-----\n")
    for i in range(count):
        directory = partitions / version_name(i)
        directory.mkdir(parents=True)
        (directory / "ota.bin").write_bytes(image)
        (directory / "mqtt_ca.bin").write_bytes(cert)


def version_query(port: int) -> str | None:
    """The module's plain AT+CIUPDATE question; the version answered, or None."""
    try:
        with socket.create_connection((HOST, port), timeout=5) as sock:
            sock.sendall(request_bytes("/v1/device/rom/?is_format_simple=true", TOKEN, http10=True, close=True))
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
                if b"rom_version" in data and data.rstrip().endswith(b"}"):
                    break
    except OSError:
        return None
    marker = b'rom_version": "'
    at = data.find(marker)
    if at < 0:
        return None
    return data[at + len(marker):].split(b'"', 1)[0].decode()


def served(port: int, version: str) -> bool:
    """Whether a download of ``version``'s certificate partition answers 200: the oldest
    release is the last one a large start reads (``Indexer.start``)."""
    try:
        with socket.create_connection((HOST, port), timeout=5) as sock:
            path = f"/v1/device/rom/?action=download_rom&version={version}&filename=mqtt_ca.bin"
            sock.sendall(request_bytes(path, TOKEN, http10=True, close=True))
            return sock.recv(64).startswith(b"HTTP/1.1 200 ")
    except OSError:
        return False


def session_cpu(session: int) -> float:
    """CPU seconds (user + system) of every process in ``session``, with their children
    already reaped (Linux ``/proc``; 0 elsewhere)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[3]) == session:  # fields[0] is field 3 of proc(5), "state"
            total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / ticks


def measure(
    root: Path, env: dict[str, str], workers: int, expected: str, timeout: float
) -> tuple[float | None, float | None, str]:
    """Seconds from starting the process to the first right answer, and to every worker
    having reported ready (what Sanic's worker-ack limit counts); None: never."""
    answer, ready, _, _, log = measure_cpu(root, env, workers, expected, timeout)
    return answer, ready, log


def measure_cpu(
    root: Path, env: dict[str, str], workers: int, expected: str, timeout: float, oldest: str | None = None,
) -> tuple[float | None, float | None, float | None, float | None, str]:
    """``measure``, the CPU seconds the server's processes had spent at the first right
    answer, and the seconds until ``oldest`` was served too (None if not asked)."""
    port = free_port()
    log_path = root / f"server-{port}.log"
    cmd = [str(SANIC), "sanic_ota.app", "--host", HOST, "--port", str(port), "--workers", str(workers)]
    with open(log_path, "wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        elapsed: float | None = None
        ready: float | None = None
        cpu: float | None = None
        complete: float | None = None
        try:
            while time.monotonic() - started < timeout and proc.poll() is None:
                if elapsed is None and version_query(port) == expected:
                    elapsed = time.monotonic() - started
                    cpu = session_cpu(proc.pid)
                if ready is None and log_path.read_bytes().count(b"Worker ready") >= workers:
                    ready = time.monotonic() - started
                if elapsed is not None and complete is None and oldest is not None and served(port, oldest):
                    complete = time.monotonic() - started
                if elapsed is not None and ready is not None and (oldest is None or complete is not None):
                    break
                time.sleep(0.02)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return elapsed, ready, cpu, complete, log_path.read_text(errors="replace")


def run(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="sanic_ota_startup_"))
    failed = False
    try:
        partitions = root / "partitions"
        t0 = time.monotonic()
        build_releases(partitions, args.releases, args.size)
        print(f"built {args.releases} releases of {args.size:,} + 44 bytes in {time.monotonic() - t0:.1f} s ({root})")
        save_keys(root / "keys.json", [Key("bench", TOKEN)])
        base = {k: v for k, v in os.environ.items() if not k.startswith("SANIC_")}
        base.update(
            SANIC_OTA_KEYS_FILE=str(root / "keys.json"),
            SANIC_OTA_PARTITIONS_DIR=str(partitions),
            SANIC_OTA_MANIFESTS_DIR=str(root / "manifests"),
            SANIC_OTA_SIGNING_KEY=str(root / "signing.pem"),
            SANIC_OTA_STATS_FILE=str(root / "stats.sqlite3"),
        )
        expected = version_name(args.releases - 1)
        print(f"load average {os.getloadavg()[0]:.2f}")
        print(f"{'mode':<8} {'workers':>7} {'first start: answer':>20} {'cpu':>7} {'all ready':>10} "
              f"{'all served':>11} {'restart: answer':>16} {'cpu':>7} {'all ready':>10} {'all served':>11}")
        for mode in args.modes.split(","):
            env = dict(base, SANIC_OTA_SIGN_MANIFESTS="true" if mode == "signs" else "false")
            for workers in (int(w) for w in args.workers.split(",")):
                figures = []
                for case in ("first start", "restart"):
                    if case == "first start":
                        reset(root, mode, base, expected, args.timeout)
                    elapsed, ready, cpu, complete, log = measure_cpu(root, env, workers, expected, args.timeout,
                                                                     version_name(0))
                    if elapsed is None or ready is None or complete is None:
                        failed = True
                        print(f"  {mode} {workers} worker(s) {case}: not ready within {args.timeout} s; "
                              f"log tail:\n{log[-1500:]}")
                    figures += ["-" if t is None else f"{t:.2f} s" for t in (elapsed, cpu, ready, complete)]
                    if args.verbose:
                        print("\n".join(line for line in log.splitlines() if "sanic_ota" in line and "indexed" in line))
                print(f"{mode:<8} {workers:>7} {figures[0]:>20} {figures[1]:>7} {figures[2]:>10} {figures[3]:>11} "
                      f"{figures[4]:>16} {figures[5]:>7} {figures[6]:>10} {figures[7]:>11}", flush=True)
        print(f"load average {os.getloadavg()[0]:.2f}")
        print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


def reset(root: Path, mode: str, base: dict[str, str], expected: str, timeout: float) -> None:
    """Back to a first start: no manifests or records (offline: manifests made elsewhere)."""
    shutil.rmtree(root / "manifests", ignore_errors=True)
    if mode == "signs":
        return
    # Offline: sign every release with the server itself (as build_manifest would), then
    # take away everything but the manifests, as if they had been copied in.
    elapsed, _, log = measure(root, dict(base, SANIC_OTA_SIGN_MANIFESTS="true"), 1, expected, timeout)
    if elapsed is None:
        raise SystemExit(f"could not sign the releases for offline mode:\n{log[-1500:]}")
    for path in (root / "manifests").iterdir():
        if path.name.startswith("."):
            path.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--releases", type=int, default=5000)
    parser.add_argument("--size", type=int, default=4096, help="bytes of each ota.bin (default 4096)")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--modes", default="signs,offline", help="signs (default mode), offline, or both")
    parser.add_argument("--timeout", type=float, default=WORKER_ACK_SECONDS + 30)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the server's indexing log lines")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
