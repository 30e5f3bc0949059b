"""What `fossamon report` prints: aligned tables for people, one JSON document for programs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fossamon.model import format_series, iso_ts, make_labels
from fossamon.storage.jsonl import finite_json
from fossamon.tables import aligned
from fossamon.units import format_duration, format_value

if TYPE_CHECKING:
    from fossamon.tools.report_data import AlertSummary, Report
    from fossamon.tools.report_read import ReadStats


def range_text(report: Report) -> str:
    span = format_duration(max(0.0, report.until - report.since))
    return f"{iso_ts(report.since)} … {iso_ts(report.until)} ({span})"


def read_text(what: str, path: Path, stats: ReadStats) -> list[str]:
    """How much was read, and what was skipped, in a line or two."""
    names = [Path(f).name for f in stats.files]
    if len(names) > 3:  # thirty archives would fill the screen; --json lists them all
        names = [names[0], f"… {len(names) - 2} more …", names[-1]]
    shown = ", ".join(names) or "none"
    lines = [f"{what}: {path} — read {len(stats.files)} file(s) ({shown}), {stats.lines} lines"]
    if stats.skipped_files:
        lines.append(f"  {len(stats.skipped_files)} older archive(s) not opened (before the range)")
    if stats.unparsable:
        places = ", ".join(stats.unparsable_at)
        more = ", …" if stats.unparsable > len(stats.unparsable_at) else ""
        lines.append(f"  skipped {stats.unparsable} unparsable line(s): {places}{more}")
    lines += [f"  could not read to the end: {damage}" for damage in stats.damaged]
    return lines


def render_text(report: Report) -> str:
    lines = [f"fossamon report for {range_text(report)}"]
    lines += read_text("metrics", report.metrics_path, report.metrics)
    lines += ["", *_series_lines(report)]
    lines += ["", *_alert_lines(report.alerts, report.until)]
    return "\n".join(lines)


def _series_lines(report: Report) -> list[str]:
    if not report.series:
        return [f"No readings of the key series in the range ({report.records_in_range} records)."]
    many_hosts = len(report.hosts) > 1
    head = ("SERIES", "READINGS", "AVERAGE", "MEDIAN", "P95", "MAX", "SLOPE/MIN", "RISING")
    rows: list[tuple[str, ...]] = [("HOST", *head) if many_hosts else head]
    for figures, _ in report.series:
        t, metric = figures.trend, figures.metric
        row = (
            format_series(metric, make_labels(figures.labels)),
            str(t.count),
            format_value(metric, t.average),
            format_value(metric, t.median),
            format_value(metric, figures.p95),
            format_value(metric, t.maximum),
            f"{t.slope_per_minute:+.3g}",
            "yes" if t.increasing else "no",
        )
        rows.append((figures.host, *row) if many_hosts else row)
    lines = aligned(rows)
    if report.series_left_out:
        lines.append(f"({report.series_left_out} more series left out: the first 100 are kept)")
    return lines


def _alert_lines(alerts: AlertSummary | None, until: float) -> list[str]:
    if alerts is None:
        return ["Alerts: no alerts file (nothing was ever recorded, or check [output.alerts])."]
    lines = read_text("alerts", alerts.path, alerts.read)
    if not alerts.rules:
        return [*lines, "No alert was firing in the range."]
    rows: list[tuple[str, ...]] = [("RULE", "SEVERITY", "EPISODES", "FIRING", "LONGEST", "OPEN")]
    rows += [
        (
            r.rule,
            r.severity,
            str(r.episodes),
            format_duration(r.firing_seconds),
            format_duration(r.longest_seconds),
            str(r.open),
        )
        for r in alerts.rules
    ]
    lines += aligned(rows)
    if alerts.open:
        lines += ["", f"Open at the end of the range ({len(alerts.open)}):"]
        table: list[tuple[str, ...]] = [("RULE", "SEVERITY", "LABELS", "SINCE", "FOR")]
        table += [
            (
                e.rule,
                e.severity,
                ",".join(f"{k}={v}" for k, v in sorted(e.labels.items())) or "-",
                iso_ts(e.start),
                format_duration(max(0.0, until - e.start)),
            )
            for e in alerts.open
        ]
        lines += aligned(table)
    return lines


def report_json(report: Report) -> dict[str, Any]:
    alerts: dict[str, Any] | None = None
    if report.alerts is not None:
        a = report.alerts
        alerts = {
            "path": str(a.path),
            **a.read.to_json(),
            "events": a.events,
            "rules": [row.to_json() for row in a.rules],
            "open": [
                {
                    "rule": e.rule,
                    "labels": e.labels,
                    "severity": e.severity,
                    "worst": e.worst,
                    "since": iso_ts(e.start),
                }
                for e in a.open
            ],
        }
    return {
        "v": 1,
        "since": iso_ts(report.since),
        "until": iso_ts(report.until),
        "metrics": {
            "path": str(report.metrics_path),
            **report.metrics.to_json(),
            "records_in_range": report.records_in_range,
            "series_left_out": report.series_left_out,
        },
        "series": [figures.to_json() for figures, _ in report.series],
        "alerts": alerts,
    }


def render_json(report: Report) -> str:
    return json.dumps(finite_json(report_json(report)), indent=2, allow_nan=False)
