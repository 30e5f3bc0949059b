"""Sink workers (queue, retries, overflow, stop), filters, and the sinks that need no network."""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest
from sinks_support import T0, RecordingOutbox, event
from structlog.testing import capture_logs

from fossamon.config import (
    AlertmanagerSinkConfig,
    JsonlSinkConfig,
    LogSinkConfig,
    WebhookSinkConfig,
    parse_config,
    validate_section,
)
from fossamon.errors import ConfigError, SinkError
from fossamon.model import EventKind, Severity
from fossamon.sinks import SINKS, build_sink_workers
from fossamon.sinks.alertmanager import AlertmanagerSink
from fossamon.sinks.base import (
    Delivery,
    DeliveryError,
    EventSink,
    SinkWorker,
    backoff_delay,
    summary_line,
)
from fossamon.sinks.exec import event_environment, label_variable
from fossamon.sinks.filter import SinkFilter
from fossamon.sinks.jsonl import JsonlSink
from fossamon.sinks.log import LogSink
from fossamon.testing import ManualClock

W, C, OK = Severity.WARNING, Severity.CRITICAL, Severity.OK


def log_config(**overrides):
    settings = {"type": "log", "name": "t", "timeout": "1s", "backoff": "10ms"}
    settings |= {"backoff_max": "20ms", **overrides}
    return validate_section(LogSinkConfig, settings)


