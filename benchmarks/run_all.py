"""`make bench`: every benchmark, one after the other, into docs/benchmarks.md.

    .venv/bin/python benchmarks/run_all.py [--output docs/benchmarks.md] [--only NAME ...]

Each benchmark is a script in this folder that prints markdown (its own table and the exact
commands it ran) on stdout; this runner records the machine (CPU count and model, Python,
load average before and after each one, because a busy machine skews every figure), runs
each script with its own command line, bounded in time, and writes the page. A benchmark
that fails keeps its output and exit status on the page rather than stopping the others (and
the runner exits 1 once the page is written).

A benchmark states each budget's figure on a line `SUMMARY|budget|figure|fossamon|bound|
peer|verdict` (benchmarks/_common.summary); the runner gathers those into the summary table
at the top of the page and leaves them out of the benchmark's own section.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _common import cpu_model, loadavg

STAMP = "%Y-%m-%d %H:%M UTC"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    argv: tuple[str, ...]
    quick: tuple[str, ...]  # the same benchmark in a second or two (--quick: a smoke run)
    budget: str  # what issue 8 asks of it
    limit: float  # seconds: a run past this is stopped and reported as such


BENCHMARKS = (
    Benchmark(
        "cycle",
        "One full cycle (system + 4 endpoints + 3 queries, JSONL, rules)",
        ("cycle.py",),
        ("cycle.py", "--quick"),
        "issue 8, budget 1: wall <= 60 ms and CPU <= 10 ms per cycle",
        900.0,
    ),
    Benchmark(
        "overhead",
        "Always-on overhead beside node_exporter + blackbox_exporter",
        ("overhead.py",),
        ("overhead.py", "--duration", "5", "--work-orders", "2000"),
        "issue 8, budget 2: over 10 minutes, CPU <= 0.2 % of a core, peak RSS <= 50 MB, "
        "RSS growth from minute 2 to 10 <= 1 MB",
        1200.0,
    ),
    Benchmark(
        "probes",
        "Probe scale: 100, 500 and 1,000 endpoints in one cycle",
        ("probes.py",),
        ("probes.py", "--quick"),
        "issue 8, budget 3: wall <= 1 s at 1,000 endpoints, CPU <= 0.3 ms per probe",
        900.0,
    ),
    Benchmark(
        "evaluator",
        "Rule evaluator throughput",
        ("evaluator.py",),
        ("evaluator.py", "--quick"),
        "issue 8, budget 4: >= 100,000 samples/s through 50 rules with 5-minute p95 windows",
        900.0,
    ),
    Benchmark(
        "writer",
        "JSONL writer throughput",
        ("writer.py",),
        ("writer.py", "--lines", "3000"),
        "issue 8, budget 5: >= 200,000 lines/s sustained without compression; report with gzip too",
        600.0,
    ),
    Benchmark(
        "startup",
        "Start-up: exec to READY=1, and fossamon once",
        ("startup.py",),
        ("startup.py", "--quick"),
        "issue 8, budget 6: `fossamon run` exec to READY=1 <= 2 s; `fossamon once` <= 1.5 s",
        600.0,
    ),
    Benchmark(
        "loadtest",
        "Load tester beside hey and wrk (static nginx, concurrency 50)",
        ("loadtest.py", "--duration", "10", "--repeat", "3"),
        ("loadtest.py", "--duration", "1", "--repeat", "1", "--engines", "lean"),
        "issue 8, budget 7: >= 2x the runbook script's req/s and >= 0.5x hey's",
        900.0,
    ),
    Benchmark(
        "db_analyze",
        "DB analyze memory with the runbook's unbounded join",
        ("db_analyze.py",),
        ("db_analyze.py", "--repeat", "1", "--work-orders", "2000"),
        "issue 8, budget 8: peak RSS <= 150 MB including the runbook's unbounded join",
        900.0,
    ),
)
SUMMARY_PREFIX = "SUMMARY|"
SUMMARY_HEADERS = ("budget", "figure", "fossamon", "budget's bound", "peer", "verdict")


@dataclass
class Outcome:
    section: list[str]
    summary: list[tuple[str, ...]]  # the benchmark's SUMMARY rows
    status: str


def run(bench: Benchmark, *, quick: bool = False) -> Outcome:
    script, *options = bench.quick if quick else bench.argv
    argv = [sys.executable, str(HERE / script), *options]
    shown = " ".join(["python", f"benchmarks/{script}", *options])
    before, began = loadavg(), time.monotonic()
    try:
        done = subprocess.run(  # noqa: S603 - our own scripts, by fixed names
            argv, capture_output=True, text=True, timeout=bench.limit, check=False, cwd=REPO
        )
        stdout, status = done.stdout, f"exit {done.returncode}"
        if done.returncode:
            stdout += "\n\n```\n" + done.stderr.strip()[-3000:] + "\n```"
    except subprocess.TimeoutExpired as stopped:
        stdout = stopped.stdout.decode(errors="replace") if stopped.stdout else ""
        status = f"stopped after {bench.limit:.0f} s"
    took = time.monotonic() - began
    print(f"{bench.name}: {status} in {took:.0f} s", file=sys.stderr, flush=True)
    body, summary = [], []
    for line in stdout.strip().splitlines():
        if line.startswith(SUMMARY_PREFIX):
            summary.append(tuple(line.removeprefix(SUMMARY_PREFIX).split("|")))
        else:
            body.append(line)
    section = [
        f"## {bench.title}",
        "",
        (
            f"Budget: {bench.budget}. Command: `{shown}` — {status}, {took:.0f} s; "
            f"load average before {before}, after {loadavg()}."
        ),
        "",
        *body,
        "",
    ]
    return Outcome(section, summary, status)


def summary_table(chosen: list[Benchmark], outcomes: list[Outcome]) -> list[str]:
    """One row per budget figure, from the benchmarks' own SUMMARY lines; a benchmark that
    printed none (it failed, or was stopped) gets a row that says so rather than no row."""
    rows: list[tuple[str, ...]] = []
    for bench, outcome in zip(chosen, outcomes, strict=True):
        if outcome.summary:
            rows += outcome.summary
        else:
            rows.append(("-", bench.title, f"no figure ({outcome.status})", "-", "-", "-"))
    lines = ["| " + " | ".join(SUMMARY_HEADERS) + " |", "|" + "---|" * len(SUMMARY_HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def page(summary: list[str], sections: list[str]) -> str:
    head = [
        "# Benchmarks",
        "",
        "Written by `make bench` (benchmarks/run_all.py); rerun it to refresh every figure.",
        "Each section below says what was measured, how, and the exact command.",
        "",
        f"- machine: {os.cpu_count()} CPUs, {cpu_model()}; Linux {platform.release()}",
        f"- Python {platform.python_version()}; run at {time.strftime(STAMP, time.gmtime())}",
        "",
        "## Summary: issue 8's budgets",
        "",
        *summary,
        "",
    ]
    return "\n".join([*head, *sections]).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--only", nargs="*", choices=[b.name for b in BENCHMARKS])
    parser.add_argument("--quick", action="store_true", help="a smoke run of each, seconds")
    args = parser.parse_args(argv)
    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only]
    outcomes = [run(bench, quick=args.quick) for bench in chosen]
    sections = [line for outcome in outcomes for line in outcome.section]
    args.output.write_text(page(summary_table(chosen, outcomes), sections), encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)
    failed = [b.name for b, o in zip(chosen, outcomes, strict=True) if o.status != "exit 0"]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
