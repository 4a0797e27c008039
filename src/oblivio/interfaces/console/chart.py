"""The checkpoint history as an inline SVG chart, laid out on the server (no script, no network):
log size per checkpoint as a line, forgets executed per epoch as bars, over time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from oblivio.core.identifiers import parse_time
from oblivio.node.overview import EpochPoint

WIDTH = 760
HEIGHT = 260
LEFT, RIGHT, TOP, BOTTOM = 64, 56, 16, 36


@dataclass(frozen=True)
class Bar:
    """One epoch's forgets: a rectangle and its tooltip."""

    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Chart:
    """What the template draws: the log-size polyline, the forget bars and the axis labels."""

    width: int = WIDTH
    height: int = HEIGHT
    line: str = ""
    dots: tuple[tuple[float, float, str], ...] = ()
    bars: tuple[Bar, ...] = ()
    max_size: int = 0
    max_forgets: int = 0
    first_time: str = ""
    last_time: str = ""
    plot: tuple[int, int, int, int] = field(default=(LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM))


def epoch_chart(points: Sequence[EpochPoint]) -> Chart:
    """Lay out ``points`` (oldest first): x is the checkpoint's time, the left axis the log size,
    the right axis the forgets of the epoch. An empty history gives an empty chart."""
    if not points:
        return Chart()
    x0, y0, x1, y1 = LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM
    times = [parse_time(p.created_at).timestamp() for p in points]
    start, span = times[0], max(times[-1] - times[0], 1e-9)
    max_size = max(p.tree_size for p in points) or 1
    max_forgets = max(p.forgets for p in points)
    bar_width = max(2.0, min(14.0, (x1 - x0) / max(len(points), 1) * 0.6))

    def x_of(t: float) -> float:
        return round(x0 + (t - start) / span * (x1 - x0), 1) if len(points) > 1 else (x0 + x1) / 2

    def y_of(value: int, top: int) -> float:
        return round(y1 - value / max(top, 1) * (y1 - y0), 1)

    line, dots, bars = [], [], []
    for point, t in zip(points, times, strict=True):
        x = x_of(t)
        y = y_of(point.tree_size, max_size)
        line.append(f"{x},{y}")
        dots.append((x, y, f"epoch {point.epoch}: log size {point.tree_size}"))
        if point.forgets:
            top = y_of(point.forgets, max_forgets)
            bars.append(
                Bar(
                    round(x - bar_width / 2, 1),
                    top,
                    round(bar_width, 1),
                    round(y1 - top, 1),
                    f"epoch {point.epoch}: {point.forgets} forgets",
                )
            )
    return Chart(
        line=" ".join(line),
        dots=tuple(dots),
        bars=tuple(bars),
        max_size=max_size,
        max_forgets=max_forgets,
        first_time=points[0].created_at,
        last_time=points[-1].created_at,
    )
