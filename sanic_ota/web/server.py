"""The Sanic application: configuration, lifecycle, and the routes.

``create_app`` is the factory; ``sanic sanic_ota.app`` uses the instance that
``sanic_ota`` builds from the ``SANIC_OTA_*`` environment. Tests pass ``Settings``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys

from sanic import Sanic
from sanic.config import Config

from sanic_ota.settings import Settings
from sanic_ota.state import open_state
from sanic_ota.watcher import Watcher
from sanic_ota.web import routes
from sanic_ota.web.responses import handle_exception

#: Sanic's own timeouts, set for modules: a module on poor Wi-Fi may take most of its
#: 3-minute budget for one image, so the response may take 4 minutes before Sanic cuts
#: it; a request must arrive within 30 s. Override with SANIC_RESPONSE_TIMEOUT etc.
TIMEOUT_DEFAULTS = {
    "REQUEST_TIMEOUT": 30,
    "RESPONSE_TIMEOUT": 240,
    "KEEP_ALIVE_TIMEOUT": 10,
    "GRACEFUL_SHUTDOWN_TIMEOUT": 30.0,
}

_names = itertools.count()

WATCHER_TASK = "sanic_ota.watcher"


def _configure_logging() -> None:
    """Our ``sanic_ota.*`` loggers print beside Sanic's own, at INFO."""
    log = logging.getLogger("sanic_ota")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def create_app(settings: Settings | None = None, name: str | None = None) -> Sanic:
    app = Sanic(
        name or ("sanic_ota" if settings is None else f"sanic_ota_{next(_names)}"),
        config=Config(defaults=TIMEOUT_DEFAULTS),
    )
    _configure_logging()
    app.ctx.settings = settings or Settings.from_config(app.config)
    app.blueprint(routes.bp)
    app.error_handler.add(Exception, handle_exception)

    @app.before_server_start
    async def start(app: Sanic) -> None:
        app.ctx.state = await asyncio.to_thread(open_state, app.ctx.settings)
        app.ctx.watcher = Watcher(app.ctx.state)
        app.add_task(app.ctx.watcher.run(), name=WATCHER_TASK)

    @app.before_server_stop
    async def stop(app: Sanic) -> None:
        # Finish the watcher here, while the loop runs: Sanic's own task shutdown
        # happens after the loop stopped and would wait out GRACEFUL_SHUTDOWN_TIMEOUT.
        app.ctx.watcher.stop()
        task = app.get_task(WATCHER_TASK, raise_exception=False)
        if task is not None:
            await asyncio.wait([task], timeout=5)
        app.purge_tasks()

    return app
