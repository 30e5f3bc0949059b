"""Soak: `fossamon run` for a long while at ten times the default load, with faults coming
and going, then accounting for every line, cycle, descriptor and byte of memory.

    .venv/bin/python benchmarks/soak.py [--duration 1800] [--output docs/reliability.md]

The load (issue 9): every collector each second; 40 endpoints on the demo target, a quarter
of them under an injected fault that changes every 30 s (hangs, 503s, latency, broken
bodies, in turn); 10 queries on the demo database; the alert rules; both JSONL files rotated
by size (so rotation and gzip run throughout); the exporter, scraped every 10 s as Prometheus
would. Every 10 s the daemon's RSS, open descriptors, threads and asyncio tasks (/status) are
read. At the end it is stopped with SIGTERM and:

- RSS slope after warm-up (a least-squares line over the readings after the first fifth),
  in MB per 10 minutes: budget <= 1;
- open descriptors, threads and tasks: the last readings against those at the end of
  warm-up (no growth: at most the noise of a probe in flight, +4 descriptors, +2 tasks);
- lines: the daemon's count of lines written (its "stopped" log line) against the lines in
  every file it wrote, archives and gzip included; and it must have dropped none;
- cycles: per collector, runs + overlaps counted (skipped) against the cycles the duration
  holds (a run is due every second): missed = due - runs - skipped, at most 1 each (the
  cycle cut short by the stop).

With --output it replaces the block between `<!-- soak:begin -->` and `<!-- soak:end -->`
in that file with the figures. Exits 1 when a figure is out of bounds.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from _common import (
    REPO,
    cpu_model,
    demo_target,
    free_port,
    loadavg,
    open_fds,
    proc_status,
    table,
    verdict,
)

ENDPOINTS = 40
FAULTY = ENDPOINTS // 4
FAULT_EVERY = 30.0
READ_EVERY = 10.0
SCRAPE_EVERY = 10.0
TOKEN = "soak-exporter-token-1234"  # noqa: S105 - a loopback exporter's test credential
RSS_SLOPE_BUDGET = 1.0  # MB per 10 minutes
MIN_JUDGED = 300.0  # s: shorter runs (the smoke test's) report the leak figures, unjudged
FAULTS = (
    {"hang": True},
    {"status": 503, "error_rate": 1.0},
    {"latency": 0.3},
    {"body": "invalid_json", "error_rate": 1.0},
    {"body": "redirect_loop", "error_rate": 1.0},
    {"body": "huge", "error_rate": 1.0},
    {"body": "trickle", "error_rate": 1.0},
    {"body": "reset", "error_rate": 1.0},
)
QUERIES = (
    "SELECT COUNT(*) FROM work_orders",
    "SELECT COUNT(*) FROM work_orders WHERE created_date > datetime('now', '-1 hour')",
    (
        "SELECT COUNT(*) FROM dispensers d JOIN work_orders w ON w.id = d.work_order_id "
        "WHERE w.status = 'pending'"
    ),
    "SELECT COUNT(*) FROM customers",
    "SELECT status, COUNT(*) FROM work_orders GROUP BY status",
    "SELECT MAX(created_date) FROM work_orders",
    "SELECT COUNT(*) FROM dispensers",
    "SELECT COUNT(DISTINCT customer_id) FROM work_orders",
    "SELECT id FROM work_orders ORDER BY created_date DESC LIMIT 20",
    "SELECT COUNT(*) FROM work_orders WHERE status = 'completed'",
)


def config_text(url: str, db: Path, folder: Path, exporter: str) -> str:
    lines = [
        "[daemon]",
        'log_format = "plain"',
        f'runtime_dir = "{folder}/run"',
        f'state_dir = "{folder}/state"',
        'shutdown_grace = "5s"',
        "[output.metrics]",
        f'path = "{folder}/log/metrics.jsonl"',
        'max_size = "4MB"',
        "keep = 0",
        "[output.alerts]",
        f'path = "{folder}/log/alerts.jsonl"',
        'max_size = "256KB"',
        "keep = 0",
        "[exporter]",
        f'listen = "{exporter}"',
        f'bearer_token = "{TOKEN}"',
        "[collectors.system]",
        'interval = "1s"',
        "[collectors.api]",
        'interval = "1s"',
        'timeout = "800ms"',
        f'base_url = "{url}"',
        "max_redirects = 3",
    ]
    for n in range(ENDPOINTS):
        path = (
            f"/api/soak/{n}" if n < FAULTY else ("/api/health", "/api/work-orders?limit=5")[n % 2]
        )
        lines += ["[[collectors.api.endpoints]]", f'name = "e{n:02d}"', f'path = "{path}"']
        if n < FAULTY:  # these answer 404 unless a fault says otherwise: expect that
            lines.append("expect_status = [404]")
    lines += ["[collectors.db]", 'interval = "1s"', 'timeout = "800ms"', f'path = "{db}"']
    for n, sql in enumerate(QUERIES):
        lines += ["[[collectors.db.queries]]", f'name = "q{n}"', f"sql = {json.dumps(sql)}"]
    for name, metric in (("api_down", "api_up"), ("db_down", "db_up"), ("query", "db_query_ok")):
        lines += ["[[rules]]", f'name = "{name}"', f'metric = "{metric}"', 'direction = "below"']
        lines.append("critical = 1")
    lines += ["[[rules]]", 'name = "api_p95"', 'metric = "api_response_seconds"']
    lines += ['aggregate = "p95"', 'window = "1m"', 'warning = "200ms"', 'critical = "500ms"']
    return "\n".join(lines) + "\n"


def control(url: str, method: str, body: dict | None = None) -> None:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(f"{url}/_demo/faults", data, headers, method=method)  # noqa: S310
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback
        answer.read()


def exporter_get(exporter: str, path: str) -> bytes:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    request = urllib.request.Request(f"http://{exporter}{path}", headers=headers)
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback
        return bytes(answer.read())


@dataclass
class Reading:
    at: float
    rss: int
    fds: int
    threads: int
    tasks: int | None


@dataclass
class Run:
    """What one soak saw while it ran."""

    readings: list[Reading] = field(default_factory=list)
    scrapes: int = 0
    scrape_errors: int = 0
    fault_rounds: int = 0
    elapsed: float = 0.0
    final: dict = field(default_factory=dict)
    returncode: int | None = None


def slope_mb_per_10min(readings: list[Reading]) -> float:
    if len(readings) < 3:
        return 0.0
    xs = [r.at for r in readings]
    ys = [r.rss / 1e6 for r in readings]
    return statistics.linear_regression(xs, ys).slope * 600.0


def _opened(path: Path) -> bytes:
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as handle:
            return handle.read()
    return path.read_bytes()


def account(folder: Path) -> tuple[int, dict[str, list[float]]]:
    """Every line in every file the daemon wrote (archives too), each parsed; and when each
    collector's runs started, from the metrics files."""
    found, runs = 0, {}
    for path in sorted(folder.iterdir()):
        if not (path.name.endswith(".jsonl") or path.name.endswith(".jsonl.gz")):
            continue
        for raw in _opened(path).splitlines():
            record = json.loads(raw)  # every line whole
            found += 1
            if path.name.startswith("metrics"):
                when = datetime.fromisoformat(record["ts"]).timestamp()
                runs.setdefault(record["collector"], []).append(when)
    return found, runs


