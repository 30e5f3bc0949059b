"""`Pipeline.ingest(batch)`: where one collector run fans out.

batch → metrics JSONL line → history windows → evaluator → alert events → alerts JSONL + log.
One direction only: collectors know nothing of rules, the evaluator nothing of outputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import structlog

from fossamon.model import AlertEvent, Batch, EventKind, SeriesKey, Severity, format_series

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fossamon.rules.evaluator import Evaluator
    from fossamon.rules.windows import History
    from fossamon.storage.jsonl import JsonlWriter

log = structlog.get_logger("fossamon.alerts")


class BatchObserver(Protocol):
    """Anything else that wants each batch and its events (the demo's screen printer)."""

    def __call__(self, batch: Batch, events: Sequence[AlertEvent]) -> None: ...


class Pipeline:
    def __init__(
        self,
        host: str,
        history: History,
        evaluator: Evaluator,
        metrics_out: JsonlWriter | None,
        alerts_out: JsonlWriter | None,
        observers: Sequence[BatchObserver] = (),
    ) -> None:
        self.host = host
        self.history = history
        self.evaluator = evaluator
        self.metrics_out = metrics_out
        self.alerts_out = alerts_out
        self.observers = list(observers)

    def ingest(self, batch: Batch) -> list[AlertEvent]:
        if self.metrics_out is not None:
            self.metrics_out.write(batch.to_json(self.host))
        self.history.add_batch(batch)
        try:
            events = self.evaluator.evaluate(batch.ts, self.history, {s.key for s in batch.samples})
        except Exception:  # a bug in a rule must not cost the next batches their evaluation
            log.exception("rule evaluation failed", collector=batch.collector)
            events = []
        self.emit(events)
        for observer in self.observers:
            try:
                observer(batch, events)
            except Exception:
                log.exception("batch observer failed", observer=repr(observer))
        return events

    def emit(self, events: Sequence[AlertEvent]) -> None:
        for event in events:
            if self.alerts_out is not None:
                self.alerts_out.write(event.to_json(self.host))
            log_event(event)

    def forget(self, collector: str, now: float, keep: set[SeriesKey] | None = None) -> None:
        """A reload removed or rebuilt `collector`: drop its series that are not in `keep`.

        Their firing alerts are resolved ("no longer collected") instead of staying firing
        forever on a target nobody probes any more.
        """
        gone = self.history.by_collector.get(collector, set()) - (keep or set())
        if not gone:
            return
        self.history.forget(gone)
        self.emit(self.evaluator.forget(gone, now))


def log_event(event: AlertEvent) -> None:
    """An alert in the daemon's log (journal): error for critical, warning for warning."""
    if event.kind == EventKind.RESOLVED:
        method = log.info
    elif event.severity == Severity.CRITICAL:
        method = log.error
    else:
        method = log.warning
    method(
        f"alert {event.kind}",
        rule=event.rule,
        severity=event.severity.label,
        series=format_series(event.metric, event.labels),
        value=event.value,
        threshold=event.threshold,
        summary=event.summary,
    )
