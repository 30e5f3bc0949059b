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
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from fossamon.model import Batch, Labels, SeriesKey

Point = tuple[float, float]

# A series sampled every 100 ms for a day would need 864,000 points; nothing a rule needs
# justifies that, so the buffer is also capped by count.
MAX_POINTS = 20_000
# Sorted tails kept per series: one per distinct rule window that reads it with a percentile
# (rules rarely use more than two or three windows on one metric); beyond that, sort per call.
MAX_SORTED_TAILS = 4


@dataclass(slots=True)
class _SortedTail:
    """The values of a window's points from index `skip` on, in ascending order."""

    skip: int
    values: list[float]


@dataclass(slots=True)
class _FitTail:
    """The least-squares sums of a window's points from index `skip` on, x measured from
    `origin` (near the window, so that x*x stays small and the sums exact enough). Kept as
    points come and go, so a slope or a prediction over a 6 h window of 2,160 points costs a
    few arithmetic operations, not a pass over them (that pass was most of a cycle's CPU)."""

    skip: int
    origin: float
    n: int = 0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0
    updates: int = 0  # since the sums were last computed afresh (rounding error grows)

    def add(self, ts: float, value: float) -> None:
        x = ts - self.origin
        self.n += 1
        self.sx += x
        self.sy += value
        self.sxx += x * x
        self.sxy += x * value
        self.updates += 1

    def remove(self, ts: float, value: float) -> None:
        x = ts - self.origin
        self.n -= 1
        self.sx -= x
        self.sy -= value
        self.sxx -= x * x
        self.sxy -= x * value
        self.updates += 1

    def line(self) -> tuple[float, float, float] | None:
        """(origin, slope per second, intercept at the origin), as `fit_line` gives it."""
        n = self.n
        if n < 2:
            return None
        mean_x = self.sx / n
        spread = self.sxx - self.sx * mean_x
        if spread <= 0:
            return None
        slope = (self.sxy - mean_x * self.sy) / spread
        return self.origin, slope, self.sy / n - slope * mean_x


def _fresh_fit(points: deque[Point], skip: int) -> _FitTail:
    tail = _FitTail(skip, points[skip][0] if skip < len(points) else 0.0)
    for ts, value in itertools.islice(points, skip, None):
        tail.add(ts, value)
    tail.updates = 0
    return tail