def healthy(proc: subprocess.Popen[bytes], exporter: str, timeout: float) -> None:
    """Until /healthz answers 200 (every collector has run): the soak starts from there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fossamon exited with {proc.returncode} before it was healthy")
        with contextlib.suppress(OSError):
            exporter_get(exporter, "/healthz")
            return
        time.sleep(0.2)
    raise RuntimeError(f"fossamon's /healthz did not answer 200 within {timeout:.0f} s")


def next_faults(url: str, round_no: int) -> None:
    """Half of the faulty endpoints broken, each round another half and other faults."""
    control(url, "DELETE")
    for n in range(FAULTY):
        if (n + round_no) % 2 == 0:
            fault = FAULTS[(n + round_no) % len(FAULTS)]
            control(url, "POST", {"path": f"/api/soak/{n}", **fault})


def watch(proc: subprocess.Popen[bytes], url: str, exporter: str, duration: float) -> Run:
    run = Run()
    began = time.monotonic()
    due = {"fault": began, "scrape": began, "read": began}
    while (now := time.monotonic()) < began + duration:
        if proc.poll() is not None:
            raise RuntimeError(f"fossamon exited with {proc.returncode} mid-soak")
        if now >= due["fault"]:
            next_faults(url, run.fault_rounds)
            run.fault_rounds += 1
            due["fault"] += FAULT_EVERY
        if now >= due["scrape"]:
            try:
                exporter_get(exporter, "/metrics")
                run.scrapes += 1
            except OSError:
                run.scrape_errors += 1
            due["scrape"] += SCRAPE_EVERY
        if now >= due["read"]:
            status = json.loads(exporter_get(exporter, "/status"))
            memory = proc_status(proc.pid)
            tasks = status.get("process", {}).get("tasks")
            fds = open_fds(proc.pid)
            run.readings.append(
                Reading(now - began, memory["VmRSS"], fds, memory["Threads"], tasks)
            )
            due["read"] += READ_EVERY
        time.sleep(max(0.0, min(due.values()) - time.monotonic()))
    run.elapsed = time.monotonic() - began
    run.final = json.loads(exporter_get(exporter, "/status"))
    return run


def soak(duration: float, folder: Path, work_orders: int = 100_000) -> Run:
    with demo_target(folder, work_orders=work_orders) as target:
        exporter = f"127.0.0.1:{free_port()}"
        config = folder / "config.toml"
        config.write_text(config_text(target.url, target.db, folder, exporter))
        for sub in ("log", "state", "run"):
            (folder / sub).mkdir(exist_ok=True)
        script = Path(sys.executable).parent / "fossamon"
        argv = [str(script)] if script.exists() else [sys.executable, "-m", "fossamon"]
        with (folder / "daemon.log").open("wb") as log:
            proc = subprocess.Popen([*argv, "run", "-c", str(config)], stdout=log, stderr=log)  # noqa: S603
        try:
            healthy(proc, exporter, timeout=60)
            run = watch(proc, target.url, exporter, duration)
        finally:
            with contextlib.suppress(OSError):
                control(target.url, "DELETE")
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        run.returncode = proc.returncode
    return run


def _counted(output: str, name: str) -> int:
    stopped = [x for x in output.splitlines() if "stopped" in x and f"{name}=" in x]
    found = re.search(rf"{name}=(\d+)", stopped[-1]) if stopped else None
    return int(found.group(1)) if found else -1


def _floors(early: list[Reading], late: list[Reading], name: str) -> str:
    return (
        f"{min(getattr(r, name) or 0 for r in early)} → {min(getattr(r, name) or 0 for r in late)}"
    )


def report(folder: Path, duration: float, run: Run) -> tuple[list[str], bool]:
    output = (folder / "daemon.log").read_text(errors="replace")
    written, dropped = _counted(output, "lines_written"), _counted(output, "lines_dropped")
    found, runs = account(folder / "log")
    readings = run.readings
    warm = [r for r in readings if r.at >= duration / 5] or readings
    slope = slope_mb_per_10min(warm)
    first, last = warm[0], readings[-1]
    # Descriptors and tasks come and go with the probes in flight at the moment of a reading;
    # a leak raises the floor: the least of each half after warm-up, compared.
    early, late = warm[: max(1, len(warm) // 2)], warm[len(warm) // 2 :] or warm[-1:]
    fds_growth = min(r.fds for r in late) - min(r.fds for r in early)
    tasks_growth = min(r.tasks or 0 for r in late) - min(r.tasks or 0 for r in early)
    judged = duration >= MIN_JUDGED  # too short a run shows no leak, only noise
    cycles, missed_ok = [], True
    for name, stats in sorted(run.final["collectors"].items()):
        stamps = runs.get(name, [])
        # the cycles between its first and last run, one a second (the daemon's whole life)
        due = round(max(stamps) - min(stamps)) + 1 if stamps else 0
        ran, skipped = len(stamps), stats.get("skipped", 0)
        missed = max(0, due - ran - skipped)
        missed_ok &= missed <= 1
        cycles.append([name, due, ran, skipped, stats.get("overruns", 0), missed])
    archives = sum(1 for p in (folder / "log").iterdir() if p.name.endswith(".gz"))
    tracebacks = output.count("Traceback")
    checks = {
        "slope": slope <= RSS_SLOPE_BUDGET or not judged,
        "fds": fds_growth <= 4 or not judged,
        "threads": last.threads - first.threads <= 2 or not judged,
        "tasks": tasks_growth <= 2 or not judged,
        "lines": written == found and dropped == 0,
        "cycles": missed_ok,
        "stop": run.returncode == 0 and tracebacks == 0,
    }
    rows = [
        ["RSS slope after warm-up", f"{slope:+.3f} MB per 10 min", f"<= {RSS_SLOPE_BUDGET} MB"],
        ["RSS at warm-up / at the end", f"{first.rss / 1e6:.1f} / {last.rss / 1e6:.1f} MB", "-"],
        ["open descriptors, floor", _floors(early, late, "fds"), "no growth (+4)"],
        ["threads", f"{first.threads} → {last.threads}", "no growth (+2)"],
        ["asyncio tasks, floor", _floors(early, late, "tasks"), "no growth (+2)"],
        ["lines written / found", f"{written:,} / {found:,} ({dropped} dropped)", "equal"],
        ["clean stop", f"exit {run.returncode}, {tracebacks} tracebacks", "exit 0, none"],
    ]
    leaks = [checks[k] if judged else None for k in ("slope", "fds", "threads", "tasks")]
    verdicts = [leaks[0], None, *leaks[1:]]
    verdicts += [checks["lines"], checks["stop"]]
    shown = [
        [*row, "-" if v is None else verdict(v)] for row, v in zip(rows, verdicts, strict=True)
    ]
    step = max(1, len(readings) // 12)
    over_time = ", ".join(f"{r.at:.0f} s {r.rss / 1e6:.1f}" for r in readings[::step])
    command = (
        f"Command: `python benchmarks/soak.py --duration {duration:.0f}` "
        f"({os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}); "
        f"load average at the end {loadavg()}."
    )
    load = (
        f"Load: every collector each second; {ENDPOINTS} endpoints, {FAULTY} of them under "
        f"faults changing every {FAULT_EVERY:.0f} s ({len(FAULTS)} kinds in turn, "
        f"{run.fault_rounds} rounds); {len(QUERIES)} queries; 4 rules; rotation by size with "
        f"gzip ({archives} archives); /metrics scraped every {SCRAPE_EVERY:.0f} s "
        f"({run.scrapes} scrapes, {run.scrape_errors} failed)."
    )
    lines = [
        command,
        "",
        load,
        "",
        *table(["figure", "measured", "bound", "verdict"], shown),
        "",
        *table(["collector", "cycles due", "runs", "overlaps", "overruns", "missed"], cycles),
        "",
        f"Cycles: {verdict(checks['cycles'])} (missed = due - runs - overlaps, at most 1 each).",
        "",
        f"RSS over time (MB): {over_time}",
    ]
    return lines, all(checks.values())


def write_block(path: Path, lines: list[str]) -> None:
    text = path.read_text() if path.exists() else "<!-- soak:begin -->\n<!-- soak:end -->\n"
    begin, end = "<!-- soak:begin -->", "<!-- soak:end -->"
    if begin not in text or end not in text:
        raise SystemExit(f"{path} has no {begin} … {end} block")
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    path.write_text(head + begin + "\n" + "\n".join(lines) + "\n" + end + tail)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds (default 1800)")
    parser.add_argument("--output", type=Path, default=None, help="file with a soak block")
    parser.add_argument(
        "--work-orders", type=int, default=100_000, help="demo database size (default 100000)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fossamon-soak-") as folder:
        run = soak(args.duration, Path(folder), args.work_orders)
        lines, ok = report(Path(folder), args.duration, run)
    print("\n".join(lines))
    if args.output is not None:
        write_block(args.output if args.output.is_absolute() else REPO / args.output, lines)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
