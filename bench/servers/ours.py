"""``sanic sanic_ota.app`` exactly as an operator runs it, with the operator's defaults."""

from __future__ import annotations

from workspace import Workspace

from servers.sanic_worker import SanicService


class Ours(SanicService):
    name = "ours"

    def __init__(self, ws: Workspace, workers: int, uvloop: bool = True, env: dict[str, str] | None = None) -> None:
        super().__init__(ws.root, workers)
        self.ws, self.uvloop, self.extra_env = ws, uvloop, env or {}

    def start(self) -> Ours:
        self.start_app("sanic_ota.app", dict(self.ws.env, **self.extra_env), self.ws.root, self.uvloop)
        return self