class SeriesWindow:
    __slots__ = ("_fits", "_nan", "_tails", "points", "readers", "retention")

    def __init__(self, retention: float) -> None:
        self.retention = retention
        self.points: deque[Point] = deque(maxlen=MAX_POINTS)
        # Per window length a percentile rule asked about: the values of that window, kept
        # sorted as points come and go (insort/delete: O(log n) to find, a memmove to move),
        # so a p95 is an index instead of a sort of the whole window per evaluation.
        self._tails: dict[float, _SortedTail] = {}
        # Per window length a slope or predict rule asked about: its least-squares sums.
        self._fits: dict[float, _FitTail] = {}
        self._nan = 0  # NaNs have no order: while one is stored, percentiles sort per call
        # The evaluator's note of which of its rules read this series (for which rule list):
        # kept here so that it lives and dies with the series. History never looks at it.
        self.readers: tuple[object, tuple[int, ...]] | None = None

    def add(self, ts: float, value: float) -> None:
        points = self.points
        if points:
            if ts < points[-1][0]:
                return  # out of order (clock stepped back): keep the window sorted
            if len(points) == MAX_POINTS:  # what the deque's maxlen would drop, unseen by tails
                oldest = points.popleft()
                self._untrack(oldest[1])
                self._unfit(oldest)
        points.append((ts, value))
        tails, fits = self._tails, self._fits
        if value != value:  # noqa: PLR0124 - NaN, without a function call per point
            self._nan += 1
            tails.clear()
            fits.clear()
        elif tails or fits:
            self._track(ts, value)
        horizon = ts - self.retention
        while len(points) > 1 and points[0][0] < horizon:
            oldest = points.popleft()
            if tails or fits or self._nan:  # most series keep neither, most of the time
                self._untrack(oldest[1])
                self._unfit(oldest)

    def shift(self, step: float) -> None:
        """The wall clock stepped by `step`: the points move with it (the least-squares sums
        are kept relative to their origin, which moves too)."""
        self.points = deque(((ts + step, value) for ts, value in self.points), maxlen=MAX_POINTS)
        for fit in self._fits.values():
            fit.origin += step

    def _track(self, ts: float, value: float) -> None:
        """A point came: into the sorted tails and the fits."""
        for tail in self._tails.values():
            insort(tail.values, value)
        for fit in self._fits.values():
            fit.add(ts, value)

    def _untrack(self, value: float) -> None:
        """A point left: out of the tails it was in."""
        if value != value:  # noqa: PLR0124 - NaN (no tails exist while one is stored)
            self._nan -= 1
            return
        for tail in self._tails.values():
            if tail.skip:
                tail.skip -= 1  # it was older than this tail's window
            else:
                del tail.values[bisect_left(tail.values, value)]

    def _unfit(self, point: Point) -> None:
        for fit in self._fits.values():
            if fit.skip:
                fit.skip -= 1
            else:
                fit.remove(*point)

    def drop_tails(self) -> None:
        self._tails.clear()
        self._fits.clear()

    def fit_since(self, start: float, window: float) -> tuple[float, float, float] | None:
        """`fit_line(since(start))`, from sums kept up to date between calls for each `window`
        (start = now - window): (origin, slope, intercept), or None as `fit_line` says. Raises
        LookupError when they cannot be kept (a NaN stored, or too many windows asked for):
        use `fit_line(since(start))` then."""
        if self._nan:
            raise LookupError("a NaN is stored")
        points = self.points
        fit = self._fits.get(window)
        if fit is None:
            if len(self._fits) >= MAX_SORTED_TAILS:
                raise LookupError("too many windows")
            fit = self._fits[window] = _fresh_fit(points, self._first_at(start))
        skip = fit.skip
        while skip < len(points) and points[skip][0] < start:  # the window moved on
            fit.remove(*points[skip])
            skip += 1
        while skip and points[skip - 1][0] >= start:  # asked about an earlier `now`
            skip -= 1
            fit.add(*points[skip])
        fit.skip = skip
        # Afresh now and then: when the origin has fallen far behind the window (x grows, and
        # with it the rounding of x*x), or after many updates (each one rounds a little).
        stale = skip < len(points) and points[skip][0] - fit.origin > 2 * window
        if stale or fit.updates > 4 * max(fit.n, 64):
            fit = self._fits[window] = _fresh_fit(points, skip)
        return fit.line()

    def first_since(self, start: float) -> Point | None:
        """The oldest point with ts >= start (the window is sorted; most start at index 0)."""
        for point in self.points:
            if point[0] >= start:
                return point
        return None

    def _first_at(self, start: float) -> int:
        skip = 0
        for ts, _ in self.points:
            if ts >= start:
                break
            skip += 1
        return skip

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

    def sorted_since(self, start: float, window: float) -> list[float] | None:
        """The values of `since(start)` in ascending order, kept up to date between calls for
        each `window` (start = now - window); None when they cannot be kept (a NaN stored, or
        too many windows asked for): sort `since(start)` then. Read-only for the caller."""
        if self._nan:
            return None
        points = self.points
        tail = self._tails.get(window)
        if tail is None:
            if len(self._tails) >= MAX_SORTED_TAILS:
                return None
            skip = 0
            for ts, _ in points:
                if ts >= start:
                    break
                skip += 1
            tail = _SortedTail(skip, sorted(v for _, v in itertools.islice(points, skip, None)))
            self._tails[window] = tail
            return tail.values
        values, skip = tail.values, tail.skip
        while skip < len(points) and points[skip][0] < start:  # the window moved on
            del values[bisect_left(values, points[skip][1])]
            skip += 1
        while skip and points[skip - 1][0] >= start:  # asked about an earlier `now`
            skip -= 1
            insort(values, points[skip][1])
        tail.skip = skip
        return values

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

    def add_batch(self, batch: Batch, ts: float | None = None) -> None:
        """The batch's samples, at `ts` (default: the batch's own)."""
        owned = self.by_collector.setdefault(batch.collector, set())
        series, isfinite = self.series, math.isfinite
        ts = batch.ts if ts is None else ts
        for sample in batch.samples:
            value = sample.value
            if not isfinite(value):
                continue  # NaN/inf would poison every aggregate; the JSONL line keeps it (null)
            key = (sample.name, sample.labels)  # Sample.key, without a property call per sample
            window = series.get(key)
            if window is None:
                window = SeriesWindow(self.retention.get(sample.name, self.default))
                series[key] = window
                self._by_metric.setdefault(sample.name, {})[sample.labels] = window
                owned.add(key)
            window.add(ts, value)

    def forget(self, keys: set[SeriesKey]) -> None:
        """Drop series that are no longer collected (a reload removed their target)."""
        for key in keys:
            name, labels = key
            self.series.pop(key, None)
            self._by_metric.get(name, {}).pop(labels, None)
        for owned in self.by_collector.values():
            owned.difference_update(keys)

    def shift(self, step: float) -> None:
        """The wall clock stepped by `step` (see fossamon.clock)."""
        for window in self.series.values():
            window.shift(step)

    def set_retention(self, retention: Mapping[str, float]) -> None:
        """Apply new rule windows (a reload) without dropping what is already stored."""
        self.retention = dict(retention)
        for (name, _), window in self.series.items():
            window.retention = self.retention.get(name, self.default)
            window.drop_tails()  # kept for the old rules' windows: built again as asked for

    def select(
        self, metric: str, matchers: Mapping[str, str]
    ) -> Iterator[tuple[Labels, SeriesWindow]]:
        for labels, window in self._by_metric.get(metric, {}).items():
            if matches(labels, matchers):
                yield labels, window


