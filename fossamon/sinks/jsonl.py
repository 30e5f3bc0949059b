"""The `jsonl` sink: each notified event as one line of its own JSONL file.

The alerts file (`output.alerts.path`) already records every event, silenced ones included;
this sink is for a second file with only what passes its filters (say, critical alerts of
one rule, for a script to tail). Each line is `event.to_json(host)`, written whole.

```toml
[[sinks]]
type = "jsonl"
name = "critical-file"
path = "/var/log/fossamon/critical.jsonl"
min_severity = "critical"
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fossamon.config import sink_name
from fossamon.sinks.base import Delivery, DeliveryError, EventSink
from fossamon.storage.output import BufferedOutput
from fossamon.storage.rotation import CLOSE_WAIT

if TYPE_CHECKING:
    from fossamon.config import JsonlSinkConfig


class JsonlSink(EventSink):
    def __init__(self, config: JsonlSinkConfig, host: str) -> None:
        super().__init__(sink_name(config))
        self.host = host
        self.writer = BufferedOutput(config.path)

    async def deliver(self, delivery: Delivery) -> None:
        # The writer logs a failing file once per episode; raising here gets the retries.
        # Written in the file's thread: a slow disk holds this sink's queue, not the loop.
        if not await self.writer.write_through(delivery.event.to_json(delivery.host)):
            raise DeliveryError(self.name, f"cannot write {self.writer.path}")

    async def close(self) -> None:
        await self.writer.close(CLOSE_WAIT)
