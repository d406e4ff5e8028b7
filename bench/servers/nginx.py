"""nginx with its own generated config (sendfile), serving the same files and answers.

It compares the ``Authorization`` header too (a wrong token gets our 403 body), serves
the partitions directory, and our version-query and listing answers as static files.
"""

from __future__ import annotations

import os
import shutil

from workspace import HOST, LISTING, QUERY, Workspace

from servers import Service

CONF = """\
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile 40000;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {root}/nginx-tmp/body;
    proxy_temp_path {root}/nginx-tmp/proxy;
    fastcgi_temp_path {root}/nginx-tmp/fastcgi;
    uwsgi_temp_path {root}/nginx-tmp/uwsgi;
    scgi_temp_path {root}/nginx-tmp/scgi;
    types {{ application/json json; }}
    default_type application/octet-stream;
    server {{
        listen {host}:{port};
        if ($http_authorization != "token {token}") {{ return 403 '{forbidden}'; }}
        location /partitions/ {{ alias {partitions}/; }}
        location = /version.json {{ root {root}; }}
        location = /listing.json {{ root {root}; }}
    }}
}}
"""

#: Our answers nginx serves as files: its file name -> our request target.
STATIC = {"version.json": QUERY, "listing.json": LISTING}


class Nginx(Service):
    name = "nginx"

    def __init__(self, ws: Workspace, workers: int) -> None:
        super().__init__(ws.root, workers)
        self.ws = ws
        self.conf = ws.root / f"nginx-{self.port}.conf"

    def start(self) -> Nginx:
        (self.root / "nginx-tmp").mkdir(exist_ok=True)
        for name, key in STATIC.items():
            (self.root / name).write_bytes(self.ws.answers[key][1])
            (self.root / name).chmod(0o644)
        forbidden = self.ws.answers["403"][1].decode()
        assert "'" not in forbidden
        self.conf.write_text(CONF.format(workers=self.workers, root=self.root, host=HOST, port=self.port,
                                         partitions=self.ws.partitions, token=self.ws.token, forbidden=forbidden))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self._spawn([nginx, "-p", str(self.root), "-c", str(self.conf)], dict(os.environ), self.root)
        self._wait_ready(lambda: len(self.worker_pids()) >= self.workers)
        return self
