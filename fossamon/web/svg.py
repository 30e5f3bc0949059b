"""Inline SVG sparklines: the status page's last hour and `fossamon report`'s ranges.

No script and no external asset: a polyline over an area, scaled to the data's own span and
range, with the last reading marked. Long series are thinned per pixel column so that a
spike survives.
"""

from __future__ import annotations

import html
from operator import itemgetter

Points = list[tuple[float, float]]

WIDTH, HEIGHT, PAD = 320, 64, 4  # the sparkline's viewBox; PAD keeps the stroke inside


def thin(points: Points, columns: int) -> Points:
    """At most the lowest and highest point of each run of readings a pixel column covers, in
    time order, and the last point: a spike survives, which keeping every n-th would drop."""
    if len(points) <= 2 * columns:
        return points
    size = -(-len(points) // columns)  # readings per column, rounded up
    kept: Points = []
    for chunk in (points[i : i + size] for i in range(0, len(points), size)):
        kept += sorted({min(chunk, key=itemgetter(1)), max(chunk, key=itemgetter(1))})
    return kept if kept[-1] == points[-1] else [*kept, points[-1]]


def _scale(points: Points) -> list[tuple[float, float]]:
    """Time left to right over the data's own span, values bottom to top over their range."""
    first, last = points[0][0], points[-1][0]
    low, high = min(v for _, v in points), max(v for _, v in points)
    width, height = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    return [
        (
            PAD + (t - first) / (last - first) * width if last > first else WIDTH - PAD,
            PAD + (high - v) / (high - low) * height if high > low else HEIGHT / 2,
        )
        for t, v in points
    ]


def sparkline(title: str, points: Points, *, described: str = "over the last hour") -> str:
    """One chart; `described` completes its accessible name (\"CPU % over the last hour\")."""
    coords = _scale(points)
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    base = HEIGHT - PAD
    area = f"{coords[0][0]:.1f},{base} {line} {coords[-1][0]:.1f},{base}"
    x, y = coords[-1]
    return (
        f'<svg class="sparkline" data-series="{_e(title)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{_e(f"{title} {described}")}">'
        f'<polygon class="area" points="{area}"/><polyline class="line" points="{line}"/>'
        f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="2.5"/></svg>'
    )


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)
