"""From evaluator events to where operators look: silences, the state store, the alerts file,
and one bounded worker per sink.

Per batch of events, in this order:
1. silences mark what they match (`silenced_by`): recorded, never notified;
2. ONE state-store transaction holds the evaluator's changed states AND an outbox row per
   (event, sink that wants it), so after any crash either both happened or neither did:
   a restart neither re-fires an alert it already announced nor forgets one it did not
   deliver;
3. the alerts JSONL file records every event;
4. each sink's worker gets its deliveries (never blocking: a hung webhook delays nothing).

A broken state store (disk full, say) costs durability, not alerts: events still reach the
file and the sinks, and the problem is logged once per episode.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, Any

import structlog

from fossamon.collectors.base import enabled_sections, metrics_for, target_labels
from fossamon.config import sink_name
from fossamon.model import AlertEvent, EventKind, Severity, event_from_json, fingerprint
from fossamon.silences import Silence, first_match
from fossamon.sinks.base import Delivery, build_sink_workers
from fossamon.storage.state import MemoryStateStore, Store

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from fossamon.config import Config, SinkConfig
    from fossamon.model import Labels
    from fossamon.rules.evaluator import Evaluator
    from fossamon.sinks.base import SinkWorker
    from fossamon.storage.output import LineOutput


log = structlog.get_logger("fossamon.alerting")

# A metric is "missing" after this many of its collector's intervals without a sample.
NO_DATA_INTERVALS = 3
# Even when nothing changed, the last evaluation time is saved this often. A restart takes
# the downtime it measures from it off `for` and `keep_firing_for` waits: while one runs it
# is saved every second; with none running it moves nothing, and an empty commit (a trip to
# the store's thread, a WAL write) costs 1.1-1.3 ms of CPU: every 10 s, that was 7 % of an
# idle daemon's CPU.
SAVE_EVERY = 60.0
SAVE_WHILE_TIMING = 1.0
STOP_GRACE = 2.0
# `fossamon silence` writes from another process, and a silence's start changes no file:
# the tick re-reads silences this often, and before events go out when the last read is
# older than SILENCES_FRESH. So an alert never passes a silence added a second earlier, and
# a second with no silence and no event costs no trip to the store's thread.
SILENCES_REREAD = 5.0
SILENCES_FRESH = 1.0


def no_data_defaults(config: Config) -> dict[str, float]:
    """Per metric: when its data counts as missing: 3 intervals of the slowest producer, or
    one interval plus its timeout if that is longer (a slow target answering within its
    timeout is late data, not missing data)."""
    out: dict[str, float] = {}
    for name, section in enabled_sections(config.collectors).items():
        slowest_run = section.interval + getattr(section, "timeout", 0.0)
        wait = max(NO_DATA_INTERVALS * section.interval, slowest_run) + section.jitter
        for metric in metrics_for(name, section):
            out[metric] = max(out.get(metric, 0.0), wait)
    return out


def collected_series(config: Config) -> Callable[[str, Labels], bool]:
    """Does this config still collect the series (metric, labels)? A metric no enabled
    collector produces, or a target (endpoint, query, mount) no longer configured: no."""
    produced = {
        name: metrics_for(name, section)
        for name, section in enabled_sections(config.collectors).items()
    }
    targets = target_labels(config.collectors)

    def collected(metric: str, labels: Labels) -> bool:
        present = dict(labels)
        for collector, metrics in produced.items():
            if metric not in metrics:
                continue
            label, names = targets.get(collector, ("", set()))
            if present.get(label) is None or present[label] in names:
                return True
        return False

    return collected


OUTPUT_RULE = "output_write_failing"
ROTATION_RULE = "output_rotation_failing"


@dataclasses.dataclass(frozen=True, slots=True)
class _OutputCheck:
    """One of the internal alerts on the output files: what it watches and how it reads."""

    rule: str
    severity: Severity
    metric: str
    failing: Callable[[LineOutput], bool]
    value: Callable[[LineOutput], float]
    firing: Callable[[LineOutput], str]
    resolved: Callable[[LineOutput], str]


OUTPUT_CHECKS = (
    _OutputCheck(
        OUTPUT_RULE,
        Severity.CRITICAL,
        "fossamon_output_dropped_lines_total",
        lambda w: w.failing,
        lambda w: float(w.lines_dropped),
        lambda w: (
            f"cannot write {w.path}: {w.last_error}; lines are dropped and counted until it "
            "works again"
        ),
        lambda w: f"writing {w.path} again; {w.lines_dropped} lines dropped",
    ),
    # Nothing is lost while rotation fails (the file grows on), but a disk fills: a warning.
    _OutputCheck(
        ROTATION_RULE,
        Severity.WARNING,
        "fossamon_output_rotation_failures_total",
        lambda w: bool(w.rotation_error),
        lambda w: float(w.rotation_failures),
        lambda w: f"{w.rotation_error}; the file grows past its limits, retried every minute",
        lambda w: f"rotating {w.path} again after {w.rotation_failures} failed attempts",
    ),
)


def _output_event(
    check: _OutputCheck,
    kind: EventKind,
    labels: Labels,
    writer: LineOutput,
    now: float,
    since: float,
) -> AlertEvent:
    firing = kind is EventKind.FIRING
    return AlertEvent(
        ts=now,
        kind=kind,
        rule=check.rule,
        severity=check.severity,
        labels=labels,
        value=check.value(writer),
        threshold=None,
        since=since,
        summary=check.firing(writer) if firing else check.resolved(writer),
        metric=check.metric,
        aggregate="last",
        fingerprint=fingerprint(check.rule, labels),
        previous=Severity.OK if firing else check.severity,
    )


class AlertDispatcher:
    def __init__(
        self,
        host: str,
        evaluator: Evaluator,
        alerts_out: LineOutput | None,
        store: Store | None = None,
    ) -> None:
        self.host = host
        self.evaluator = evaluator
        self.alerts_out = alerts_out
        # Until start() gets the real one (and in `fossamon once`), states live in memory.
        self.store: Store = store if store is not None else MemoryStateStore()
        self.sink_configs: list[SinkConfig] = []
        self.workers: list[SinkWorker] = []
        self.silences: list[Silence] = []
        self.events_published = 0
        self.events_silenced = 0
        self._store_failing = False
        self._saved_at = 0.0
        self._data_version: int | None = None
        self._silences_read_at = 0.0  # the `now` of the last read
        self._silences_fresh_until = 0.0  # monotonic
        self._started = False
        # Fingerprints of the open alerts sinks were told of (not kept across restarts: at
        # start, every open alert no silence hides counts as told).
        self._told: set[str] = set()
        self._output_failing: dict[str, float] = {}  # fingerprint → since
        # Changes a failed commit could not save: merged into the next commit (newer wins).
        self._unsaved: dict[str, dict[str, Any] | None] = {}

    # --- life ----------------------------------------------------------------------------

    async def start(self, store: Store | None, now: float, config: Config) -> None:
        """Restore states, re-queue what was not delivered, and start the sink workers."""
        if store is not None:
            self.store = store
        self.sink_configs = config.effective_sinks()
        self.workers = build_sink_workers(self.sink_configs, self.host, self.store)
        try:
            saved = await self.store.load_alerts()
            last = await self.store.last_evaluation()
        except Exception as exc:  # noqa: BLE001 - a broken store costs durability, not alerts
            log.error("state store unreadable; starting without saved alert states", error=str(exc))
            saved, last = {}, None
        owed = self.evaluator.restore(saved, last, now, collected_series(config))
        restored = self.evaluator.firing()
        if restored:
            log.info(
                "alert states restored",
                open_alerts=len(restored),
                down_for=f"{now - last:.1f}s" if last else "unknown",
            )
        await self._sync_config_silences(config, now)
        await self.refresh_silences(now, force=True)
        self._told = {
            event.key
            for event in self.evaluator.active_events(now)
            if first_match(self.silences, event, now) is None
        }
        for worker in self.workers:
            worker.start()
        await self._requeue(now)
        self._told |= {event.key for event in owed}  # they were open before the restart
        await self.publish(owed, now)
        self._started = True

    async def _requeue(self, now: float) -> None:
        try:
            pending = await self.store.pending_outbox()
        except Exception as exc:  # noqa: BLE001
            log.error("state store unreadable; undelivered events not re-sent", error=str(exc))
            pending = []
        by_name = {worker.name: worker for worker in self.workers}
        orphans: list[int] = []
        for row_id, sink, record in pending:
            worker = by_name.get(sink)
            event = event_from_json(record)
            if worker is None or event is None:
                orphans.append(row_id)
                continue
            worker.submit(Delivery(row_id, event, self.host))
        if orphans:
            self.store.dropped(orphans)
            log.warning(
                "undelivered events for sinks no longer configured dropped", count=len(orphans)
            )
        if pending:
            log.info(
                "re-sending events not delivered before the restart",
                count=len(pending) - len(orphans),
            )
        # silenced ones included, marked: a silence that holds must hold across a restart too
        active = [self._silence(event, now) for event in self.evaluator.active_events(now)]
        for worker in self.workers:
            worker.seed_firing(active)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        await asyncio.gather(*(worker.stop(grace) for worker in self.workers))
        await self._save(time.time(), force=True)
        await self.store.close()

    def prepare_sinks(self, config: Config) -> list[SinkWorker] | None:
        """For a reload, before anything changes: the new workers (None: sinks unchanged).
        Raises SinkError for a sink that cannot be built, so the reload is refused whole."""
        sinks = config.effective_sinks()
        if sinks == self.sink_configs:
            return None
        return build_sink_workers(sinks, config.host(), self.store)

    async def replace_sinks(self, workers: list[SinkWorker], config: Config, now: float) -> None:
        """A reload changed `[[sinks]]`: new workers; what the old ones had not delivered is
        still in the outbox and goes to the new ones of the same name."""
        await asyncio.gather(*(worker.stop(0.5) for worker in self.workers))
        self.sink_configs = config.effective_sinks()
        self.workers = workers
        sinks = self.sink_configs
        for worker in self.workers:
            worker.start()
        await self._requeue(now)
        log.info("sinks replaced", sinks=",".join(sink_name(s) for s in sinks) or "none")

    async def _sync_config_silences(self, config: Config, now: float) -> None:
        try:
            await self.store.sync_config_silences(config.silences, now)
        except Exception as exc:  # noqa: BLE001
            log.error("could not store the config's silences", error=str(exc))

    async def reload(self, config: Config, workers: list[SinkWorker] | None, now: float) -> None:
        self.host = config.host()
        await self._sync_config_silences(config, now)
        await self.refresh_silences(now, force=True)
        if workers is not None:
            await self.replace_sinks(workers, config, now)

    def shift(self, step: float) -> None:
        """The wall clock stepped by `step` (see fossamon.clock): the times kept here move
        with it, or a step back would hold the next save and silence read for as long."""
        if self._saved_at:
            self._saved_at += step
        if self._silences_read_at:
            self._silences_read_at += step
        self._output_failing = {key: since + step for key, since in self._output_failing.items()}

    # --- per batch of events -------------------------------------------------------------

    async def refresh_silences(self, now: float, *, force: bool = False) -> None:
        """Pick up silences added or expired by `fossamon silence` (another process), and
        silences whose `starts` has come, every SILENCES_REREAD s (or now, `force`). While
        one is active, every call also asks the store whether another process wrote: an
        expired silence lets sinks hear at once of the alerts it hid."""
        previous = {s.id for s in self.silences}
        try:
            if self.silences and not force:
                version = await self.store.data_version()
                force = version != self._data_version
                self._data_version = version
            # (a negative age: the clock stepped back since; read them, do not wait it out)
            if force or not 0 <= now - self._silences_read_at < SILENCES_REREAD:
                self.silences = await self.store.active_silences(now)
                self._silences_read_at = now
                self._silences_fresh_until = time.monotonic() + SILENCES_FRESH
        except Exception as exc:  # noqa: BLE001
            self._store_problem(exc)
        self.silences = [s for s in self.silences if s.active(now)]
        if self._started and previous - {s.id for s in self.silences}:
            await self._announce_unsilenced(now)

    async def publish(
        self, events: Sequence[AlertEvent], now: float, *, record: bool = True
    ) -> None:
        if events and time.monotonic() >= self._silences_fresh_until:
            await self.refresh_silences(now, force=True)  # a silence added just now counts
        marked = [self._silence(event, now) for event in events]
        routes = self._routes(marked)
        outbox = [(worker.name, notice.to_json(self.host)) for worker, notice in routes]
        ids = await self._commit(outbox, now)
        if record:
            for event in marked:
                if self.alerts_out is not None:
                    self.alerts_out.write(event.to_json(self.host))
            self.events_published += len(marked)
        for (worker, event), row_id in zip(routes, ids, strict=True):
            worker.submit(Delivery(row_id, event, self.host))

    def _routes(self, marked: Sequence[AlertEvent]) -> list[tuple[SinkWorker, AlertEvent]]:
        """Which worker hears what of each event (silence marks already applied)."""
        routes: list[tuple[SinkWorker, AlertEvent]] = []
        for event in marked:
            if event.silenced_by is not None:
                self.events_silenced += 1
            notice = self._notice(event)
            if notice is None:
                continue
            # Silenced events are offered too: a sink that already holds this alert as
            # firing (Alertmanager) must still hear it end; the others refuse them.
            routes += [(worker, notice) for worker in self.workers if worker.accepts(notice)]
        return routes

    def _notice(self, event: AlertEvent) -> AlertEvent | None:
        """What sinks hear of `event`, given what they were told (`_told`): an episode whose
        opening a silence withheld is announced as `firing` by its first unsilenced event,
        and its end is not news to sinks that never heard it begin."""
        key = event.key
        if event.kind is EventKind.RESOLVED:
            told = key in self._told
            self._told.discard(key)
            return event if told or event.silenced_by is not None else None
        if event.silenced_by is not None:
            return event  # the workers refuse it (Alertmanager may take an ending)
        if key not in self._told:
            self._told.add(key)
            if event.kind in {EventKind.ESCALATED, EventKind.DEESCALATED, EventKind.REPEAT}:
                return dataclasses.replace(event, kind=EventKind.FIRING, previous=Severity.OK)
        return event

    async def _announce_unsilenced(self, now: float) -> None:
        """Open alerts whose silence just ended: sinks hear them now, as `firing` (or
        `nodata`), the way Alertmanager resumes notifications when a silence expires."""
        pending = [
            event
            for event in self.evaluator.active_events(now)
            if event.key not in self._told and first_match(self.silences, event, now) is None
        ]
        if pending:
            log.info("silence over: telling sinks of alerts still open", alerts=len(pending))
            await self.publish(pending, now, record=False)

    async def watch_outputs(self, outputs: Mapping[str, LineOutput], now: float) -> None:
        """The internal alerts on the output files (OUTPUT_CHECKS): `output_write_failing`
        (critical) while a file cannot be written and lines are dropped, and
        `output_rotation_failing` (warning) while it cannot be rotated; each resolved when
        that works again."""
        if not self._output_failing and not any(
            w.failing or w.rotation_error for w in outputs.values()
        ):
            return  # every second's usual answer: nothing failing, nothing was
        events: list[AlertEvent] = []
        for name, writer in outputs.items():
            labels: Labels = (("file", name),)
            for check in OUTPUT_CHECKS:
                key = fingerprint(check.rule, labels)
                since = self._output_failing.get(key)
                failing = check.failing(writer)
                if failing and since is None:
                    self._output_failing[key] = now
                    events.append(_output_event(check, EventKind.FIRING, labels, writer, now, now))
                elif not failing and since is not None:
                    del self._output_failing[key]
                    events.append(
                        _output_event(check, EventKind.RESOLVED, labels, writer, now, since)
                    )
        if events:
            await self.publish(events, now)

    def _silence(self, event: AlertEvent, now: float) -> AlertEvent:
        silence = first_match(self.silences, event, now)
        if silence is None:
            return event
        return dataclasses.replace(event, silenced_by=silence.id)

    async def _commit(self, outbox: list[tuple[str, dict[str, Any]]], now: float) -> list[int]:
        changes = {**self._unsaved, **self.evaluator.take_changes()}
        if not changes and not outbox:
            # The last evaluation time measures the downtime a restart takes off `for` and
            # `keep_firing_for`: while one is running it must be fresh, else it may be lazy.
            since = now - self._saved_at
            if 0 <= since < SAVE_WHILE_TIMING or (
                0 <= since < SAVE_EVERY and not self.evaluator.timing()
            ):
                return []  # (a negative `since`: the clock stepped back; save)
        try:
            ids = await self.store.commit(changes, outbox, now)
        except Exception as exc:  # noqa: BLE001 - see the module docstring
            self._store_problem(exc)
            self._unsaved = changes
            return [0] * len(outbox)
        self._unsaved = {}
        self._saved_at = now
        if self._store_failing:
            self._store_failing = False
            log.info("state store writable again")
        return ids

    async def _save(self, now: float, *, force: bool = False) -> None:
        if force:
            self._saved_at = 0.0
        await self._commit([], now)

    def _store_problem(self, exc: Exception) -> None:
        if not self._store_failing:
            self._store_failing = True
            log.error(
                "state store write failed; alerts still go out, but a restart now may repeat "
                "or forget some",
                error=str(exc),
            )
