"""Small statistics shared by the status page and `fossamon report`."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


def p95(values: Sequence[float]) -> float:
    """The 95th percentile, `statistics.quantiles(n=20, method="inclusive")`: linear
    interpolation between the closest ranks, as numpy and the rules' p95 compute it.
    Raises ValueError without any value."""
    if not values:
        raise ValueError("p95 of no values")
    if len(values) == 1:  # statistics.quantiles needs two points before Python 3.13
        return float(values[0])
    return statistics.quantiles(values, n=20, method="inclusive")[-1]
