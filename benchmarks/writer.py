"""Writer throughput: JSONL lines through the daemon's output path, with and without gzip.

    .venv/bin/python benchmarks/writer.py [--lines 400000] [--runs 5]

The line is an api batch as the api collector writes it (`Batch.to_json`: api_up,
api_status_code, api_response_seconds and api_response_size_bytes per endpoint), for two
endpoints of the shipped config (720 bytes); a second table gives the shipped config's four
endpoints (1,348 bytes) without rotation, since lines/s depends on the line. Each case feeds
`--lines` records from a coroutine through `BufferedOutput.write` (serialise, redact and buffer
on the event loop; the file's thread writes), awaiting `drain()` every 100 records so that it
runs as fast as the file takes lines, not faster (a producer that outruns the disk only fills
the buffer and gets lines dropped); then it closes the file (every line written) and waits for
archiving. Timed is that whole span; CPU is the process's, all threads (serialising, writing,
compressing), per 1,000 lines; the loop lag is a 5 ms heartbeat's worst lateness; the lines
found on disk (gzip included) must equal the lines written, in every run. Each case runs
`--runs` times, one after the other; figures are median (min-max).

Issue 8, budget 5: >= 200,000 lines/s sustained without compression (the "no rotation" case);
reported with gzip compression running too.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import loadavg, spread, summary, table, verdict

from fossamon.model import Batch, Sample, make_labels
from fossamon.storage.jsonl import dumps_line
from fossamon.storage.output import BufferedOutput
from fossamon.storage.rotation import RotationPolicy, count_lines

BUDGET = 200_000.0  # lines/s, no compression
SHIPPED_ENDPOINTS = ("health", "auth_validate", "work_orders", "dispensers")  # config.toml
PRODUCER_BATCH = 100  # records between two `drain()`s (the producer waits when 2 MiB wait)


def api_record(endpoints: tuple[str, ...]) -> dict[str, Any]:
    """An api batch of healthy endpoints, shaped as collectors/api.py's `_samples` makes it."""
    samples: list[Sample] = []
    for n, name in enumerate(endpoints):
        labels = make_labels(endpoint=name)
        samples += [
            Sample("api_up", 1.0, labels),
            Sample("api_status_code", 200.0, labels),
            Sample("api_response_seconds", 0.0123 + n * 0.0011, labels),
            Sample("api_response_size_bytes", 1834.0 + n * 37, labels),
        ]
    batch = Batch("api", 1_795_000_000.1234, 0.0231, tuple(samples))
    assert not batch.has_free_text  # a healthy batch: the pipeline writes it free_text=False
    return batch.to_json("web-1")


BUDGET_RECORD = api_record(SHIPPED_ENDPOINTS[::2])  # health, work_orders
SHIPPED_RECORD = api_record(SHIPPED_ENDPOINTS)


@dataclass
class Run:
    lines: int
    seconds: float
    cpu_seconds: float
    max_lag: float
    found: int
    rotations: int

    @property
    def rate(self) -> float:
        return self.lines / self.seconds


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def lines_on_disk(folder: Path) -> int:
    return sum(count_lines(file) for file in folder.iterdir())


async def heartbeat(worst: list[float], stop: asyncio.Event) -> None:
    period = 0.005
    due = time.monotonic() + period
    while not stop.is_set():
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        now = time.monotonic()
        worst[0] = max(worst[0], now - due)
        due = now + period


async def produce(out: BufferedOutput, record: dict[str, Any], lines: int) -> None:
    """The producer: bursts of PRODUCER_BATCH writes, each followed by a yield and `drain()`.
    Bound method and `itertools.repeat`, so that the harness costs less than the writer (not
    `functools.partial(out.write, free_text=False)`: a partial with a keyword copies a dict
    per call, 0.43 µs, a tenth of a line's whole cost; the pipeline calls `write` directly).
    Written as the pipeline writes a batch without errors (`free_text=False`: redacted for
    configured secrets only; see Redactor.redact_jsonl_line)."""
    write = out.write
    left = lines
    while left:
        burst = min(PRODUCER_BATCH, left)
        for _ in itertools.repeat(None, burst):
            write(record, free_text=False)
        left -= burst
        await asyncio.sleep(0)  # other tasks (the heartbeat) run between bursts
        await out.drain()


