"""The wrk scenarios: what is asked of each server, and which anchor it is measured against.

A new scenario is one ``Scenario(...)`` line: its name, our request target (the bare
Sanic app answers the same target), nginx's path for the same bytes, the anchor and
the target ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

from workspace import CERT, CERT_SIZE, IMAGE, IMAGE_SIZE, LISTING, QUERY, VERSION


@dataclass(frozen=True)
class Scenario:
    name: str
    target: str  # our request target; the bare app answers it too
    nginx: str  # nginx's path to the same bytes
    anchor: str  # "bare" or "nginx": the ratio is ours / anchor's
    goal: float  # the ratio to reach
    wrong_token: bool = False  # send a token no key has
    body_bytes: int = 0  # > 0: report MB/s instead of requests/s

    @property
    def expected(self) -> tuple[int, ...]:
        """The statuses that count as the answer asked for. Ours answers a flood of wrong
        tokens from one address with 429 after 20 failures a minute (``ratelimit``),
        through the same lookup, limiter and error path as the 403."""
        return (403, 429) if self.wrong_token else (200,)


SCENARIOS = [
    Scenario("version query", QUERY, "/version.json", "bare", 0.9),
    Scenario("listing (AT+CIPFWVER?)", LISTING, "/listing.json", "bare", 0.9),
    Scenario(f"cert {CERT_SIZE // 1024} KiB", CERT, f"/partitions/{VERSION}/mqtt_ca.bin", "bare", 0.9),
    Scenario("wrong token", QUERY, "/version.json", "bare", 0.9, wrong_token=True),
    Scenario(f"image {IMAGE_SIZE / 1e6:.1f} MB", IMAGE, f"/partitions/{VERSION}/ota.bin", "nginx", 1.0,
             body_bytes=IMAGE_SIZE),
]
