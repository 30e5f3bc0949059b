"""When collectors run: one interval timer per collector, on the daemon's event loop.

Each collector runs first at start, then on a grid of `interval` from there, each run
delayed by a random share of `jitter` (the grid itself does not drift). A run that would
overlap the previous one is skipped and counted (Telegraf's "previous collection has not
completed"), never stacked up; a run longer than its interval logs a warning. A run that
comes late (the loop was busy) still runs, once: the grid points it missed are not made up.

This was APScheduler's AsyncIOScheduler (interval trigger, max_instances=1, coalesce,
misfire_grace_time=None), which is those few lines of timing plus 2 MB of the daemon's RSS
(importlib.metadata and its entry-point scan, multiprocessing, tzlocal) and 70 ms of its
start-up; see docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from fossamon.model import Batch, ErrorKind, Failure

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from fossamon.collectors.base import Collector

log = structlog.get_logger(__name__)

# After the grace: how long cancelled runs get to unwind, and each close() to finish.
CANCEL_WAIT = 0.5
CLOSE_TIMEOUT = 0.5


@dataclass(slots=True)
class RunStats:
    """What the daemon (STATUS=, health, /status) knows of one collector's runs."""

    interval: float
    jitter: float = 0.0
    run_limit: float = 0.0
    added_at: float = 0.0  # monotonic; health counts a first run's lateness from here
    runs: int = 0
    failed_runs: int = 0  # runs whose batch carries at least one error
    crashes: int = 0  # collect() raised: a bug, reported as kind "internal"
    skipped: int = 0
    overruns: int = 0
    last_start: float | None = None  # monotonic
    last_end: float | None = None  # monotonic
    last_duration: float = 0.0
    last_ok: bool = False
    last_errors: int = 0


