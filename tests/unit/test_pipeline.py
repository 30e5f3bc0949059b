from __future__ import annotations

import asyncio
import json
import time

from fossamon.alerting import AlertDispatcher
from fossamon.config import RuleConfig, parse_config, validate_section
from fossamon.model import Batch, Sample, make_labels
from fossamon.pipeline import Pipeline
from fossamon.rules.evaluator import Evaluator
from fossamon.rules.windows import History
from fossamon.storage.jsonl import JsonlWriter
from fossamon.storage.state import MemoryStateStore
from fossamon.testing import RecordingObserver


def build(tmp_path, *rules: RuleConfig) -> tuple[Pipeline, RecordingObserver]:
    evaluator = Evaluator(rules)
    observer = RecordingObserver()
    alerts = AlertDispatcher("web-1", evaluator, JsonlWriter(tmp_path / "a.jsonl"))
    pipeline = Pipeline(
        "web-1",
        History(evaluator.retention()),
        evaluator,
        JsonlWriter(tmp_path / "m.jsonl"),
        alerts,
        [observer],
    )
    return pipeline, observer


def down_rule() -> RuleConfig:
    return validate_section(
        RuleConfig, {"name": "api_down", "metric": "api_up", "direction": "below", "critical": 1}
    )


def api_batch(ts: float, up: float) -> Batch:
    return Batch("api", ts, 0.01, (Sample("api_up", up, make_labels(endpoint="health")),))


class TestIngest:
    async def test_a_batch_reaches_the_file_history_evaluator_and_observers(self, tmp_path):
        pipeline, observer = build(tmp_path, down_rule())
        events = await pipeline.ingest(api_batch(100.0, 0.0))
        (event,) = events
        (metrics_line,) = (tmp_path / "m.jsonl").read_text().splitlines()
        assert json.loads(metrics_line)["samples"][0]["value"] == 0.0
        (alert_line,) = (tmp_path / "a.jsonl").read_text().splitlines()
        record = json.loads(alert_line)
        assert record["fingerprint"] == event.fingerprint
        assert (record["event"], record["severity"], record["silenced_by"]) == (
            "firing",
            "critical",
            None,
        )
        assert observer.batches[0].ts == 100.0
        assert observer.events == [event]

    async def test_rules_on_other_metrics_are_not_evaluated_for_this_batch(self, tmp_path):
        pipeline, _ = build(tmp_path, down_rule())
        await pipeline.ingest(Batch("system", 1.0, 0.01, (Sample("system_load1", 3.0),)))
        assert pipeline.evaluator.states == {}
        assert not (tmp_path / "a.jsonl").exists()  # opened lazily: no event, no file

    async def test_states_that_changed_reach_the_state_store(self, tmp_path):
        pipeline, _ = build(tmp_path, down_rule())
        store = pipeline.alerts.store
        assert isinstance(store, MemoryStateStore)
        await pipeline.ingest(api_batch(1.0, 0.0))
        (saved,) = (await store.load_alerts()).values()
        assert saved["rule"] == "api_down"
        assert saved["state"]["announced"] == 2
        assert await store.last_evaluation() == 1.0
        await pipeline.ingest(api_batch(2.0, 1.0))
        (saved,) = (await store.load_alerts()).values()
        assert saved["state"]["announced"] == 0

    async def test_a_silenced_event_is_recorded_but_not_routed(self, tmp_path):
        pipeline, _ = build(tmp_path, down_rule())
        config = parse_config(
            "[[silences]]\nmatchers = ['alertname=\"api_down\"', 'endpoint=~\"heal.*\"']\n"
            'until = 2100-01-01T00:00:00Z\ncomment = "maintenance"\n'
            '[[sinks]]\ntype = "jsonl"\npath = "' + str(tmp_path / "sink.jsonl") + '"\n',
            env={},
        )
        now = time.time()
        await pipeline.alerts.start(None, now, config)
        try:
            (_event,) = await pipeline.ingest(api_batch(now + 1, 0.0))
        finally:
            await pipeline.alerts.stop(1.0)
        (record,) = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
        assert record["silenced_by"]
        assert not (tmp_path / "sink.jsonl").exists()
        assert pipeline.alerts.events_silenced == 1

    async def test_tick_judges_missing_data(self, tmp_path):
        rule = validate_section(
            RuleConfig, {"name": "r", "metric": "api_up", "critical": 5, "no_data_after": "10s"}
        )
        pipeline, _ = build(tmp_path, rule)
        await pipeline.ingest(api_batch(1.0, 1.0))
        assert await pipeline.tick(5.0) == []
        (event,) = await pipeline.tick(11.5)
        assert str(event.kind) == "nodata"


