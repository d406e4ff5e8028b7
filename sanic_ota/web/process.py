"""The server process: which protocol Sanic serves with."""

from __future__ import annotations

import asyncio
from typing import Any

from sanic import Sanic

from sanic_ota.web.connections import GuardedProtocol


class OtaSanic(Sanic):
    """Sanic that serves with ``GuardedProtocol``.

    ``sanic sanic_ota.app``, ``app.run`` and the test client all call ``prepare``
    in the main process before any other process starts: the protocol class
    chosen here reaches every worker.
    """

    __slots__ = ()

    def prepare(self, *args: Any, protocol: type[asyncio.Protocol] | None = None, **kwargs: Any) -> None:
        super().prepare(*args, protocol=protocol or GuardedProtocol, **kwargs)
