"""The `log` sink (the default): each event as one line of the `fossamon.alerts` logger.

Under systemd the line's journal priority follows the alert: critical → crit (2), warning →
warning (4), resolved → notice (5), so `journalctl -u fossamon -p warning` lists what is
wrong now and `-p notice` adds what recovered.

```toml
[[sinks]]
type = "log"
min_severity = "warning"
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from fossamon.config import sink_name
from fossamon.model import EventKind, Severity
from fossamon.sinks.base import Delivery, EventSink, summary_line

if TYPE_CHECKING:
    from fossamon.config import LogSinkConfig

alerts_log = structlog.get_logger("fossamon.alerts")

# The stdlib has no NOTICE level: a resolved alert is logged at info and names the syslog
# level it means, for the journal renderer to pick the priority (fossamon.log).
SYSLOG_LEVEL_KEY = "syslog_level"


class LogSink(EventSink):
    def __init__(self, config: LogSinkConfig, host: str) -> None:
        super().__init__(sink_name(config))
        self.host = host

    async def deliver(self, delivery: Delivery) -> None:
        event = delivery.event
        fields: dict[str, object] = {
            "alert": str(event.kind),
            "rule": event.rule,
            "severity": event.severity.label,
            "fingerprint": event.key,
        }
        if event.labels:
            fields["labels"] = ",".join(f"{k}={v}" for k, v in event.labels)
        if event.value is not None:
            fields["value"] = event.value
        if event.threshold is not None:
            fields["threshold"] = event.threshold
        message = summary_line(event)
        if event.kind is EventKind.RESOLVED:
            alerts_log.info(message, **fields, **{SYSLOG_LEVEL_KEY: "notice"})
        elif event.severity >= Severity.CRITICAL:
            alerts_log.critical(message, **fields)
        else:
            alerts_log.warning(message, **fields)
