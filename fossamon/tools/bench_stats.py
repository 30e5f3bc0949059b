"""The arithmetic of `fossamon bench`: one item's timings summed up, and the verdict of a
comparison with a baseline. Pure: no I/O, no clock.

**Spread.** Each run of an item has its median and its interquartile range (IQR = Q3 - Q1,
`statistics.quantiles(n=4, method="inclusive")`, linear interpolation as numpy computes it):
the middle half of its timings, which one slow outlier (a GC pause, a page fault) cannot
widen as it widens min/max or the standard deviation.

**Verdict.** `change = median_now - median_baseline`, and the noise band is

    noise = max(IQR_baseline + IQR_now,  min_change x median_baseline)

DEGRADED when `change > noise`, IMPROVED when `change < -noise`, else UNCHANGED. The first
term is the two runs' spreads combined. A shift of the median by more than both middle halves
together guarantees, whatever the shape of the timings, that the middle halves do not overlap
(Q1_now >= median_now - IQR_now > median_baseline + IQR_baseline >= Q3_baseline): most of the
new timings are slower than most of the old ones. The second term is a floor (default 5 %):
timings of the same work in two separate processes differ by a few percent (CPU frequency,
caches, memory layout, other load on the host) that no spread within one run shows.
"""

from __future__ import annotations

import enum
import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

DEFAULT_MIN_CHANGE = 0.05


class Verdict(enum.StrEnum):
    IMPROVED = "IMPROVED"
    UNCHANGED = "UNCHANGED"
    DEGRADED = "DEGRADED"
    NEW = "NEW"  # timed now, not in the baseline
    GONE = "GONE"  # in the baseline, no longer configured
    REDEFINED = "REDEFINED"  # same name, different SQL or request: not comparable
    FAILED = "FAILED"  # could not be timed in this run (or in the baseline)


@dataclass(frozen=True, slots=True)
class Summary:
    count: int
    median: float
    minimum: float
    maximum: float
    q1: float
    q3: float
    stdev: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def to_json(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "median": self.median,
            "min": self.minimum,
            "max": self.maximum,
            "q1": self.q1,
            "q3": self.q3,
            "iqr": self.iqr,
            "stdev": self.stdev,
        }


def summarize(samples: Sequence[float]) -> Summary | None:
    """None without any timing; quartiles of a single timing are that timing."""
    if not samples:
        return None
    values = sorted(samples)
    if len(values) == 1:
        only = values[0]
        return Summary(1, only, only, only, only, only, 0.0)
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return Summary(
        count=len(values),
        median=median,
        minimum=values[0],
        maximum=values[-1],
        q1=q1,
        q3=q3,
        stdev=statistics.stdev(values),
    )


@dataclass(frozen=True, slots=True)
class Comparison:
    verdict: Verdict
    baseline: Summary | None
    current: Summary | None
    change_percent: float | None = None
    """(median now - median baseline) / median baseline x 100; None when not comparable."""
    noise_percent: float | None = None
    """The noise band as a percentage of the baseline's median."""

    def to_json(self) -> dict[str, object]:
        return {
            "verdict": str(self.verdict),
            "change_percent": _finite(self.change_percent),
            "noise_percent": _finite(self.noise_percent),
            "baseline": None if self.baseline is None else self.baseline.to_json(),
            "current": None if self.current is None else self.current.to_json(),
        }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def compare(
    baseline: Summary | None, current: Summary | None, min_change: float = DEFAULT_MIN_CHANGE
) -> Comparison:
    """The verdict on one item whose baseline and current run were both attempted."""
    if baseline is None or current is None:
        return Comparison(Verdict.FAILED, baseline, current)
    change = current.median - baseline.median
    noise = max(baseline.iqr + current.iqr, min_change * baseline.median)
    if change > noise:
        verdict = Verdict.DEGRADED
    elif change < -noise:
        verdict = Verdict.IMPROVED
    else:
        verdict = Verdict.UNCHANGED
    if baseline.median > 0:
        percent: float | None = change / baseline.median * 100
        noise_percent: float | None = noise / baseline.median * 100
    else:  # a zero baseline (a clock that did not tick) has no percentage
        percent = noise_percent = None
    return Comparison(verdict, baseline, current, percent, noise_percent)


def fails_gate(comparison: Comparison, fail_over_percent: float) -> bool:
    """Whether this item fails `--fail-over PCT`: degraded by more than PCT, or an item of the
    baseline that could not be timed now (a gate must not pass on what it did not measure)."""
    if comparison.verdict is Verdict.FAILED:
        return comparison.baseline is not None
    if comparison.verdict is not Verdict.DEGRADED:
        return False
    return comparison.change_percent is None or comparison.change_percent > fail_over_percent
