"""The anchors the bench runs side by side: each a process group we start and stop.

``Service`` holds what they share (its log, its ready check, its worker processes and
their memory); each anchor is one small module: ``ours`` (``sanic sanic_ota.app`` as
an operator runs it), ``nginx`` (sendfile) and ``bare`` (a bare Sanic app from the
same virtual environment, ``bare_app.py``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from workspace import HOST, free_port


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process from ``/proc/PID/stat``."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Service:
    """A process group we started, with its log and its worker processes."""

    name = "service"

    def __init__(self, root: Path, workers: int) -> None:
        self.root, self.workers = root, workers
        self.port = free_port()
        self.log_path = root / f"{self.name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        raise NotImplementedError

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

    def cpu_seconds(self) -> float:
        """CPU time the serving processes used so far: on a busy machine, a steadier
        measure of per-request work than requests per second."""
        return sum(cpu_seconds(p) for p in self.worker_pids())

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


@contextmanager
def running(service: Service) -> Iterator[Service]:
    try:
        yield service.start()
    finally:
        service.stop()