def matches(labels: Labels, matchers: Mapping[str, str]) -> bool:
    """Does the series carry every label of `matchers` with that value?"""
    present = dict(labels)
    return all(present.get(k) == v for k, v in matchers.items())


PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99}


def quantile(values: Sequence[float], percent: int) -> float:
    """The `percent` quantile of ascending `values` (not empty): linear interpolation between
    the closest ranks (numpy's default), the arithmetic of statistics.quantiles(
    method="inclusive") in integers, for one cut not 99."""
    scaled = (len(values) - 1) * percent
    below, delta = divmod(scaled, 100)
    if delta == 0:
        return values[below]
    return (values[below] * (100 - delta) + values[below + 1] * delta) / 100


def _percentile(percent: int) -> Callable[[Sequence[Point]], float | None]:
    def compute(points: Sequence[Point]) -> float | None:
        return quantile(sorted(v for _, v in points), percent)

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


LINE_AGGREGATES = frozenset({"slope", "predict"})  # read from SeriesWindow.fit_since


def fit_line(points: Sequence[Point]) -> tuple[float, float, float] | None:
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
    fit = fit_line(points)
    return None if fit is None else fit[1]


def predict(points: Sequence[Point], at: float) -> float | None:
    """The least-squares line through `points`, read at time `at` ("full within 24 h?")."""
    fit = fit_line(points)
    if fit is None:
        return None
    origin, slope, intercept = fit
    return intercept + slope * (at - origin)


AGGREGATES: dict[str, Callable[[Sequence[Point]], float | None]] = {
    "last": lambda points: points[-1][1],
    "avg": lambda points: statistics.fmean(v for _, v in points),
    "min": lambda points: min(v for _, v in points),
    "max": lambda points: max(v for _, v in points),
    **{name: _percentile(percent) for name, percent in PERCENTILES.items()},
    "rate": _rate,
    "slope": _slope,
}


def aggregate(name: str, points: Sequence[Point]) -> float | None:
    """The aggregate of `points`, or None when there is nothing (or too little) to compute it."""
    if not points:
        return None
    return AGGREGATES[name](points)
