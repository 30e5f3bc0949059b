"""The last hour of the key series, and the runbook's trend analysis over it.

The runbook's trend report is average, median, maximum, slope and "increasing?" of CPU,
memory, disk, API latency and query time. Here it runs over two spans of each series: its
last 10 readings (cycles) and its last hour, from values kept in memory. The status page
draws its sparklines from the same values.

The hour is kept as points at least `SPACING` (4.5 s) apart: readings that come faster are
merged into the point they fall in (its mean; the hour's maximum is kept exactly, from each
point's peak; `count` counts readings). An hour is at most 800 points whatever the interval:
36 bytes a point in five `array`s, 29 KB a series, where every reading of a 1 s collector
kept 86 KB and took the hour to get there (the soak's RSS slope, issue 9). At intervals of
5 s and more (the defaults are 15 s and more) every reading is a point of its own.

Which series: the metrics in `TREND_METRICS`, at most `MAX_SERIES` of them (the first ones
seen): a thousand endpoints must not cost a thousand hours of readings.
"""

from __future__ import annotations

import math
import operator
import statistics
from array import array
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from fossamon.model import Batch, SeriesKey

log = structlog.get_logger(__name__)

TREND_METRICS = (
    "system_cpu_percent",
    "system_memory_percent",
    "system_disk_percent",
    "system_load1",
    "api_response_seconds",
    "db_query_seconds",
)
HOUR = 3600.0
RECENT_CYCLES = 10
MAX_SERIES = 100
# "increasing" needs the fitted line to rise by more than this share of the mean over the
# span: noise around a flat line must not read as a trend.
RISE_SHARE = 0.01
REBASE_AFTER = 86400.0
# Seconds between the start of the hour's points, at least: under 5 s, so that a 5 s series,
# whose readings come 5 s apart give or take the scheduler's milliseconds, keeps them all.
SPACING = 4.5


@dataclass(frozen=True, slots=True)
class Trend:
    count: int
    average: float
    median: float
    maximum: float
    slope_per_minute: float  # of the least-squares line through the readings (the hour: its points)
    increasing: bool

    def to_json(self) -> dict[str, float | int | bool]:
        return {
            "count": self.count,
            "average": self.average,
            "median": self.median,
            "max": self.maximum,
            "slope_per_minute": self.slope_per_minute,
            "increasing": self.increasing,
        }


def trend(times: list[float], values: list[float]) -> Trend | None:
    """The trend of readings (`times` ascending); None without any."""
    if not values:
        return None
    count = len(values)
    average = math.fsum(values) / count
    slope = _slope(times, values, average) if count >= 2 else 0.0
    rise = slope * (times[-1] - times[0])
    increasing = rise > 0 and rise > RISE_SHARE * abs(average)
    return Trend(count, average, statistics.median(values), max(values), slope * 60.0, increasing)


def _slope(times: list[float], values: list[float], average: float) -> float:
    """Least squares, in closed form over centred times: the same line as
    statistics.linear_regression, at C speed (an hour of 1 s readings of 100 series is
    360,000 points, computed on the event loop for each /status)."""
    mean_t = math.fsum(times) / len(times)
    dt = [t - mean_t for t in times]
    spread = math.fsum(map(operator.mul, dt, dt))
    if spread == 0:
        return 0.0
    dv = [v - average for v in values]
    return math.fsum(map(operator.mul, dt, dv)) / spread


