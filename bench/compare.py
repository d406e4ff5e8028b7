#!/usr/bin/env python3
"""Side-by-side measurements of sanic_ota against nginx (issue 6, "Performance").

    .venv/bin/python bench/compare.py [--rounds 3] [--slow-clients 2000] ...

Why nginx: it is what an operator would otherwise put in front of a directory of
images, and with ``sendfile on`` it is about as fast as a loopback HTTP server gets.
The server does more than nginx (token check, verified-cache ``stat``, exact-case
headers shaped for ESP-AT), so the targets are ratios, not absolute numbers, and
both run on the same machine, the same loopback, the same files, measured by the
same client, alternating within each round so that drift (thermal, noisy
neighbours) hits both sides alike. Each figure is the median of its rounds.

Figures:
  1  1.6 MB application image downloads, ``wrk -c 32 -t 2 -d 5s``    target >= 1.0x nginx
  2  4 KiB certificate partition downloads, 1 and 2 workers          target >= 0.5x nginx
  3  version query vs an nginx static JSON file of the same size     target >= 0.5x nginx
  4  N concurrent slow module downloads: worker RSS growth, and every
     image arriving byte-exact                                        target < 150 MB, all exact
  5  manifest hashing (FileEntry.describe) vs ``sha256sum``           target >= 0.8x
plus the ESP-AT wire rules checked on a sample of real responses.

Everything binds to 127.0.0.1. The script leaves nothing behind: its temporary
directory, nginx and the server are removed/stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sanic_ota.example_release import build_app_image, build_cert_partition
from sanic_ota.settings import Settings

REPO = Path(__file__).resolve().parent.parent
VERSION = "v1.0.0"
#: "1.6 MB": a typical ESP-AT application image (esp-at's own factory builds are 1.5-1.8 MB).
IMAGE_SIZE = 1_600_000
CERT_SIZE = 4096
HOST = "127.0.0.1"
TARGET_RSS_MB = 150.0


# --------------------------------------------------------------------------- setup


@dataclass
class Workspace:
    """A throw-away server directory: keys, one release, nginx's root."""

    root: Path
    token: str
    image: bytes
    cert: bytes

    @property
    def partitions(self) -> Path:
        return self.root / "partitions"

    @property
    def env(self) -> dict[str, str]:
        settings = Settings(
            keys_file=self.root / "authorisation_keys.json",
            partitions_dir=self.partitions,
            manifests_dir=self.root / "manifests",
            signing_key=self.root / "manifest_signing_key.pem",
        )
        return dict(os.environ, **settings.to_environ())


def make_workspace(root: Path) -> Workspace:
    """Write a 1.6 MB valid app image, a 4 KiB 0xF1F1 certificate partition and a key."""
    # esptool's own image writer, not random bytes: the server validates every
    # application image when it indexes a release and refuses to serve a bad one.
    image = build_app_image(VERSION, size=IMAGE_SIZE)
    # PKI partition: 8-byte header + 4-byte item header + text, padded to 4 bytes.
    text = (b"sanic_ota bench CA placeholder text, not a certificate.\n" * 100)[: CERT_SIZE - 12]
    cert = build_cert_partition(text)
    assert len(cert) == CERT_SIZE and cert[:2] == b"\xf1\xf1", len(cert)
    release = root / "partitions" / VERSION
    release.mkdir(parents=True)
    (release / "ota.bin").write_bytes(image)
    (release / "mqtt_ca.bin").write_bytes(cert)
    # nginx's workers run as "nobody" when started by root: let them read the files.
    for path in (root, root / "partitions", release):
        path.chmod(0o755)
    keys = root / "authorisation_keys.json"
    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "keygen.py"), "bench", "--keys", str(keys)],
        check=True, capture_output=True, text=True,
    )
    keys.chmod(0o600)
    return Workspace(root, out.stdout.strip(), image, cert)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def raise_fd_limit() -> None:
    """2,000 slow clients need ~4,000 descriptors on this side and the server's."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


# ------------------------------------------------------------------------ processes


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids


def rss_kib(pid: int) -> int:
    """VmRSS of one process from ``/proc`` (psutil is not a dependency)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Service:
    """A process group we started, with its log and its worker processes."""

    name = "service"

    def __init__(self, root: Path, workers: int) -> None:
        self.root, self.workers = root, workers
        self.port = free_port()
        self.log_path = root / f"{self.name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, cmd: list[str], env: dict[str, str], cwd: Path) -> None:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def _wait_ready(self, ready: Callable[[], bool], timeout: float = 60.0) -> None:
        assert self.proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            if ready():
                try:
                    socket.create_connection((HOST, self.port), timeout=0.2).close()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def worker_pids(self) -> list[int]:
        """Processes that serve requests: every descendant of the one we started."""
        assert self.proc
        found, todo = [], [self.proc.pid]
        while todo:
            kids = _children(todo.pop())
            found += kids
            todo += kids
        return found

    def rss_mb(self) -> float:
        return sum(rss_kib(p) for p in self.worker_pids()) / 1024

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # the group is ours: start_new_session
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._log.close()


