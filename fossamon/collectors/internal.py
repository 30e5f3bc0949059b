"""fossamon's own counters as samples: what its sinks, output files and state store did.

Not a configured collector: the daemon reports these every minute as a `fossamon` batch in
the metrics file (and through the rules, so `fossamon_sink_dropped_total` can alert); the
exporter serves the same counters live on /metrics, built by the same function. Counters
count from the daemon's start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fossamon.model import Batch, Sample, make_labels

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fossamon.alerting import AlertDispatcher
    from fossamon.storage.output import LineOutput

COLLECTOR = "fossamon"
REPORT_EVERY = 60.0

METRICS = (
    "fossamon_sink_queue_depth",
    "fossamon_sink_sent_total",
    "fossamon_sink_failed_total",
    "fossamon_sink_dropped_total",
    "fossamon_sink_retries_total",
    "fossamon_output_lines_total",
    "fossamon_output_dropped_lines_total",
    "fossamon_output_rotations_total",
    "fossamon_output_rotation_failures_total",
    "fossamon_alert_events_total",
    "fossamon_alert_events_silenced_total",
    "fossamon_alerts_open",
    "fossamon_state_outbox_trimmed_total",
)


def internal_batch(now: float, alerts: AlertDispatcher, outputs: Mapping[str, LineOutput]) -> Batch:
    samples: list[Sample] = []
    for worker in alerts.workers:
        sink = make_labels(sink=worker.name)
        stats = worker.stats
        samples += [
            Sample("fossamon_sink_queue_depth", float(stats.queued), sink),
            Sample("fossamon_sink_sent_total", float(stats.sent), sink),
            Sample("fossamon_sink_failed_total", float(stats.failed), sink),
            Sample("fossamon_sink_dropped_total", float(stats.dropped), sink),
            Sample("fossamon_sink_retries_total", float(stats.retried), sink),
        ]
    for name, writer in outputs.items():
        file = make_labels(file=name)
        samples.append(Sample("fossamon_output_lines_total", float(writer.lines_written), file))
        samples.append(
            Sample("fossamon_output_dropped_lines_total", float(writer.lines_dropped), file)
        )
        samples.append(Sample("fossamon_output_rotations_total", float(writer.rotations), file))
        samples.append(
            Sample("fossamon_output_rotation_failures_total", float(writer.rotation_failures), file)
        )
    samples += [
        Sample("fossamon_alert_events_total", float(alerts.events_published)),
        Sample("fossamon_alert_events_silenced_total", float(alerts.events_silenced)),
        Sample("fossamon_alerts_open", float(len(alerts.evaluator.firing()))),
        Sample(
            "fossamon_state_outbox_trimmed_total",
            float(getattr(alerts.store, "outbox_trimmed", 0)),
        ),
    ]
    return Batch(COLLECTOR, now, 0.0, tuple(samples))
