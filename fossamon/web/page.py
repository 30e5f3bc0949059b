"""`GET /`: the status page. (Being written.)"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fossamon.web.live import LiveView

Points = list[tuple[float, float]]


def sparklines(live: LiveView, now: float) -> dict[str, Points]:
    """The last hour of the page's four series: CPU, memory, disk, API p95."""
    del live, now
    return {}


def render_page(status: dict[str, Any], series: dict[str, Points]) -> str:
    del series
    return f"<!doctype html><title>fossamon {html.escape(status['host'])}</title>"
