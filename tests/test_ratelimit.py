from __future__ import annotations

from sanic_ota.ratelimit import FailureLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limit_applies_after_twenty_failures_a_minute_and_lifts() -> None:
    clock = Clock()
    limiter = FailureLimiter(limit=20, window=60, clock=clock)
    for _ in range(20):
        assert limiter.fail("10.0.0.1") is None
        clock.now += 1
    wait = limiter.fail("10.0.0.1")
    assert wait is not None and 1 <= wait <= 60
    assert limiter.fail("10.0.0.2") is None  # other addresses are not affected
    clock.now += 61
    assert limiter.fail("10.0.0.1") is None


def test_failures_spread_over_more_than_a_window_never_limit() -> None:
    clock = Clock()
    limiter = FailureLimiter(limit=20, window=60, clock=clock)
    for _ in range(200):
        assert limiter.fail("10.0.0.1") is None
        clock.now += 3.1