class OtaServer(Service):
    """``sanic sanic_ota.app`` exactly as an operator runs it."""

    name = "sanic_ota"

    def __init__(self, ws: Workspace, workers: int, uvloop: bool = True) -> None:
        super().__init__(ws.root, workers)
        self.ws, self.uvloop = ws, uvloop

    def start(self) -> OtaServer:
        sanic = Path(sys.executable).with_name("sanic")
        env = dict(self.ws.env, PYTHONPATH=str(REPO))
        if not self.uvloop:
            env["SANIC_USE_UVLOOP"] = "false"
        self._spawn([str(sanic), "sanic_ota.app", "--host", HOST, "--port", str(self.port),
                     "--workers", str(self.workers)], env, self.ws.root)
        self._wait_ready(lambda: self.log().count("Worker ready") >= self.workers)
        return self

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: those Sanic logs as ``Starting worker [PID]``.

        Sanic's main process only supervises, and its other children (the
        multiprocessing manager and resource tracker) hold no connections, so
        their memory would only blur the growth we are looking for.
        """
        logged = {int(p) for p in re.findall(r"Starting worker \[(\d+)\]", self.log())}
        return [pid for pid in super().worker_pids() if pid in logged]


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile 20000;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {root}/nginx-tmp/body;
    proxy_temp_path {root}/nginx-tmp/proxy;
    fastcgi_temp_path {root}/nginx-tmp/fastcgi;
    uwsgi_temp_path {root}/nginx-tmp/uwsgi;
    scgi_temp_path {root}/nginx-tmp/scgi;
    types {{ application/json json; }}
    default_type application/octet-stream;
    server {{
        listen {host}:{port};
        location /partitions/ {{ alias {partitions}/; }}
        location = /version.json {{ root {root}; }}
    }}
}}
"""


class Nginx(Service):
    """nginx with its own generated config, serving the same partitions directory."""

    name = "nginx"

    def __init__(self, ws: Workspace, workers: int) -> None:
        super().__init__(ws.root, workers)
        self.ws = ws
        self.conf = ws.root / f"nginx-{self.port}.conf"

    def start(self) -> Nginx:
        (self.root / "nginx-tmp").mkdir(exist_ok=True)
        self.conf.write_text(NGINX_CONF.format(workers=self.workers, root=self.root, host=HOST,
                                               port=self.port, partitions=self.ws.partitions))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self._spawn([nginx, "-p", str(self.root), "-c", str(self.conf)], dict(os.environ), self.root)
        self._wait_ready(lambda: len(self.worker_pids()) >= self.workers)
        return self


@contextmanager
def running(service: Service) -> Iterator[Service]:
    try:
        yield service.start()  # type: ignore[attr-defined]
    finally:
        service.stop()


# ----------------------------------------------------------------------------- HTTP


def request_bytes(path: str, token: str, http10: bool = False) -> bytes:
    """The request as the module writes it (see shared/esp-at-client.md)."""
    return (
        f"GET {path} HTTP/{'1.0' if http10 else '1.1'}\r\n"
        f"Host: {HOST}\r\nConnection: keep-alive\r\nUser-Agent: ESP32 Http Client\r\n"
        f"Authorization: token {token}\r\nAccept-Encoding: gzip,deflate,sdch\r\n\r\n"
    ).encode()


