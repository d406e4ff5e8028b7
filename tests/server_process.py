"""Run ``sanic sanic_ota.app`` as a separate process, the way operators run it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

SANIC = Path(sys.executable).with_name("sanic")
T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 10.0) -> T:
    """Poll ``check`` until it returns something truthy, which is returned; at the deadline,
    fail saying what it returned last.

    A server answers before its log line is written (by a thread) and notices a file a
    moment after it changes; an ``OSError`` or ``AssertionError`` (a module client's
    refusal, ``esp_client.ModuleError``) while it is not there yet counts as not yet.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (AssertionError, OSError) as e:
            last: object = e
        else:
            last = result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s; last: {last!r}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    host = "127.0.0.1"

    def __init__(self, env: dict[str, str], cwd: Path, workers: int = 1, extra: list[str] | None = None) -> None:
        self.env, self.cwd, self.workers, self.extra = env, cwd, workers, extra or []
        self.port = free_port()
        self.log_path = cwd / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        cmd = [str(SANIC), "sanic_ota.app", "--host", self.host, "--port", str(self.port),
               "--workers", str(self.workers), *self.extra]
        env = dict(self.env, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            if self.ready():
                return self
            time.sleep(0.05)
        raise TimeoutError(f"server did not become ready:\n{self.log()}")

    def ready(self) -> bool:
        """All workers ready (Sanic logs one line per worker), and the port answers."""
        if self.log().count("Worker ready") < self.workers:
            return False
        try:
            socket.create_connection((self.host, self.port), timeout=0.2).close()
        except OSError:
            return False
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def records(self) -> list[dict[str, Any]]:
        """The audit lines so far, parsed: the server must log JSON (``SANIC_OTA_LOG_FORMAT=json``)."""
        return [json.loads(line) for line in self.log().splitlines() if line.startswith('{"client"')]

    def records_when(self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0) -> list[dict[str, Any]]:
        """The audit lines once ``done`` says they are all there (written by a thread, a
        moment after the answers); failing with the log's tail if they never are."""
        try:
            return eventually(lambda: (found,) if done(found := self.records()) else None, timeout)[0]
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.log()[-3000:]}") from None

    def logged(self, *texts: str, timeout: float = 5.0) -> bool:
        """Whether every one of ``texts`` is in the log within ``timeout`` seconds.

        Log lines are written by a thread in the server, a moment after the answer
        they describe: a test that reads the log right after an answer must wait.
        """
        deadline = time.monotonic() + timeout
        while not all(text in self.log() for text in texts):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()
        finally:
            self._log.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
