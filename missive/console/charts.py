"""Per-minute line charts as plain numbers for an SVG template (templates/chart.html).

No chart library: a chart is three polylines on a fixed viewBox, the y axis scaled to
a round maximum, and a few time labels. The template adds a text summary beside it, so
a screen reader (or a browser without SVG) gets the totals.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

WIDTH, HEIGHT = 900, 170
LEFT, RIGHT, TOP, BOTTOM = 40, 8, 8, 22
SERIES = (
    # name, colour, dash pattern (distinguishable without colour too)
    ("accepted", "#2f5d9b", ""),
    ("delivered", "#2e7d32", "6 3"),
    ("failed", "#b3261e", "2 2"),
)


@dataclass
class Line:
    name: str
    colour: str
    dash: str
    points: str
    total: int


@dataclass
class Chart:
    title: str
    width: int = WIDTH
    height: int = HEIGHT
    lines: list[Line] = field(default_factory=list)
    y_ticks: list[tuple[float, int]] = field(default_factory=list)
    # (x, text, text-anchor): the first and last labels are kept inside the plot.
    x_labels: list[tuple[float, str, str]] = field(default_factory=list)
    plot: tuple[int, int, int, int] = (LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM)


def _round_up(value: int) -> int:
    """1, 2, 5, 10, 20, 50, ... at or above `value`."""
    if value <= 1:
        return 1
    magnitude = 10 ** int(math.floor(math.log10(value)))
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def chart(title: str, series: dict[str, dict[int, int]], first_minute: int, minutes: int) -> Chart:
    """`series`: {"accepted"|"delivered"|"failed": {minute number: count}} over
    `minutes` minutes from `first_minute` (minutes since the epoch)."""
    x0, y0, x1, y1 = LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM
    top = _round_up(max((n for s in series.values() for n in s.values()), default=0))
    step = (x1 - x0) / max(1, minutes - 1)
    out = Chart(title)
    for name, colour, dash in SERIES:
        counts = series.get(name, {})
        points = " ".join(
            f"{x0 + i * step:.1f},{y1 - (counts.get(first_minute + i, 0) / top) * (y1 - y0):.1f}" for i in range(minutes)
        )
        out.lines.append(Line(name, colour, dash, points, sum(counts.values())))
    out.y_ticks = [(y1 - f * (y1 - y0), round(top * f)) for f in (0, 0.5, 1)] if top > 1 else [(y1, 0), (y0, 1)]
    labels = 4
    for k in range(labels + 1):
        i = round(k * (minutes - 1) / labels)
        stamp = time.strftime("%H:%M", time.gmtime((first_minute + i) * 60))
        anchor = "start" if k == 0 else "end" if k == labels else "middle"
        out.x_labels.append((x0 + i * step, stamp, anchor))
    return out
