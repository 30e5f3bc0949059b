"""One full cycle: every collector of the shipped config once, through the daemon's pipeline.

    .venv/bin/python benchmarks/cycle.py [--cycles 30] [--warmup 5] [--scrapes 30]
                                         [--work-orders 100000] [--history SECONDS] [--quick]

Starts the demo target (`python -m fossamon.demo`, its database seeded with `--work-orders`
and the runbook's indexes applied) and points the shipped config.toml at it. In this one
process it then builds what `fossamon run` builds from that config: the `Daemon`'s outputs,
evaluator, history, alert dispatcher (with its state store and sinks) and pipeline, and the
collectors (system, api with 4 endpoints, db with the runbook's 3 queries). A cycle runs
every collector once, concurrently as the scheduler does when they are all due, feeds each
batch through `Pipeline.ingest` (metrics JSONL, history, rule evaluation, alert dispatch) as
soon as its collector returns it, and ends when both JSONL files have written every line
(the file's thread has written what the flusher handed it). After
`--warmup` cycles, `--cycles` are measured: wall by `perf_counter`, CPU by
`time.process_time` (the whole process: the event loop, the collectors' threads, the state
store's and the files' writer threads). Cycles are 0.1 s apart, so the CPU % reading has its
interval, as it does in the daemon. Then each collector and the pipeline are timed alone
(the split). "Warm" includes the rule windows: before the warm-up, copies of a first real
cycle's batches, back-dated at each collector's interval, are replayed through the pipeline
over `--history` seconds (by default the longest rule window: 6 h of disk samples for the
shipped disk prediction), so that the evaluator works on what a long-running daemon's
windows hold.

The peer figures are the runbook's monitor (1.06 s wall, 10 ms CPU per cycle) and one
node_exporter scrape (10.8 ms CPU), measured on this kind of machine (shared/FACTS.md);
when /usr/bin/prometheus-node-exporter is installed, `--scrapes` scrapes of it are measured
here too (CPU from /proc/<pid>/stat, in blocks of 10 scrapes, ticks of 10 ms).
Issue 8, budget 1: wall <= 60 ms and CPU <= 10 ms per cycle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from _common import (
    cpu_seconds,
    demo_target,
    free_port,
    loadavg,
    shipped_config,
    spread,
    stop,
    summary,
    table,
    verdict,
    wait_http,
)

from fossamon.collectors.base import build_collectors
from fossamon.daemon import Daemon
from fossamon.log import configure_logging
from fossamon.overview import load_checked
from fossamon.redact import set_secrets_from_config
from fossamon.runner import run_bounded
from fossamon.storage.rotation import count_lines
from fossamon.storage.state import StateStore, state_path

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from fossamon.collectors.base import Collector
    from fossamon.model import Batch

WALL_BUDGET_MS = 60.0
CPU_BUDGET_MS = 10.0
RUNBOOK_WALL_MS = 1060.0  # shared/FACTS.md: the runbook's monitor, long-lived, per cycle
RUNBOOK_CPU_MS = 10.0  # the same, indexed database, 4 endpoints + 3 queries
NODE_EXPORTER_CPU_MS = 10.8  # shared/FACTS.md: one node_exporter scrape
NODE_EXPORTER = Path("/usr/bin/prometheus-node-exporter")
SCRAPE_BLOCK = 10
PAUSE = 0.1  # between cycles: CPU % needs 50 ms of CPU ticks between two readings
CLOSE_WAIT = 10.0
WRITE_POLL = 0.0005  # seconds between looks at whether the lines are written


@dataclass
class Timings:
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)

    async def time(self, work: Callable[[], Awaitable[object]]) -> None:
        cpu, began = time.process_time(), time.perf_counter()
        await work()
        self.wall_ms.append((time.perf_counter() - began) * 1000)
        self.cpu_ms.append((time.process_time() - cpu) * 1000)


@dataclass
class Measured:
    cycle: Timings
    split: dict[str, Timings]
    batches: int
    lines_on_disk: int
    errors: list[str]
    history: int  # back-dated batches replayed before measuring


class Rig:
    """What `fossamon run` builds from the config (the Daemon's outputs, evaluator, history,
    alert dispatcher with its state store and sinks, pipeline; the collectors), driven by hand
    instead of by the scheduler."""

    def __init__(self, config_path: Path) -> None:
        config = load_checked(str(config_path))
        set_secrets_from_config(config)
        self.config = config
        self.daemon = Daemon(config, str(config_path))
        self.collectors: list[Collector] = []
        self.batches = 0
        self.errors: set[str] = set()

    async def start(self) -> None:
        self.daemon.metrics_out.open()
        self.daemon.alerts_out.open()
        store = await StateStore.open(state_path(self.config.daemon.state_dir), recover=True)
        await self.daemon.alerts.start(store, time.time(), self.config)
        self.collectors = build_collectors(self.config.collectors)

    async def stop(self) -> None:
        for collector in self.collectors:
            await collector.close()
        await self.daemon.alerts.stop()
        for writer in (self.daemon.metrics_out, self.daemon.alerts_out):
            await writer.close(CLOSE_WAIT)
            # lets the archiver's idle thread end, as the daemon's stop does
            await asyncio.to_thread(writer.wait_archiving, CLOSE_WAIT)

    async def ingest(self, batch: Batch) -> None:
        await self.daemon.pipeline.ingest(batch)
        self.batches += 1
        self.errors.update(f"{batch.collector}: {e.target} {e.kind}" for e in batch.errors)

    async def written(self) -> None:
        """Until every line accepted so far is in its file, as the daemon writes it: the
        flusher hands the lines to the file's thread, which writes them. Polled rather than
        `flush()`, which would add a hop to each file's thread of its own (0.1-0.2 ms of CPU
        each here) that the daemon never makes."""
        outputs = (self.daemon.metrics_out, self.daemon.alerts_out)
        deadline = time.monotonic() + CLOSE_WAIT
        while any(output.buffered_bytes for output in outputs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"lines not written within {CLOSE_WAIT:.0f} s")
            await asyncio.sleep(WRITE_POLL)

    async def collect_all(self) -> list[Batch]:
        """Every collector once, side by side, as the scheduler runs them when all are due."""
        return list(await asyncio.gather(*(c.collect() for c in self.collectors)))

    async def cycle(self) -> None:
        """Every collector once, side by side, each batch into the pipeline as soon as it is
        there (as the scheduler's jobs hand theirs to the daemon), until all are written."""

        async def run(collector: Collector) -> None:
            await self.ingest(await collector.collect())

        await asyncio.gather(*(run(c) for c in self.collectors))
        await self.written()

    async def replay_history(self, span: float | None) -> int:
        """Copies of one real cycle's batches, back-dated at each collector's interval over
        `span` seconds before now (default: the longest rule window), through the pipeline in
        time order: the rule windows then hold what a daemon's hold after that long (the 6 h
        disk prediction 2,160 samples), not the few samples of cycles 0.1 s apart."""
        batches = await self.collect_all()
        if span is None:
            span = max(self.daemon.evaluator.retention().values(), default=0.0)
        intervals = {c.name: c.interval for c in self.collectors}
        now = time.time()
        stamped = sorted(
            (now - age, n)
            for n, batch in enumerate(batches)
            for age in _ages(span, intervals[batch.collector])
        )
        for ts, n in stamped:
            await self.ingest(dataclasses.replace(batches[n], ts=ts))
        await self.written()
        return len(stamped)

    async def split(self, runs: int) -> dict[str, Timings]:
        """Each collector's run alone, then the pipeline's share (ingest + written) alone."""
        split: dict[str, Timings] = {}
        for collector in self.collectors:
            alone, pipeline = Timings(), Timings()
            for _ in range(runs):
                await asyncio.sleep(PAUSE)
                got: list[Batch] = []

                async def run(c: Collector = collector, out: list[Batch] = got) -> None:
                    out.append(await c.collect())

                async def feed(out: list[Batch] = got) -> None:
                    await self.ingest(out[0])
                    await self.written()

                await alone.time(run)
                await pipeline.time(feed)
            split[f"{collector.name} collector"] = alone
            split[f"pipeline: {collector.name} batch ingested + written"] = pipeline
        return split


def _ages(span: float, interval: float) -> list[float]:
    count = int(span // interval)
    return [interval * (count - k) for k in range(count)]


async def measure(config_path: Path, cycles: int, warmup: int, history: float | None) -> Measured:
    configure_logging("warning", "plain")  # the alerts' log sink must not mix into stdout
    rig = Rig(config_path)
    await rig.start()
    try:
        replayed = await rig.replay_history(history)
        timed = Timings()
        for n in range(warmup + cycles):
            await asyncio.sleep(PAUSE)
            if n < warmup:
                await rig.cycle()
            else:
                await timed.time(rig.cycle)
        split = await rig.split(cycles)
    finally:
        await rig.stop()
    lines = count_lines(rig.daemon.metrics_out.path)
    return Measured(timed, split, rig.batches, lines, sorted(rig.errors), replayed)


def scrape_node_exporter(scrapes: int, folder: Path) -> list[float] | str:
    """CPU ms per scrape of node_exporter's /metrics, per block of SCRAPE_BLOCK scrapes."""
    if not NODE_EXPORTER.exists():
        return f"{NODE_EXPORTER} is not installed"
    port = free_port()
    argv = [str(NODE_EXPORTER), f"--web.listen-address=127.0.0.1:{port}"]
    log = (folder / "node_exporter.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_http(url, proc, timeout=30.0)
        for _ in range(3):  # its first scrapes set up collectors and caches
            _get(url)
        per_scrape: list[float] = []
        left = scrapes
        while left > 0:
            block = min(SCRAPE_BLOCK, left)
            before = cpu_seconds(proc.pid)
            for _ in range(block):
                _get(url)
            per_scrape.append((cpu_seconds(proc.pid) - before) * 1000 / block)
            left -= block
        return per_scrape
    finally:
        stop(proc)
        log.close()


def _get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - loopback, our own
        reply.read()


def report(measured: Measured, scrapes: list[float] | str, argv: list[str]) -> None:
    wall, cpu = measured.cycle.wall_ms, measured.cycle.cpu_ms
    med_wall, med_cpu = statistics.median(wall), statistics.median(cpu)
    if isinstance(scrapes, str):
        node_here = f"not measured here ({scrapes})"
    else:
        node_here = f"{spread(scrapes)} ms measured here"
    print(
        f"python {platform.python_version()}, {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}; load average {loadavg()}; "
        f"{measured.history:,} back-dated batches of history replayed first; "
        f"{len(wall)} measured cycles after the warm-up, {PAUSE * 1000:.0f} ms apart\n"
    )
    rows = [
        (
            "wall per cycle, ms",
            spread(wall),
            f"<= {WALL_BUDGET_MS:.0f}",
            f"runbook monitor {RUNBOOK_WALL_MS:.0f}",
            f"{RUNBOOK_WALL_MS / med_wall:.0f}x faster",
            verdict(med_wall <= WALL_BUDGET_MS),
        ),
        (
            "CPU per cycle, ms",
            spread(cpu),
            f"<= {CPU_BUDGET_MS:.0f}",
            (
                f"runbook monitor {RUNBOOK_CPU_MS:.0f}; node_exporter scrape "
                f"{NODE_EXPORTER_CPU_MS} (FACTS), {node_here}"
            ),
            (
                f"{med_cpu / RUNBOOK_CPU_MS:.2f}x the runbook's, "
                f"{med_cpu / NODE_EXPORTER_CPU_MS:.2f}x a scrape"
            ),
            verdict(med_cpu <= CPU_BUDGET_MS),
        ),
    ]
    print("\n".join(table(["figure", "fossamon", "budget", "peer", "ratio", "verdict"], rows)))
    summary(
        1,
        "wall per cycle",
        f"{med_wall:.1f} ms",
        f"<= {WALL_BUDGET_MS:.0f} ms",
        f"runbook monitor {RUNBOOK_WALL_MS:,.0f} ms ({RUNBOOK_WALL_MS / med_wall:.0f}x faster)",
        med_wall <= WALL_BUDGET_MS,
    )
    summary(
        1,
        "CPU per cycle",
        f"{med_cpu:.2f} ms",
        f"<= {CPU_BUDGET_MS:.0f} ms",
        f"runbook monitor {RUNBOOK_CPU_MS:.0f} ms; node_exporter scrape {NODE_EXPORTER_CPU_MS} ms"
        + ("" if isinstance(scrapes, str) else f" ({spread(scrapes)} ms here)"),
        med_cpu <= CPU_BUDGET_MS,
    )
    print("\nWhere a cycle's time goes (each part timed alone, median (min-max)):\n")
    split_rows = [(part, spread(t.wall_ms), spread(t.cpu_ms)) for part, t in measured.split.items()]
    print("\n".join(table(["part", "wall ms", "CPU ms"], split_rows)))
    print(
        f"\nmetrics JSONL: {measured.lines_on_disk} lines on disk for {measured.batches} batches "
        "ingested; failures seen: " + ("; ".join(measured.errors) if measured.errors else "none")
    )
    print("\nCommands:\n")
    print("    " + " ".join(["python", "benchmarks/cycle.py", *argv]))
    print(
        "    python -m fossamon.demo --db DIR/fossawork_demo.db --port PORT   "
        "# + the runbook's indexes"
    )
    if not isinstance(scrapes, str):
        print(f"    {NODE_EXPORTER} --web.listen-address=127.0.0.1:PORT; GET /metrics")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=30, help="measured cycles")
    parser.add_argument("--warmup", type=int, default=5, help="cycles before measuring")
    parser.add_argument("--scrapes", type=int, default=30, help="node_exporter scrapes (0: none)")
    parser.add_argument("--work-orders", type=int, default=100_000, help="demo database size")
    parser.add_argument(
        "--history",
        type=float,
        default=None,
        help="seconds of back-dated history to replay first (default: the longest rule window)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of a few seconds: --cycles 5 --warmup 2 --work-orders 2000 "
        "--scrapes 0 --history 60",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.cycles, args.warmup, args.work_orders, args.scrapes = 5, 2, 2000, 0
        args.history = 60.0
    shown = sys.argv[1:] if argv is None else argv
    with tempfile.TemporaryDirectory(prefix="fossamon-cycle-") as tmp:
        folder = Path(tmp)
        with demo_target(folder, work_orders=args.work_orders) as target:
            config_path = shipped_config(target, folder, listen=f"127.0.0.1:{free_port()}")
            measured_box: list[Measured] = []

            async def main_async() -> int:
                measured_box.append(
                    await measure(config_path, args.cycles, args.warmup, args.history)
                )
                return 0

            run_bounded(main_async())
        scrapes: list[float] | str = "--scrapes 0"
        if args.scrapes > 0:
            with contextlib.suppress(RuntimeError, OSError):
                scrapes = "node_exporter did not answer"
                scrapes = scrape_node_exporter(args.scrapes, folder)
    if not measured_box:
        return 1
    report(measured_box[0], scrapes, shown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
