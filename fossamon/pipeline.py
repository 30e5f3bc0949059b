"""`Pipeline.ingest(batch)`: where one collector run fans out.

batch → metrics JSONL line → history windows → evaluator → alert events → the dispatcher
(silences, state store, alerts JSONL, sinks).
One direction only: collectors know nothing of rules, the evaluator nothing of outputs.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

import structlog

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from fossamon.alerting import AlertDispatcher
    from fossamon.clock import WallClock
    from fossamon.model import AlertEvent, Batch, SeriesKey
    from fossamon.rules.evaluator import Evaluator
    from fossamon.rules.windows import History
    from fossamon.storage.output import LineOutput

log = structlog.get_logger("fossamon.pipeline")


class BatchObserver(Protocol):
    """Anything else that wants each batch and its events (the demo's screen printer)."""

    def __call__(self, batch: Batch, events: Sequence[AlertEvent]) -> None: ...


class Pipeline:
    def __init__(
        self,
        host: str,
        history: History,
        evaluator: Evaluator,
        metrics_out: LineOutput | None,
        alerts: AlertDispatcher,
        observers: Sequence[BatchObserver] = (),
        *,
        clock: WallClock | None = None,
    ) -> None:
        """`clock`: follow steps of the wall clock (the daemon's); without one, batches and
        ticks are taken at their word (tests replaying a history)."""
        self.host = host
        self.clock = clock
        self.history = history
        self.evaluator = evaluator
        self.metrics_out = metrics_out
        self.alerts = alerts
        self.observers = list(observers)
        # Told how long each evaluation took (the exporter's histogram), when set.
        self.evaluation_timer: Callable[[float], None] | None = None

    async def ingest(self, batch: Batch) -> list[AlertEvent]:
        if self.metrics_out is not None:
            self.metrics_out.write(batch.to_json(self.host), free_text=batch.has_free_text)
        ts = batch.ts
        if self.clock is not None:
            self.follow_clock()
            ts = self.clock.current(ts, batch.duration)
        self.history.add_batch(batch, ts)
        began = time.perf_counter()
        try:
            events = self.evaluator.evaluate(ts, self.history, {s.key for s in batch.samples})
        except Exception:  # a bug in a rule must not cost the next batches their evaluation
            log.exception("rule evaluation failed", collector=batch.collector)
            events = []
        self._timed(began)
        await self.alerts.publish(events, ts)
        for observer in self.observers:
            try:
                observer(batch, events)
            except Exception:
                log.exception("batch observer failed", observer=repr(observer))
        return events

    async def tick(self, now: float) -> list[AlertEvent]:
        """Time passing: missing data, repeats, flap release, silences that came or went."""
        now = self.follow_clock(now)
        await self.alerts.refresh_silences(now)
        now = self.follow_clock(now)  # the wait may have let a batch see a step: today's terms
        began = time.perf_counter()
        try:
            events = self.evaluator.tick(now)
        except Exception:
            log.exception("rule evaluation failed (tick)")
            events = []
        self._timed(began)
        await self.alerts.publish(events, now)
        return events

    def follow_clock(self, now: float | None = None) -> float:
        """Move the times the windows, the evaluator and the dispatcher keep by a step of the
        wall clock, if it took one (see fossamon.clock); return the time to go on with: the
        wall clock read with the check (without a clock: `now`, a test's time, or the wall
        clock's)."""
        if self.clock is None:
            return time.time() if now is None else now
        step, wall = self.clock.sync()
        if step:
            log.warning(
                "the wall clock stepped; windows and alert timers moved with it",
                step=f"{step:+.3f}s",
            )
            self.history.shift(step)
            self.evaluator.shift(step)
            self.alerts.shift(step)
        return wall

    def _timed(self, began: float) -> None:
        if self.evaluation_timer is not None:
            self.evaluation_timer(time.perf_counter() - began)

    async def forget(
        self, collector: str, now: float, keep: set[SeriesKey] | None = None
    ) -> set[SeriesKey]:
        """A reload removed or rebuilt `collector`: drop its series that are not in `keep`,
        and return them.

        Their open alerts are resolved ("no longer collected") instead of staying firing
        forever on a target nobody probes any more.
        """
        gone = self.history.by_collector.get(collector, set()) - (keep or set())
        if not gone:
            return gone
        self.history.forget(gone)
        await self.alerts.publish(self.evaluator.forget(gone, now), now)
        return gone
