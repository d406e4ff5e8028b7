"""Slowing down addresses that keep failing authentication.

After ``limit`` failures within ``window`` seconds, an address gets 429 with a
``Retry-After`` for further failed attempts. A request with a valid token is never
limited, so modules behind the same NAT as a misbehaving one keep updating.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

#: Addresses tracked before stale ones are swept; bounds memory under a flood.
MAX_TRACKED = 100_000


class FailureLimiter:
    def __init__(self, limit: int = 20, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._failures: dict[str, deque[float]] = {}

    def fail(self, address: str) -> int | None:
        """Record a failure; the seconds to wait if the address is now over the limit."""
        now = self.clock()
        times = self._failures.get(address)
        if times is None:
            if len(self._failures) >= MAX_TRACKED:
                self._sweep(now)
            times = self._failures[address] = deque(maxlen=self.limit + 1)
        self._expire(times, now)
        times.append(now)
        if len(times) <= self.limit:
            return None
        return max(1, math.ceil(times[0] + self.window - now))

    def _expire(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()

    def _sweep(self, now: float) -> None:
        for address in [a for a, t in self._failures.items() if not t or t[-1] <= now - self.window]:
            del self._failures[address]
