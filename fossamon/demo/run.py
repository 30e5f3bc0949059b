"""`fossamon demo`: the stand-in application plus the real daemon pointed at it, on screen.

Everything runs in one process on 127.0.0.1: the target (seeded SQLite + aiohttp API, with a
writer adding a work order every few seconds), and `fossamon run` with a config written next
to the database. Each collector run is printed as one line; alerts stand out.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from fossamon.config import load_config
from fossamon.daemon import Daemon
from fossamon.demo.seed import NotADemoDatabaseError, ensure_demo_database
from fossamon.demo.target import DemoTarget
from fossamon.errors import ConfigError
from fossamon.log import configure_logging
from fossamon.model import EventKind, Severity
from fossamon.runner import run_bounded
from fossamon.units import format_value

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fossamon.model import AlertEvent, Batch

DEMO_CONFIG = """\
# Written by `fossamon demo`: short intervals and windows, so there is something to see.
[daemon]
log_level = "info"
runtime_dir = {run}
state_dir = {state}

[output.metrics]
path = {metrics}

[output.alerts]
path = {alerts}

[exporter]
listen = {listen}

[collectors.system]
interval = "2s"

[collectors.api]
interval = "3s"
timeout = "2s"
base_url = {url}

[[collectors.api.endpoints]]
name = "health"
path = "/api/health"
expect_json = {{ status = "healthy" }}

[[collectors.api.endpoints]]
name = "auth_validate"
path = "/api/auth/validate"
method = "POST"
json = {{ token = "probe" }}
expect_status = [200, 401]

[[collectors.api.endpoints]]
name = "work_orders"
path = "/api/work-orders?limit=50"

[[collectors.api.endpoints]]
name = "dispensers"
path = "/api/dispensers?limit=50"

[collectors.db]
interval = "5s"
path = {db}
timeout = "2s"

[[collectors.db.queries]]
name = "work_orders_count"
sql = "SELECT COUNT(*) FROM work_orders"
record_value = true

[[collectors.db.queries]]
name = "work_orders_last_hour"
sql = "SELECT COUNT(*) FROM work_orders WHERE created_date > datetime('now', '-1 hour')"
record_value = true

[[collectors.db.queries]]
name = "pending_dispensers"
sql = '''SELECT COUNT(*) FROM dispensers d JOIN work_orders w ON w.id = d.work_order_id
         WHERE w.status = 'pending' '''

[[rules]]
name = "api_p95_latency"
metric = "api_response_seconds"
aggregate = "p95"
window = "1m"
warning = "500ms"
critical = "2s"

[[rules]]
name = "api_down"
metric = "api_up"
direction = "below"
critical = 1
summary = "{{labels[endpoint]}} is down"

[[rules]]
name = "db_query_slow"
metric = "db_query_seconds"
aggregate = "avg"
window = "1m"
warning = "100ms"
critical = "500ms"

[[rules]]
name = "db_down"
metric = "db_up"
direction = "below"
critical = 1

[[rules]]
name = "cpu_high"
metric = "system_cpu_percent"
aggregate = "avg"
window = "30s"
warning = 60
critical = 80
clear = 55

[[rules]]
name = "memory_high"
metric = "system_memory_percent"
warning = 70
critical = 85
clear = 65

