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
    over = limiter.fail("10.0.0.1")  # twenty failures: this one is over
    assert over is not None and over.first and over.wait == 40  # the first of the 21 leaves the window then
    again = limiter.fail("10.0.0.1")
    assert again is not None and not again.first and again.wait == 41
    assert limiter.fail("10.0.0.2") is None  # other addresses are not affected
    clock.now += 61
    assert limiter.fail("10.0.0.1") is None


def test_failures_spread_over_more_than_a_window_never_limit() -> None:
    clock = Clock()
    limiter = FailureLimiter(limit=20, window=60, clock=clock)
    for _ in range(200):
        assert limiter.fail("10.0.0.1") is None
        clock.now += 3.1


def test_memory_is_capped_even_when_every_address_is_still_in_its_window() -> None:
    clock = Clock()
    limiter = FailureLimiter(limit=20, window=60, clock=clock, max_tracked=100)
    for n in range(1000):
        limiter.fail(f"10.0.{n // 256}.{n % 256}")
    assert len(limiter) == 100
    assert "10.0.3.231" in limiter and "10.0.0.0" not in limiter  # the newest stay


def test_a_new_address_at_the_cap_forgets_exactly_one_the_one_that_failed_longest_ago() -> None:
    """No sweep: stale entries are not collected in bulk, one entry leaves per new one."""
    clock = Clock()
    limiter = FailureLimiter(limit=20, window=60, clock=clock, max_tracked=10)
    for n in range(5):
        limiter.fail(f"old-{n}")
    clock.now += 120  # the first five are now stale; a sweep would drop them all at once
    for n in range(5):
        limiter.fail(f"new-{n}")
    limiter.fail("old-0")  # failing again moves it to the recent end
    limiter.fail("newest")
    assert len(limiter) == 10
    assert "old-1" not in limiter
    assert all(a in limiter for a in ["old-0", "old-2", "old-3", "old-4", "newest"])


def test_an_address_that_keeps_failing_is_not_forgotten_under_a_flood() -> None:
    clock = Clock()
    limiter = FailureLimiter(limit=20, window=60, clock=clock, max_tracked=50)
    wait = None
    for n in range(21 * 40):
        if n % 40 == 0:
            wait = limiter.fail("attacker")
        else:
            limiter.fail(f"flood-{n}")
    assert wait is not None  # 21 failures within the window: limited despite 800 others