class FailingOnce(MemoryStateStore):
    """A store whose next commit fails (a full disk), then works again."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next = False

    async def commit(self, alerts, outbox, now):
        if self.fail_next:
            self.fail_next = False
            raise OSError(28, "No space left on device")
        return await super().commit(alerts, outbox, now)


class TestDurability:
    async def test_changes_a_failed_commit_could_not_save_go_with_the_next(self, tmp_path):
        evaluator = Evaluator([down_rule()])
        store = FailingOnce()
        alerts = AlertDispatcher("web-1", evaluator, JsonlWriter(tmp_path / "a.jsonl"), store)
        pipeline = Pipeline("web-1", History({}), evaluator, None, alerts)
        store.fail_next = True
        (event,) = await pipeline.ingest(api_batch(1.0, 0.0))  # the alert still goes out
        assert str(event.kind) == "firing"
        assert await store.load_alerts() == {}
        await pipeline.ingest(api_batch(2.0, 0.0))  # nothing changed, but the store catches up
        (saved,) = (await store.load_alerts()).values()
        assert saved["state"]["announced"] == 2

    async def test_a_silence_that_starts_later_takes_effect_when_it_starts(self, tmp_path):
        from fossamon.matchers import parse_matchers
        from fossamon.silences import Silence

        pipeline, _ = build(tmp_path, down_rule())
        now = time.time()
        store = pipeline.alerts.store
        silence = Silence(
            "abc123",
            parse_matchers(['alertname="api_down"']),
            now + 2,
            now + 3600,
            "later",
            "test",
            now,
        )
        await store.add_silence(silence)
        await pipeline.alerts.refresh_silences(now)
        assert pipeline.alerts.silences == []
        await pipeline.alerts.refresh_silences(now + 6)  # no other process wrote anything
        assert [s.id for s in pipeline.alerts.silences] == ["abc123"]


async def test_fossamon_reports_its_own_counters_as_a_batch(tmp_path):
    from fossamon.collectors.internal import METRICS, internal_batch

    pipeline, _ = build(tmp_path, down_rule())
    config = parse_config('[[sinks]]\ntype = "log"\nname = "journal"\n', env={})
    await pipeline.alerts.start(None, time.time(), config)
    try:
        await pipeline.ingest(api_batch(time.time(), 0.0))
        outputs = {"alerts": pipeline.alerts.alerts_out}
        batch = internal_batch(time.time(), pipeline.alerts, outputs)
    finally:
        await pipeline.alerts.stop(1.0)
    values = {
        (s.name, dict(s.labels).get("sink", dict(s.labels).get("file"))): s.value
        for s in batch.samples
    }
    assert {name for name, _ in values} <= set(METRICS)
    assert values[("fossamon_sink_dropped_total", "journal")] == 0
    assert values[("fossamon_output_lines_total", "alerts")] == 1
    assert values[("fossamon_alert_events_total", None)] == 1
    assert values[("fossamon_alerts_open", None)] == 1


class TestSilenceLifecycle:
    """What sinks hear of an alert whose beginning a silence hid."""

    async def setup(self, tmp_path):
        rule = validate_section(
            RuleConfig, {"name": "lat", "metric": "api_up", "warning": 5, "critical": 10}
        )
        evaluator = Evaluator([rule])
        alerts = AlertDispatcher("web-1", evaluator, JsonlWriter(tmp_path / "a.jsonl"))
        pipeline = Pipeline("web-1", History({}), evaluator, None, alerts)
        sink = tmp_path / "sink.jsonl"
        config = parse_config(f'[[sinks]]\ntype = "jsonl"\npath = "{sink}"\n', env={})
        now = time.time()
        await alerts.start(None, now, config)
        return pipeline, alerts, sink, now

    @staticmethod
    def heard(sink):
        if not sink.exists():
            return []
        return [(r["event"], r["severity"]) for r in map(json.loads, sink.read_text().splitlines())]

    async def test_a_silence_that_ends_mid_episode_announces_it_as_firing(self, tmp_path):
        from fossamon.matchers import parse_matchers
        from fossamon.silences import Silence

        pipeline, alerts, sink, now = await self.setup(tmp_path)
        try:
            silence = Silence(
                "s1", parse_matchers(['alertname="lat"']), now, now + 3600, "x", "t", now
            )
            await alerts.store.add_silence(silence)
            await alerts.refresh_silences(now, force=True)
            await pipeline.ingest(api_batch(now + 1, 7.0))  # firing (warning), silenced
            await alerts.store.expire_silence("s1", now + 2)
            await pipeline.tick(now + 2)  # the silence is over: sinks hear of it now
            await pipeline.ingest(api_batch(now + 3, 12.0))  # escalated
            await pipeline.ingest(api_batch(now + 4, 0.0))  # resolved
            await asyncio.sleep(0.2)
        finally:
            await alerts.stop(1.0)
        assert self.heard(sink) == [
            ("firing", "warning"),
            ("escalated", "critical"),
            ("resolved", "critical"),
        ]

    async def test_an_episode_wholly_inside_a_silence_is_never_heard(self, tmp_path):
        from fossamon.matchers import parse_matchers
        from fossamon.silences import Silence

        pipeline, alerts, sink, now = await self.setup(tmp_path)
        try:
            silence = Silence(
                "s1", parse_matchers(['alertname="lat"']), now, now + 3600, "x", "t", now
            )
            await alerts.store.add_silence(silence)
            await alerts.refresh_silences(now, force=True)
            await pipeline.ingest(api_batch(now + 1, 7.0))
            await pipeline.ingest(api_batch(now + 2, 12.0))
            await pipeline.ingest(api_batch(now + 3, 0.0))
            await alerts.store.expire_silence("s1", now + 4)
            await pipeline.tick(now + 4)
            await pipeline.ingest(api_batch(now + 5, 12.0))  # a new episode, heard whole
            await asyncio.sleep(0.2)
        finally:
            await alerts.stop(1.0)
        assert self.heard(sink) == [("firing", "critical")]
        recorded = [json.loads(x)["event"] for x in (tmp_path / "a.jsonl").read_text().splitlines()]
        assert recorded == ["firing", "escalated", "resolved", "firing"]  # the record is whole


async def test_last_evaluation_is_kept_fresh_while_a_for_wait_runs(tmp_path):
    """A restart measures downtime from it: stale by 10 s, a SIGKILL would cost a pending
    alert up to 10 s of its `for` wait."""
    rule = validate_section(
        RuleConfig, {"name": "r", "metric": "api_up", "warning": 5, "for": "60s"}
    )
    pipeline, _ = build(tmp_path, rule)
    store = pipeline.alerts.store
    await pipeline.ingest(api_batch(100.0, 7.0))  # pending
    await pipeline.tick(101.5)
    assert await store.last_evaluation() == 101.5
    await pipeline.ingest(api_batch(102.0, 0.0))  # back to ok: no wait running
    await pipeline.tick(103.5)
    assert await store.last_evaluation() == 102.0
