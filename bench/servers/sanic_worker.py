"""What ``ours`` and ``bare`` share: a Sanic app started with the ``sanic`` command."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from workspace import HOST, Workspace

from servers import Service

SANIC = Path(sys.executable).with_name("sanic")


class SanicService(Service):
    """``env``: variables added to the workspace's for this server (after its own)."""

    def __init__(self, ws: Workspace, workers: int, uvloop: bool = True, env: dict[str, str] | None = None) -> None:
        super().__init__(ws.root, workers)
        self.ws, self.uvloop, self.extra_env = ws, uvloop, env or {}

    def start_app(self, target: str, env: dict[str, str] | None = None) -> None:
        """``sanic target`` in the workspace, with ``env`` (the app's own variables) added."""
        env = dict(self.ws.env, **(env or {}), **self.extra_env)
        if not self.uvloop:
            env["SANIC_USE_UVLOOP"] = "false"
        self._spawn([str(SANIC), target, "--host", HOST, "--port", str(self.port), "--workers", str(self.workers),
                     "--no-access-logs"], env, self.ws.root)
        self._wait_ready(lambda: self.log().count("Worker ready") >= self.workers)

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: those Sanic logs as ``Starting worker [PID]``.

        Sanic's main process only supervises, and its other children (the
        multiprocessing manager and resource tracker) hold no connections, so
        their memory would only blur the growth we are looking for.
        """
        logged = {int(p) for p in re.findall(r"Starting worker \[(\d+)\]", self.log())}
        return [pid for pid in super().worker_pids() if pid in logged]
