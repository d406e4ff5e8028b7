"""One server on several ports: the module's own, and 80 for ``AT+CIPFWVER?``.

esp-at's ``AT+CIPFWVER?`` goes through ``esp_http_client`` with only a host name, so
it always connects to port 80 (443 with TLS), whatever ``CONFIG_AT_OTA_SERVER_PORT``
says. Sanic serves one app on several ports when ``app.prepare`` is called once per
port before it binds; the ``sanic`` command calls it once, for ``--port``, and runs
the main process's start listeners before it binds anything, so the other ports are
prepared there. Each is then bound once, in the main process, and shared by every
worker exactly like ``--port``: same host, same TLS (``--cert``/``--key``), same
graceful stop.

The graceful stop needs one thing more. Sanic waits for (and at last aborts) only
the connections of the ``--port`` server; another port's server is simply
cancelled, which would cut its downloads in flight. So every port's server is given
the same connection set (``connections``, a parameter of ``sanic.server.serve``,
handed on from these settings to each worker in one piece).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sanic import Sanic

from sanic_ota.errors import ConfigurationError
from sanic_ota.settings import ENV_PREFIX

logger = logging.getLogger("sanic_ota.web")


def listen_also(app: Sanic, ports: Iterable[int]) -> list[int]:
    """Prepare ``ports`` like the port ``app`` was prepared with; the ports added.

    Must run in the main process before the sockets are bound (``main_process_start``).
    The port given on the command line is not prepared twice.
    """
    primary = app.state.server_info[0].settings
    if primary.get("unix") or primary.get("sock") or not primary.get("port"):
        raise ConfigurationError(f"{ENV_PREFIX}EXTRA_PORTS needs the server started with --host and --port")
    added = [port for port in dict.fromkeys(ports) if port != primary["port"]]
    if not added:
        return added
    connections = primary.setdefault("connections", set())
    for port in added:
        app.prepare(
            host=primary["host"], port=port, version=primary["version"], ssl=primary["ssl"],
            backlog=primary["backlog"], protocol=primary["protocol"], workers=app.state.workers,
            debug=app.state.is_debug, verbosity=app.state.verbosity, motd=app.config.MOTD,
        )
        app.state.server_info[-1].settings["connections"] = connections
    logger.info("listening on %s port(s) %s too", primary["host"], ", ".join(map(str, added)))
    return added


def check_listening(app: Sanic, ports: Iterable[int]) -> None:
    """In the serving process: refuse to start if ``ports`` were never prepared.

    ``--single-process`` runs no main-process listener, so ``listen_also`` never ran;
    serving only ``--port`` would leave ``AT+CIPFWVER?`` failing without a word.
    """
    if ports and len(app.state.server_info) < 2:
        raise ConfigurationError(f"{ENV_PREFIX}EXTRA_PORTS needs Sanic's worker processes, not --single-process")
