"""What a sink is, and the worker that runs one: a bounded queue and its own asyncio task.

The caller (the alert dispatcher) asks `accepts(event)`, persists the event in the state
store's outbox, and hands it to `submit()`, which never blocks and never raises. The worker
then delivers in the background, so a sink that hangs or fails delays nothing but itself:

- a full queue drops its OLDEST event, counts it and tells the outbox (logged once per episode);
- each attempt is bounded by the sink's `timeout`; a failed one is retried `retries` times
  with exponential backoff and full jitter; after that the event counts as failed, is logged
  at error and stays in the outbox, so the next start re-submits it, and it is kept here
  ("parked"): every `backoff_max` the parked events are delivered again, in order, with
  their retries, until the receiver takes them (a receiver down for an hour gets them when it
  is back, without a restart). New events wait behind parked ones, so a receiver sees each
  alert's events in order; parked and queued events together are bounded by `queue_size`;
- `stop(grace)` delivers what it can within `grace` (one attempt each), then cancels.

A `Sink` only delivers; queueing, retries and timeouts live here, once for every kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from fossamon.config import sink_name
from fossamon.errors import SinkError
from fossamon.model import AlertEvent, EventKind, Severity
from fossamon.sinks.filter import SinkFilter

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from fossamon.config import SinkConfig

log = structlog.get_logger("fossamon.sinks")

# After `grace`, a cancelled worker and the sink's close() each get this long (together
# well under the half second that stop() promises beyond grace).
CANCEL_WAIT = 0.2
CLOSE_WAIT = 0.2


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int  # outbox row id in the state store (0: not persisted)
    event: AlertEvent
    host: str


@dataclass(slots=True)
class SinkStats:
    queued: int = 0  # waiting in the queue now
    sent: int = 0  # events delivered
    failed: int = 0  # events given up after every retry (they stay in the outbox)
    dropped: int = 0  # events pushed out of a full queue
    retried: int = 0  # retry attempts


class Outbox(Protocol):
    def delivered(self, ids: Sequence[int]) -> None: ...

    def dropped(self, ids: Sequence[int]) -> None: ...


class Sink(Protocol):
    """Delivers batches of events; raises on failure. The worker queues, retries, times out."""

    max_batch: int
    """How many queued events one `send` may take (1 unless the receiver takes batches)."""
    mirrors_state: bool
    """True when the receiver keeps alert state (Alertmanager): it must then see the end of
    every alert it was told about, whatever the filters say about that event."""

    def prepare(self, batch: Sequence[Delivery]) -> None:
        """Called once per batch, before its first attempt."""

    async def send(self, batch: Sequence[Delivery]) -> Sequence[int]:
        """One attempt. Returns the outbox ids now delivered (may include earlier ones)."""
        ...

    def seed_firing(self, events: Sequence[AlertEvent]) -> None:
        """The alerts firing at a restart (already filtered by this sink's rules)."""

    def absorb(self, event: AlertEvent) -> None:
        """An event dropped from a full queue: a receiver that keeps state still updates
        what it re-sends, so a dropped `resolved` cannot leave an alert firing there."""

    def next_due(self, now: float) -> float | None:
        """Seconds until `resend` has work (≤ 0: now), or None for a sink without any."""
        ...

    async def resend(self, now: float) -> Sequence[int]:
        """Periodic work (one attempt); returns outbox ids it delivered."""
        ...

    async def close(self) -> None: ...


class DeliveryError(SinkError):
    """One attempt failed. The reason names no secret and is safe to log as it is."""

    def __init__(self, sink: str, reason: str, *, permanent: bool = False) -> None:
        self.reason = reason
        # The receiver refused the request itself (HTTP 4xx but 408/429): sending the same
        # again cannot succeed, so it is not retried, nor kept for a restart.
        self.permanent = permanent
        super().__init__(sink, reason)


class EventSink:
    """Base for sinks that deliver one event at a time and keep no state."""

    max_batch = 1
    mirrors_state = False

    def __init__(self, name: str) -> None:
        self.name = name

    def prepare(self, batch: Sequence[Delivery]) -> None:
        pass

    async def send(self, batch: Sequence[Delivery]) -> Sequence[int]:
        for delivery in batch:
            await self.deliver(delivery)
        return [d.id for d in batch]

    async def deliver(self, delivery: Delivery) -> None:
        raise NotImplementedError

    def seed_firing(self, events: Sequence[AlertEvent]) -> None:
        pass

    def absorb(self, event: AlertEvent) -> None:
        pass

    def next_due(self, now: float) -> float | None:  # noqa: ARG002 - nothing periodic
        return None

    async def resend(self, now: float) -> Sequence[int]:  # noqa: ARG002 - nothing periodic
        return []

    async def close(self) -> None:
        pass


def backoff_delay(retry: int, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter (uniform in [0, min(cap, base·2^retry)]): failing senders spread out."""
    ceiling = min(cap, base * 2.0 ** min(retry, 62))
    return rng.uniform(0.0, ceiling)


def summary_line(event: AlertEvent, host: str | None = None) -> str:
    """`[CRITICAL] api_latency on web1: p95 1.2 s above 1 s (escalated)` — one line to read."""
    where = f" on {host}" if host else ""
    if event.kind is EventKind.RESOLVED:
        return f"[RESOLVED] {event.rule}{where}: {event.summary}"
    line = f"[{event.severity.label.upper()}] {event.rule}{where}: {event.summary}"
    if event.kind is EventKind.DEESCALATED and event.previous > Severity.OK:
        return f"{line} (deescalated from {event.previous.label})"
    if event.kind in {EventKind.ESCALATED, EventKind.DEESCALATED, EventKind.REPEAT}:
        return f"{line} ({event.kind})"
    if event.kind is EventKind.NODATA and "no data" not in event.summary:
        return f"{line} (no data)"
    return line  # firing; flapping says so in its summary


def _reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, DeliveryError):
        return exc.reason
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g}s"
    # A bug in a sink: its type and message, on one line (sinks put no secret in exceptions).
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class SinkWorker:
    """One sink behind its bounded queue and its own task."""

    def __init__(
        self,
        config: SinkConfig,
        sink: Sink,
        outbox: Outbox,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = sink_name(config)
        self.kind = config.type
        self.config = config
        self.stats = SinkStats()
        self.sink = sink
        self._outbox = outbox
        self._filter = SinkFilter(config)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._clock = clock
        self._queue: deque[Delivery] = deque()
        self._parked: deque[Delivery] = deque()  # given up on; delivered again at _parked_until
        # monotonic, like _resend_not_before: a step of the wall clock must not hold them
        self._parked_until = 0.0
        self._reported: set[int] = set()  # id() of parked deliveries logged as failed already
        self._in_flight: Sequence[Delivery] = ()
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._open: set[str] = set()  # fingerprints this sink was told are firing
        self._episode_dropped = 0  # dropped in the current overflow episode (0: none)
        self._resend_failures = 0
        self._resend_not_before = 0.0

    # --- the caller's side: sync, never blocks, never raises ---------------------------

    def accepts(self, event: AlertEvent) -> bool:
        if self.sink.mirrors_state and event.key in self._open:
            # The receiver holds this alert: it must see how it goes on and ends; a silenced
            # event only when it ends it (silenced means: no news, but no ghost left behind).
            return event.silenced_by is None or event.kind is EventKind.RESOLVED
        return self._filter.accepts(event)

    def submit(self, delivery: Delivery) -> None:
        try:
            self._enqueue(delivery)
        except Exception:  # the caller must never fail because of a sink
            log.exception("cannot queue an event for a sink", sink=self.name)

    def seed_firing(self, events: Sequence[AlertEvent]) -> None:
        """The alerts firing when the daemon (re)started, for receivers that keep state."""
        if not self.sink.mirrors_state:
            return
        wanted = [
            e
            for e in events
            if e.silenced_by is None
            and e.kind is not EventKind.RESOLVED
            and self._filter.wants(e.rule, e.severity, e.labels)
        ]
        self._open.update(e.key for e in wanted)
        try:
            self.sink.seed_firing(wanted)
        except Exception:  # a bad record must not stop the daemon's start
            log.exception("cannot restore firing alerts into a sink", sink=self.name)
        self._wakeup.set()

    def _enqueue(self, delivery: Delivery) -> None:
        if self._closed:
            # stopping: the event stays in the outbox, and the next start re-submits it
            log.debug("sink is stopping; event left in the outbox", sink=self.name)
            return
        if self.sink.mirrors_state:
            if delivery.event.kind is EventKind.RESOLVED:
                self._open.discard(delivery.event.key)
            else:
                self._open.add(delivery.event.key)
        if len(self._queue) + len(self._parked) >= self.config.queue_size:
            self._drop_oldest()
        self._queue.append(delivery)
        self.stats.queued = len(self._queue) + len(self._parked)
        self._wakeup.set()

    def _drop_oldest(self) -> None:
        oldest = self._parked.popleft() if self._parked else self._queue.popleft()
        self._reported.discard(id(oldest))
        self.stats.dropped += 1
        if self.sink.mirrors_state:
            try:
                self.sink.absorb(oldest.event)
            except Exception:
                log.exception("cannot apply a dropped event to a sink's state", sink=self.name)
        if self._episode_dropped == 0:
            log.warning(
                "sink queue is full; dropping the oldest events",
                sink=self.name,
                queue_size=self.config.queue_size,
                rule=oldest.event.rule,
                fingerprint=oldest.event.key,
            )
        self._episode_dropped += 1
        if oldest.id:
            try:
                self._outbox.dropped([oldest.id])
            except Exception:  # the store reports its own trouble
                log.exception("cannot mark a dropped event in the outbox", sink=self.name)

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"sink {self.name}"
            )
            self._task.add_done_callback(self._finished)

    async def stop(self, grace: float) -> None:
        """Deliver what can be delivered within `grace`, then cancel; returns by grace + 0.5 s."""
        self._closed = True
        self._stopping.set()
        self._wakeup.set()
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=max(grace, 0.0))
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=CANCEL_WAIT)
        try:
            async with asyncio.timeout(CLOSE_WAIT):
                await self.sink.close()
        except Exception as exc:  # noqa: BLE001 - stopping goes on whatever a sink does
            log.warning("closing a sink failed", sink=self.name, error=_reason(exc, CLOSE_WAIT))
        left = len(self._queue) + len(self._in_flight) + len(self._parked)
        if left:
            log.info(
                "sink stopped before delivering everything; the rest stays in the outbox",
                sink=self.name,
                undelivered=left,
            )

    def _finished(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("sink worker crashed", sink=self.name, exc_info=exc)

    # --- the worker -------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if self._parked and time.monotonic() >= self._parked_until:
                if self._stopping.is_set():
                    return  # they stay in the outbox: the next start sends them
                self._queue.extendleft(reversed(self._parked))  # first, in their order
                self._parked.clear()
            if self._queue and not self._parked:
                await self._deliver(self._take())
                continue
            if self._stopping.is_set():
                return
            delay = self._due_in()
            if delay is not None and delay <= 0:
                await self._resend()
                continue
            if self._parked:  # new events wait behind them, for order's sake
                until = max(0.0, self._parked_until - time.monotonic())
                delay = until if delay is None else min(delay, until)
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wakeup.wait()

    def _take(self) -> list[Delivery]:
        count = min(len(self._queue), max(1, self.sink.max_batch))
        batch = [self._queue.popleft() for _ in range(count)]
        self.stats.queued = len(self._queue) + len(self._parked)
        # The episode ends once the queue has real room again (half empty), so a sink that
        # keeps up just barely does not log one line per event.
        if self._episode_dropped and len(self._queue) <= self.config.queue_size // 2:
            log.info(
                "sink queue has room again",
                sink=self.name,
                dropped=self._episode_dropped,
                dropped_total=self.stats.dropped,
            )
            self._episode_dropped = 0
        return batch

    def _due_in(self) -> float | None:
        now = self._clock()
        due = self.sink.next_due(now)
        if due is None:
            return None
        return max(due, self._resend_not_before - time.monotonic())

    async def _deliver(self, batch: Sequence[Delivery]) -> None:
        self._in_flight = batch
        try:
            self.sink.prepare(batch)
        except Exception as exc:  # noqa: BLE001 - a sink's bug costs this batch, not the worker
            self._give_up(batch, _reason(exc, self.config.timeout), 0)
            self._in_flight = ()
            return
        retry = 0
        while True:
            try:
                async with asyncio.timeout(self.config.timeout):
                    ids = await self.sink.send(batch)
            except Exception as exc:  # noqa: BLE001 - failing is what sinks do; retried below
                reason = _reason(exc, self.config.timeout)
                if isinstance(exc, DeliveryError) and exc.permanent:
                    self._refused(batch, reason)
                    break
                if retry >= self.config.retries or self._stopping.is_set():
                    self._give_up(batch, reason, retry + 1)
                    break
                delay = backoff_delay(
                    retry, self.config.backoff, self.config.backoff_max, self._rng
                )
                self._retrying(batch, reason, retry, delay)
                retry += 1
                self.stats.retried += 1
                if not await self._pause(delay):
                    self._give_up(batch, reason, retry)
                    break
                continue
            self.stats.sent += len(batch)
            if self._reported:
                redelivered = [d for d in batch if id(d) in self._reported]
                self._reported.difference_update(id(d) for d in batch)
                if redelivered:
                    log.info(
                        "delivered events kept after failing", sink=self.name,
                        events=len(redelivered),
                    )  # fmt: skip
            self._delivered(ids)
            if retry:
                log.info(
                    "delivered after retrying",
                    sink=self.name,
                    attempts=retry + 1,
                    events=len(batch),
                )
            break
        self._in_flight = ()

    def _retrying(self, batch: Sequence[Delivery], reason: str, retry: int, delay: float) -> None:
        first = batch[0].event
        # The first failure of an event is worth a warning; its further retries are detail.
        say = log.warning if retry == 0 else log.debug
        say(
            "delivery failed; will retry",
            sink=self.name,
            rule=first.rule,
            fingerprint=first.key,
            events=len(batch),
            error=reason,
            retry_in=round(delay, 3),
            retries_left=self.config.retries - retry,
        )

    def _give_up(self, batch: Sequence[Delivery], reason: str, attempts: int) -> None:
        if self._stopping.is_set():
            # not a failure: the daemon is stopping, and the next start re-submits the event
            log.info(
                "delivery not finished before stop; the event stays in the outbox",
                sink=self.name,
                events=len(batch),
                error=reason,
            )
            return
        again = [d for d in batch if id(d) in self._reported]
        first = [d for d in batch if id(d) not in self._reported]
        keep_for = self.config.backoff_max
        if first:
            self._failed(
                first,
                f"delivery failed after every retry; kept, and sent again every "
                f"{keep_for:g} s until the receiver takes it (and after a restart)",
                error=reason,
                attempts=attempts,
            )
        if again:
            log.warning(
                "kept events still cannot be delivered", sink=self.name, events=len(again),
                error=reason, next_try_in=keep_for,
            )  # fmt: skip
        self._reported.update(id(d) for d in batch)
        self._parked.extend(batch)
        self._parked_until = time.monotonic() + keep_for
        self.stats.queued = len(self._queue) + len(self._parked)

    def _failed(self, batch: Sequence[Delivery], message: str, **fields: object) -> None:
        """Count and log (at error, one line per event: each names its alert) a batch lost."""
        self.stats.failed += len(batch)
        for delivery in batch:
            log.error(
                message,
                sink=self.name,
                rule=delivery.event.rule,
                fingerprint=delivery.event.key,
                alert=str(delivery.event.kind),
                severity=delivery.event.severity.label,
                **fields,
            )

    def _refused(self, batch: Sequence[Delivery], reason: str) -> None:
        self._reported.difference_update(id(d) for d in batch)
        self._failed(
            batch,
            "the receiver refused the event; not retried (fix the sink's config)",
            error=reason,
        )
        ids = [d.id for d in batch if d.id]
        if ids:
            try:
                self._outbox.dropped(ids)
            except Exception:
                log.exception("cannot mark refused events in the outbox", sink=self.name)

    async def _pause(self, seconds: float) -> bool:
        """Sleep between retries; False when a stop cut it short."""
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            return True
        return False

    async def _resend(self) -> None:
        now = self._clock()
        try:
            async with asyncio.timeout(self.config.timeout):
                ids = await self.sink.resend(now)
        except Exception as exc:  # noqa: BLE001 - retried at the next due time, with backoff
            reason = _reason(exc, self.config.timeout)
            delay = backoff_delay(
                self._resend_failures, self.config.backoff, self.config.backoff_max, self._rng
            )
            self._resend_failures += 1
            # at least a tenth of `backoff`: full jitter may draw ~0, and the work stays due
            self._resend_not_before = time.monotonic() + max(delay, self.config.backoff / 10)
            if self._resend_failures == 1:
                log.warning("re-sending alerts failed", sink=self.name, error=reason)
            return
        if self._resend_failures:
            log.info(
                "re-sending alerts works again", sink=self.name, failures=self._resend_failures
            )
            self._resend_failures = 0
        self._resend_not_before = 0.0
        self._delivered(ids)

    def _delivered(self, ids: Sequence[int]) -> None:
        real = [i for i in ids if i]
        if not real:
            return
        try:
            self._outbox.delivered(real)
        except Exception:  # the store reports its own trouble
            log.exception("cannot mark events delivered in the outbox", sink=self.name)


# type → "module:Class"; the class takes (config, host). Imported on demand, so a daemon
# without webhooks never imports aiohttp's client for them.
SINKS: dict[str, str] = {
    "log": "fossamon.sinks.log:LogSink",
    "jsonl": "fossamon.sinks.jsonl:JsonlSink",
    "webhook": "fossamon.sinks.webhook:WebhookSink",
    "alertmanager": "fossamon.sinks.alertmanager:AlertmanagerSink",
    "exec": "fossamon.sinks.exec:ExecSink",
}


def build_sink(config: SinkConfig, host: str) -> Sink:
    """The sink for one config section; SinkError for a type or setting it cannot take."""
    target = SINKS.get(config.type)
    if target is None:
        raise SinkError(sink_name(config), f"unknown sink type {config.type!r}")
    module_name, _, attr = target.partition(":")
    cls: Any = getattr(importlib.import_module(module_name), attr)
    sink: Sink = cls(config, host)
    return sink


def build_sink_workers(
    configs: Sequence[SinkConfig], host: str, outbox: Outbox
) -> list[SinkWorker]:
    """One worker per sink, not started (call `start()` inside the running loop)."""
    return [SinkWorker(config, build_sink(config, host), outbox) for config in configs]
