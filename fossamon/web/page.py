"""`GET /`: a small status page, rendered on the server from the /status document.

One HTML document with inline CSS and inline SVG, no script and no external asset: the
exporter may be the only thing an operator can reach on the box, and a 10 s meta refresh is
all the liveness a glance needs. Every text taken from the document goes through
`html.escape`: error messages and labels quote what monitored services sent.
"""

from __future__ import annotations

import html
import math
from bisect import bisect_left, insort
from typing import TYPE_CHECKING, Any

from fossamon.model import parse_iso_ts
from fossamon.stats import p95
from fossamon.units import format_duration, format_value
from fossamon.web.svg import PAD, WIDTH, Points, sparkline, thin

if TYPE_CHECKING:
    from collections.abc import Iterable

    from fossamon.model import SeriesKey
    from fossamon.web.live import LiveView
    from fossamon.web.trends import SeriesTrail

API_P95 = "API p95"
API_METRIC, DISK = "api_response_seconds", "system_disk_percent"
P95_WINDOW = 300.0  # trailing: one reading per endpoint is too few for a p95
P95_STEP = 15.0  # seconds between two points of the API p95 line (240 an hour at most)


def sparklines(live: LiveView, now: float) -> dict[str, Points]:
    """The last hour of the page's four series, in page order; a missing one is empty."""
    trails = live.trends.trails
    disks = {dict(k[1]).get("mount", ""): t for k, t in trails.items() if k[0] == DISK}
    mount = "/" if "/" in disks or not disks else next(iter(disks))  # else the first seen
    picked = {
        "CPU %": trails.get(("system_cpu_percent", ())),
        "Memory %": trails.get(("system_memory_percent", ())),
        f"Disk % ({mount})": disks.get(mount),
    }
    out = {
        t: list(zip(*trail.last_hour(now), strict=True)) if trail else []
        for t, trail in picked.items()
    }
    out[API_P95] = _api_p95(trails, now)
    return out


def _api_p95(trails: dict[SeriesKey, SeriesTrail], now: float) -> Points:
    """p95 over every endpoint's points in the 5 minutes up to each API point's time (of the
    hour the trails hold: the first points of the hour see a shorter window; a point is a
    reading, or the mean of those less than 5 s apart), at most one point per P95_STEP (and
    the last): an hour of 500 ms readings cost 180 ms of the event loop per page view when
    every reading got its own percentile.

    One pass over the readings in time order with a sorted window (insort in, bisect out), so
    the library percentile's own sort sees sorted data and an hour costs little."""
    readings = sorted(
        (t, v)
        for (name, _), trail in trails.items()
        if name == API_METRIC
        for t, v in zip(*trail.last_hour(now), strict=True)
    )
    window: list[float] = []
    points: Points = []
    start = 0
    due = -math.inf  # at most one point per P95_STEP: the chart has 320 columns anyway
    for i, (ts, value) in enumerate(readings):
        insort(window, value)
        while readings[start][0] <= ts - P95_WINDOW:
            del window[bisect_left(window, readings[start][1])]
            start += 1
        last = i + 1 == len(readings)
        if (last or readings[i + 1][0] != ts) and (ts >= due or last):
            points.append((ts, p95(window)))
            due = ts + P95_STEP
    return points


def render_page(status: dict[str, Any], series: dict[str, Points]) -> str:
    now = parse_iso_ts(status["started_at"]) + float(status["uptime_seconds"])
    host = _e(status["host"])
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="refresh" content="10">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>fossamon · {host}</title><style>{CSS}</style></head><body>"
        f"{_header(status)}<main>"
        f"{_alerts(status.get('alerts', []), now)}{_current(status)}"
        f"{_charts(series)}{_collectors(status.get('collectors', {}), now)}"
        "</main></body></html>"
    )


def _e(value: object) -> str:
    return html.escape(str(value))


def _section(ident: str, title: str, body: str) -> str:
    return f'<section id="{ident}"><h2>{title}</h2>{body}</section>'


