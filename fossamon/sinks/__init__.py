"""Sinks: where alert events are delivered, each behind its own queue and worker.

`build_sink_workers(config.effective_sinks(), host, store)` builds one `SinkWorker` per
configured sink; the dispatcher asks each `accepts(event)` and `submit()`s a `Delivery`.
"""

from __future__ import annotations

from fossamon.sinks.base import (
    SINKS,
    Delivery,
    Outbox,
    Sink,
    SinkStats,
    SinkWorker,
    build_sink,
    build_sink_workers,
)

__all__ = [
    "SINKS",
    "Delivery",
    "Outbox",
    "Sink",
    "SinkStats",
    "SinkWorker",
    "build_sink",
    "build_sink_workers",
]