class SeriesTrail:
    """One series' points within the last hour, oldest first (see the module docstring), with
    what the hour's trend needs kept up to date as points come, grow and go: the values in
    sorted order (median) and the sums of a least-squares fit. So a /status costs little
    whatever the interval: the sums are O(1) to read, the count and maximum a pass over at
    most 800 numbers in C, where recomputing an hour of 1 s readings of 100 series took
    200 ms of the event loop. The last 10 readings are kept as they came, for the "last 10"
    trend."""

    __slots__ = (
        "_origin",
        "_recent",
        "_sums",
        "counts",
        "ordered",
        "peaks",
        "times",
        "values",
    )

    def __init__(self) -> None:
        self.times = array("d")  # when each point's first reading came
        self.values = array("d")  # the mean of its readings
        self.peaks = array("d")  # the largest of them
        self.counts = array("I")  # how many
        self.ordered = array("d")  # the values, sorted
        self._recent: deque[tuple[float, float]] = deque(maxlen=RECENT_CYCLES)
        self._origin = 0.0  # times are summed relative to it (precision)
        self._sums = [0.0, 0.0, 0.0, 0.0]  # of t, v, t*t, t*v, with t = time - origin

    def add(self, ts: float, value: float) -> None:
        if self._recent and ts < self._recent[-1][0]:
            # The wall clock stepped back: what came before is no timeline any more. Start
            # over, rather than ignore every reading until the clock is back where it was.
            for column in (self.times, self.values, self.peaks, self.counts, self.ordered):
                del column[:]
            self._recent.clear()
        self._recent.append((ts, value))
        if self.times and ts - self.times[-1] < SPACING:
            self._merge(value)
        else:
            if not self.times or ts - self._origin > REBASE_AFTER:
                self._rebase(ts)
            self.times.append(ts)
            self.values.append(value)
            self.peaks.append(value)
            self.counts.append(1)
            insort(self.ordered, value)
            self._count(ts, value, 1.0)
        self.expire(ts)

    def _merge(self, value: float) -> None:
        """Into the last point: its mean, peak and count, and what they are part of."""
        old, count, at = self.values[-1], self.counts[-1], self.times[-1]
        mean = old + (value - old) / (count + 1)
        del self.ordered[bisect_left(self.ordered, old)]
        insort(self.ordered, mean)
        self._count(at, old, -1.0)
        self._count(at, mean, 1.0)
        self.values[-1] = mean
        self.peaks[-1] = max(self.peaks[-1], value)
        self.counts[-1] = count + 1

    def expire(self, now: float) -> None:
        """Let go of points more than an hour before `now`."""
        gone = bisect_left(self.times, now - HOUR)
        if not gone:
            return
        for ts, value in zip(self.times[:gone], self.values[:gone], strict=True):
            del self.ordered[bisect_left(self.ordered, value)]
            self._count(ts, value, -1.0)
        for column in (self.times, self.values, self.peaks, self.counts):
            del column[:gone]

    def _count(self, ts: float, value: float, sign: float) -> None:
        t = ts - self._origin
        sums = self._sums
        sums[0] += sign * t
        sums[1] += sign * value
        sums[2] += sign * t * t
        sums[3] += sign * t * value

    def _rebase(self, origin: float) -> None:
        """Sum afresh from a recent origin: bounds both the magnitudes and the drift of a
        day of adding and subtracting."""
        self._origin = origin
        self._sums = [0.0, 0.0, 0.0, 0.0]
        for ts, value in zip(self.times, self.values, strict=True):
            self._count(ts, value, 1.0)

    def hour_trend(self, now: float) -> Trend | None:
        """Average, median and slope of the hour's points; its maximum and count, of every
        reading."""
        self.expire(now)
        points = len(self.values)
        if not points:
            return None
        sum_t, sum_v, sum_tt, sum_tv = self._sums
        average = sum_v / points
        spread = sum_tt - sum_t * sum_t / points
        slope = (sum_tv - sum_t * sum_v / points) / spread if points >= 2 and spread > 0 else 0.0
        rise = slope * (self.times[-1] - self.times[0])
        middle = points // 2
        median = (
            self.ordered[middle]
            if points % 2
            else (self.ordered[middle - 1] + self.ordered[middle]) / 2
        )
        increasing = rise > 0 and rise > RISE_SHARE * abs(average)
        return Trend(sum(self.counts), average, median, max(self.peaks), slope * 60.0, increasing)

    def last_hour(self, now: float) -> tuple[list[float], list[float]]:
        """The hour's points: (times, means)."""
        start = bisect_left(self.times, now - HOUR)
        return self.times[start:].tolist(), self.values[start:].tolist()

    def recent(self, now: float) -> tuple[list[float], list[float]]:
        """The last 10 readings as they came, of this hour only."""
        kept = [(t, v) for t, v in self._recent if t >= now - HOUR]
        return [t for t, _ in kept], [v for _, v in kept]


class TrendStore:
    def __init__(self, metrics: tuple[str, ...] = TREND_METRICS, limit: int = MAX_SERIES) -> None:
        self.metrics = frozenset(metrics)
        self.limit = limit
        self.trails: dict[SeriesKey, SeriesTrail] = {}
        self._warned = False

    def add_batch(self, batch: Batch) -> None:
        for sample in batch.samples:
            if sample.name not in self.metrics or not math.isfinite(sample.value):
                continue  # NaN and inf would poison every figure (inf - inf is NaN)
            trail = self.trails.get(sample.key)
            if trail is None:
                # The host's own series always get a trail (the page charts them, and CPU's
                # first reading comes a cycle late): the limit is for endpoints and queries.
                if len(self.trails) >= self.limit and not sample.name.startswith("system_"):
                    if not self._warned:
                        self._warned = True
                        log.info("trends kept for the first series only", limit=self.limit)
                    continue
                trail = self.trails[sample.key] = SeriesTrail()
            trail.add(batch.ts, sample.value)

    def forget(self, keys: set[SeriesKey]) -> None:
        for key in keys:
            self.trails.pop(key, None)

    def trends(self, now: float) -> list[tuple[SeriesKey, Trend | None, Trend | None]]:
        """(series, last 10 readings, last hour) for every kept series, sorted."""
        out = []
        for key, trail in sorted(self.trails.items()):
            out.append((key, trend(*trail.recent(now)), trail.hour_trend(now)))
        return out