def _table(headers: Iterable[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{empty}</p>'
    head = "".join(f"<th>{h}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _row(cells: Iterable[str], attrs: str = "") -> str:
    return f"<tr{attrs}>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _badge(text: str, tone: str) -> str:
    return f'<span class="badge {_e(tone)}">{_e(text)}</span>'


def _ago(iso: str | None, now: float) -> str:
    if not iso:
        return "never"
    ago = format_duration(max(0.0, round(now - parse_iso_ts(iso))))
    return f'<time datetime="{_e(iso)}" title="{_e(iso)}">{ago} ago</time>'


def _header(status: dict[str, Any]) -> str:
    health = status["health"]
    verdict = "healthy" if health["ok"] else "unhealthy"
    reasons = "".join(f"<li>{_e(r)}</li>" for r in health.get("reasons", []))
    reasons = f'<ul id="health-reasons">{reasons}</ul>' if reasons else ""
    return (
        f'<header><h1>fossamon <span id="host">{_e(status["host"])}</span></h1>'
        f'<p class="meta">version <span id="version">{_e(status["version"])}</span> · '
        f'up <span id="uptime">{format_duration(round(status["uptime_seconds"]))}</span> · '
        f"generation {_e(status.get('generation', ''))}</p>"
        f'<div id="health" data-health="{verdict}">{_badge(verdict, verdict)}'
        f"{reasons}</div></header>"
    )


def _alerts(alerts: list[dict[str, Any]], now: float) -> str:
    rows = [_alert_row(alert, now) for alert in alerts]
    headers = ("Severity", "Rule", "Labels", "Value / threshold", "Since", "Summary", "Silenced")
    return _section(
        "alerts", f"Firing alerts ({len(rows)})", _table(headers, rows, "No alerts firing.")
    )


def _alert_row(alert: dict[str, Any], now: float) -> str:
    metric = str(alert.get("metric", ""))
    value, threshold = alert.get("value"), alert.get("threshold")
    shown = "no data" if value is None else format_value(metric, value)
    limit = "" if threshold is None else f" / {format_value(metric, threshold)}"
    silenced = alert.get("silenced_by")
    cells = (
        _badge(alert["severity"], alert["severity"]),
        f"<strong>{_e(alert['rule'])}</strong>",
        " ".join(f'<code>{_e(k)}="{_e(v)}"</code>' for k, v in alert["labels"].items()) or "—",
        _e(shown + limit),
        _ago(alert.get("since"), now),
        _e(alert.get("summary", "")),
        f'<span class="silenced">yes, by <code>{_e(silenced)}</code></span>' if silenced else "no",
    )
    return _row(cells, f' class="alert" data-rule="{_e(alert["rule"])}"')


def _latest(status: dict[str, Any], name: str) -> dict[str, float]:
    """A metric's latest values by its one identifying label (mount, endpoint, query; "" for
    none), from every collector's latest batch."""
    return {
        str(next(iter(sample["labels"].values()), "")): sample["value"]
        for batch in status.get("latest", {}).values()
        for sample in batch.get("samples", [])
        if sample["name"] == name
    }


def _current(status: dict[str, Any]) -> str:
    tiles = [
        _tile(name, label, _latest(status, name).get(""))
        for name, label in (("system_cpu_percent", "CPU"), ("system_memory_percent", "Memory"))
    ]
    tiles.append(_tile("system_load1", "Load (1m)", _latest(status, "system_load1").get("")))
    tiles += [_tile(DISK, f"Disk {mount}", v) for mount, v in _latest(status, DISK).items()]
    endpoints = _table(("Endpoint", "Up", "Response", "Status"), _endpoints(status), "None.")
    queries = _table(("Query", "Time"), _queries(status), "None.")
    return _section(
        "current",
        "Now",
        f'<div class="tiles">{"".join(tiles)}</div><div class="pair">'
        f'<div id="endpoints"><h3>API endpoints</h3>{endpoints}</div>'
        f'<div id="queries"><h3>Database queries</h3>{queries}</div></div>',
    )


def _tile(metric: str, label: str, value: float | None) -> str:
    shown = "—" if value is None else format_value(metric, value)
    return (
        f'<div class="tile" data-metric="{_e(metric)}"><span class="label">{_e(label)}</span>'
        f'<span class="value">{_e(shown)}</span></div>'
    )


def _endpoints(status: dict[str, Any]) -> list[str]:
    up, seconds, codes = (_latest(status, m) for m in ("api_up", API_METRIC, "api_status_code"))
    rows = []
    for name in sorted(up):
        cells = (
            f"<code>{_e(name)}</code>",
            _badge("up", "ok") if up[name] else _badge("down", "critical"),
            _e(format_duration(seconds[name])) if name in seconds else "—",
            _e(format_value("api_status_code", codes[name])) if name in codes else "—",
        )
        rows.append(_row(cells, f' data-endpoint="{_e(name)}"'))
    return rows


def _queries(status: dict[str, Any]) -> list[str]:
    return [
        _row((f"<code>{_e(name)}</code>", _e(format_duration(value))), f' data-query="{_e(name)}"')
        for name, value in sorted(_latest(status, "db_query_seconds").items())
    ]


def _charts(series: dict[str, Points]) -> str:
    figures = "".join(_figure(title, points) for title, points in series.items())
    return _section("sparklines", "Last hour", f'<div class="charts">{figures}</div>')


def _figure(title: str, points: Points) -> str:
    head = f'<span class="title">{_e(title)}</span>'
    if not points:
        body = '<p class="empty nodata">No data yet.</p>'
    else:
        values = [value for _, value in points]
        head += f'<span class="last">last {_e(_fmt(title, values[-1]))}</span>'
        span = format_duration(round(points[-1][0] - points[0][0]))
        body = (
            f'{sparkline(title, thin(points, WIDTH - 2 * PAD))}<div class="range">'
            f'<span class="min">min {_e(_fmt(title, min(values)))}</span>'
            f'<span class="span">{len(points)} readings · {span}</span>'
            f'<span class="max">max {_e(_fmt(title, max(values)))}</span></div>'
        )
    return (
        f'<figure class="chart" data-series="{_e(title)}" data-points="{len(points)}">'
        f"<figcaption>{head}</figcaption>{body}</figure>"
    )


def _fmt(title: str, value: float) -> str:
    return format_duration(value) if title == API_P95 else f"{value:.1f} %"


def _collectors(collectors: dict[str, dict[str, Any]], now: float) -> str:
    rows = [_collector_row(name, info, now) for name, info in collectors.items()]
    headers = ("Collector", "Every", "Runs", "Last run", "Took", "Status", "Errors")
    return _section("collectors", "Collectors", _table(headers, rows, "None configured."))


def _collector_row(name: str, info: dict[str, Any], now: float) -> str:
    ok = info.get("ok")
    state = {None: ("waiting", "muted"), True: ("ok", "ok"), False: ("error", "critical")}[ok]
    errors = "".join(
        f"<li><code>{_e(f['target'])}</code> {_e(f['kind'])}: {_e(f['message'])}</li>"
        for f in info.get("errors", [])
    )
    cells = (
        f"<strong>{_e(name)}</strong>",
        _e(format_duration(info["interval_seconds"])),
        f"{_e(info['runs'])} <small>({_e(info['failed_runs'])} failed)</small>",
        _ago(info.get("last_run"), now),
        _e(format_duration(info["last_duration_seconds"])),
        _badge(*state),
        f'<ul class="errors">{errors}</ul>' if errors else "—",
    )
    return _row(cells, f' class="collector" data-collector="{_e(name)}"')


CSS = """
:root{--muted:#656d76;--line:#d8dee4;--soft:#eff2f5;--blue:#0969da;--red:#cf222e}
*{box-sizing:border-box}body{margin:0;color:#1f2328;background:#f6f8fa;
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{display:flex;flex-wrap:wrap;align-items:center;gap:6px 28px;padding:14px 28px;
background:#24292f;color:#fff}h1{margin:0;font-size:20px}#host{font-weight:400}
.meta{margin:0;color:#afb8c1;flex:1}#health{display:flex;align-items:center;gap:12px}
#health-reasons{margin:0;padding:0;list-style:none;color:#ffb4ae}
main{max-width:1240px;margin:0 auto;padding:20px 28px 40px}section{background:#fff;
border:1px solid var(--line);border-radius:8px;padding:14px 18px;margin-bottom:18px}
h2{margin:0 0 10px;font-size:15px}h3{margin:0 0 6px;font-size:13px;color:var(--muted)}
table{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums}th{text-align:left;
font-size:11px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em;
border-bottom:1px solid var(--line);padding:6px 10px}td{padding:7px 10px;vertical-align:top;
border-bottom:1px solid var(--soft)}tr:last-child td{border-bottom:0}small{color:var(--muted)}
code{font:12px ui-monospace,Menlo,Consolas,monospace;background:var(--soft);padding:1px 5px;
border-radius:4px}.badge{display:inline-block;padding:1px 9px;border-radius:999px;
font-size:12px;font-weight:600}.ok,.healthy{color:#1a7f37;background:#dafbe1}
.warning{color:#9a6700;background:#fff8c5}.critical,.unhealthy{color:var(--red);
background:#ffebe9}.muted{color:var(--muted);background:var(--soft)}.empty{margin:0;
color:var(--muted)}.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));
gap:12px;margin-bottom:16px}.tile{border:1px solid var(--line);border-radius:6px;padding:8px 12px}
.tile .label{display:block;font-size:12px;color:var(--muted)}.tile .value{font-size:22px;
font-weight:600;font-variant-numeric:tabular-nums}.pair,.charts{display:grid;gap:16px;
grid-template-columns:repeat(auto-fit,minmax(260px,1fr))}.chart{margin:0;padding:10px 12px;
border:1px solid var(--line);border-radius:6px}.chart figcaption{display:flex;
justify-content:space-between;font-weight:600}.last{color:var(--blue)}
.sparkline{display:block;width:100%;height:auto;margin:6px 0}.sparkline .line{fill:none;
stroke:var(--blue);stroke-width:1.5;stroke-linejoin:round}.sparkline .area{fill:var(--blue);
fill-opacity:.12}.sparkline .dot{fill:var(--blue)}.nodata{display:flex;align-items:center;
justify-content:center;aspect-ratio:5;background:var(--soft);border-radius:4px;margin:6px 0}
.range{display:flex;justify-content:space-between;font-size:12px;color:var(--muted)}
th,time,code,.badge,.range span{white-space:nowrap}
.errors{margin:0;padding-left:16px;color:var(--red)}
"""
