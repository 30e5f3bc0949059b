"""A log-linear latency histogram: HdrHistogram's bucket layout at 3 significant digits.

Values are whole microseconds. Below 2,048 µs every value has its own bucket; above, each
power of two is cut into 1,024 equal buckets, so a bucket is never wider than 1/1,024 of its
values (0.1 %) from 1 µs to days. Recording is a `bit_length`, a shift and a list increment,
which matters on a path that runs tens of thousands of times a second per process. Two
histograms with this layout merge exactly (bucket by bucket), which is how the results of
several worker processes become one: percentiles of the merged histogram are percentiles of
all the requests, never an average of per-process percentiles.

A percentile is reported as the highest value its bucket can hold (as HdrHistogram does), so
it may overstate by at most 0.1 % and never understates; min and max are exact.
"""

from __future__ import annotations

import math
from typing import Any

SUB_BITS = 10
_LINEAR = 1 << (SUB_BITS + 1)  # 2048: below this, one bucket per microsecond
MAX_MICROS = (1 << 40) - 1  # about 12.7 days; longer values are clamped to it
BUCKETS = ((MAX_MICROS.bit_length() - SUB_BITS) << SUB_BITS) + (1 << SUB_BITS)


def bucket_of(micros: int) -> int:
    if micros < _LINEAR:
        return micros
    shift = micros.bit_length() - (SUB_BITS + 1)
    return (shift << SUB_BITS) + (micros >> shift)


def highest_in(bucket: int) -> int:
    """The largest value that falls in `bucket`."""
    if bucket < _LINEAR:
        return bucket
    shift = (bucket >> SUB_BITS) - 1
    mantissa = bucket - (shift << SUB_BITS)
    return ((mantissa + 1) << shift) - 1


class Histogram:
    """Counts of latencies in microseconds; exact count, sum, min and max beside the buckets."""

    __slots__ = ("count", "counts", "max", "min", "total")

    def __init__(self) -> None:
        self.counts: list[int] = [0] * BUCKETS
        self.count = 0
        self.total = 0
        self.min = MAX_MICROS
        self.max = 0

    def record(self, micros: int) -> None:
        if micros < 0:
            micros = 0
        elif micros > MAX_MICROS:
            micros = MAX_MICROS
        self.counts[bucket_of(micros)] += 1
        self.count += 1
        self.total += micros
        self.min = min(self.min, micros)
        self.max = max(self.max, micros)

    def record_seconds(self, seconds: float) -> None:
        self.record(round(seconds * 1e6))

    def merge(self, other: Histogram) -> None:
        if not other.count:
            return
        mine = self.counts
        for bucket, n in enumerate(other.counts):
            if n:
                mine[bucket] += n
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def percentile(self, percent: float) -> int | None:
        """The value at `percent` (0-100) by nearest rank, in µs; None when empty."""
        if not self.count:
            return None
        if percent <= 0:
            return self.min
        rank = max(1, math.ceil(percent / 100 * self.count))
        if rank >= self.count:
            return self.max
        seen = 0
        for bucket, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(max(highest_in(bucket), self.min), self.max)
        return self.max  # unreachable while count == sum(counts); kept for safety

    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def to_json(self) -> dict[str, Any]:
        """A sparse form for the JSON report and for passing between processes."""
        return {
            "count": self.count,
            "sum": self.total,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
            "buckets": {str(b): n for b, n in enumerate(self.counts) if n},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        histogram = cls()
        for bucket, n in data["buckets"].items():
            histogram.counts[int(bucket)] += int(n)
        histogram.count = int(data["count"])
        histogram.total = int(data["sum"])
        if histogram.count:
            histogram.min = int(data["min"])
            histogram.max = int(data["max"])
        if sum(histogram.counts) != histogram.count:
            raise ValueError("histogram buckets do not add up to its count")
        return histogram
