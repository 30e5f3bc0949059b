"""The `alertmanager` sink: alerts pushed to Alertmanager's API v2 (`POST /api/v2/alerts`).

Alertmanager keeps state, so this sink mirrors it rather than forwarding events:

- Each alert is a label set: the rule's labels, `instance` (this host), the configured
  `labels`, `alertname` (the rule; always set — Alertmanager accepts alerts without it) and
  `severity`. A severity change is therefore a new alert, and the old one is ended with it.
- A firing alert is re-sent every `resend_every` with `endsAt` = now + 4 * `resend_every`,
  so Alertmanager never resolves a live alert on its own, yet does resolve it if fossamon
  dies for good.
- A resolved alert is sent with `endsAt` = its resolve time and re-sent for 5 minutes (an
  Alertmanager that was restarted or briefly unreachable still hears of it), then forgotten.
- An event's outbox row counts as delivered once a POST carrying its alert succeeded, even if
  that was a periodic re-send after the event's own retries ran out.
- After a restart, `seed_firing` restores the firing alerts, re-sent at once.

Annotations: `summary`, `value`, `threshold` and a `description`.

```toml
[[sinks]]
type = "alertmanager"
url = "http://127.0.0.1:9093"
resend_every = "1m"
labels = { team = "ops" }
```
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fossamon.config import sink_name
from fossamon.model import EventKind, Severity, iso_ts
from fossamon.sinks import _http
from fossamon.sinks.filter import SinkFilter

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    import aiohttp

    from fossamon.config import AlertmanagerSinkConfig
    from fossamon.model import AlertEvent
    from fossamon.sinks.base import Delivery

RESOLVED_RESEND_FOR = 300.0  # seconds a resolve keeps being re-sent
ENDS_AFTER_RESENDS = 4  # a firing alert's endsAt: this many resend intervals ahead

# (fingerprint, severity): one Alertmanager alert, because severity is one of its labels
Key = tuple[str, str]


@dataclass(slots=True)
class _Alert:
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    ends_at: float | None = None  # None: firing
    last_sent: float = -math.inf
    forget_at: float = math.inf  # for a resolved alert: once it reached Alertmanager
    resolve_sent: bool = False
    pending: set[int] = field(default_factory=set)  # outbox ids waiting for a successful POST
    seeded: bool = False  # restored at a restart from the evaluator's state

    def end(self, at: float, now: float) -> None:
        # The wall clock may have stepped back since it began: an endsAt still ahead would keep
        # it firing in Alertmanager for as long, and Alertmanager refuses an end before the
        # start. Then it began and ended now, as far as this clock can say.
        self.starts_at = min(self.starts_at, at)
        self.ends_at = at
        self.forget_at = now + RESOLVED_RESEND_FOR
        self.resolve_sent = False


def _number(value: float) -> str:
    return f"{value:.6g}"


def alert_annotations(event: AlertEvent) -> dict[str, str]:
    notes = {"summary": event.summary}
    if event.value is not None:
        notes["value"] = _number(event.value)
    if event.threshold is not None:
        notes["threshold"] = _number(event.threshold)
    if event.metric:
        how = f"{event.aggregate or 'last'}({event.metric})"
        if event.window:
            how += f" over {event.window:g}s"
        value = "no data" if event.value is None else _number(event.value)
        limit = "" if event.threshold is None else f", threshold {_number(event.threshold)}"
        notes["description"] = f"{how} = {value}{limit}"
    return notes


class AlertmanagerSink:
    max_batch = 64
    mirrors_state = True

    def __init__(
        self,
        config: AlertmanagerSinkConfig,
        host: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = sink_name(config)
        self.host = host
        self.resend_every = config.resend_every
        self.extra_labels = dict(config.labels)
        url = config.url.rstrip("/") + "/api/v2/alerts"
        self.target = _http.http_target(self.name, url, config.headers, config.bearer_token)
        self.alerts: dict[Key, _Alert] = {}
        self._filter = SinkFilter(config)
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._batch_keys: list[Key] = []
        self._batch_done: list[int] = []  # ids of events that needed no POST
        self._seeded_at = 0.0  # when a restart seeded the map (0: never)

    # --- the alert map ----------------------------------------------------------------

    def labels(self, event: AlertEvent, host: str) -> dict[str, str]:
        # An empty value means "no such label" to Alertmanager; sending it would only differ
        # from what matchers on its side expect.
        labels = {k: v for k, v in event.labels if v}
        labels["instance"] = host
        labels.update(self.extra_labels)
        labels["alertname"] = event.rule
        labels["severity"] = event.severity.label
        return labels

    def apply(self, event: AlertEvent, host: str, delivery_id: int, now: float) -> list[Key]:
        """Bring the map up to date with one event; the keys whose alert must be sent."""
        fingerprint = event.key
        mine = [(k, a) for k, a in self.alerts.items() if k[0] == fingerprint]
        touched: list[Key] = self._end_previous(event, now)
        if event.ts < self._seeded_at and any(a.seeded for _, a in mine):
            # An outbox entry from before the restart, behind the state the restart seeded:
            # superseded. (Live events arrive in the evaluator's order, whatever their
            # timestamps: a tick's event may carry a later ts than a slow probe's.)
            return touched
        severity = event.severity.label
        ending = event.kind is EventKind.RESOLVED or not self._filter.wants(
            event.rule, event.severity, event.labels
        )
        for key, alert in mine:
            if alert.ends_at is None and (ending or key[1] != severity):
                alert.end(event.ts, now)
                touched.append(key)
        key = (fingerprint, severity)
        old = self.alerts.get(key)
        if not ending:
            alert = _Alert(self.labels(event, host), alert_annotations(event), event.since)
            if old is not None:
                # events it still waits for are superseded: delivered with this one
                alert.pending = old.pending
                if old.ends_at is None:
                    alert.starts_at = min(old.starts_at, event.since)
                    alert.last_sent = old.last_sent
            self.alerts[key] = alert
            touched.append(key)
        elif event.kind is EventKind.RESOLVED and not touched:
            # A resolve for an alert not firing in the map (it fired before a restart that lost
            # it, or went to Alertmanager before this sink was configured): say it anyway.
            alert = old or _Alert(self.labels(event, host), alert_annotations(event), event.since)
            alert.end(event.ts, now)
            self.alerts[key] = alert
            touched.append(key)
        if delivery_id:
            for touched_key in touched:
                self.alerts[touched_key].pending.add(delivery_id)
        return touched

    def seed_firing(self, events: Sequence[AlertEvent]) -> None:
        now = self._clock()
        self._seeded_at = now
        for event in events:
            for key in self.apply(event, self.host, 0, now):
                self.alerts[key].seeded = True

    def absorb(self, event: AlertEvent) -> None:
        self.apply(event, self.host, 0, self._clock())

    def _end_previous(self, event: AlertEvent, now: float) -> list[Key]:
        """An escalation or de-escalation replayed after a restart ends an alert Alertmanager
        holds at the previous severity, which the seeded map never had: end it explicitly."""
        if event.kind not in {EventKind.ESCALATED, EventKind.DEESCALATED}:
            return []
        key = (event.key, event.previous.label)
        if event.previous <= Severity.OK or key in self.alerts or event.ts >= self._seeded_at:
            return []
        alert = _Alert(
            {**self.labels(event, self.host), "severity": event.previous.label},
            alert_annotations(event),
            event.since,
        )
        alert.end(event.ts, now)
        self.alerts[key] = alert
        return [key]

    def _forget(self, now: float) -> None:
        done = [
            key
            for key, alert in self.alerts.items()
            if alert.ends_at is not None
            and alert.resolve_sent
            # (further away than it can be: the clock stepped back since; forget it now)
            and not 0 < alert.forget_at - now <= RESOLVED_RESEND_FOR
        ]
        for key in done:
            del self.alerts[key]

    def render(self, alert: _Alert, now: float) -> dict[str, Any]:
        ends = alert.ends_at
        if ends is None:
            ends = now + ENDS_AFTER_RESENDS * self.resend_every
        return {
            "labels": alert.labels,
            "annotations": alert.annotations,
            "startsAt": iso_ts(alert.starts_at),
            "endsAt": iso_ts(ends),
        }

    # --- the Sink protocol ------------------------------------------------------------

    def prepare(self, batch: Sequence[Delivery]) -> None:
        now = self._clock()
        self._batch_keys, self._batch_done = [], []
        for delivery in batch:
            keys = self.apply(delivery.event, delivery.host, delivery.id, now)
            if keys:
                self._batch_keys.extend(keys)
            elif delivery.id:
                self._batch_done.append(delivery.id)

    async def send(self, batch: Sequence[Delivery]) -> Sequence[int]:  # noqa: ARG002
        # `prepare` applied this batch to the map and noted what it touched
        keys = [k for k in dict.fromkeys(self._batch_keys) if k in self.alerts]
        delivered = await self._post(keys) if keys else []
        return list(dict.fromkeys([*self._batch_done, *delivered]))

    def next_due(self, now: float) -> float | None:
        if not self.alerts:
            return None
        due = math.inf
        for alert in self.alerts.values():
            due = min(due, alert.last_sent + self.resend_every)
            if alert.resolve_sent:
                due = min(due, alert.forget_at)
        # a clock stepped backwards must not postpone the re-sends by more than one interval
        return min(due - now, self.resend_every)

    async def resend(self, now: float) -> Sequence[int]:
        self._forget(now)
        if not self.alerts:
            return []
        return await self._post(list(self.alerts))

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _post(self, keys: Iterable[Key]) -> list[int]:
        if self._session is None or self._session.closed:
            self._session = _http.open_session()
        now = self._clock()
        chosen = [(key, self.alerts[key]) for key in keys]
        payload = [self.render(alert, now) for _, alert in chosen]
        await _http.post_json(self._session, self.name, self.target, payload)
        delivered: list[int] = []
        for _, alert in chosen:
            alert.last_sent = now
            if alert.ends_at is not None and not alert.resolve_sent:
                alert.resolve_sent = True
                alert.forget_at = max(alert.forget_at, now)
            delivered.extend(alert.pending)
            alert.pending.clear()
        return list(dict.fromkeys(delivered))  # one event may ride on two alerts (escalation)