class CollectorScheduler:
    def __init__(self, on_batch: Callable[[Batch], Awaitable[None]]) -> None:
        self._on_batch = on_batch
        self.collectors: dict[str, Collector] = {}
        self.stats: dict[str, RunStats] = {}
        self.inflight: dict[str, asyncio.Task[Any]] = {}
        self._grid: dict[str, float] = {}  # loop time of each collector's first run
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._running = False

    def add(self, collector: Collector) -> None:
        """Schedule `collector`; its first run is at start (now, if started already)."""
        name = collector.name
        self.collectors[name] = collector
        self.stats[name] = RunStats(
            interval=collector.interval,
            jitter=collector.jitter,
            run_limit=collector.run_limit,
            added_at=time.monotonic(),
        )
        if self._running:
            self._begin(name)

    async def remove(self, name: str, grace: float) -> None:
        """Unschedule a collector, let a run in flight finish (bounded), then close it."""
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        self._grid.pop(name, None)
        task = self.inflight.get(name)
        if task is not None and not task.done():
            await _wait_or_cancel({task}, grace)
        collector = self.collectors.pop(name, None)
        self.stats.pop(name, None)
        if collector is not None:
            await _close_all([collector])

    def start(self) -> None:
        self._running = True
        for name in self.collectors:
            self._begin(name)

    def all_ran_once(self) -> bool:
        return all(s.last_end is not None for s in self.stats.values())

    async def stop(self, grace: float) -> int:
        """Stop scheduling, give runs in flight `grace` seconds, cancel the rest.

        Returns how many runs had to be cancelled."""
        self._running = False
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        cancelled = await _wait_or_cancel(set(self.inflight.values()), grace)
        await _close_all(list(self.collectors.values()))
        return cancelled

    # --- timing ---------------------------------------------------------------------------

    def _begin(self, name: str) -> None:
        now = asyncio.get_running_loop().time()
        self._grid[name] = now
        self._arm(name, now)

    def _arm(self, name: str, when: float) -> None:
        self._timers[name] = asyncio.get_running_loop().call_at(when, self._due, name)

    def _due(self, name: str) -> None:
        collector, stats = self.collectors.get(name), self.stats.get(name)
        if not self._running or collector is None or stats is None:
            return
        running = self.inflight.get(name)
        if running is not None and not running.done():
            self._skipped(name, stats)
        else:
            task = asyncio.get_running_loop().create_task(self._run(collector))
            self.inflight[name] = task
        self._arm(name, self._next_run(name, stats))

    def _next_run(self, name: str, stats: RunStats) -> float:
        """The next grid point after now (missed ones are not made up), plus jitter."""
        now = asyncio.get_running_loop().time()
        start = self._grid[name]
        points = math.floor((now - start) / stats.interval) + 1
        # Spreading hosts' runs apart is all jitter is for; no secret depends on it.
        delay = random.random() * stats.jitter  # noqa: S311
        return start + points * stats.interval + delay

    async def _run(self, collector: Collector) -> None:
        name = collector.name
        stats = self.stats.get(name)
        if stats is None:  # removed by a reload while this run was queued
            return
        task = asyncio.current_task()
        if task is not None:
            self.inflight[name] = task
        try:
            # In flight until its batch is ingested too: the next run is skipped (and
            # counted) until then, and stop() waits for the ingest, not just the collection.
            await self._collect_and_ingest(collector, name, stats)
        finally:
            # Only our own entry: a run that outlived a reload must not unregister the
            # replacement collector's run.
            if task is not None and self.inflight.get(name) is task:
                del self.inflight[name]

    async def _collect_and_ingest(self, collector: Collector, name: str, stats: RunStats) -> None:
        stats.last_start = time.monotonic()
        try:
            batch = await collector.collect()
        except asyncio.CancelledError:
            # Shutdown ran out of grace: said once, quietly, and not as a crash.
            log.info("collector run cancelled", collector=name)
            return
        except Exception as exc:
            # collect() returns failures as data; getting here is a bug in a collector.
            # Report it as data too, so one broken collector cannot stop the daemon.
            log.exception("collector crashed", collector=name)
            stats.crashes += 1
            now = time.monotonic()
            batch = Batch(
                collector=name,
                ts=time.time(),
                duration=now - stats.last_start,
                errors=(Failure(name, ErrorKind.INTERNAL, f"{type(exc).__name__}: {exc}"),),
            )
        self._account(name, stats, batch)
        try:
            await self._on_batch(batch)
        except asyncio.CancelledError:
            log.info("collector run cancelled while its batch was ingested", collector=name)
        except Exception:  # a bug downstream must not go unseen in a task nobody awaits
            log.exception("ingesting a batch failed", collector=name)

    def _account(self, name: str, stats: RunStats, batch: Batch) -> None:
        stats.last_end = time.monotonic()
        stats.last_duration = batch.duration
        stats.runs += 1
        stats.last_errors = len(batch.errors)
        stats.last_ok = not batch.errors
        if batch.errors:
            stats.failed_runs += 1
        if batch.duration > stats.interval:
            stats.overruns += 1
            log.warning(
                "collector run took longer than its interval",
                collector=name,
                duration=round(batch.duration, 3),
                interval=stats.interval,
            )

    def _skipped(self, name: str, stats: RunStats) -> None:
        stats.skipped += 1
        log.warning(
            "previous run has not finished; this run is skipped",
            collector=name,
            skipped_total=stats.skipped,
        )


async def _wait_or_cancel(tasks: set[asyncio.Task[Any]], grace: float) -> int:
    pending = {t for t in tasks if not t.done()}
    if not pending:
        return 0
    _, still = await asyncio.wait(pending, timeout=grace)
    for task in still:
        task.cancel()
    if still:
        await asyncio.wait(still, timeout=CANCEL_WAIT)
    return len(still)


async def _close_all(collectors: list[Collector]) -> None:
    """Close collectors concurrently, each within CLOSE_TIMEOUT: a close stuck behind a
    wedged thread (a query in disk I/O, a hung mount) must not hold up the stop."""

    async def close(collector: Collector) -> None:
        # Not wait_for: it waits for the cancelled close() to unwind, and aiosqlite's close
        # unwinds only when its worker thread does. Cancel and walk away instead.
        task = asyncio.create_task(collector.close())
        done, _ = await asyncio.wait({task}, timeout=CLOSE_TIMEOUT)
        if not done:
            task.cancel()
            log.warning("collector did not close in time; abandoned", collector=collector.name)
        elif task.exception() is not None:
            log.error(
                "collector failed to close", collector=collector.name, error=repr(task.exception())
            )

    await asyncio.gather(*(close(c) for c in collectors))
