"""Signals to a real server process with two workers: SIGHUP is ignored, SIGTERM stops all."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

from conftest import TOKEN, VERSION, env_for, settings_for
from esp_client import version_query
from server_process import ServerProcess


def group(pgid: int) -> set[int]:
    """Live processes in process group ``pgid`` (Sanic's main process leads it)."""
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            members.add(int(entry.name))
    return members


def test_sighup_is_ignored_and_sigterm_then_leaves_nothing_holding_the_port(workdir: Path) -> None:
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir, workers=2) as proc:
        assert proc.proc is not None
        try:
            _hang_up_then_terminate(proc, proc.proc.pid)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.proc.pid, signal.SIGKILL)  # should this fail, no orphan outlives the test


def _hang_up_then_terminate(proc: ServerProcess, main: int) -> None:
    assert proc.proc is not None
    before = group(main)
    assert len(before) >= 3  # main process and two workers, besides Sanic's helpers
    os.kill(main, signal.SIGHUP)  # to the main process only, as `kill -HUP $MAINPID`
    time.sleep(1.0)
    assert proc.proc.poll() is None, "SIGHUP stopped the main process"
    os.killpg(main, signal.SIGHUP)  # to every process, as a closed terminal does
    time.sleep(1.0)
    assert group(main) == before
    assert version_query(proc.host, proc.port, TOKEN) == VERSION
    os.kill(main, signal.SIGTERM)  # what systemd sends (KillMode=mixed: the main process)
    assert proc.proc.wait(30) == 0
    deadline = time.monotonic() + 10
    while group(main) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group(main), "a process of the server outlived it"
    try:
        socket.create_connection((proc.host, proc.port), timeout=1).close()
    except ConnectionRefusedError:
        pass
    else:
        raise AssertionError("something still listens on the port")
