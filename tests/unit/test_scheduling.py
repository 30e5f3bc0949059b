from __future__ import annotations

import asyncio
import itertools
import time

from structlog.testing import capture_logs

from fossamon.model import Batch, ErrorKind, Sample
from fossamon.scheduling import CollectorScheduler
from fossamon.testing import ScriptedCollector


class Recorder:
    def __init__(self) -> None:
        self.batches: list[Batch] = []

    async def __call__(self, batch: Batch) -> None:
        self.batches.append(batch)


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


class TestScheduling:
    async def test_first_run_at_start_then_every_interval(self):
        seen = Recorder()
        collector = ScriptedCollector("c", [[Sample("m", 1.0)]], interval=0.2)
        scheduler = CollectorScheduler(seen)
        scheduler.add(collector)
        started = time.monotonic()
        scheduler.start()
        await wait_for(lambda: len(seen.batches) >= 3)
        await scheduler.stop(grace=1)
        first, second, third = (t - started for t in collector.started[:3])
        assert first < 0.15
        assert 0.15 < second - first < 0.35
        assert 0.15 < third - second < 0.35
        assert scheduler.stats["c"].runs >= 3
        assert scheduler.all_ran_once()
        assert collector.closed == 1

    async def test_overlapping_runs_are_skipped_and_counted(self):
        seen = Recorder()
        collector = ScriptedCollector("slow", [[]], interval=0.1, delay=0.45)
        scheduler = CollectorScheduler(seen)
        scheduler.add(collector)
        with capture_logs() as logs:
            scheduler.start()
            await wait_for(lambda: len(seen.batches) >= 2)
            await scheduler.stop(grace=1)
        stats = scheduler.stats["slow"]
        assert stats.skipped >= 3
        assert stats.overruns >= 2
        starts = collector.started
        # never two runs at once: each starts after the previous one's 0.45 s
        assert all(b - a >= 0.44 for a, b in itertools.pairwise(starts))
        events = {entry["event"] for entry in logs}
        assert "previous run has not finished; this run is skipped" in events
        assert "collector run took longer than its interval" in events

    async def test_a_crashing_collector_becomes_an_internal_error_batch(self):
        seen = Recorder()
        collector = ScriptedCollector("bad", [RuntimeError("bug in collector")], interval=0.1)
        scheduler = CollectorScheduler(seen)
        scheduler.add(collector)
        with capture_logs() as logs:
            scheduler.start()
            await wait_for(lambda: len(seen.batches) >= 2)
            await scheduler.stop(grace=1)
        (error,) = seen.batches[0].errors
        assert (error.kind, error.message) == (ErrorKind.INTERNAL, "RuntimeError: bug in collector")
        assert scheduler.stats["bad"].crashes >= 2
        assert any(e["event"] == "collector crashed" for e in logs)

    async def test_stop_waits_for_a_run_in_flight_within_grace(self):
        seen = Recorder()
        collector = ScriptedCollector("c", [[Sample("m", 1.0)]], interval=10, delay=0.3)
        scheduler = CollectorScheduler(seen)
        scheduler.add(collector)
        scheduler.start()
        await wait_for(lambda: collector.calls == 1)
        cancelled = await scheduler.stop(grace=2)
        assert cancelled == 0
        assert len(seen.batches) == 1  # the run finished and was delivered

    async def test_stop_cancels_what_outlives_the_grace(self):
        seen = Recorder()
        collector = ScriptedCollector("hung", [[]], interval=10, delay=30)
        scheduler = CollectorScheduler(seen)
        scheduler.add(collector)
        scheduler.start()
        await wait_for(lambda: collector.calls == 1)
        began = time.monotonic()
        cancelled = await scheduler.stop(grace=0.2)
        assert cancelled == 1
        assert time.monotonic() - began < 1.5
        assert seen.batches == []
        assert collector.closed == 1

    async def test_remove_unschedules_and_closes(self):
        seen = Recorder()
        keep = ScriptedCollector("keep", [[]], interval=0.1)
        drop = ScriptedCollector("drop", [[]], interval=0.1)
        scheduler = CollectorScheduler(seen)
        scheduler.add(keep)
        scheduler.add(drop)
        scheduler.start()
        await wait_for(lambda: drop.calls >= 1 and keep.calls >= 1)
        await scheduler.remove("drop", grace=1)
        calls = drop.calls
        await wait_for(lambda: keep.calls >= calls + 3)
        assert drop.calls == calls
        assert drop.closed == 1
        assert "drop" not in scheduler.stats
        await scheduler.stop(grace=1)


