"""The Sanic application: configuration, lifecycle, the objects it owns, and the routes.

``create_app`` is the factory; ``sanic sanic_ota.app`` uses the instance that
``sanic_ota`` builds from the ``SANIC_OTA_*`` environment. Tests pass ``Settings``.

Each app owns its ``Metrics`` and its ``LogWriter`` (made here, so two apps in one
process share neither), its ``State`` and its ``Accountant`` (made as its server
starts); all are kept on ``app.ctx`` and closed when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket

from sanic import HTTPResponse, Request, Sanic
from sanic.config import Config
from sanic.exceptions import RequestCancelled

from sanic_ota.logs import LogWriter, redact_signatures
from sanic_ota.mirror import Mirror, check_store
from sanic_ota.settings import Settings
from sanic_ota.state import open_state
from sanic_ota.stats import flush_periodically
from sanic_ota.watcher import Watcher
from sanic_ota.web import admin, fast_lane, metrics, routes, status
from sanic_ota.web.accountant import Accountant, behind_proxy
from sanic_ota.web.connections import AddressSlots
from sanic_ota.web.ports import check_listening, listen_also
from sanic_ota.web.process import OtaSanic
from sanic_ota.web.responses import Answers, for_the_module, handle_exception

#: Sanic's own timeouts, set for modules: a module on poor Wi-Fi may take most of its
#: 3-minute budget for one image, so the response may take 4 minutes before Sanic cuts
#: it; a request must arrive within 30 s. Override with SANIC_RESPONSE_TIMEOUT etc.
TIMEOUT_DEFAULTS = {
    "REQUEST_TIMEOUT": 30,
    "RESPONSE_TIMEOUT": 240,
    "KEEP_ALIVE_TIMEOUT": 10,
    "GRACEFUL_SHUTDOWN_TIMEOUT": 30.0,
}

WATCHER_TASK = "sanic_ota.watcher"
STATS_TASK = "sanic_ota.stats"
MIRROR_TASK = "sanic_ota.mirror"
FLEET_TASK = "sanic_ota.fleet"

_names = itertools.count()


def listening_sockets(app: Sanic) -> list[socket.socket]:
    """Our own handles on the listening socket Sanic's main process gave this worker.

    Duplicated descriptors stay usable when Sanic has already closed its own at stop
    time. With ``--single-process`` there is none: closing the server stops listening.
    """
    handles = []
    for info in app.state.server_info:
        listening = info.settings.get("sock")
        if isinstance(listening, socket.socket):
            handles.append(socket.socket(fileno=os.dup(listening.fileno())))
    return handles


def refuse_new_connections(handles: list[socket.socket]) -> None:
    """Shut the listening socket down at the start of a graceful stop.

    Sanic's main process keeps its own copy of the listening socket open until every
    worker has finished its downloads (up to GRACEFUL_SHUTDOWN_TIMEOUT), so new
    modules would connect and hang. ``shutdown`` acts on the socket all processes
    share: new connections are refused at once, those in flight carry on.
    """
    for sock in handles:
        with contextlib.suppress(OSError), sock:
            sock.shutdown(socket.SHUT_RDWR)
    handles.clear()


def create_app(settings: Settings | None = None, name: str | None = None) -> Sanic:
    app = OtaSanic(
        name or ("sanic_ota" if settings is None else f"sanic_ota_{next(_names)}"),
        config=Config(defaults={**TIMEOUT_DEFAULTS}),
    )
    # Read the raw environment: Sanic's own conversion turns SANIC_OTA_PARTITIONS_DIR=007 into 7.
    settings = settings or Settings.from_environ(os.environ)
    app.ctx.settings = settings
    app.ctx.connection_slots = AddressSlots(settings.max_unauthenticated_connections)
    app.ctx.metrics = app_metrics = metrics.Metrics()
    app.ctx.log = log = LogWriter()
    app.ctx.answers = Answers()
    app.ctx.fast_lane = fast_lane.answer
    redact_signatures()
    app.blueprint(routes.bp)
    app.blueprint(status.bp)
    app.blueprint(admin.bp)
    app.error_handler.add(Exception, handle_exception)
    app.error_handler.add(RequestCancelled, handle_exception)  # a BaseException: not caught above

    @app.main_process_start
    async def main_start(app: Sanic) -> None:
        log.start()
        app.ctx.metrics_dir = metrics.prepare_multiprocess_dir()
        listen_also(app, settings.extra_ports)

    @app.main_process_stop
    async def main_stop(app: Sanic) -> None:
        metrics.remove_multiprocess_dir(getattr(app.ctx, "metrics_dir", None))
        log.stop()

    @app.before_server_start
    async def start(app: Sanic) -> None:
        log.start()
        app.ctx.behind_proxy = behind_proxy(app.config)
        check_listening(app, settings.extra_ports)
        if settings.store:  # wrong credentials or bucket: refuse to start, naming the setting
            await check_store(settings)
        state = await asyncio.to_thread(open_state, settings, app_metrics.manifest_event)
        app.ctx.state = state
        app.ctx.accountant = Accountant(settings.log_format, log, app_metrics, state.stats, state.fleet)
        app.ctx.watcher = Watcher(state, on_index=app_metrics.releases, on_keys=app_metrics.keys_file)
        app_metrics.releases(state.index)
        app_metrics.keys_file(state.keys_file)
        app.add_task(app.ctx.watcher.run(), name=WATCHER_TASK)
        app.ctx.stats_stop = asyncio.Event()
        accountant = app.ctx.accountant

        def count() -> None:  # the requests closed since the last flush, then the metrics
            accountant.settle()
            app_metrics.flush()

        app.add_task(flush_periodically(state.stats, app.ctx.stats_stop, also=count), name=STATS_TASK)
        app.ctx.mirror = Mirror(settings, state.verifier) if settings.store else None
        if app.ctx.mirror is not None:
            app.add_task(app.ctx.mirror.run(), name=MIRROR_TASK)
        app.add_task(flush_periodically(state.fleet, app.ctx.stats_stop, also=accountant.settle), name=FLEET_TASK)

    @app.after_server_start
    async def started(app: Sanic) -> None:
        app.ctx.listening = listening_sockets(app)

    @app.before_server_stop
    async def stop(app: Sanic) -> None:
        refuse_new_connections(app.ctx.listening)
        # Finish the watcher here, while the loop runs: Sanic's own task shutdown
        # happens after the loop stopped and would wait out GRACEFUL_SHUTDOWN_TIMEOUT.
        app.ctx.watcher.stop()
        app.ctx.stats_stop.set()
        if app.ctx.mirror is not None:
            app.ctx.mirror.stop()
        tasks = [t for name in (WATCHER_TASK, STATS_TASK, FLEET_TASK, MIRROR_TASK)
                 if (t := app.get_task(name, raise_exception=False))]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        app.purge_tasks()

    @app.after_server_stop
    async def stopped(app: Sanic) -> None:
        app.ctx.accountant.settle()  # what was closed during the graceful shutdown
        app_metrics.flush()
        app_metrics.worker_exited(os.getpid())
        # downloads that finished during the graceful shutdown are counted too
        await asyncio.to_thread(app.ctx.state.stats.flush)
        await asyncio.to_thread(app.ctx.state.fleet.flush)
        log.stop()  # last: what the stop logged is written too

    @app.on_response
    async def account_response(request: Request, response: HTTPResponse) -> None:
        for_the_module(request, response)
        app.ctx.accountant.answered(request, response)

    return app