def fetch(port: int, path: str, token: str) -> tuple[bytes, bytes]:
    """One blocking GET with ``Connection: close`` semantics: (headers, body)."""
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(request_bytes(path, token, http10=True).replace(b"keep-alive", b"close"))
        data = bytearray()
        while chunk := s.recv(1 << 20):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return head, body


SERVER_PATHS = {
    "image": f"/v1/device/rom/?action=download_rom&version={VERSION}&filename=ota.bin",
    "cert": f"/v1/device/rom/?action=download_rom&version={VERSION}&filename=mqtt_ca.bin",
    "query": "/v1/device/rom/?is_format_simple=true",
}
NGINX_PATHS = {
    "image": f"/partitions/{VERSION}/ota.bin",
    "cert": f"/partitions/{VERSION}/mqtt_ca.bin",
    "query": "/version.json",
}


@dataclass
class WireCheck:
    """ESP-AT's first-read rules, counted over a sample of responses."""

    checked: int = 0
    failures: list[str] = field(default_factory=list)

    def add(self, what: str, problem: str | None) -> None:
        self.checked += 1
        if problem:
            self.failures.append(f"{what}: {problem}")


def first_read_problem(first: bytes, magic: bytes | None, needle: bytes | None) -> str | None:
    """What the module would trip over in its first 1024-byte read, or None."""
    problem = _first_read_problem(first, magic, needle)
    if problem is None:
        return None
    status = first.split(b"\r\n", 1)[0].decode(errors="replace") or "(nothing read)"
    return f"{problem} [{status}]"


def _first_read_problem(first: bytes, magic: bytes | None, needle: bytes | None) -> str | None:
    head, sep, body = first.partition(b"\r\n\r\n")
    lower = head.lower()
    if not sep:
        return "headers did not end in the first read"
    if b"transfer-encoding" in lower and b"chunked" in lower:
        return "chunked transfer encoding"
    if b"content-encoding" in lower:
        return "Content-Encoding present"
    if magic is not None:
        if b"Content-Length: " not in first:
            return "no exact-case 'Content-Length: ' in the first 1024 bytes"
        if not body.startswith(magic):
            return f"first body bytes {body[:4].hex() or '(none)'} are not the magic {magic.hex()}"
    if needle is not None and needle not in first:
        return f"{needle!r} not in the first read"
    return None


def check_wire(port: int, token: str, samples: int) -> WireCheck:
    """Read each answer the way the module does: ONE blocking recv(1024) straight away."""
    result = WireCheck()
    cases = [
        ("ota.bin", SERVER_PATHS["image"], b"\xe9", None, False),
        ("mqtt_ca.bin", SERVER_PATHS["cert"], b"\xf1\xf1", None, False),
        ("version query", SERVER_PATHS["query"], None, b'rom_version": "', True),
    ]
    for _ in range(samples):
        for what, path, magic, needle, http10 in cases:
            with socket.create_connection((HOST, port), timeout=10) as s:
                s.sendall(request_bytes(path, token, http10))
                first = s.recv(1024)
            result.add(what, first_read_problem(first, magic, needle))
    return result


# ------------------------------------------------------------------------------ wrk


@dataclass
class WrkResult:
    requests_per_s: float
    errors: int
    output: str