class TestARunIncludesItsIngest:
    """A run is in flight until its batch is ingested (the pipeline, the alert sinks' queues):
    otherwise slow ingests pile up unseen and stop() returns while they still run."""

    async def test_a_slow_ingest_holds_the_next_run_and_the_skip_is_counted(self):
        active, peak = 0, 0

        async def slow_ingest(_batch: Batch) -> None:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.35)
            active -= 1

        scheduler = CollectorScheduler(slow_ingest)
        scheduler.add(ScriptedCollector("fast", [[]], interval=0.1))
        scheduler.start()
        await asyncio.sleep(1.0)
        await scheduler.stop(grace=2)
        assert peak == 1
        assert scheduler.stats["fast"].skipped >= 3
        assert active == 0  # stop() waited for the ingest in flight

    async def test_an_ingest_that_raises_is_logged_not_lost(self):
        async def broken_ingest(_batch: Batch) -> None:
            raise RuntimeError("bug downstream")

        scheduler = CollectorScheduler(broken_ingest)
        collector = ScriptedCollector("c", [[]], interval=0.1)
        scheduler.add(collector)
        with capture_logs() as logs:
            scheduler.start()
            await wait_for(lambda: len(collector.started) >= 2)
            await scheduler.stop(grace=1)
        failures = [e for e in logs if e["event"] == "ingesting a batch failed"]
        assert failures
        assert failures[0]["collector"] == "c"


class TestTiming:
    async def test_a_busy_loop_does_not_make_up_the_runs_it_missed(self):
        seen = Recorder()
        collector = ScriptedCollector("c", [[]], interval=0.1)
        scheduler = CollectorScheduler(seen)
        scheduler.add(collector)
        scheduler.start()
        await wait_for(lambda: collector.calls == 1)
        # the loop is held until halfway between grid points 5 and 6: five of them pass
        time.sleep(max(0.0, collector.started[0] + 0.55 - time.monotonic()))
        await asyncio.sleep(0.01)
        assert collector.calls == 2  # one late run, not five
        await wait_for(lambda: collector.calls == 3)
        await scheduler.stop(grace=1)
        late, next_one = collector.started[1:3]
        assert next_one - late < 0.12  # back on the grid: the next point, not a full interval

    async def test_jitter_delays_runs_within_its_bound_and_the_grid_does_not_drift(self):
        seen = Recorder()
        collector = ScriptedCollector("c", [[]], interval=0.2, jitter=0.1)
        scheduler = CollectorScheduler(seen)
        scheduler.add(collector)
        scheduler.start()
        await wait_for(lambda: collector.calls >= 6, timeout=10)
        await scheduler.stop(grace=1)
        first = collector.started[0]
        offsets = [t - first - n * 0.2 for n, t in enumerate(collector.started[:6])]
        assert all(offset >= -0.01 for offset in offsets)  # never before its grid point
        assert max(offsets[1:]) < 0.1 + 0.1  # jitter, and some slack for a busy machine
        assert any(offset > 0.005 for offset in offsets[1:])  # jittered at all

    async def test_a_collector_added_after_start_runs_at_once(self):
        seen = Recorder()
        scheduler = CollectorScheduler(seen)
        scheduler.start()
        late = ScriptedCollector("late", [[]], interval=10)
        began = time.monotonic()
        scheduler.add(late)
        await wait_for(lambda: late.calls == 1)
        assert late.started[0] - began < 0.1
        await scheduler.stop(grace=1)
