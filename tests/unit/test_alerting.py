"""AlertDispatcher's silences: read from the store when they can matter, not every second."""

from __future__ import annotations

import json
import time

from fossamon import alerting
from fossamon.alerting import AlertDispatcher
from fossamon.config import RuleConfig, parse_config, validate_section
from fossamon.matchers import parse_matchers
from fossamon.model import Batch, Sample, make_labels
from fossamon.pipeline import Pipeline
from fossamon.rules.evaluator import Evaluator
from fossamon.rules.windows import History
from fossamon.silences import Silence
from fossamon.storage.jsonl import JsonlWriter
from fossamon.storage.state import MemoryStateStore


class CountingStore(MemoryStateStore):
    """Counts the calls that are a trip to aiosqlite's thread in the real StateStore."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.versions = 0

    async def active_silences(self, now: float) -> list[Silence]:
        self.reads += 1
        return await super().active_silences(now)

    async def data_version(self) -> int:
        self.versions += 1
        return await super().data_version()


def down_rule() -> RuleConfig:
    return validate_section(
        RuleConfig, {"name": "api_down", "metric": "api_up", "direction": "below", "critical": 1}
    )


async def started(tmp_path) -> tuple[Pipeline, AlertDispatcher, CountingStore, float]:
    store = CountingStore()
    evaluator = Evaluator([down_rule()])
    alerts = AlertDispatcher("web-1", evaluator, JsonlWriter(tmp_path / "a.jsonl"), store)
    pipeline = Pipeline("web-1", History(evaluator.retention()), evaluator, None, alerts)
    now = time.time()
    config = parse_config(f'[[sinks]]\ntype = "jsonl"\npath = "{tmp_path}/sink.jsonl"\n', env={})
    await alerts.start(None, now, config)
    store.reads = store.versions = 0
    return pipeline, alerts, store, now


def silence(now: float) -> Silence:
    return Silence("s1", parse_matchers(['alertname="api_down"']), now, now + 3600, "x", "t", now)


class TestSilenceReads:
    async def test_a_second_without_silences_or_events_asks_the_store_nothing(self, tmp_path):
        pipeline, alerts, store, now = await started(tmp_path)
        try:
            for second in range(1, 5):
                await pipeline.tick(now + second)
            assert (store.reads, store.versions) == (0, 0)
            await pipeline.tick(now + alerting.SILENCES_REREAD)
            assert (store.reads, store.versions) == (1, 0)  # the periodic re-read
        finally:
            await alerts.stop(1.0)

    async def test_while_a_silence_holds_each_tick_asks_whether_another_process_wrote(
        self, tmp_path
    ):
        pipeline, alerts, store, now = await started(tmp_path)
        try:
            await store.add_silence(silence(now))
            await alerts.refresh_silences(now, force=True)
            store.reads = store.versions = 0
            await pipeline.tick(now + 1)
            assert store.versions == 1
            await store.expire_silence("s1", now + 1.5)  # `fossamon silence expire`
            await pipeline.tick(now + 2)
            assert alerts.silences == []  # seen at the next tick, not the next re-read
        finally:
            await alerts.stop(1.0)

    async def test_an_event_is_checked_against_a_silence_added_since_the_last_read(
        self, tmp_path, monkeypatch
    ):
        """`fossamon silence add` between two re-reads still holds the next alert back."""
        monkeypatch.setattr(alerting, "SILENCES_FRESH", 0.0)  # every read is stale at once
        pipeline, alerts, store, now = await started(tmp_path)
        try:
            await pipeline.tick(now + 1)  # no silence yet, and no trip to the store
            await store.add_silence(silence(now))
            batch = Batch("api", now + 2, 0.01, (Sample("api_up", 0.0, make_labels(x="y")),))
            (event,) = await pipeline.ingest(batch)
        finally:
            await alerts.stop(1.0)
        assert str(event.kind) == "firing"
        (record,) = map(json.loads, (tmp_path / "a.jsonl").read_text().splitlines())
        assert record["silenced_by"] == "s1"
        assert not (tmp_path / "sink.jsonl").exists()  # the sink never heard it


class TestOutputAlerts:
    """The internal alerts on the output files: one real writer whose rotation fails."""

    async def test_a_failing_rotation_warns_and_resolves_when_rotation_works(
        self, tmp_path, monkeypatch
    ):
        from pathlib import Path

        from fossamon.storage.rotation import RotationPolicy

        _, alerts, _, now = await started(tmp_path)
        policy = RotationPolicy(mode="builtin", max_size=4096, compress=False)
        writer = JsonlWriter(tmp_path / "m.jsonl", policy, clock=lambda: now)
        writer.open()
        real_rename = Path.rename

        def refused(self, target):
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "rename", refused)
        for n in range(100):  # 100 lines of ~60 bytes: past max_size, rotation is due
            assert writer.write({"n": n, "pad": "x" * 40})
        assert writer.lines_written == 100  # nothing lost while rotation fails
        assert writer.rotation_failures == 1  # retried in a minute, not at every write
        assert "Permission denied" in writer.rotation_error
        await alerts.watch_outputs({"metrics": writer}, now)
        monkeypatch.setattr(Path, "rename", real_rename)
        now += 61  # the retry is due
        writer.write({"n": 100})
        assert writer.rotations == 1
        assert writer.rotation_error == ""
        await alerts.watch_outputs({"metrics": writer}, now)
        writer.close()
        events = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
        rotation = [e for e in events if e["rule"] == "output_rotation_failing"]
        assert [(e["event"], e["severity"]) for e in rotation] == [
            ("firing", "warning"),
            ("resolved", "warning"),
        ]
        assert rotation[0]["labels"] == {"file": "metrics"}
        assert "cannot rotate" in rotation[0]["summary"]
        assert not [e for e in events if e["rule"] == "output_write_failing"]
