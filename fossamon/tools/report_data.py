"""Gathering what `fossamon report` shows: one pass over the metrics files, one over the
alerts files, for a time range."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fossamon.tools.report_alerts import AlertEpisodes, Episode, RuleRow
from fossamon.tools.report_read import ReadStats, records, sources
from fossamon.tools.report_series import SeriesCollector, SeriesFigures

if TYPE_CHECKING:
    from pathlib import Path

Points = list[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class AlertSummary:
    path: Path
    read: ReadStats
    events: int
    rules: list[RuleRow]
    open: list[Episode]


@dataclass(frozen=True, slots=True)
class Report:
    since: float
    until: float
    metrics_path: Path
    metrics: ReadStats
    records_in_range: int
    series: list[tuple[SeriesFigures, Points]]
    series_left_out: int
    alerts: AlertSummary | None  # None: no alerts file nor archives

    @property
    def hosts(self) -> list[str]:
        return sorted({figures.host for figures, _ in self.series})


class NoMetricsError(Exception):
    """Neither the metrics file nor any archive of it exists."""


def gather(metrics_path: Path, alerts_path: Path, since: float, until: float) -> Report:
    found = sources(metrics_path)
    if not found:
        raise NoMetricsError(
            f"no metrics file at {metrics_path} and no archives of it next to it "
            "(check [output.metrics] path, or name the file with --metrics)"
        )
    stats = ReadStats()
    series = SeriesCollector()
    for ts, record, where in records(found, stats, since):
        if since <= ts <= until and not series.add(ts, record):
            stats.reject(where)
    return Report(
        since,
        until,
        metrics_path,
        stats,
        series.records,
        series.figures(),
        series.series_left_out,
        _alerts(alerts_path, since, until),
    )


def _alerts(path: Path, since: float, until: float) -> AlertSummary | None:
    found = sources(path)
    if not found:
        return None
    stats = ReadStats()
    episodes = AlertEpisodes(until)
    # every file: an episode in the range may have begun long before it
    for ts, record, where in records(found, stats):
        if not episodes.add(ts, record):
            stats.reject(where)
    rules, still_open = episodes.summary(since)
    return AlertSummary(path, stats, episodes.events, rules, still_open)
