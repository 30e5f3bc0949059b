"""History windows: a time-bounded ring buffer per series, and the aggregates rules read.

Each series keeps only as much history as the longest rule window that reads it, so memory is
bounded by the rules, not by uptime. Aggregates are true order statistics (a p95 is the 95th
percentile with linear interpolation, as numpy and Prometheus' quantile_over_time compute it,
not a trimmed mean).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

    from fossamon.model import Batch, Labels, SeriesKey

Point = tuple[float, float]

# A series sampled every 100 ms for a day would need 864,000 points; nothing a rule needs
# justifies that, so the buffer is also capped by count.
MAX_POINTS = 20_000


class SeriesWindow:
    __slots__ = ("points", "retention")

    def __init__(self, retention: float) -> None:
        self.retention = retention
        self.points: deque[Point] = deque(maxlen=MAX_POINTS)

    def add(self, ts: float, value: float) -> None:
        if self.points and ts < self.points[-1][0]:
            return  # out of order (clock stepped back): keep the window sorted
        self.points.append((ts, value))
        horizon = ts - self.retention
        while len(self.points) > 1 and self.points[0][0] < horizon:
            self.points.popleft()

    def since(self, start: float) -> list[Point]:
        """Points with ts >= start (the window is sorted, so scan from the newest)."""
        if not self.points or self.points[0][0] >= start:
            return list(self.points)  # the usual case: retention is the rule's window
        out: list[Point] = []
        for point in reversed(self.points):
            if point[0] < start:
                break
            out.append(point)
        out.reverse()
        return out

    @property
    def last(self) -> Point | None:
        return self.points[-1] if self.points else None


class History:
    """Every series' window, keyed by (metric name, labels)."""

    def __init__(self, retention: Mapping[str, float] | None = None, default: float = 0.0) -> None:
        self.retention = dict(retention or {})
        self.default = default
        self.series: dict[SeriesKey, SeriesWindow] = {}
        self._by_metric: dict[str, dict[Labels, SeriesWindow]] = {}
        self.by_collector: dict[str, set[SeriesKey]] = {}

    def add_batch(self, batch: Batch) -> None:
        owned = self.by_collector.setdefault(batch.collector, set())
        for sample in batch.samples:
            if not math.isfinite(sample.value):
                continue  # NaN/inf would poison every aggregate; the JSONL line keeps it (null)
            window = self.series.get(sample.key)
            if window is None:
                window = SeriesWindow(self.retention.get(sample.name, self.default))
                self.series[sample.key] = window
                self._by_metric.setdefault(sample.name, {})[sample.labels] = window
                owned.add(sample.key)
            window.add(batch.ts, sample.value)

    def forget(self, keys: set[SeriesKey]) -> None:
        """Drop series that are no longer collected (a reload removed their target)."""
        for key in keys:
            name, labels = key
            self.series.pop(key, None)
            self._by_metric.get(name, {}).pop(labels, None)
        for owned in self.by_collector.values():
            owned.difference_update(keys)

    def set_retention(self, retention: Mapping[str, float]) -> None:
        """Apply new rule windows (a reload) without dropping what is already stored."""
        self.retention = dict(retention)
        for (name, _), window in self.series.items():
            window.retention = self.retention.get(name, self.default)

    def pick(
        self, metric: str, labels: Iterable[Labels], matchers: Mapping[str, str]
    ) -> list[tuple[Labels, SeriesWindow]]:
        """`select` limited to the given label sets (those a batch just updated): no scan of
        every series of the metric."""
        windows = self._by_metric.get(metric, {})
        out = []
        for one in labels:
            window = windows.get(one)
            if window is not None and (not matchers or _matches(one, matchers)):
                out.append((one, window))
        return out

    def select(
        self, metric: str, matchers: Mapping[str, str]
    ) -> Iterator[tuple[Labels, SeriesWindow]]:
        for labels, window in self._by_metric.get(metric, {}).items():
            if _matches(labels, matchers):
                yield labels, window


def _matches(labels: Labels, matchers: Mapping[str, str]) -> bool:
    present = dict(labels)
    return all(present.get(k) == v for k, v in matchers.items())


def _percentile(q: float) -> Callable[[Sequence[Point]], float | None]:
    percent = round(q * 100)

    def compute(points: Sequence[Point]) -> float | None:
        values = sorted(v for _, v in points)
        # Linear interpolation between the closest ranks (numpy's default): the arithmetic
        # of statistics.quantiles(method="inclusive"), in integers, for one cut not 99.
        scaled = (len(values) - 1) * percent
        below, delta = divmod(scaled, 100)
        if delta == 0:
            return values[below]
        return (values[below] * (100 - delta) + values[below + 1] * delta) / 100

    return compute


def _rate(points: Sequence[Point]) -> float | None:
    """Per-second increase of a counter; a drop is a counter reset, counted from zero."""
    if len(points) < 2:
        return None
    increase = 0.0
    for (_, before), (_, after) in itertools.pairwise(points):
        increase += after - before if after >= before else after
    span = points[-1][0] - points[0][0]
    return increase / span if span > 0 else None


def _fit(points: Sequence[Point]) -> tuple[float, float, float] | None:
    """The least-squares line (origin, slope per second, intercept at the origin)."""
    if len(points) < 2:
        return None
    origin = points[0][0]
    xs = [ts - origin for ts, _ in points]
    if max(xs) == 0:
        return None
    fit = statistics.linear_regression(xs, [v for _, v in points])
    return origin, fit.slope, fit.intercept


def _slope(points: Sequence[Point]) -> float | None:
    """Least-squares change per second."""
    fit = _fit(points)
    return None if fit is None else fit[1]


def predict(points: Sequence[Point], at: float) -> float | None:
    """The least-squares line through `points`, read at time `at` ("full within 24 h?")."""
    fit = _fit(points)
    if fit is None:
        return None
    origin, slope, intercept = fit
    return intercept + slope * (at - origin)


AGGREGATES: dict[str, Callable[[Sequence[Point]], float | None]] = {
    "last": lambda points: points[-1][1],
    "avg": lambda points: statistics.fmean(v for _, v in points),
    "min": lambda points: min(v for _, v in points),
    "max": lambda points: max(v for _, v in points),
    "p50": _percentile(0.50),
    "p90": _percentile(0.90),
    "p95": _percentile(0.95),
    "p99": _percentile(0.99),
    "rate": _rate,
    "slope": _slope,
}


def aggregate(name: str, points: Sequence[Point]) -> float | None:
    """The aggregate of `points`, or None when there is nothing (or too little) to compute it."""
    if not points:
        return None
    return AGGREGATES[name](points)
