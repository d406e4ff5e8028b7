"""The server process: which protocol Sanic serves with, and which signals it heeds.

SIGHUP is ignored, by Sanic's main process and every process it starts. Sanic
itself handles only SIGINT and SIGTERM, so a SIGHUP used to kill the main process
outright and leave its workers running, still holding the port, with nothing left
to stop them. Nothing here needs a reload signal: keys and releases are re-read
when their files change, and a changed setting needs a restart. Ignoring it (as
``nohup`` does) rather than stopping means a habitual ``kill -HUP`` cannot take
the service down; SIGTERM stops it cleanly.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from sanic import Sanic

from sanic_ota.web.connections import GuardedProtocol


class OtaSanic(Sanic):
    """Sanic that serves with ``GuardedProtocol``, bounds TLS handshakes, ignores SIGHUP.

    ``sanic sanic_ota.app``, ``app.run`` and the test client all call ``prepare``
    in the main process before any other process starts: the protocol class
    chosen here reaches every worker, and the ignored SIGHUP is inherited by the
    workers and Sanic's helper processes alike.
    """

    __slots__ = ()

    def prepare(self, *args: Any, protocol: type[asyncio.Protocol] | None = None, **kwargs: Any) -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        super().prepare(*args, protocol=protocol or GuardedProtocol, **kwargs)
        server = self.state.server_info[-1].settings
        if server.get("ssl") is not None:
            # The TLS handshake comes before the protocol sees the connection, so
            # neither the cap nor the header deadline applies to it: give it the
            # header deadline instead of asyncio's 60 s.
            server["asyncio_server_kwargs"] = {"ssl_handshake_timeout": self.ctx.settings.header_timeout}
