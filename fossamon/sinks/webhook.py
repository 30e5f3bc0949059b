"""The `webhook` sink: each event as one JSON POST; 2xx is delivered, anything else is retried.

The body is the alerts-JSONL record (`event.to_json(host)`), or with `format = "slack"` a
Slack-compatible `{"text": "[CRITICAL] rule on host: summary"}`.

```toml
[[sinks]]
type = "webhook"
name = "ops"
url = "https://hooks.example.com/fossamon"
bearer_token = "${FOSSAMON_WEBHOOK_TOKEN}"
headers = { X-Team = "ops" }
min_severity = "critical"
timeout = "5s"
retries = 5
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fossamon.config import sink_name
from fossamon.sinks import _http
from fossamon.sinks.base import Delivery, EventSink, summary_line

if TYPE_CHECKING:
    import aiohttp

    from fossamon.config import WebhookSinkConfig


class WebhookSink(EventSink):
    def __init__(self, config: WebhookSinkConfig, host: str) -> None:
        super().__init__(sink_name(config))
        self.host = host
        self.format = config.format
        self.target = _http.http_target(self.name, config.url, config.headers, config.bearer_token)
        self._session: aiohttp.ClientSession | None = None

    def payload(self, delivery: Delivery) -> dict[str, Any]:
        if self.format == "slack":
            return {"text": summary_line(delivery.event, delivery.host)}
        return delivery.event.to_json(delivery.host)

    async def deliver(self, delivery: Delivery) -> None:
        if self._session is None or self._session.closed:
            self._session = _http.open_session()  # created in the running loop, on first use
        await _http.post_json(self._session, self.name, self.target, self.payload(delivery))

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