[[rules]]
name = "disk_full"
metric = "system_disk_percent"
warning = 70
critical = 85
"""

DEFAULT_EXPORTER_PORT = 9847

SYSTEM_SHOWN = (
    ("system_cpu_percent", "cpu"),
    ("system_memory_percent", "mem"),
    ("system_disk_percent", "disk"),
    ("system_load1", "load1"),
    ("fossamon_process_resident_memory_bytes", "own rss"),
)


def render_demo_config(url: str, db: Path, out: Path, listen: str = "") -> str:
    return DEMO_CONFIG.format(
        listen=_toml_string(listen),
        url=_toml_string(url),
        db=_toml_string(str(db)),
        metrics=_toml_string(str(out / "performance-metrics.jsonl")),
        alerts=_toml_string(str(out / "performance-alerts.jsonl")),
        run=_toml_string(str(out / "run")),
        state=_toml_string(str(out / "state")),
    )


def _exporter_port() -> int:
    """The exporter's usual port when it is free here, else any free one: a demo must not
    fail because a real fossamon runs on this machine."""
    for wanted in (DEFAULT_EXPORTER_PORT, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", wanted))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise OSError("no free port on 127.0.0.1 for the exporter")


def _toml_string(value: str) -> str:
    """A TOML basic string for any path: JSON's escapes are TOML's, and `$$` keeps a `$`
    from being read as an environment reference."""
    return json.dumps(value).replace("$", "$$")


class ScreenPrinter:
    """One line per collector run, and one per alert event."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, batch: Batch, events: Sequence[AlertEvent]) -> None:
        clock = time.strftime("%H:%M:%S", time.localtime(batch.ts))
        print(f"{clock} {batch.collector:<7} {self._values(batch)}", file=self.stream, flush=True)
        for error in batch.errors:
            print(
                f"{'':8} {'':<7} ✗ {error.target}: {error.kind} — {error.message}", file=self.stream
            )
        for event in events:
            mark = "✓" if event.kind == EventKind.RESOLVED else "!"
            level = "CRITICAL" if event.severity == Severity.CRITICAL else "WARNING"
            print(f"{clock} {mark} ALERT {event.kind} {level}: {event.summary}", file=self.stream)

    @staticmethod
    def _values(batch: Batch) -> str:
        by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
        for sample in batch.samples:
            by_name.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
        if batch.collector == "system":
            shown = [
                f"{label} {format_value(name, value)}"
                for name, label in SYSTEM_SHOWN
                for _, value in by_name.get(name, [])
            ]
        elif batch.collector == "api":
            shown = [
                f"{labels['endpoint']} {format_value('api_response_seconds', value)}"
                for labels, value in by_name.get("api_response_seconds", [])
            ]
        else:
            values = {labels["query"]: value for labels, value in by_name.get("db_query_value", [])}
            shown = [
                f"{labels['query']} {format_value('db_query_seconds', value)}"
                + (f" ={values[labels['query']]:g}" if labels["query"] in values else "")
                for labels, value in by_name.get("db_query_seconds", [])
            ]
        return "  ".join(shown) if shown else "(no samples)"


def run_demo(directory: str | None, port: int = 0, duration: float | None = None) -> int:
    try:
        base = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="fossamon-demo-"))
        base.mkdir(parents=True, exist_ok=True)
        db = base / "fossawork_v2.db"
        if not db.exists():
            print(f"seeding the stand-in database {db} (100,000 work orders) …", flush=True)
        ensure_demo_database(db)
        return run_bounded(_serve(base, db, port, duration))
    except KeyboardInterrupt:
        return 0
    except (OSError, NotADemoDatabaseError, ConfigError) as exc:
        print(f"fossamon demo: {exc}", file=sys.stderr)
        return 1


async def _serve(base: Path, db: Path, port: int, duration: float | None) -> int:
    target = DemoTarget(db, live_interval=5.0)
    await target.start(port=port)
    try:
        config_path = base / "config.toml"
        listen = f"127.0.0.1:{_exporter_port()}"
        config_path.write_text(render_demo_config(target.url, db, base, listen), encoding="utf-8")
        config = load_config(config_path)
        configure_logging(config.daemon.log_level, "auto")
        print(
            f"stand-in FossaWork API: {target.url}  (database {db})\n"
            f"config:  {config_path}\n"
            f"metrics: {config.output.metrics.path}\n"
            f"alerts:  {config.output.alerts.path}\n"
            f"status:  http://{listen}/  (also /metrics, /status, /healthz)\n"
            f"try:     curl -X POST {target.url}/_demo/faults "
            '-d \'{"path": "/api/work-orders", "latency": 0.8}\'   (then watch api_p95_latency)\n'
            f"         fossamon once -c {config_path}\n"
            f"         fossamon status -c {config_path}\n"
            "Ctrl-C stops.\n",
            flush=True,
        )
        daemon = Daemon(config, str(config_path), observers=[ScreenPrinter()])
        if duration is not None:
            asyncio.get_running_loop().call_later(duration, daemon.request_stop)
        return await daemon.run()
    finally:
        await target.stop()
