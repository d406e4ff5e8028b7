"""``sanic sanic_ota.app`` exactly as an operator runs it, with the operator's defaults."""

from __future__ import annotations

from servers.sanic_worker import SanicService


class Ours(SanicService):
    name = "ours"

    def start(self) -> Ours:
        self.start_app("sanic_ota.app")
        return self
