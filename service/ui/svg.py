"""Small charts drawn on the server as SVG: no script, readable by tests and screen readers."""

from __future__ import annotations

import math
from collections.abc import Sequence

from markupsafe import Markup, escape


def sparkline(values: Sequence[float], width: int = 120, height: int = 24, label: str = "") -> Markup:
    """A polyline of the finite values, scaled to the box; empty when fewer than two."""
    points = [v for v in values if math.isfinite(v)]
    if len(points) < 2:
        return Markup("")
    low, high = min(points), max(points)
    span = (high - low) or 1.0
    step = (width - 2) / (len(points) - 1)
    coords = " ".join(
        f"{1 + i * step:.1f},{height - 1 - (v - low) / span * (height - 2):.1f}" for i, v in enumerate(points)
    )
    return Markup(
        f'<svg class="spark" width="{width}" height="{height}" role="img" aria-label="{escape(label)}">'
        f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{coords}"/></svg>'
    )


def interval_bar(low: float, high: float, point: float, width: int = 160, height: int = 16) -> Markup:
    """A 0..1 axis with the interval [low, high], the point estimate and a mark at 0.5."""

    def x(v: float) -> float:
        return 1 + v * (width - 2)

    return Markup(
        f'<svg class="interval" width="{width}" height="{height}" role="img" '
        f'aria-label="95% interval {low:.2f} to {high:.2f}">'
        f'<line x1="1" x2="{width - 1}" y1="{height / 2}" y2="{height / 2}" stroke="#ccc"/>'
        f'<line x1="{x(0.5):.1f}" x2="{x(0.5):.1f}" y1="0" y2="{height}" stroke="#999" stroke-dasharray="2"/>'
        f'<rect x="{x(low):.1f}" y="{height / 4}" width="{max(x(high) - x(low), 1):.1f}" '
        f'height="{height / 2}" fill="#7aa6d8"/>'
        f'<circle cx="{x(point):.1f}" cy="{height / 2}" r="3" fill="#1d4f91"/></svg>'
    )