async def until(predicate, timeout=2.0):
    """Poll a condition: bounded in time, and in count (every 5 ms)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


class ScriptedSink(EventSink):
    """Each deliver() takes the next step: None (success), an exception (raised) or seconds
    to sleep first (then success). Past the script, every delivery succeeds."""

    def __init__(self, script=()):
        super().__init__("scripted")
        self.script = list(script)
        self.attempts: list[tuple[float, int]] = []
        self.closed = 0

    async def deliver(self, delivery):
        self.attempts.append((time.monotonic(), delivery.id))
        step = self.script.pop(0) if self.script else None
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, int | float):
            await asyncio.sleep(step)

    async def close(self):
        self.closed += 1


def deliveries(count, start=1):
    return [Delivery(i, event(ts=T0 + i), "web1") for i in range(start, start + count)]


class TestSinkFilter:
    def test_min_severity(self):
        critical_only = SinkFilter(log_config(min_severity="critical"))
        assert not critical_only.accepts(event(severity=W))
        assert critical_only.accepts(event(severity=C))
        assert SinkFilter(log_config()).accepts(event(severity=W))

    @pytest.mark.parametrize("kind", [EventKind.DEESCALATED, EventKind.RESOLVED])
    def test_a_critical_only_sink_hears_the_end_of_a_critical_alert(self, kind):
        critical_only = SinkFilter(log_config(min_severity="critical"))
        assert critical_only.accepts(event(kind, W, previous=C))
        assert not critical_only.accepts(event(kind, W, previous=W))

    def test_previous_counts_only_for_ending_kinds(self):
        critical_only = SinkFilter(log_config(min_severity="critical"))
        assert not critical_only.accepts(event(EventKind.REPEAT, W, previous=C))

    def test_rules(self):
        only = SinkFilter(log_config(rules=["disk_full"]))
        assert only.accepts(event(rule="disk_full"))
        assert not only.accepts(event(rule="api_latency"))

    def test_matchers_see_labels_alertname_and_severity(self):
        f = SinkFilter(log_config(matchers=['endpoint=~"he.*"', 'alertname!="noisy"']))
        assert f.accepts(event(labels={"endpoint": "health"}))
        assert not f.accepts(event(labels={"endpoint": "orders"}))
        assert not f.accepts(event(rule="noisy"))
        severity = SinkFilter(log_config(matchers=['severity="critical"']))
        assert severity.accepts(event(severity=C))
        assert not severity.accepts(event(severity=W))
        # the end of a critical alert matches with the severity it had
        assert severity.accepts(event(EventKind.DEESCALATED, W, previous=C))

    def test_send_resolved_false_drops_resolved(self):
        f = SinkFilter(log_config(send_resolved=False))
        assert not f.accepts(event(EventKind.RESOLVED, W, previous=W))
        assert f.accepts(event(EventKind.DEESCALATED, W, previous=C))

    def test_silenced_events_never_reach_a_sink(self):
        assert not SinkFilter(log_config()).accepts(event(severity=C, silenced_by="s1"))


class TestBackoff:
    @pytest.mark.parametrize("retry", range(8))
    def test_full_jitter_within_bounds(self, retry):
        rng = random.Random(retry)
        ceiling = min(10.0, 0.5 * 2**retry)
        draws = [backoff_delay(retry, 0.5, 10.0, rng) for _ in range(500)]
        assert all(0.0 <= d <= ceiling for d in draws)
        # jitter really spreads them: the upper half of the range is used too
        assert max(draws) > ceiling / 2
        assert min(draws) < ceiling / 2

    def test_huge_retry_counts_stay_capped(self):
        assert backoff_delay(10_000, 1.0, 60.0, random.Random(0)) <= 60.0


class TestSummaryLine:
    def test_kinds(self):
        assert summary_line(event(severity=C), "web1") == (
            "[CRITICAL] api_latency on web1: p95 latency 1.5s above 1s"
        )
        assert summary_line(event(EventKind.RESOLVED, W, summary="back")) == (
            "[RESOLVED] api_latency: back"
        )
        down = summary_line(event(EventKind.DEESCALATED, W, previous=C))
        assert down.endswith("(deescalated from critical)")
        assert summary_line(event(EventKind.NODATA, W)).endswith("(no data)")
        said = summary_line(event(EventKind.NODATA, W, summary="x is 1 (no data)"))
        assert said.endswith("x is 1 (no data)")  # not "(no data) (no data)"
        assert summary_line(event(EventKind.REPEAT, C)).endswith("(repeat)")


class TestWorkerDelivery:
    async def test_delivers_in_order_and_marks_persisted_ids(self):
        sink, outbox = ScriptedSink(), RecordingOutbox()
        worker = SinkWorker(log_config(), sink, outbox)
        worker.start()
        for d in [*deliveries(3), Delivery(0, event(), "web1")]:
            worker.submit(d)
        await until(lambda: worker.stats.sent == 4)
        assert [i for _, i in sink.attempts] == [1, 2, 3, 0]
        assert outbox.delivered_ids == [1, 2, 3]  # 0 is not persisted
        await worker.stop(1.0)
        assert sink.closed == 1

    async def test_submit_is_immediate_while_the_sink_hangs(self):
        sink = ScriptedSink([30.0])
        worker = SinkWorker(log_config(timeout="5s"), sink, RecordingOutbox())
        worker.start()
        started = time.perf_counter()
        for d in deliveries(50):
            worker.submit(d)
        assert time.perf_counter() - started < 0.05
        await worker.stop(0.1)

    async def test_submit_never_raises(self):
        class BrokenOutbox(RecordingOutbox):
            def dropped(self, ids):
                raise RuntimeError("store is gone")

        worker = SinkWorker(log_config(queue_size=1), ScriptedSink(), BrokenOutbox())
        with capture_logs() as logs:
            for d in deliveries(3):
                worker.submit(d)
        assert worker.stats.dropped == 2
        assert any(e["event"] == "cannot mark a dropped event in the outbox" for e in logs)
        await worker.stop(0.1)

    async def test_each_attempt_is_bounded_by_timeout(self):
        sink, outbox = ScriptedSink([5.0, 5.0]), RecordingOutbox()
        worker = SinkWorker(log_config(timeout="100ms", retries=2), sink, outbox)
        worker.start()
        started = time.monotonic()
        worker.submit(deliveries(1)[0])
        await until(lambda: worker.stats.sent == 1)
        assert time.monotonic() - started < 1.0
        assert worker.stats.retried == 2
        assert outbox.delivered_ids == [1]
        await worker.stop(0.5)


class TestWorkerRetries:
    async def test_retries_with_backoff_then_delivers(self):
        failure = DeliveryError("t", "HTTP 500")
        sink, outbox = ScriptedSink([failure, failure]), RecordingOutbox()
        config = log_config(retries=3, backoff="50ms", backoff_max="80ms")
        worker = SinkWorker(config, sink, outbox, rng=random.Random(3))
        worker.start()
        with capture_logs() as logs:
            worker.submit(deliveries(1)[0])
            await until(lambda: worker.stats.sent == 1)
        assert worker.stats.retried == 2
        assert worker.stats.failed == 0
        assert outbox.delivered_ids == [1]
        gaps = [b[0] - a[0] for a, b in zip(sink.attempts, sink.attempts[1:], strict=False)]
        # full jitter: each pause is within [0, min(backoff_max, backoff * 2^retry)] (+ slack)
        assert all(gap <= ceiling + 0.05 for gap, ceiling in zip(gaps, [0.05, 0.08], strict=True))
        warnings = [e for e in logs if e["event"] == "delivery failed; will retry"]
        assert len(warnings) == 2
        assert warnings[0]["log_level"] == "warning"
        assert warnings[1]["log_level"] == "debug"
        assert any(e["event"] == "delivered after retrying" for e in logs)
        await worker.stop(0.5)

    async def test_after_every_retry_failed_and_kept_in_the_outbox(self):
        sink = ScriptedSink([DeliveryError("t", "HTTP 503")] * 10)
        outbox = RecordingOutbox()
        # kept events are sent again every backoff_max: an hour here, so only one round
        worker = SinkWorker(log_config(retries=2, backoff_max="1h"), sink, outbox)
        worker.start()
        with capture_logs() as logs:
            worker.submit(Delivery(7, event(severity=C), "web1"))
            await until(lambda: worker.stats.failed == 1)
        assert len(sink.attempts) == 3  # the attempt and two retries
        assert worker.stats.retried == 2
        assert worker.stats.sent == 0
        assert outbox.delivered_ids == []
        assert outbox.dropped_ids == []  # kept: re-submitted after a restart
        [error] = [e for e in logs if e["log_level"] == "error"]
        assert error["sink"] == "t"
        assert error["rule"] == "api_latency"
        assert error["fingerprint"] == event().key
        assert error["error"] == "HTTP 503"
        assert error["attempts"] == 3
        await worker.stop(0.5)

    async def test_kept_events_are_sent_again_in_order_until_the_receiver_takes_them(self):
        """A receiver down for longer than every retry: nothing is lost, nothing reordered,
        and no restart is needed (every backoff_max the kept events go again)."""
        down = DeliveryError("t", "HTTP 503")
        sink, outbox = ScriptedSink([down] * 7), RecordingOutbox()
        worker = SinkWorker(log_config(retries=1, backoff_max="50ms"), sink, outbox)
        worker.start()
        with capture_logs() as logs:
            worker.submit(Delivery(1, event(ts=T0 + 1), "web1"))
            await until(lambda: worker.stats.failed == 1)
            worker.submit(Delivery(2, event(ts=T0 + 2), "web1"))  # waits behind the kept one
            await until(lambda: outbox.delivered_ids == [1, 2])
        order = [i for _, i in sink.attempts]
        # 1 fails in rounds of two attempts (6 failures in 3 rounds); in the 4th its retry
        # gets through; then 2, in order
        assert order == [1] * 8 + [2], order
        assert worker.stats.sent == 2
        assert worker.stats.failed == 1  # counted once, not once per round
        assert outbox.dropped_ids == []
        errors = [e for e in logs if e["log_level"] == "error"]
        assert len(errors) == 1  # the first give-up; later rounds are one warning each
        assert "sent again every 0.05 s" in errors[0]["event"]
        again = [e for e in logs if e["event"] == "kept events still cannot be delivered"]
        assert len(again) == 2  # rounds 2 and 3
        assert any(e["event"] == "delivered events kept after failing" for e in logs)
        await worker.stop(0.5)

    async def test_kept_and_queued_events_share_the_queue_bound(self):
        sink, outbox = ScriptedSink([DeliveryError("t", "down")] * 100), RecordingOutbox()
        worker = SinkWorker(log_config(retries=0, queue_size=3, backoff_max="1h"), sink, outbox)
        worker.start()
        worker.submit(Delivery(1, event(ts=T0 + 1), "web1"))
        await until(lambda: worker.stats.failed == 1)  # 1 is kept
        for i in (2, 3, 4):
            worker.submit(Delivery(i, event(ts=T0 + i), "web1"))
        assert worker.stats.queued == 3
        assert worker.stats.dropped == 1
        assert outbox.dropped_ids == [1]  # the oldest, the kept one, made room
        await worker.stop(0.1)

    async def test_a_bug_in_a_sink_is_a_failure_not_a_dead_worker(self):
        sink = ScriptedSink([TypeError("oops")])
        worker = SinkWorker(log_config(retries=0), sink, RecordingOutbox())
        worker.start()
        with capture_logs() as logs:
            for d in deliveries(2):
                worker.submit(d)
            await until(lambda: worker.stats.sent == 2)  # 1 kept after the bug, sent again
        assert worker.stats.failed == 1
        assert any(e.get("error") == "TypeError: oops" for e in logs)
        await worker.stop(0.5)


class TestOverflow:
    async def test_drops_the_oldest_counts_and_logs_once_per_episode(self):
        outbox = RecordingOutbox()
        worker = SinkWorker(log_config(queue_size=4), ScriptedSink(), outbox)
        with capture_logs() as logs:
            for d in deliveries(10):
                worker.submit(d)
        assert worker.stats.dropped == 6
        assert worker.stats.queued == 4
        assert outbox.dropped_ids == [1, 2, 3, 4, 5, 6]
        assert [d.id for d in worker._queue] == [7, 8, 9, 10]
        full = [e for e in logs if e["event"] == "sink queue is full; dropping the oldest events"]
        assert len(full) == 1
        assert full[0]["log_level"] == "warning"

        with capture_logs() as logs:
            worker.start()
            await until(lambda: worker.stats.sent == 4)
            for d in deliveries(6, start=11):  # a second episode: logged again
                worker.submit(d)
            await until(lambda: worker.stats.sent == 8)
        events = [e["event"] for e in logs]
        assert events.count("sink queue has room again") >= 1
        assert events.count("sink queue is full; dropping the oldest events") == 1
        assert worker.stats.dropped == 8
        await worker.stop(0.5)


class TestStop:
    async def test_bounded_when_the_sink_hangs(self):
        sink = ScriptedSink([3600.0])
        worker = SinkWorker(log_config(timeout="1h"), sink, RecordingOutbox())
        worker.start()
        for d in deliveries(3):
            worker.submit(d)
        await until(lambda: len(sink.attempts) == 1)
        started = time.monotonic()
        with capture_logs() as logs:
            await worker.stop(0.2)
        assert time.monotonic() - started < 0.2 + 0.5
        [left] = [e for e in logs if e["event"].startswith("sink stopped before")]
        assert left["undelivered"] == 3  # one in flight, two queued: all in the outbox

    async def test_bounded_during_a_long_backoff(self):
        sink = ScriptedSink([DeliveryError("t", "down")])
        config = log_config(retries=5, backoff="1h", backoff_max="1h")
        worker = SinkWorker(config, sink, RecordingOutbox(), rng=random.Random(0))
        worker.start()
        worker.submit(deliveries(1)[0])
        await until(lambda: worker.stats.retried == 1)
        started = time.monotonic()
        await worker.stop(5.0)
        assert time.monotonic() - started < 0.5  # the pause ends at once; no retry while stopping
        assert worker.stats.failed == 0  # not failed: left for the next start

    async def test_flushes_the_queue_within_grace(self):
        sink, outbox = ScriptedSink([0.01] * 20), RecordingOutbox()
        worker = SinkWorker(log_config(), sink, outbox)
        worker.start()
        for d in deliveries(20):
            worker.submit(d)
        await worker.stop(2.0)
        assert outbox.delivered_ids == list(range(1, 21))

    async def test_submit_after_stop_is_ignored(self):
        worker = SinkWorker(log_config(), ScriptedSink(), RecordingOutbox())
        await worker.stop(0.1)  # never started: still closes the sink, returns at once
        worker.submit(deliveries(1)[0])
        assert worker.stats.queued == 0


class TestLogSink:
    @pytest.mark.parametrize(
        ("kind", "severity", "level"),
        [
            (EventKind.FIRING, C, "critical"),
            (EventKind.FIRING, W, "warning"),
            (EventKind.ESCALATED, C, "critical"),
            (EventKind.DEESCALATED, W, "warning"),
            (EventKind.RESOLVED, C, "info"),
        ],
    )
    async def test_level_by_severity(self, kind, severity, level):
        sink = LogSink(log_config(), "web1")
        with capture_logs() as logs:
            await sink.send([Delivery(1, event(kind, severity, previous=C), "web1")])
        [line] = logs
        assert line["log_level"] == level
        assert line["rule"] == "api_latency"
        assert line["alert"] == str(kind)
        assert line["labels"] == "endpoint=health"
        assert ("syslog_level" in line) == (kind is EventKind.RESOLVED)
        if kind is EventKind.RESOLVED:
            assert line["syslog_level"] == "notice"


class TestJsonlSink:
    async def test_writes_the_event_record(self, tmp_path):
        path = tmp_path / "out" / "critical.jsonl"
        sink = JsonlSink(JsonlSinkConfig(type="jsonl", path=str(path)), "web1")
        ids = await sink.send([Delivery(3, event(severity=C), "web1")])
        await sink.close()
        assert ids == [3]
        [record] = [json.loads(line) for line in path.read_text().splitlines()]
        assert record == event(severity=C).to_json("web1")

    async def test_a_write_failure_raises_for_the_retries(self, tmp_path):
        sink = JsonlSink(JsonlSinkConfig(type="jsonl", path=str(tmp_path)), "web1")
        with capture_logs(), pytest.raises(DeliveryError, match="cannot write"):
            await sink.send([Delivery(1, event(), "web1")])


def am_config(**overrides):
    settings = {"type": "alertmanager", "name": "am", "url": "http://127.0.0.1:9"}
    return validate_section(AlertmanagerSinkConfig, {"resend_every": "1m", **settings, **overrides})


class TestAlertmanagerMap:
    def sink(self, clock, **overrides):
        return AlertmanagerSink(am_config(**overrides), "web1", clock=clock)

    def test_labels_always_carry_alertname_severity_and_instance(self):
        sink = self.sink(ManualClock(T0), labels={"team": "ops", "alertname": "spoofed"})
        labels = sink.labels(event(severity=C, labels={"endpoint": "health", "empty": ""}), "web1")
        assert labels == {
            "endpoint": "health",
            "instance": "web1",
            "team": "ops",
            "alertname": "api_latency",
            "severity": "critical",
        }

    def test_firing_render(self):
        clock = ManualClock(T0 + 30)
        sink = self.sink(clock)
        sink.prepare([Delivery(1, event(severity=W, ts=T0 + 30, since=T0), "web1")])
        [alert] = sink.alerts.values()
        rendered = sink.render(alert, clock.now)
        assert rendered["startsAt"] == "2027-01-15T08:00:00.000Z"
        assert rendered["endsAt"] == "2027-01-15T08:04:30.000Z"  # now + 4 × 1 m
        assert rendered["annotations"] == {
            "summary": "p95 latency 1.5s above 1s",
            "value": "1.5",
            "threshold": "1",
            "description": "p95(api_response_seconds) over 60s = 1.5, threshold 1",
        }

    def test_a_severity_change_ends_the_old_alert(self):
        clock = ManualClock(T0)
        sink = self.sink(clock)
        sink.prepare([Delivery(1, event(severity=W), "web1")])
        sink.prepare([Delivery(2, event(EventKind.ESCALATED, C, previous=W, ts=T0 + 10), "web1")])
        warning = sink.alerts[(event().key, "warning")]
        critical = sink.alerts[(event().key, "critical")]
        assert warning.ends_at == T0 + 10
        assert critical.ends_at is None
        assert sink._batch_keys == [(event().key, "warning"), (event().key, "critical")]

    def test_resolved_is_sent_with_its_time_then_forgotten_after_five_minutes(self):
        clock = ManualClock(T0)
        sink = self.sink(clock)
        sink.prepare([Delivery(1, event(severity=W), "web1")])
        clock.advance(20)
        sink.prepare([Delivery(2, event(EventKind.RESOLVED, W, previous=W, ts=T0 + 20), "web1")])
        [alert] = sink.alerts.values()
        assert sink.render(alert, clock.now)["endsAt"] == "2027-01-15T08:00:20.000Z"
        alert.resolve_sent, alert.last_sent = True, clock.now  # as a successful POST leaves it
        assert sink.next_due(clock.now) == 60.0
        clock.advance(299)
        sink._forget(clock.now)
        assert sink.alerts
        clock.advance(1)
        sink._forget(clock.now)
        assert not sink.alerts

    def test_a_resolve_that_never_reached_alertmanager_is_not_forgotten(self):
        clock = ManualClock(T0)
        sink = self.sink(clock)
        sink.prepare([Delivery(1, event(EventKind.RESOLVED, W, previous=W), "web1")])
        clock.advance(3600)
        sink._forget(clock.now)
        assert sink.alerts

    def test_deescalation_below_min_severity_ends_the_alert(self):
        sink = self.sink(ManualClock(T0), min_severity="critical")
        sink.prepare([Delivery(1, event(severity=C), "web1")])
        sink.prepare([Delivery(2, event(EventKind.DEESCALATED, W, previous=C, ts=T0 + 5), "web1")])
        [(key, alert)] = sink.alerts.items()
        assert key[1] == "critical"
        assert alert.ends_at == T0 + 5

    def test_a_stale_replayed_event_does_not_undo_a_newer_state(self):
        sink = self.sink(ManualClock(T0 + 100))
        sink.seed_firing([event(severity=C, ts=T0 + 50)])
        old_resolve = event(EventKind.RESOLVED, C, previous=C, ts=T0 + 10)
        sink.prepare([Delivery(9, old_resolve, "web1")])
        [alert] = sink.alerts.values()
        assert alert.ends_at is None
        assert sink._batch_done == [9]  # superseded: counts as delivered

    def test_seeded_alerts_are_due_at_once(self):
        clock = ManualClock(T0)
        sink = self.sink(clock)
        assert sink.next_due(clock.now) is None
        sink.seed_firing([event(severity=C)])
        assert sink.next_due(clock.now) <= 0

    async def test_worker_accepts_the_end_of_an_alert_it_sent_even_if_filters_say_no(self):
        config = am_config(matchers=['severity="critical"'])
        worker = SinkWorker(config, AlertmanagerSink(config, "web1"), RecordingOutbox())
        assert worker.accepts(event(severity=C))
        worker.submit(Delivery(1, event(severity=C), "web1"))
        later = event(EventKind.DEESCALATED, W, previous=W, ts=T0 + 1)
        assert worker.accepts(later)  # Alertmanager holds the critical alert: it must end it
        silenced_resolve = event(EventKind.RESOLVED, W, previous=W, silenced_by="s1")
        assert worker.accepts(silenced_resolve)
        worker.submit(Delivery(2, silenced_resolve, "web1"))
        assert not worker.accepts(event(EventKind.RESOLVED, W, previous=W, silenced_by="s1"))
        await worker.stop(0.1)

    def test_live_events_apply_in_arrival_order_whatever_their_timestamps(self):
        """A tick's repeat (stamped when the tick ran) may carry a later ts than the resolve
        of a batch that started earlier; the resolve must still end the alert."""
        sink = self.sink(ManualClock(T0 + 70))
        sink.prepare([Delivery(1, event(severity=C, ts=T0), "web1")])
        sink.prepare([Delivery(2, event(EventKind.REPEAT, C, previous=C, ts=T0 + 61), "web1")])
        sink.prepare([Delivery(3, event(EventKind.RESOLVED, C, previous=C, ts=T0 + 58), "web1")])
        [alert] = sink.alerts.values()
        assert alert.ends_at is not None

    def test_a_replayed_deescalation_ends_the_old_severity_after_a_restart(self):
        """Seeded (warning) from the evaluator; the undelivered deescalated from critical is
        replayed: Alertmanager still holds the critical alert, so it must be ended."""
        sink = self.sink(ManualClock(T0 + 100))
        sink.seed_firing([event(severity=W, ts=T0 + 50)])
        replayed = event(EventKind.DEESCALATED, W, previous=C, ts=T0 + 40)
        sink.prepare([Delivery(7, replayed, "web1")])
        critical = sink.alerts[(event().key, "critical")]
        assert critical.ends_at == T0 + 40
        assert sink.alerts[(event().key, "warning")].ends_at is None

    async def test_a_resolve_dropped_from_a_full_queue_still_ends_the_alert(self):
        config = am_config(queue_size=2)
        sink = AlertmanagerSink(config, "web1", clock=ManualClock(T0))
        worker = SinkWorker(config, sink, RecordingOutbox())  # not started: the queue fills
        worker.submit(Delivery(1, event(severity=C, labels={"endpoint": "a"}), "web1"))
        worker.submit(
            Delivery(2, event(EventKind.RESOLVED, C, previous=C, labels={"endpoint": "a"}), "web1")
        )
        worker.submit(Delivery(3, event(severity=C, labels={"endpoint": "b"}), "web1"))
        worker.submit(Delivery(4, event(severity=C, labels={"endpoint": "c"}), "web1"))
        assert worker.stats.dropped == 2
        a_key = (event(labels={"endpoint": "a"}).key, "critical")
        assert sink.alerts[a_key].ends_at is not None  # not re-sent as firing forever
        await worker.stop(0.1)

    def test_a_silenced_escalation_does_not_reach_alertmanager(self):
        config = am_config()
        worker = SinkWorker(config, AlertmanagerSink(config, "web1"), RecordingOutbox())
        worker.submit(Delivery(1, event(severity=W), "web1"))
        assert not worker.accepts(event(EventKind.ESCALATED, C, previous=W, silenced_by="s1"))

    def test_label_names_alertmanager_refuses_are_refused_in_the_config(self):
        with pytest.raises(ConfigError, match=r"labels\.team-name: 'team-name' is not a valid"):
            am_config(labels={"team-name": "ops"})


class TestExecEnvironment:
    def test_label_variable_names(self):
        assert label_variable("endpoint") == "FOSSAMON_LABEL_ENDPOINT"
        assert label_variable("db.path-x") == "FOSSAMON_LABEL_DB_PATH_X"

    def test_every_variable(self):
        e = event(EventKind.DEESCALATED, W, previous=C, labels={"ep": "a\0b"}, value=None)
        env = event_environment(e, "web1")
        assert env["FOSSAMON_EVENT"] == "deescalated"
        assert env["FOSSAMON_PREVIOUS_SEVERITY"] == "critical"
        assert env["FOSSAMON_VALUE"] == ""
        assert env["FOSSAMON_THRESHOLD"] == "1.0"
        assert env["FOSSAMON_LABEL_EP"] == "ab"  # no NUL in an environment; stdin has it all
        assert json.loads(env["FOSSAMON_LABELS"]) == {"ep": "a\0b"}  # JSON escapes it
        assert env["FOSSAMON_TS"] == "2027-01-15T08:00:00.000Z"


class TestBuild:
    @pytest.mark.parametrize("kind", sorted(SINKS))
    def test_docstring_example_parses_and_builds(self, kind):
        import importlib
        import re

        module = importlib.import_module(SINKS[kind].partition(":")[0])
        blocks = re.findall(r"```toml\n(.*?)```", module.__doc__ or "", re.DOTALL)
        assert blocks, f"{module.__name__} has no ```toml example in its docstring"
        for block in blocks:
            config = parse_config(block, module.__name__, env={"FOSSAMON_WEBHOOK_TOKEN": "t"})
            workers = build_sink_workers(config.effective_sinks(), "web1", RecordingOutbox())
            assert [w.kind for w in workers] == [kind]

    def test_every_kind_from_a_config_file(self, tmp_path):
        config = parse_config(
            f"""
            [[sinks]]
            type = "log"
            [[sinks]]
            type = "jsonl"
            path = "{tmp_path}/a.jsonl"
            [[sinks]]
            type = "webhook"
            url = "http://127.0.0.1:1/hook"
            [[sinks]]
            type = "alertmanager"
            url = "http://127.0.0.1:9093"
            [[sinks]]
            type = "exec"
            command = ["/bin/true"]
            """
        )
        workers = build_sink_workers(config.effective_sinks(), "web1", RecordingOutbox())
        assert [w.name for w in workers] == ["log", "jsonl", "webhook", "alertmanager", "exec"]
        assert set(SINKS) == {w.kind for w in workers}

    def test_the_default_is_one_log_sink(self):
        [worker] = build_sink_workers(parse_config("").effective_sinks(), "h", RecordingOutbox())
        assert isinstance(worker.sink, LogSink)

    def test_a_token_and_an_authorization_header_conflict(self):
        text = """
            [[sinks]]
            type = "webhook"
            url = "http://user:pw@127.0.0.1:1/hook"
            bearer_token = "t0ken"
            headers = { Authorization = "Basic abc" }
            """
        # refused by the config check (so a reload is refused whole, before anything changes)
        with pytest.raises(ConfigError) as caught:
            parse_config(text, env={})
        (problem,) = caught.value.problems
        assert problem.path == "sinks[0]"
        assert "give one way to authenticate, not" in problem.message
        assert '"bearer_token" and an Authorization header and a user:password' in problem.message
        # and by the builder, for a config that bypassed the check
        config = parse_config('[[sinks]]\ntype = "log"\n', env={})
        sink = WebhookSinkConfig(
            type="webhook",
            url="http://127.0.0.1:1/hook",
            bearer_token="t0ken",
            headers={"Authorization": "Basic abc"},
        )
        assert config.sinks is not None
        with pytest.raises(SinkError, match="not both"):
            build_sink_workers([sink], "h", RecordingOutbox())