async def run_case(policy: RotationPolicy, record: dict[str, Any], lines: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="fossamon-writer-") as folder:
        out = BufferedOutput(Path(folder) / "performance-metrics.jsonl", policy)
        out.set_sync("never", 5.0)
        out.open()
        worst, stop = [0.0], asyncio.Event()
        beat = asyncio.create_task(heartbeat(worst, stop))
        await asyncio.sleep(0.02)
        cpu, began = cpu_now(), time.perf_counter()
        await produce(out, record, lines)
        await out.close(60.0)
        unfinished = await asyncio.to_thread(out.wait_archiving, 120.0)
        seconds, cpu = time.perf_counter() - began, cpu_now() - cpu
        stop.set()
        await beat
        if unfinished or out.lines_dropped:
            sys.exit(f"{unfinished} archive jobs unfinished, {out.lines_dropped} lines dropped")
        found = lines_on_disk(Path(folder))
        return Run(lines, seconds, cpu, worst[0], found, out.rotations)


CASES = {
    "no rotation": RotationPolicy(mode="builtin"),
    "rotation every 8 MB, plain": RotationPolicy(
        mode="builtin", max_size=8_000_000, compress=False
    ),
    "rotation every 8 MB, gzip": RotationPolicy(mode="builtin", max_size=8_000_000, compress=True),
}


def row(case: str, runs: list[Run], line_bytes: int) -> list[str]:
    rates = [r.rate for r in runs]
    worst = max(runs, key=lambda r: abs(r.found - r.lines))  # every run's, when they agree
    return [
        case,
        spread(rates, "{:,.0f}"),
        f"{statistics.median(rates) * line_bytes / 1e6:.1f}",
        spread([r.cpu_seconds / r.lines * 1e6 for r in runs]),
        spread([r.max_lag * 1000 for r in runs], "{:.1f}"),
        spread([float(r.rotations) for r in runs], "{:.0f}"),
        f"{worst.found:,} / {worst.lines:,}",
    ]


HEADERS = (
    "case",
    "lines/s",
    "MB/s",
    "CPU ms per 1,000 lines",
    "max loop lag ms",
    "rotations",
    "lines found / written",
)


async def measure(
    record: dict[str, Any], cases: dict[str, RotationPolicy], args: Any
) -> dict[str, list[Run]]:
    """Each case `args.runs` times, the cases interleaved (a noisy spell hits them alike)."""
    found: dict[str, list[Run]] = {case: [] for case in cases}
    for _ in range(args.runs):
        for case, policy in cases.items():
            found[case].append(await run_case(policy, record, args.lines))
    return found


async def main_async(args: argparse.Namespace) -> int:
    line_bytes = len(dumps_line(BUDGET_RECORD))
    shipped_bytes = len(dumps_line(SHIPPED_RECORD))
    before = loadavg()
    print(
        f"python {platform.python_version()}, {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}; {args.lines:,} lines per run, "
        f"{args.runs} run(s) per case, median (min-max); load average before {before}\n"
    )
    print(
        f"Lines of {line_bytes} bytes: an api batch of 2 endpoints (8 samples), as the api "
        "collector writes it.\n"
    )
    runs = await measure(BUDGET_RECORD, CASES, args)
    print("\n".join(table(HEADERS, [row(c, r, line_bytes) for c, r in runs.items()])))
    print(
        f"\nLines of {shipped_bytes} bytes: the shipped config's api batch (4 endpoints, "
        "16 samples); lines/s falls with the line's size, MB/s rises.\n"
    )
    shipped = await measure(SHIPPED_RECORD, {"no rotation": CASES["no rotation"]}, args)
    print(
        "\n".join(
            table(HEADERS, [row("4 endpoints, " + c, r, shipped_bytes) for c, r in shipped.items()])
        )
    )
    plain = [r.rate for r in runs["no rotation"]]
    gzip = [r.rate for r in runs["rotation every 8 MB, gzip"]]
    met = statistics.median(plain) >= BUDGET
    shown = spread(plain, "{:,.0f}")
    print(
        f"\nBudget (issue 8, budget 5): >= {BUDGET:,.0f} lines/s without compression. "
        f"Measured (no rotation, {line_bytes}-byte lines): {shown} lines/s: {verdict(met)}. "
        f"With gzip compression running: {spread(gzip, '{:,.0f}')} lines/s.\n"
    )
    print(f"- load average before {before}, after {loadavg()}")
    print(f"- `python benchmarks/writer.py --lines {args.lines} --runs {args.runs}`")
    summary(
        5,
        f"JSONL lines/s, no compression ({line_bytes}-byte api batch)",
        f"{shown} lines/s",
        f">= {BUDGET:,.0f}",
        f"with gzip: {spread(gzip, '{:,.0f}')} lines/s",
        met,
    )
    every = [r for case in (*runs.values(), *shipped.values()) for r in case]
    return 1 if any(r.found != r.lines for r in every) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=400_000, help="records per run")
    parser.add_argument("--runs", type=int, default=5, help="runs per case")
    args = parser.parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
