"""`GET /status`: what the running daemon knows, as one JSON document.

The same document feeds `fossamon status` and the status page, so the three never disagree.
Schema (`"v": 1`): host, version, generation, started_at, uptime_seconds, health {ok,
reasons}, collectors {name: interval, runs, failed_runs, crashes, skipped, overruns, last_run,
last_duration_seconds, ok, errors}, alerts [events as in the alerts file, plus silenced_by],
silences [active and pending], outputs {file: path, lines_written, lines_dropped, rotations,
failing}, sinks {name: queued, sent, failed, dropped, retried}, latest {collector: samples},
trends [{metric, labels, last_10, last_hour}].
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any

from fossamon import __version__
from fossamon.model import iso_ts
from fossamon.silences import first_match

if TYPE_CHECKING:
    from fossamon.daemon import Daemon
    from fossamon.scheduling import RunStats

SCHEMA_VERSION = 1


def _process() -> dict[str, int | None]:
    """What a leak would grow: asyncio tasks and threads (the soak watches them)."""
    try:
        tasks: int | None = len(asyncio.all_tasks())
    except RuntimeError:  # no running loop (a document built outside the daemon)
        tasks = None
    return {"tasks": tasks, "threads": threading.active_count()}


def status_document(daemon: Daemon, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    monotonic = time.monotonic()
    live = daemon.live
    alerts = daemon.alerts
    return {
        "v": SCHEMA_VERSION,
        "host": daemon.pipeline.host,
        "version": __version__,
        "generation": daemon.generation,
        "started_at": iso_ts(daemon.started_at),
        "uptime_seconds": round(max(0.0, now - daemon.started_at), 3),  # a step back: 0
        "health": {"ok": daemon.health.ok, "reasons": list(daemon.health.reasons)},
        "process": _process(),
        "collectors": {
            name: _collector(name, stats, now, monotonic, daemon)
            for name, stats in sorted(daemon.scheduler.stats.items())
        },
        "alerts": [
            {
                **event.to_json(daemon.pipeline.host),
                "silenced_by": getattr(first_match(alerts.silences, event, now), "id", None),
            }
            for event in daemon.evaluator.active_events(now)
        ],
        "silences": [
            {
                "id": s.id,
                "matchers": list(s.matcher_texts),
                "state": s.state(now),
                "starts": iso_ts(s.starts),
                "ends": iso_ts(s.ends),
                "comment": s.comment,
                "created_by": s.created_by,
            }
            for s in alerts.silences
            if s.state(now) != "expired"
        ],
        "outputs": {
            name: {
                "path": str(writer.path),
                "lines_written": writer.lines_written,
                "lines_dropped": writer.lines_dropped,
                "rotations": writer.rotations,
                "failing": writer.failing,
            }
            for name, writer in (("metrics", daemon.metrics_out), ("alerts", daemon.alerts_out))
        },
        "sinks": {
            worker.name: {
                "queued": worker.stats.queued,
                "sent": worker.stats.sent,
                "failed": worker.stats.failed,
                "dropped": worker.stats.dropped,
                "retried": worker.stats.retried,
            }
            for worker in alerts.workers
        },
        "latest": {
            name: {
                "ts": iso_ts(batch.ts),
                "samples": [sample.to_json() for sample in batch.samples],
            }
            for name, batch in sorted(live.latest.items())
            if name != "fossamon"
        },
        "trends": [
            {
                "metric": metric,
                "labels": dict(labels),
                "last_10": recent.to_json() if recent else None,
                "last_hour": hour.to_json() if hour else None,
            }
            for (metric, labels), recent, hour in live.trends.trends(now)
        ],
    }


def _collector(
    name: str, stats: RunStats, now: float, monotonic: float, daemon: Daemon
) -> dict[str, Any]:
    last_run = None if stats.last_end is None else iso_ts(now - (monotonic - stats.last_end))
    batch = daemon.live.latest.get(name)
    return {
        "interval_seconds": stats.interval,
        "runs": stats.runs,
        "failed_runs": stats.failed_runs,
        "crashes": stats.crashes,
        "skipped": stats.skipped,
        "overruns": stats.overruns,
        "last_run": last_run,
        "last_duration_seconds": round(stats.last_duration, 6),
        "ok": None if stats.runs == 0 else stats.last_ok,
        "errors": [failure.to_json() for failure in batch.errors] if batch else [],
    }
