"""Per-series figures of `fossamon report`: the runbook's trend analysis over any range.

Average, median, max, slope and "increasing?" are fossamon/web/trends.py's `trend()` (the
status page's definitions, so both say the same of the same readings); p95 is
`statistics.quantiles(n=20, method="inclusive")`, linear interpolation as numpy and the
rules' p95 compute it.

The series are those of `TREND_METRICS` (CPU, memory, disk, load, API response times, query
times), the first `MAX_SERIES` seen. Exact medians need every reading of the range, so each
kept series holds its readings in two `array('d')`: 16 bytes a reading, about 4 MB for 30 days
of a 10 s series. Nothing else of a record is kept.
"""

from __future__ import annotations

import math
import statistics
from array import array
from dataclasses import dataclass, field
from typing import Any

from fossamon.model import Labels, iso_ts, make_labels
from fossamon.web.trends import MAX_SERIES, TREND_METRICS, Trend, trend

Key = tuple[str, str, Labels]
"""A series of the report: host, metric name, labels."""


@dataclass(slots=True)
class Readings:
    times: array[float] = field(default_factory=lambda: array("d"))
    values: array[float] = field(default_factory=lambda: array("d"))
    ordered: bool = True  # times ascending as read (one collector's runs are)

    def add(self, ts: float, value: float) -> None:
        if self.times and ts < self.times[-1]:
            self.ordered = False
        self.times.append(ts)
        self.values.append(value)

    def points(self) -> list[tuple[float, float]]:
        pairs = list(zip(self.times, self.values, strict=True))
        return pairs if self.ordered else sorted(pairs)


@dataclass(frozen=True, slots=True)
class SeriesFigures:
    host: str
    metric: str
    labels: dict[str, str]
    trend: Trend
    p95: float
    first: float
    last: float

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "metric": self.metric,
            "labels": self.labels,
            **self.trend.to_json(),
            "p95": self.p95,
            "first": iso_ts(self.first),
            "last": iso_ts(self.last),
        }


def p95(values: list[float]) -> float:
    if len(values) == 1:  # statistics.quantiles needs two points before Python 3.13
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


class SeriesCollector:
    """Readings of the report's series from metrics records, as the reader yields them."""

    def __init__(self, metrics: tuple[str, ...] = TREND_METRICS, limit: int = MAX_SERIES) -> None:
        self.metrics = frozenset(metrics)
        self.limit = limit
        self.series: dict[Key, Readings] = {}
        self.records = 0
        self.series_left_out = 0
        self._left_out: set[Key] = set()

    def add(self, ts: float, record: dict[str, Any]) -> bool:
        """False when the record is not a metrics record (its caller counts it unparsable)."""
        samples = record.get("samples")
        if not isinstance(samples, list):
            return False
        host = str(record.get("host", ""))
        for sample in samples:
            if not isinstance(sample, dict) or not isinstance(sample.get("name"), str):
                return False
            if sample["name"] not in self.metrics:
                continue
            value = sample.get("value")
            # null is how the file writes a non-finite reading: there is nothing to average
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            if not math.isfinite(value):
                continue
            labels = sample.get("labels") or {}
            if not isinstance(labels, dict):
                return False
            key = (host, sample["name"], make_labels({str(k): str(v) for k, v in labels.items()}))
            self._reading(key, ts, float(value))
        self.records += 1
        return True

    def _reading(self, key: Key, ts: float, value: float) -> None:
        readings = self.series.get(key)
        if readings is None:
            if len(self.series) >= self.limit:
                if key not in self._left_out:
                    self._left_out.add(key)
                    self.series_left_out += 1
                return
            readings = self.series[key] = Readings()
        readings.add(ts, value)

    def figures(self) -> list[tuple[SeriesFigures, list[tuple[float, float]]]]:
        """Each series' figures and its points, in TREND_METRICS order, then by host and labels."""
        order = {name: i for i, name in enumerate(TREND_METRICS)}
        out = []
        for key in sorted(self.series, key=lambda k: (order.get(k[1], len(order)), k)):
            points = self.series[key].points()
            times = [t for t, _ in points]
            values = [v for _, v in points]
            found = trend(times, values)
            if found is None:
                continue
            host, metric, labels = key
            figures = SeriesFigures(
                host, metric, dict(labels), found, p95(values), times[0], times[-1]
            )
            out.append((figures, points))
        return out
