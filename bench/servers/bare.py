"""A bare Sanic app from the same virtual environment: the framework's own ceiling.

``bare_app.py`` has one route answering the same bytes from memory after the same
``Authorization`` comparison, with no access log. What our server takes beyond it
is our own per-request work.
"""

from __future__ import annotations

import json
from pathlib import Path

from servers.sanic_worker import SanicService

HERE = Path(__file__).resolve().parent


class Bare(SanicService):
    name = "bare"

    def start(self) -> Bare:
        answers = self.ws.root / "bare"
        answers.mkdir(exist_ok=True)
        table = {}
        for n, (target, (status, body)) in enumerate(self.ws.answers.items()):
            (answers / f"{n}.body").write_bytes(body)
            table[target] = [status, f"{n}.body"]
        (answers / "answers.json").write_text(json.dumps(table))
        self.start_app("bare_app:app", {"PYTHONPATH": str(HERE), "BARE_ANSWERS": str(answers),
                                        "BARE_TOKEN": self.ws.token})
        return self
