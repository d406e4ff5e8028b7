"""``sanic-ota``: the operator's command for channels, rollouts, uploads and the fleet view.

It talks to a running server's admin API (``/v1/admin/``) with an admin key's token:

    export OTA_SERVER=http://SERVER:8000 OTA_ADMIN_TOKEN=...   # or --server / --token
    sanic-ota channel list
    sanic-ota channel set beta v1.3.0          # pin; "channel set stable V" writes partitions/LATEST
    sanic-ota channel clear beta               # follow the newest release again
    sanic-ota rollout start beta v1.4.0 --percent 10 [--step 2026-12-01T08:00:00Z=50 ...]
    sanic-ota rollout advance beta --percent 100
    sanic-ota rollout halt beta
    sanic-ota upload v1.4.0 ./build/v1.4.0     # a directory of <partition>.bin [+ manifest.json]
    sanic-ota fleet

It prints the server's JSON answer and exits 0, or prints the error and exits 1.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_SERVER = "http://127.0.0.1:8000"
TIMEOUT = 120.0


class CliError(Exception):
    pass


def call(server: str, token: str, method: str, path: str, body: bytes | None = None,
         content_type: str = "application/json") -> dict[str, Any]:
    """One admin API request; the parsed JSON answer, or ``CliError`` with the server's message."""
    request = urllib.request.Request(server.rstrip("/") + path, data=body, method=method,
                                     headers={"Authorization": f"token {token}", "Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:  # noqa: S310 (an operator's URL)
            data: dict[str, Any] = json.loads(answer.read())
            return data
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("message", e.reason)
        except ValueError:
            message = e.reason
        raise CliError(f"{e.code}: {message}") from None
    except urllib.error.URLError as e:
        raise CliError(f"cannot reach {server}: {e.reason}") from None


def release_archive(directory: Path) -> bytes:
    """A tar of the directory's regular files, flat, as the upload takes it; links are refused here too."""
    if not directory.is_dir():
        raise CliError(f"{directory} is not a directory")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(directory.iterdir()):
            if path.is_symlink() or not path.is_file():
                raise CliError(f"{path} is not a regular file; copy the release's files, not links")
            tar.add(path, arcname=path.name, recursive=False)
    return buffer.getvalue()


def _step(text: str) -> dict[str, Any]:
    at, sep, percent = text.rpartition("=")
    if not sep:
        raise argparse.ArgumentTypeError("a step is TIME=PERCENT, such as 2026-12-01T08:00:00Z=50")
    try:
        return {"at": at, "percent": float(percent)}
    except ValueError:
        raise argparse.ArgumentTypeError("a step's percent is a number") from None


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--server", default=os.environ.get("OTA_SERVER", DEFAULT_SERVER),
                     help="the server's base URL (default: $OTA_SERVER or %(default)s)")
    top.add_argument("--token", default=os.environ.get("OTA_ADMIN_TOKEN"),
                     help="an admin key's token (default: $OTA_ADMIN_TOKEN)")
    commands = top.add_subparsers(dest="command", required=True)
    channel = commands.add_parser("channel", help="list, pin or unpin channels").add_subparsers(
        dest="action", required=True)
    channel.add_parser("list")
    pin = channel.add_parser("set", help="pin a channel to a release")
    pin.add_argument("name")
    pin.add_argument("version")
    clear = channel.add_parser("clear", help="remove a channel's pin: it follows the newest release")
    clear.add_argument("name")
    rollout = commands.add_parser("rollout", help="start, advance or halt a staged rollout").add_subparsers(
        dest="action", required=True)
    start = rollout.add_parser("start")
    start.add_argument("channel")
    start.add_argument("version")
    start.add_argument("--percent", type=float, required=True)
    start.add_argument("--step", type=_step, action="append", default=[],
                       help="TIME=PERCENT: from TIME (UTC, 2026-12-01T08:00:00Z) on, offer to at least PERCENT")
    advance = rollout.add_parser("advance")
    advance.add_argument("channel")
    advance.add_argument("--percent", type=float, required=True)
    halt = rollout.add_parser("halt")
    halt.add_argument("channel")
    upload = commands.add_parser("upload", help="publish a release directory through the server")
    upload.add_argument("version")
    upload.add_argument("directory", type=Path)
    commands.add_parser("fleet", help="per key and channel: offers, downloads, addresses, failures; rollouts")
    return top


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not args.token:
        raise CliError("no admin token: give --token or set OTA_ADMIN_TOKEN")

    def send(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return call(args.server, args.token, method, path, None if body is None else json.dumps(body).encode())

    if args.command == "channel":
        if args.action == "list":
            return send("GET", "/v1/admin/channels")
        if args.action == "set":
            return send("PUT", f"/v1/admin/channels/{args.name}/pin", {"version": args.version})
        return send("DELETE", f"/v1/admin/channels/{args.name}/pin")
    if args.command == "rollout":
        if args.action == "start":
            return send("POST", f"/v1/admin/channels/{args.channel}/rollout",
                        {"version": args.version, "percent": args.percent, "steps": args.step})
        if args.action == "advance":
            return send("POST", f"/v1/admin/channels/{args.channel}/rollout/advance", {"percent": args.percent})
        return send("POST", f"/v1/admin/channels/{args.channel}/rollout/halt", {})
    if args.command == "upload":
        return call(args.server, args.token, "PUT", f"/v1/admin/releases/{args.version}",
                    release_archive(args.directory), "application/x-tar")
    return send("GET", "/v1/admin/fleet")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        answer = run(args)
    except CliError as e:
        print(f"sanic-ota: {e}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
