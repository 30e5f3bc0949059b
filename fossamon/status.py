"""`fossamon status`: what the running daemon knows, the way `monit status` prints it.

It finds the daemon through its state file (`state.json` in the runtime directory, the one
`fossamon reload` uses), which also names the address its exporter listens on, and reads
`GET /status` there (with the config's credentials). With the exporter off it reads what the
state store holds instead: firing alerts and silences, no collector runs. Exit 3 when no
daemon runs, saying where it looked.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fossamon.control import (
    STATE_FILE,
    StateUnreadableError,
    process_alive,
    process_start_ticks,
    read_state,
)
from fossamon.errors import EX_CRITICAL, EX_NOT_RUNNING, EX_OK, ConfigError
from fossamon.model import iso_ts, parse_iso_ts
from fossamon.rules.evaluator import SeriesState
from fossamon.tables import aligned
from fossamon.units import format_duration, format_value

if TYPE_CHECKING:
    import argparse

    from fossamon.config import Config, ExporterConfig
    from fossamon.control import DaemonState

HTTP_TIMEOUT = 5.0


class NotRunningError(Exception):
    """No daemon: the message says where we looked."""


def run_status_command(args: argparse.Namespace, config_path: str) -> int:
    from fossamon.config import load_config, peek_daemon_dir  # noqa: PLC0415 - msgspec

    try:
        config: Config | None = load_config(config_path)
    except ConfigError as exc:
        # The daemon may run an older valid config, or the file names a token this shell
        # has not got (an EnvironmentFile's): still find the daemon, as `reload` does.
        config = None
        problem = str(exc.problems[0]) if exc.problems else str(exc)
        print(f"fossamon status: warning: {problem}", file=sys.stderr)
    runtime_dir = os.environ.get("RUNTIME_DIRECTORY", "") or peek_daemon_dir(
        config_path, "runtime_dir", "/run/fossamon"
    )
    state_dir = peek_daemon_dir(config_path, "state_dir", "/var/lib/fossamon")
    try:
        state = running_daemon(runtime_dir)
        document = fetch(state, config, state_dir)
    except NotRunningError as exc:
        print(f"fossamon status: not running: {exc}", file=sys.stderr)
        return EX_NOT_RUNNING
    except (OSError, ValueError) as exc:
        print(f"fossamon status: {exc}", file=sys.stderr)
        return EX_CRITICAL
    if args.json:
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        print(render(document, time.time()))
    return EX_OK


def running_daemon(runtime_dir: str) -> DaemonState:
    path = Path(runtime_dir) / STATE_FILE
    try:
        state = read_state(runtime_dir)
    except StateUnreadableError as exc:
        raise OSError(str(exc)) from None
    if state is None:
        raise NotRunningError(
            f"no state file at {path} (a running daemon keeps one there; the folder is "
            "$RUNTIME_DIRECTORY, else [daemon] runtime_dir)"
        )
    gone = f"{path} names pid {state.pid}, which is not running any more"
    if state.start_ticks is not None:
        if process_start_ticks(state.pid) != state.start_ticks:
            raise NotRunningError(gone)
    elif not process_alive(state.pid):  # /proc could not tell when it started: ask the kernel
        raise NotRunningError(gone)
    return state


def fetch(state: DaemonState, config: Config | None, state_dir: str) -> dict[str, Any]:
    """The daemon's /status; the state store's view when the exporter is off, or when it
    turns us away for want of a credential this shell does not have."""
    if not state.exporter:
        return from_state_store(state, state_dir)
    url = f"http://{state.exporter}/status"
    request = urllib.request.Request(url, headers=_auth(config.exporter if config else None))
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:  # noqa: S310
            document: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == HTTPStatus.UNAUTHORIZED:
            print(
                f"fossamon status: warning: {url} wants the exporter's credential "
                "(set its environment variable, or run as the service's user); "
                "showing the state store instead",
                file=sys.stderr,
            )
            return from_state_store(state, state_dir)
        raise OSError(f"{url} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        message = f"the daemon (pid {state.pid}) runs, but {url} did not answer: {reason}"
        raise OSError(message) from None
    return document


def _auth(exporter: ExporterConfig | None) -> dict[str, str]:
    if exporter is None:
        return {}
    if exporter.bearer_token is not None:
        return {"Authorization": f"Bearer {exporter.bearer_token}"}
    if exporter.basic_auth_user is not None:
        pair = f"{exporter.basic_auth_user}:{exporter.basic_auth_password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    return {}


def from_state_store(state: DaemonState, state_dir: str) -> dict[str, Any]:
    """What the state store knows (alerts), read-only: no runs, trends or health."""
    document: dict[str, Any] = {
        "v": 1,
        "generation": state.generation,
        "started_at": iso_ts(state.started),
        "uptime_seconds": round(max(0.0, time.time() - state.started), 3),
        "source": "state store (no collector runs, trends or health from there)",
        "collectors": {},
        "alerts": [],
        "silences": [],
        "trends": [],
    }
    path = Path(state_dir) / "state.db"
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error as exc:
        raise OSError(f"cannot read {path}: {exc}") from None
    try:
        rows = conn.execute("SELECT state FROM alerts").fetchall()
    except sqlite3.Error as exc:
        raise OSError(f"cannot read {path}: {exc}") from None
    finally:
        conn.close()
    for (raw,) in rows:
        record = json.loads(raw)
        series = SeriesState.from_json(record.get("state", {}))
        if series.open:
            document["alerts"].append(
                {
                    "rule": record.get("rule"),
                    "severity": series.announced.label if series.announced else "nodata",
                    "labels": dict(map(tuple, record.get("labels", []))),
                    "value": series.value,
                    "threshold": series.threshold,
                    "since": iso_ts(series.since),
                }
            )
    return document


# --- the text form ------------------------------------------------------------------------


def render(doc: dict[str, Any], now: float) -> str:
    health = doc.get("health")
    if health is None:
        verdict = "running (health unknown)"
    elif health.get("ok"):
        verdict = "healthy"
    else:
        verdict = "UNHEALTHY: " + "; ".join(health.get("reasons", []))
    version = f" {doc['version']}" if doc.get("version") else ""
    uptime = format_duration(float(doc.get("uptime_seconds", 0)))
    lines = [
        f"fossamon{version} on {doc.get('host', 'this host')}: {verdict}",
        f"  up {uptime}, config generation {doc.get('generation', '?')}",
    ]
    if source := doc.get("source"):
        lines.append(f"  from the {source}")
    lines += _collectors(doc.get("collectors", {}), now)
    lines += _alerts(doc.get("alerts", []), now)
    lines += _trends(doc.get("trends", []))
    return "\n".join(lines)


def _ago(stamp: str | None, now: float) -> str:
    if not stamp:
        return "never"
    return f"{format_duration(max(0.0, now - parse_iso_ts(stamp)))} ago"


def _collectors(collectors: dict[str, Any], now: float) -> list[str]:
    if not collectors:
        return []
    rows = [("COLLECTOR", "STATUS", "LAST RUN", "DURATION", "EVERY", "RUNS", "FAILED", "SKIPPED")]
    notes: list[str] = []
    for name, run in collectors.items():
        ok = run.get("ok")
        status = "starting" if ok is None else ("ok" if ok else "error")
        rows.append(
            (
                name,
                status,
                _ago(run.get("last_run"), now),
                format_duration(float(run.get("last_duration_seconds", 0))),
                format_duration(float(run.get("interval_seconds", 0))),
                str(run.get("runs", 0)),
                str(run.get("failed_runs", 0)),
                str(run.get("skipped", 0)),
            )
        )
        notes += [
            f"  {name}: {e['target']}: {e['kind']}: {e['message']}" for e in run.get("errors", [])
        ]
    return ["", *aligned(rows), *notes]


def _alerts(alerts: list[dict[str, Any]], now: float) -> list[str]:
    if not alerts:
        return ["", "No alerts firing."]
    rows = [("SEVERITY", "RULE", "LABELS", "VALUE", "THRESHOLD", "SINCE", "SILENCED")]
    for alert in alerts:
        labels = ",".join(f"{k}={v}" for k, v in (alert.get("labels") or {}).items()) or "-"
        rows.append(
            (
                str(alert.get("severity", "?")),
                str(alert.get("rule", "?")),
                labels,
                _number(alert.get("value")),
                _number(alert.get("threshold")),
                _ago(alert.get("since"), now),
                str(alert.get("silenced_by") or "-"),
            )
        )
    return ["", f"Alerts firing ({len(alerts)}):", *aligned(rows)]


def _trends(trends: list[dict[str, Any]]) -> list[str]:
    if not trends:
        return []
    rows = [("SERIES", "SPAN", "AVERAGE", "MEDIAN", "MAX", "SLOPE/MIN", "RISING")]
    for trend in trends:
        labels = ",".join(f"{k}={v}" for k, v in trend["labels"].items())
        series = f"{trend['metric']}{{{labels}}}" if labels else trend["metric"]
        for span, key in (("last 10", "last_10"), ("last hour", "last_hour")):
            stats = trend.get(key)
            if not stats:
                continue
            metric = trend["metric"]
            rows.append(
                (
                    series if span == "last 10" else "",
                    f"{span} ({stats['count']})",
                    format_value(metric, stats["average"]),
                    format_value(metric, stats["median"]),
                    format_value(metric, stats["max"]),
                    f"{stats['slope_per_minute']:+.3g}",
                    "yes" if stats["increasing"] else "no",
                )
            )
    return ["", "Trends:", *aligned(rows)]


def _number(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
