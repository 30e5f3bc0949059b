"""`fossamon report --html FILE`: the report as one self-contained HTML file.

Inline CSS and inline SVG, no script, no font, no image, no link to anything: it must open
from a mail attachment on a machine with no network. The charts are the status page's
sparklines (fossamon/web/svg.py: the same drawing and thinning; page.py's CSS), one per key series:
CPU, memory, disk, load, each endpoint's response time, each query's time. Every text taken
from the files goes through `html.escape`: labels and host names are whatever was recorded.
"""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING

from fossamon.model import format_series, iso_ts, make_labels
from fossamon.tools.report_output import range_text
from fossamon.units import format_duration, format_value
from fossamon.web.page import CSS
from fossamon.web.svg import sparkline

if TYPE_CHECKING:
    from pathlib import Path

    from fossamon.tools.report_data import AlertSummary, Points, Report
    from fossamon.tools.report_read import ReadStats
    from fossamon.tools.report_series import SeriesFigures

TITLES = {
    "system_cpu_percent": "CPU",
    "system_memory_percent": "Memory",
    "system_disk_percent": "Disk",
    "system_load1": "Load (1m)",
    "api_response_seconds": "API response time",
    "db_query_seconds": "DB query time",
}

EXTRA_CSS = """
#charts .charts{grid-template-columns:repeat(auto-fill,minmax(380px,1fr))}
.chart figcaption{gap:12px}.chart .last{white-space:nowrap}.range{gap:10px}
.chart dl{display:grid;grid-template-columns:repeat(3,1fr);gap:2px 16px;margin:6px 0 0;
font-size:12px}.chart dl div{display:flex;justify-content:space-between;gap:6px}
.chart dt{color:var(--muted)}.chart dd{margin:0;white-space:nowrap;
font-variant-numeric:tabular-nums}.rising{color:var(--red);font-weight:600}
.sources{margin:0;padding-left:18px;color:var(--muted)}.sources li{margin:2px 0}
.warn{color:#9a6700}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def title_of(figures: SeriesFigures, many_hosts: bool) -> str:
    title = TITLES.get(figures.metric, figures.metric)
    if figures.labels:
        title += " · " + ", ".join(v for _, v in sorted(figures.labels.items()))
    return f"{figures.host}: {title}" if many_hosts else title


def render_html(report: Report) -> str:
    hosts = ", ".join(report.hosts) or "no data"
    title = f"fossamon report · {hosts} · {range_text(report)}"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}{EXTRA_CSS}</style></head><body>"
        f'<header><h1>fossamon report <span id="host">{_e(hosts)}</span></h1>'
        f'<p class="meta"><span id="range">{_e(range_text(report))}</span> · generated '
        f"{_e(iso_ts(time.time()))}</p></header><main>"
        f"{_sources(report)}{_charts(report)}{_series_table(report)}"
        f"{_alerts(report.alerts, report.until)}</main></body></html>"
    )


def _section(ident: str, title: str, body: str) -> str:
    return f'<section id="{ident}"><h2>{_e(title)}</h2>{body}</section>'


def _table(headers: tuple[str, ...], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _row(cells: tuple[str, ...], attrs: str = "") -> str:
    return f"<tr{attrs}>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _read_items(what: str, path: Path, stats: ReadStats) -> str:
    items = [f"{_e(what)} <code>{_e(path)}</code>: {len(stats.files)} file(s), {stats.lines} lines"]
    if stats.unparsable:
        places = ", ".join(stats.unparsable_at)
        items.append(
            f'<span class="warn" data-unparsable="{stats.unparsable}">skipped '
            f"{stats.unparsable} unparsable line(s): {_e(places)}</span>"
        )
    items += [
        f'<span class="warn">could not read to the end: {_e(d)}</span>' for d in stats.damaged
    ]
    return "".join(f"<li>{item}</li>" for item in items)


def _sources(report: Report) -> str:
    items = _read_items("metrics", report.metrics_path, report.metrics)
    if report.alerts is not None:
        items += _read_items("alerts", report.alerts.path, report.alerts.read)
    return _section("sources", "Data", f'<ul class="sources">{items}</ul>')


def _charts(report: Report) -> str:
    many = len(report.hosts) > 1
    figures = "".join(_figure(f, points, title_of(f, many)) for f, points in report.series)
    body = (
        f'<div class="charts">{figures}</div>'
        if figures
        else ('<p class="empty nodata">No readings of the key series in the range.</p>')
    )
    return _section("charts", "Key series", body)


def _figure(figures: SeriesFigures, points: Points, title: str) -> str:
    t, metric = figures.trend, figures.metric
    values = [v for _, v in points]
    span = format_duration(max(0.0, figures.last - figures.first))
    described = f"from {iso_ts(figures.first)} to {iso_ts(figures.last)}"

    def fmt(value: float) -> str:
        return _e(format_value(metric, value))

    stats = (
        ("average", fmt(t.average)),
        ("median", fmt(t.median)),
        ("p95", fmt(figures.p95)),
        ("max", fmt(t.maximum)),
        ("slope/min", _e(f"{t.slope_per_minute:+.3g}")),
        ("rising", '<span class="rising">yes</span>' if t.increasing else "no"),
    )
    figures_list = "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in stats)
    series = format_series(metric, make_labels(figures.labels))
    return (
        f'<figure class="chart" data-series="{_e(series)}" data-points="{t.count}">'
        f'<figcaption><span class="title">{_e(title)}</span>'
        f'<span class="last">p95 {fmt(figures.p95)}</span></figcaption>'
        f"{sparkline(title, points, described=described)}"
        f'<div class="range"><span class="min">min {fmt(min(values))}</span>'
        f'<span class="span">{t.count} readings · {_e(span)}</span>'
        f'<span class="max">max {fmt(max(values))}</span></div>'
        f'<div class="range times"><time>{_e(iso_ts(figures.first))}</time>'
        f"<time>{_e(iso_ts(figures.last))}</time></div>"
        f"<dl>{figures_list}</dl></figure>"
    )


def _series_table(report: Report) -> str:
    rows = []
    for figures, _ in report.series:
        t, metric = figures.trend, figures.metric

        def fmt(value: float, metric: str = metric) -> str:
            return _e(format_value(metric, value))

        series = format_series(metric, make_labels(figures.labels))
        cells = (
            f"<code>{_e(series)}</code>",
            _e(figures.host),
            str(t.count),
            fmt(t.average),
            fmt(t.median),
            fmt(figures.p95),
            fmt(t.maximum),
            _e(f"{t.slope_per_minute:+.3g}"),
            "yes" if t.increasing else "no",
        )
        rows.append(_row(cells, f' class="series" data-series="{_e(series)}"'))
    headers = (
        "Series",
        "Host",
        "Readings",
        "Average",
        "Median",
        "p95",
        "Max",
        "Slope/min",
        "Rising",
    )
    return _section("series", "All series", _table(headers, rows, "No readings in the range."))


def _alerts(alerts: AlertSummary | None, until: float) -> str:
    if alerts is None:
        return _section("alerts", "Alerts", '<p class="empty">No alerts file.</p>')
    rows = [
        _row(
            (
                f"<strong>{_e(r.rule)}</strong>",
                f'<span class="badge {_e(r.severity)}">{_e(r.severity)}</span>',
                str(r.episodes),
                _e(format_duration(r.firing_seconds)),
                _e(format_duration(r.longest_seconds)),
                str(r.open),
            ),
            f' class="alert-rule" data-rule="{_e(r.rule)}" data-severity="{_e(r.severity)}"',
        )
        for r in alerts.rules
    ]
    headers = ("Rule", "Worst severity", "Episodes", "Time firing", "Longest", "Open at end")
    body = _table(headers, rows, "No alert was firing in the range.")
    still = [
        _row(
            (
                f"<strong>{_e(e.rule)}</strong>",
                f'<span class="badge {_e(e.severity)}">{_e(e.severity)}</span>',
                " ".join(f"<code>{_e(k)}={_e(v)}</code>" for k, v in sorted(e.labels.items()))
                or "—",
                _e(iso_ts(e.start)),
                _e(format_duration(max(0.0, until - e.start))),
            ),
            ' class="open-alert"',
        )
        for e in alerts.open
    ]
    if still:
        columns = ("Rule", "Severity", "Labels", "Since", "For")
        body += f"<h3>Open at the end of the range</h3>{_table(columns, still, '')}"
    return _section("alerts", f"Alerts ({alerts.events} events)", body)
