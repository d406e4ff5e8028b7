"""The table the bench prints: one row per figure, medians, ratios and whether each target was met."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass
class Row:
    figure: str
    ours: str
    bare: str
    nginx: str
    ratio: float | None
    target: str
    met: bool | None  # None: a figure with no target


def rate(values: list[float], unit: str, unexpected: int = 0) -> str:
    note = f" ({unexpected} unexpected)" if unexpected else ""
    return f"{statistics.median(values):,.0f} {unit}{note}" if values else "-"


def print_table(rows: list[Row], ratio_header: str = "ratio") -> None:
    header = ("figure", "ours", "bare Sanic", "nginx", ratio_header, "target", "met?")
    cells = [header] + [
        (r.figure, r.ours, r.bare, r.nginx, "-" if r.ratio is None else f"{r.ratio:.2f}x", r.target,
         "-" if r.met is None else "yes" if r.met else "NO")
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    for n, c in enumerate(cells):
        print(" | ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)).rstrip())
        if n == 0:
            print("-+-".join("-" * w for w in widths))
