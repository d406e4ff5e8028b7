"""A py-spy profile of our small path: one worker answering version queries and 4 KiB downloads.

py-spy samples the worker from outside (no change to the server); the collapsed
stacks go to ``bench/profile/small-path.collapsed`` (flamegraph input) and the
functions with the most samples, self and total, to ``bench/profile/small-path.txt``.
py-spy is a bench-only dependency: ``.venv/bin/pip install py-spy``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from load import run_wrk
from servers import running
from servers.ours import Ours
from workspace import CERT, HOST, LISTING, QUERY, Workspace

OUT = Path(__file__).resolve().parent / "profile"


def py_spy() -> str | None:
    return shutil.which("py-spy") or (str(p) if (p := Path(sys.executable).with_name("py-spy")).exists() else None)


def summarise(collapsed: Path, top: int = 40) -> str:
    """Self and total samples per function, from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    lines = [f"{samples} samples of the worker's threads while not idle (py-spy --function); a thread",
             "blocked in native code (the log writer's queue, watchfiles' thread) may still count as busy.",
             "", "self %  function"]
    lines += [f"{100 * n / samples:5.1f}  {f}" for f, n in own.most_common(top)]
    lines += ["", "total %  function"]
    lines += [f"{100 * n / samples:5.1f}  {f}" for f, n in total.most_common(top)]
    return "\n".join(lines) + "\n"


def profile_small_path(ws: Workspace, seconds: int, uvloop: bool = True) -> Path | None:
    spy = py_spy()
    if spy is None:
        print("  profile: py-spy is not installed (.venv/bin/pip install py-spy); skipped")
        return None
    OUT.mkdir(exist_ok=True)
    collapsed = OUT / "small-path.collapsed"
    with running(Ours(ws, 1, uvloop)) as server:
        (pid,) = server.worker_pids()

        def load() -> None:  # the three small answers, one after the other, while py-spy samples
            for target in (QUERY, LISTING, CERT):
                run_wrk(f"http://{HOST}:{server.port}{target}", ws.token, 32, 1, f"{seconds // 3}s")

        worker = threading.Thread(target=load)
        worker.start()
        subprocess.run([spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "250",
                        "--function", "--format", "raw", "--output", str(collapsed), "--nonblocking"],
                       check=True, capture_output=True)
        worker.join()
    summary = OUT / "small-path.txt"
    summary.write_text(summarise(collapsed))
    return summary
