"""A bare Sanic app from the same virtual environment: the framework's own ceiling.

``bare_app.py`` has one route answering the same bytes from memory after the same
``Authorization`` comparison, with no access log. What our server takes beyond it
is our own per-request work.
"""

from __future__ import annotations

import json
from pathlib import Path

from workspace import Workspace

from servers.sanic_worker import SanicService

HERE = Path(__file__).resolve().parent


class Bare(SanicService):
    name = "bare"

    def __init__(self, ws: Workspace, workers: int, uvloop: bool = True, env: dict[str, str] | None = None) -> None:
        super().__init__(ws.root, workers)
        self.ws, self.uvloop, self.extra_env = ws, uvloop, env or {}

    def start(self) -> Bare:
        answers = self.ws.root / "bare"
        answers.mkdir(exist_ok=True)
        table = {}
        for n, (target, (status, body)) in enumerate(self.ws.answers.items()):
            (answers / f"{n}.body").write_bytes(body)
            table[target] = [status, f"{n}.body"]
        (answers / "answers.json").write_text(json.dumps(table))
        env = dict(self.ws.env, PYTHONPATH=str(HERE), BARE_ANSWERS=str(answers), BARE_TOKEN=self.ws.token,
                   **self.extra_env)
        self.start_app("bare_app:app", env, self.ws.root, self.uvloop)
        return self