def run_wrk(url: str, token: str, connections: int, threads: int, duration: str) -> WrkResult:
    out = subprocess.run(
        ["wrk", "-c", str(connections), "-t", str(threads), "-d", duration,
         "-H", f"Authorization: token {token}", url],
        check=True, capture_output=True, text=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not rps:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    return WrkResult(float(rps.group(1)), errors, out)


# ---------------------------------------------------------------------- slow clients


@dataclass
class SlowResult:
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    baseline_mb: float = 0.0
    peak_mb: float = 0.0
    seconds: float = 0.0

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.baseline_mb


async def slow_download(port: int, request: bytes, expected: bytes, magic: bytes,
                        read_size: int, interval: float, budget: float) -> str | None:
    """One module on slow Wi-Fi: ``read_size`` bytes every ``interval`` seconds.

    A small receive buffer stands in for the module's small TCP window (lwIP's is a
    few KiB); without it the loopback kernel would swallow the whole image into
    socket buffers and the server's own memory would never be exercised.
    Returns None when the body arrived byte-exact, else what went wrong.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, read_size)
    sock.setblocking(False)
    deadline = loop.time() + budget
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (HOST, port)), 30)
        await loop.sock_sendall(sock, request)
        first = await asyncio.wait_for(loop.sock_recv(sock, 1024), 30)
        if problem := first_read_problem(first, magic, None):
            return problem
        head, _, body = first.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        if length != len(expected):
            return f"Content-Length {length}, expected {len(expected)}"
        digest = hashlib.sha256(body)
        got = len(body)
        while got < length:
            if loop.time() > deadline:
                return f"timed out after {got} of {length} bytes"
            await asyncio.sleep(interval)
            tick = 0
            while tick < read_size and got < length:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, min(read_size - tick, length - got)), 60)
                if not chunk:
                    return f"closed after {got} of {length} bytes"
                digest.update(chunk)
                got += len(chunk)
                tick += len(chunk)
        if digest.digest() != hashlib.sha256(expected).digest():
            return "body differs from the image"
        return None
    except (TimeoutError, OSError) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        sock.close()


async def slow_clients(service: Service, path: str, token: str, expected: bytes, clients: int,
                       read_size: int, interval: float, budget: float) -> SlowResult:
    """Start ``clients`` slow downloads over ~2 s and sample the workers' RSS meanwhile."""
    result = SlowResult(baseline_mb=service.rss_mb())
    result.peak_mb = result.baseline_mb
    request = request_bytes(path, token)
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            result.peak_mb = max(result.peak_mb, service.rss_mb())
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    start = time.monotonic()
    tasks = []
    for _ in range(clients):
        tasks.append(asyncio.create_task(
            slow_download(service.port, request, expected, expected[:1], read_size, interval, budget)))
        await asyncio.sleep(2.0 / clients)  # ramp: don't overflow the listen backlog
    outcomes = await asyncio.gather(*tasks)
    result.seconds = time.monotonic() - start
    done.set()
    await sampler
    result.peak_mb = max(result.peak_mb, service.rss_mb())
    for problem in outcomes:
        if problem is None:
            result.ok += 1
        else:
            result.failed.append(problem)
    return result


def run_slow(service: Service, *args: object) -> SlowResult:
    try:
        import uvloop  # the client side must not be the bottleneck

        return uvloop.run(slow_clients(service, *args))  # type: ignore[arg-type]
    except ImportError:
        return asyncio.run(slow_clients(service, *args))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- hashing


def make_hash_set(root: Path, total_mb: int, file_mb: int = 8) -> list[Path]:
    """Random files (custom partitions, so describe() adds no image parsing)."""
    root.mkdir()
    paths = []
    for i in range(max(1, total_mb // file_mb)):
        path = root / f"blob_{i:03d}.bin"
        path.write_bytes(os.urandom(file_mb * 1024 * 1024))
        paths.append(path)
    return paths


def time_describe(paths: list[Path]) -> float:
    """Read and describe each file as the indexer does: MB/s."""
    from sanic_ota.manifest import FileEntry

    start = time.perf_counter()
    total = 0
    for path in paths:
        data = path.read_bytes()
        FileEntry.describe(path.name, data)
        total += len(data)
    return total / 1e6 / (time.perf_counter() - start)


def time_sha256sum(paths: list[Path]) -> float:
    total = sum(p.stat().st_size for p in paths)
    start = time.perf_counter()
    subprocess.run(["sha256sum", *map(str, paths)], check=True, stdout=subprocess.DEVNULL)
    return total / 1e6 / (time.perf_counter() - start)


# ---------------------------------------------------------------------------- table


@dataclass
class Row:
    figure: str
    server: str
    nginx: str
    ratio: float | None
    target: str
    met: bool


def ratio_row(figure: str, server: list[float], other: list[float], unit: str, target: float,
              server_errors: int = 0, other_errors: int = 0) -> Row:
    s, o = statistics.median(server), statistics.median(other)
    ratio = s / o if o else 0.0
    note_s = f" ({server_errors} err)" if server_errors else ""
    note_o = f" ({other_errors} err)" if other_errors else ""
    return Row(figure, f"{s:,.1f} {unit}{note_s}", f"{o:,.1f} {unit}{note_o}", ratio,
               f">= {target:.1f}x", ratio >= target and server_errors == 0)


def print_table(rows: list[Row]) -> None:
    header = ("figure", "server", "nginx", "ratio", "target", "met?")
    cells = [header] + [
        (r.figure, r.server, r.nginx, "-" if r.ratio is None else f"{r.ratio:.2f}x", r.target,
         "yes" if r.met else "NO")
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    for n, c in enumerate(cells):
        print(" | ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)))
        if n == 0:
            print("-+-".join("-" * w for w in widths))


# ----------------------------------------------------------------------------- main


def alternate(rounds: int, measure_server: Callable[[], None], measure_nginx: Callable[[], None]) -> None:
    """Server first in even rounds, nginx first in odd ones."""
    for n in range(rounds):
        order = (measure_server, measure_nginx) if n % 2 == 0 else (measure_nginx, measure_server)
        for measure in order:
            measure()


def wrk_figures(args: argparse.Namespace, ws: Workspace, workers: int, kinds: list[str],
                rows: list[Row], wire: WireCheck | None) -> None:
    """Figures 1-3 for one worker count: each kind, alternating, ``--rounds`` times."""
    with ExitStack() as stack:
        server = stack.enter_context(running(OtaServer(ws, workers, uvloop=not args.no_uvloop)))
        head, body = fetch(server.port, SERVER_PATHS["query"], ws.token)
        (ws.root / "version.json").write_bytes(body)  # nginx's static twin, same size
        (ws.root / "version.json").chmod(0o644)
        nginx = stack.enter_context(running(Nginx(ws, workers)))
        for kind in kinds:  # warm both: the server loads and verifies the image once
            assert fetch(server.port, SERVER_PATHS[kind], ws.token)[0].startswith(b"HTTP/1.1 200")
            assert fetch(nginx.port, NGINX_PATHS[kind], ws.token)[0].startswith(b"HTTP/1.1 200")
        if wire is not None:
            sample = check_wire(server.port, ws.token, args.wire_samples)
            wire.checked += sample.checked
            wire.failures += sample.failures
        for kind in kinds:
            got: dict[str, list[float]] = {"server": [], "nginx": []}
            errors = {"server": 0, "nginx": 0}

            def measure(side: str, port: int, path: str, kind: str = kind,
                        got: dict[str, list[float]] = got, errors: dict[str, int] = errors) -> Callable[[], None]:
                def go() -> None:
                    r = run_wrk(f"http://{HOST}:{port}{path}", ws.token, args.connections,
                                args.threads, args.duration)
                    got[side].append(r.requests_per_s)
                    errors[side] += r.errors
                    if args.verbose:
                        print(f"  {kind} {side}: {r.requests_per_s:,.0f} req/s, {r.errors} errors")
                return go

            alternate(args.rounds, measure("server", server.port, SERVER_PATHS[kind]),
                      measure("nginx", nginx.port, NGINX_PATHS[kind]))
            if kind == "image":
                mb = IMAGE_SIZE / 1e6
                rows.append(ratio_row("1 image 1.6 MB, 1 worker", [x * mb for x in got["server"]],
                                      [x * mb for x in got["nginx"]], "MB/s", 1.0,
                                      errors["server"], errors["nginx"]))
            elif kind == "cert":
                rows.append(ratio_row(f"2 cert 4 KiB, {workers} worker{'s' if workers > 1 else ''}",
                                      got["server"], got["nginx"], "req/s", 0.5,
                                      errors["server"], errors["nginx"]))
            else:
                rows.append(ratio_row(f"3 version query ({len(body)} B)", got["server"], got["nginx"],
                                      "req/s", 0.5, errors["server"], errors["nginx"]))
        if "Traceback" in server.log() or "INTEGRITY" in server.log():
            print(f"server log shows errors:\n{server.log()[-3000:]}", file=sys.stderr)


def slow_figure(args: argparse.Namespace, ws: Workspace, rows: list[Row]) -> None:
    results: dict[str, SlowResult] = {}
    for side in ("server", "nginx"):
        service: Service = OtaServer(ws, 1, uvloop=not args.no_uvloop) if side == "server" else Nginx(ws, 1)
        path = SERVER_PATHS["image"] if side == "server" else NGINX_PATHS["image"]
        with running(service):
            fetch(service.port, path, ws.token)  # warm: cache loaded before the baseline
            results[side] = r = run_slow(service, path, ws.token, ws.image, args.slow_clients,
                                         args.slow_read, args.slow_interval, args.slow_budget)
        if args.verbose or r.failed:
            print(f"  slow {side}: {r.ok}/{args.slow_clients} exact in {r.seconds:.1f} s, "
                  f"RSS {r.baseline_mb:.1f} -> {r.peak_mb:.1f} MB; failures: {r.failed[:3]}")
    s, n = results["server"], results["nginx"]
    rows.append(Row(
        f"4 {args.slow_clients} slow downloads",
        f"+{s.growth_mb:.1f} MB, {s.ok}/{args.slow_clients} exact",
        f"+{n.growth_mb:.1f} MB, {n.ok}/{args.slow_clients} exact",
        None, f"< {TARGET_RSS_MB:.0f} MB, all exact",
        s.growth_mb < TARGET_RSS_MB and s.ok == args.slow_clients,
    ))


def hash_figure(args: argparse.Namespace, ws: Workspace, rows: list[Row]) -> None:
    paths = make_hash_set(ws.root / "hashset", args.hash_mb)
    time_sha256sum(paths)  # warm the page cache for both sides
    ours: list[float] = []
    theirs: list[float] = []
    alternate(args.rounds, lambda: ours.append(time_describe(paths)),
              lambda: theirs.append(time_sha256sum(paths)))
    row = ratio_row(f"5 hashing {args.hash_mb} MB", ours, theirs, "MB/s", 0.8)
    row.nginx += " (sha256sum)"
    rows.append(row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure; the median is shown")
    parser.add_argument("--duration", default="5s", help="wrk -d per measurement")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--slow-clients", type=int, default=2000)
    parser.add_argument("--slow-read", type=int, default=16384,
                        help="bytes each slow client reads per tick (the module reads 1024)")
    parser.add_argument("--slow-interval", type=float, default=0.1, help="seconds between reads")
    parser.add_argument("--slow-budget", type=float, default=180.0,
                        help="seconds a slow client may take (the module's 3-minute budget)")
    parser.add_argument("--hash-mb", type=int, default=200)
    parser.add_argument("--wire-samples", type=int, default=20, help="first-read checks per response kind")
    parser.add_argument("--figures", default="1,2,3,4,5", help="comma-separated subset to run")
    parser.add_argument("--no-uvloop", action="store_true", help="run the server on asyncio's own loop")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    figures = {f.strip() for f in args.figures.split(",")}
    for tool in ("nginx", "wrk", "sha256sum"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            parser.error(f"{tool} is not installed (bench/run.sh installs it)")
    raise_fd_limit()

    root = Path(tempfile.mkdtemp(prefix="sanic_ota_bench."))
    rows: list[Row] = []
    wire = WireCheck()
    try:
        ws = make_workspace(root)
        print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, Python "
              f"{sys.version.split()[0]}, {'asyncio' if args.no_uvloop else 'uvloop'} loop; "
              f"{args.rounds} rounds of wrk -c {args.connections} -t {args.threads} -d {args.duration}")
        kinds = [k for k, f in (("image", "1"), ("cert", "2"), ("query", "3")) if f in figures]
        if kinds:
            wrk_figures(args, ws, 1, kinds, rows, wire)
        if "2" in figures:
            wrk_figures(args, ws, 2, ["cert"], rows, None)
        if "4" in figures:
            slow_figure(args, ws, rows)
        if "5" in figures:
            hash_figure(args, ws, rows)
        if wire.checked:
            rows.append(Row("ESP-AT first-read rules", f"{wire.checked - len(wire.failures)}/{wire.checked} ok",
                            "-", None, "all pass", not wire.failures))
            for failure in sorted(set(wire.failures))[:5]:
                print(f"  wire rule failure: {failure}")
        print()
        print_table(rows)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if all(r.met for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
