"""Public fakes for tests of fossamon and of code built on it (like structlog.testing).

A fake stands in only where the real thing is the subject of another test.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from fossamon.model import AlertEvent, Batch, Failure, Sample

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence


class ScriptedCollector:
    """A collector that returns scripted samples, optionally after a delay or by raising.

    Each `collect()` takes the next step of `script` (the last one repeats). A step is a list
    of samples, a Failure, an Exception instance (raised: simulates a buggy collector) or a
    float (seconds to sleep first, then no samples).
    """

    def __init__(
        self,
        name: str,
        script: Sequence[Sequence[Sample] | Failure | BaseException | float],
        *,
        interval: float = 1.0,
        jitter: float = 0.0,
        delay: float = 0.0,
        run_limit: float | None = None,
    ) -> None:
        self.name = name
        self.interval = interval
        self.jitter = jitter
        self.run_limit = delay if run_limit is None else run_limit
        self.delay = delay
        self.script = list(script)
        self.calls = 0
        self.closed = 0
        self.started: list[float] = []

    async def collect(self) -> Batch:
        step = self.script[min(self.calls, len(self.script) - 1)] if self.script else []
        self.calls += 1
        self.started.append(time.monotonic())
        ts, began = time.time(), time.perf_counter()
        if self.delay:
            await asyncio.sleep(self.delay)
        samples: tuple[Sample, ...] = ()
        errors: tuple[Failure, ...] = ()
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, float | int):
            await asyncio.sleep(float(step))
        elif isinstance(step, Failure):
            errors = (step,)
        else:
            samples = tuple(step)
        return Batch(self.name, ts, time.perf_counter() - began, samples, errors)

    async def close(self) -> None:
        self.closed += 1


class ManualClock:
    """Time that moves only when told: for the evaluator, which takes `now` as an argument."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    def __call__(self) -> float:
        return self.now


class RecordingObserver:
    """A pipeline observer that keeps every batch and event it is shown."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.events: list[AlertEvent] = []

    def __call__(self, batch: Batch, events: Iterable[AlertEvent]) -> None:
        self.batches.append(batch)
        self.events.extend(events)
