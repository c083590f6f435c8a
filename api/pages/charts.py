"""Bar charts as plain geometry for an inline SVG (the centre's network is closed: no chart CDN).

The template draws the rectangles and labels; here only the arithmetic, so it is tested
without a browser. Values are counts (received cases per day / week / month).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: int


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    plot_top: int
    plot_bottom: int
    bars: list[Bar]
    top: int
    """The value the top of the plot stands for (a round number at least the largest value)."""
    ticks: list[tuple[float, int]]
    """(y, value) of the horizontal grid lines."""


def nice_top(value: int) -> int:
    """The smallest of 1, 2, 5 × 10^k that is at least ``value`` (at least 1)."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def bar_chart(points: Sequence[tuple[str, int]], *, width: int = 720, height: int = 220, ticks: int = 4) -> BarChart:
    """Bars for (label, value) pairs, left to right, scaled to the plot; negative values count as 0."""
    plot_top, plot_bottom, left = 10, height - 30, 40
    top = nice_top(max((max(v, 0) for _, v in points), default=0))
    span = plot_bottom - plot_top
    slot = (width - left) / max(len(points), 1)
    bars = []
    for i, (label, value) in enumerate(points):
        h = span * max(value, 0) / top
        bars.append(Bar(round(left + i * slot + slot * 0.1, 2), round(plot_bottom - h, 2), round(slot * 0.8, 2),
                        round(h, 2), label, value))
    grid = [(round(plot_bottom - span * k / ticks, 2), round(top * k / ticks)) for k in range(ticks + 1)]
    return BarChart(width, height, plot_top, plot_bottom, bars, top, grid)
