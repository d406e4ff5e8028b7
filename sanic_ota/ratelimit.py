"""Slowing down addresses that keep failing authentication.

After ``limit`` failures within ``window`` seconds, an address gets 429 with a
``Retry-After`` for further failed attempts. A request with a valid token is never
limited, so modules behind the same NAT as a misbehaving one keep updating.

Memory and cost are bounded: at most ``max_tracked`` addresses are remembered, in
the order they last failed, and a new address beyond that forgets the one that
failed longest ago. Every call touches one or two entries and never walks the
table, so a flood from many addresses costs the same per request as one address.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import NamedTuple

#: Addresses remembered at once. Each costs about 1.3 KB at most (``limit + 1``
#: timestamps), so 10,000 is about 13 MB in the worst case. An address that keeps
#: failing stays at the recent end, so forgetting it takes 10,000 other addresses
#: failing in between; whoever has those is not slowed down by a per-address limit.
MAX_TRACKED = 10_000


class Over(NamedTuple):
    """A failure that finds its address over the limit."""

    #: seconds until the address is under the limit again (``Retry-After``)
    wait: int
    #: this failure is the one that put it over (the log says so once, not per failure)
    first: bool


class FailureLimiter:
    def __init__(
        self, limit: int = 20, window: float = 60.0, clock: Callable[[], float] = time.monotonic,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        self.limit, self.window, self.clock, self.max_tracked = limit, window, clock, max_tracked
        #: address -> times of its recent failures; least recently failed first
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def __contains__(self, address: object) -> bool:
        return address in self._failures

    def fail(self, address: str) -> Over | None:
        """Record a failure; None while the address is within the limit."""
        now = self.clock()
        times = self._failures.get(address)
        if times is None:
            if len(self._failures) >= self.max_tracked:
                self._failures.popitem(last=False)  # the address that failed longest ago
            times = self._failures[address] = deque(maxlen=self.limit + 1)
        else:
            self._failures.move_to_end(address)
        while times and times[0] <= now - self.window:
            times.popleft()
        within = len(times)  # failures in the window before this one: at most limit + 1
        times.append(now)
        if within < self.limit:
            return None
        return Over(max(1, math.ceil(times[0] + self.window - now)), first=within == self.limit)
