"""What the daemon shows outside, kept as batches arrive: the latest batch of each collector,
collection and evaluation durations (prometheus_client histograms in a registry of our own,
not the process-global one), and the last hour of the key series for trends and sparklines.

It is a pipeline observer: collectors and the evaluator know nothing of it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram

from fossamon.web.trends import TrendStore

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fossamon.model import AlertEvent, Batch, SeriesKey

# Collector runs span milliseconds (system) to the API timeout (seconds).
RUN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
EVAL_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.1)


class LiveView:
    def __init__(self) -> None:
        self.latest: dict[str, Batch] = {}
        self._timed: set[str] = set()
        self.trends = TrendStore()
        self.registry = CollectorRegistry(auto_describe=True)
        self.run_seconds = Histogram(
            "fossamon_collector_run_duration_seconds",
            "How long each collector run took.",
            ["collector"],
            buckets=RUN_BUCKETS,
            registry=self.registry,
        )
        self.evaluation_seconds = Histogram(
            "fossamon_rule_evaluation_duration_seconds",
            "How long evaluating the rules took, per batch and per tick.",
            buckets=EVAL_BUCKETS,
            registry=self.registry,
        )

    def __call__(self, batch: Batch, events: Sequence[AlertEvent]) -> None:
        del events  # the evaluator's state is read directly when asked
        self.latest[batch.collector] = batch
        if batch.collector != "fossamon":  # the daemon's own counters have no run to time
            self.run_seconds.labels(batch.collector).observe(batch.duration)
            self._timed.add(batch.collector)
        self.trends.add_batch(batch)

    def forget(self, collector: str, keys: set[SeriesKey], *, removed: bool) -> None:
        """A reload dropped series (or the whole collector): /metrics must not go on showing
        a target nobody probes any more."""
        self.trends.forget(keys)
        if removed:
            self.latest.pop(collector, None)
            if collector in self._timed:
                self._timed.discard(collector)
                self.run_seconds.remove(collector)
        elif (batch := self.latest.get(collector)) is not None:
            kept = tuple(s for s in batch.samples if s.key not in keys)
            self.latest[collector] = dataclasses.replace(batch, samples=kept)
