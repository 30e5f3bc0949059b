"""The last hour of the key series, and the runbook's trend analysis over it.

The runbook's trend report is average, median, maximum, slope and "increasing?" of CPU,
memory, disk, API latency and query time. Here it runs over two spans of each series: its
last 10 readings (cycles) and its last hour, from values kept in memory (two `array('d')`
per series: 16 bytes a reading, about 6 KB for an hour of a 10 s series). The status page
draws its sparklines from the same values.

Which series: the metrics in `TREND_METRICS`, at most `MAX_SERIES` of them (the first ones
seen): a thousand endpoints must not cost a thousand hours of readings.
"""

from __future__ import annotations

import statistics
from array import array
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


@dataclass(frozen=True, slots=True)
class Trend:
    count: int
    average: float
    median: float
    maximum: float
    slope_per_minute: float  # of the least-squares line through the readings
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
    average = statistics.fmean(values)
    slope = 0.0
    if len(values) >= 2 and times[-1] > times[0]:
        slope = statistics.linear_regression(times, values).slope
    rise = slope * (times[-1] - times[0])
    increasing = rise > 0 and rise > RISE_SHARE * abs(average)
    return Trend(
        len(values), average, statistics.median(values), max(values), slope * 60.0, increasing
    )


class SeriesTrail:
    """One series' readings within the last hour, oldest first."""

    __slots__ = ("times", "values")

    def __init__(self) -> None:
        self.times = array("d")
        self.values = array("d")

    def add(self, ts: float, value: float) -> None:
        if self.times and ts < self.times[-1]:
            return  # the wall clock stepped back: keep the trail ordered
        self.times.append(ts)
        self.values.append(value)
        # Trim in steps, not on every reading: `del` of an array's head copies the rest.
        if ts - self.times[0] > HOUR * 1.1:
            keep = next(i for i, t in enumerate(self.times) if ts - t <= HOUR)
            del self.times[:keep]
            del self.values[:keep]

    def last_hour(self, now: float) -> tuple[list[float], list[float]]:
        start = next((i for i, t in enumerate(self.times) if now - t <= HOUR), len(self.times))
        return self.times[start:].tolist(), self.values[start:].tolist()

    def recent(self, count: int = RECENT_CYCLES) -> tuple[list[float], list[float]]:
        return self.times[-count:].tolist(), self.values[-count:].tolist()


class TrendStore:
    def __init__(self, metrics: tuple[str, ...] = TREND_METRICS, limit: int = MAX_SERIES) -> None:
        self.metrics = frozenset(metrics)
        self.limit = limit
        self.trails: dict[SeriesKey, SeriesTrail] = {}
        self._warned = False

    def add_batch(self, batch: Batch) -> None:
        for sample in batch.samples:
            if sample.name not in self.metrics or sample.value != sample.value:  # NaN
                continue
            trail = self.trails.get(sample.key)
            if trail is None:
                if len(self.trails) >= self.limit:
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
            out.append((key, trend(*trail.recent()), trend(*trail.last_hour(now))))
        return out
