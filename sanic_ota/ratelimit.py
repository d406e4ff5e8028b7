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

#: Addresses remembered at once. Each costs about 1.3 KB at most (``limit + 1``
#: timestamps), so 10,000 is about 13 MB in the worst case. An address that keeps
#: failing stays at the recent end, so forgetting it takes 10,000 other addresses
#: failing in between; whoever has those is not slowed down by a per-address limit.
MAX_TRACKED = 10_000


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

    def is_limited(self, address: str) -> bool:
        """Whether ``address`` is over the limit now: more than ``limit`` failures within the window."""
        times = self._failures.get(address)
        return times is not None and len(times) > self.limit and times[0] > self.clock() - self.window

    def fail(self, address: str) -> int | None:
        """Record a failure; the seconds to wait if the address is now over the limit."""
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
        times.append(now)
        if len(times) <= self.limit:
            return None
        return max(1, math.ceil(times[0] + self.window - now))
