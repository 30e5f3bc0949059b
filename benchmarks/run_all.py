"""`make bench`: every benchmark, one after the other, into docs/benchmarks.md.

    .venv/bin/python benchmarks/run_all.py [--output docs/benchmarks.md] [--only NAME ...]

Each benchmark is a script in this folder that prints markdown (its own table and the exact
commands it ran) on stdout; this runner records the machine (CPU count and model, Python,
load average before and after each one, because a busy machine skews every figure), runs
each script with its own command line, bounded in time, and writes the page. A benchmark
that fails keeps its output and exit status on the page rather than stopping the others.
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
        "writer",
        "JSONL writer throughput",
        ("writer.py",),
        ("writer.py", "--lines", "3000"),
        "issue 8, budget 5: >= 200,000 lines/s sustained without compression; report with gzip too",
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
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def run(bench: Benchmark, *, quick: bool = False) -> list[str]:
    script, *options = bench.quick if quick else bench.argv
    argv = [sys.executable, str(HERE / script), *options]
    shown = " ".join(["python", f"benchmarks/{script}", *options])
    before, began = load(), time.monotonic()
    try:
        done = subprocess.run(  # noqa: S603 - our own scripts, by fixed names
            argv, capture_output=True, text=True, timeout=bench.limit, check=False, cwd=REPO
        )
        body, status = done.stdout.strip(), f"exit {done.returncode}"
        if done.returncode:
            body += "\n\n```\n" + done.stderr.strip()[-3000:] + "\n```"
    except subprocess.TimeoutExpired:
        body, status = "", f"stopped after {bench.limit:.0f} s"
    took = time.monotonic() - began
    print(f"{bench.name}: {status} in {took:.0f} s", file=sys.stderr, flush=True)
    return [
        f"## {bench.title}",
        "",
        (
            f"Budget: {bench.budget}. Command: `{shown}` — {status}, {took:.0f} s; "
            f"load average before {before}, after {load()}."
        ),
        "",
        body,
        "",
    ]


def page(sections: list[str]) -> str:
    head = [
        "# Benchmarks",
        "",
        "Written by `make bench` (benchmarks/run_all.py); rerun it to refresh every figure.",
        "",
        f"- machine: {os.cpu_count()} CPUs, {cpu_model()}; Linux {platform.release()}",
        f"- Python {platform.python_version()}; run at {time.strftime(STAMP, time.gmtime())}",
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
    sections: list[str] = []
    for bench in chosen:
        sections += run(bench, quick=args.quick)
    args.output.write_text(page(sections), encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
