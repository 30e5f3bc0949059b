"""Per-series figures of `fossamon report`: the runbook's trend analysis over any range.

Average, median, max, slope and "increasing?" are fossamon/web/trends.py's `trend()` (the
status page's definitions, so both say the same of the same readings); p95 is
`statistics.quantiles(n=20, method="inclusive")`, linear interpolation as numpy and the
rules' p95 compute it.

The series are those of `TREND_METRICS` (CPU, memory, disk, load, API response times, query
times), the first `MAX_SERIES` seen. Exact medians need every reading of the range, so each
kept series holds its readings in two `array('d')`: 16 bytes a reading, about 4 MB for 30 days
of a 10 s series. Nothing else of a record is kept. At the end, series by series, the figures
are computed (median and p95 from a sorted copy of the values), the chart's points thinned
(fossamon/web/svg.py's `thin`) and the readings let go of, so the peak is the arrays plus one
series' working copies: 1.2M readings (200,000 records of 6 series) peaked at
100 MB RSS, 54 MB of it the interpreter (`/usr/bin/time -f %M fossamon report --json`).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Any

from fossamon.model import Labels, iso_ts, make_labels
from fossamon.stats import p95
from fossamon.web.svg import PAD, WIDTH, Points, thin
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
        """False when the record is not a metrics record (its caller counts it unparsable);
        such a record adds nothing: every sample is checked before any reading is kept."""
        samples = record.get("samples")
        if not isinstance(samples, list):
            return False
        host = str(record.get("host", ""))
        found: list[tuple[Key, float]] = []
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
            found.append((key, float(value)))
        for key, value in found:
            self._reading(key, ts, value)
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

    def figures(self, columns: int = WIDTH - 2 * PAD) -> list[tuple[SeriesFigures, Points]]:
        """Each series' figures and its points thinned for a chart `columns` wide, in
        TREND_METRICS order, then by host and labels. The readings are let go of series by
        series, as each one's figures are made: call it once."""
        order = {name: i for i, name in enumerate(TREND_METRICS)}
        out = []
        for key in sorted(self.series, key=lambda k: (order.get(k[1], len(order)), k)):
            readings = self.series.pop(key)
            if not readings.ordered:
                pairs = sorted(zip(readings.times, readings.values, strict=True))
                readings = Readings(
                    array("d", [t for t, _ in pairs]), array("d", [v for _, v in pairs])
                )
                del pairs
            times, values = readings.times, readings.values
            found = trend(times, values)  # type: ignore[arg-type]  # a sequence of floats
            if found is None:
                continue
            host, metric, labels = key
            figures = SeriesFigures(
                host, metric, dict(labels), found, p95(sorted(values)), times[0], times[-1]
            )
            out.append((figures, thin(list(zip(times, values, strict=True)), columns)))
            del readings, times, values
        return out
