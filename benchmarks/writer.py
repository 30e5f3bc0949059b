"""Writer throughput: JSONL lines through the daemon's output path, with and without gzip.

    .venv/bin/python benchmarks/writer.py [--lines 400000]

Each case feeds `--lines` records (an api batch of 4 endpoints, as the daemon writes it)
from a coroutine through `BufferedOutput.write` (serialise + buffer on the event loop; the
file's thread writes), awaiting `drain()` every 100 records so that it runs as fast as the
file takes lines, not faster (a producer that outruns the disk only fills the buffer and
gets lines dropped); then it closes the file (every line written) and waits for archiving.
It prints lines/s and MB/s over that whole span, the process CPU per 1,000 lines (all
threads: serialising, writing, compressing), the longest the event loop was held (a 5 ms
heartbeat's worst lateness), and the lines found on disk (gzip included) == lines written.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fossamon.model import Batch, Sample, make_labels
from fossamon.storage.jsonl import dumps_line
from fossamon.storage.output import BufferedOutput
from fossamon.storage.rotation import RotationPolicy, count_lines

RECORD = Batch(
    "api",
    1_795_000_000.0,
    0.0123,
    tuple(
        Sample(name, 0.0123, make_labels(endpoint=f"endpoint-{i}"))
        for i in range(4)
        for name in ("api_response_seconds", "api_up")
    ),
).to_json("web-1")
PRODUCER_BATCH = 100  # records between two `drain()`s (the producer waits when 2 MiB wait)


@dataclass
class Result:
    case: str
    lines: int
    seconds: float
    cpu_seconds: float
    line_bytes: int
    max_lag: float
    found: int
    rotations: int

    def row(self) -> str:
        per_second = self.lines / self.seconds
        mb = per_second * self.line_bytes / 1e6
        cpu = self.cpu_seconds / self.lines * 1000 * 1000
        return (
            f"| {self.case} | {per_second:,.0f} | {mb:.1f} | {cpu:.2f} | "
            f"{self.max_lag * 1000:.1f} | {self.rotations} | {self.found:,} / {self.lines:,} |"
        )


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


async def run_case(case: str, policy: RotationPolicy, lines: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="fossamon-writer-") as folder:
        out = BufferedOutput(Path(folder) / "performance-metrics.jsonl", policy)
        out.set_sync("never", 5.0)
        out.open()
        worst, stop = [0.0], asyncio.Event()
        beat = asyncio.create_task(heartbeat(worst, stop))
        await asyncio.sleep(0.02)
        cpu, began = cpu_now(), time.perf_counter()
        for n in range(lines):
            out.write(RECORD)
            if n % PRODUCER_BATCH == 0:
                await asyncio.sleep(0)  # other tasks (the heartbeat) run between bursts
                await out.drain()
        await out.close(60.0)
        unfinished = await asyncio.to_thread(out.wait_archiving, 120.0)
        seconds, cpu = time.perf_counter() - began, cpu_now() - cpu
        stop.set()
        await beat
        if unfinished or out.lines_dropped:
            sys.exit(f"{case}: {unfinished} archive jobs unfinished, {out.lines_dropped} dropped")
        return Result(
            case,
            lines,
            seconds,
            cpu,
            len(dumps_line(RECORD)),
            worst[0],
            lines_on_disk(Path(folder)),
            out.rotations,
        )


CASES = {
    "no rotation": RotationPolicy(mode="builtin"),
    "rotation every 8 MB, plain": RotationPolicy(
        mode="builtin", max_size=8_000_000, compress=False
    ),
    "rotation every 8 MB, gzip": RotationPolicy(mode="builtin", max_size=8_000_000, compress=True),
}


async def main_async(lines: int) -> int:
    print(
        f"python {platform.python_version()}, {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}; "
        f"{lines:,} lines of {len(dumps_line(RECORD))} bytes per case\n"
    )
    print(
        "| case | lines/s | MB/s | CPU ms per 1,000 lines | max loop lag ms | rotations "
        "| lines found / written |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    failed = 0
    for case, policy in CASES.items():
        result = await run_case(case, policy, lines)
        print(result.row(), flush=True)
        failed += result.found != result.lines
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=400_000, help="records per case")
    args = parser.parse_args(argv)
    return asyncio.run(main_async(args.lines))


if __name__ == "__main__":
    sys.exit(main())
