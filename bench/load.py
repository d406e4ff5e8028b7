"""wrk, run against one server: requests/s, and the answers that were not what we asked for."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: Counts answers by status, so a wrong-token run can tell 403 from anything else.
STATUS_SCRIPT = Path(__file__).with_name("status.lua")


@dataclass
class WrkResult:
    requests_per_s: float
    statuses: dict[int, int]
    socket_errors: int

    def unexpected(self, expected: tuple[int, ...]) -> int:
        """Answers with a status not in ``expected``, and socket errors."""
        return sum(n for s, n in self.statuses.items() if s not in expected) + self.socket_errors


def run_wrk(url: str, token: str, connections: int, threads: int, duration: str,
            count_statuses: bool = True) -> WrkResult:
    """``count_statuses``: count each status with ``status.lua``. Its per-response callback
    makes wrk keep every body, which costs more than the server's own work for a 1.6 MB
    image: large downloads only tell 2xx (as 200) from the rest (as 0)."""
    script = ["-s", str(STATUS_SCRIPT)] if count_statuses else []
    out = subprocess.run(
        ["wrk", "-c", str(connections), "-t", str(threads), "-d", duration, *script,
         "-H", f"Authorization: token {token}", url],
        check=True, capture_output=True, text=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not rps or not total:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    if count_statuses:
        statuses = {int(s): int(n) for s, n in re.findall(r"^status (\d+): (\d+)$", out, re.MULTILINE)}
    else:
        other = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        rest = int(other.group(1)) if other else 0
        statuses = {200: int(total.group(1)) - rest, 0: rest}
    errors = 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    return WrkResult(float(rps.group(1)), statuses, errors)
