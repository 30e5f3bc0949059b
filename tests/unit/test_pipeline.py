from __future__ import annotations

import json

from structlog.testing import capture_logs

from fossamon.config import RuleConfig
from fossamon.model import Batch, Sample, make_labels
from fossamon.pipeline import Pipeline
from fossamon.rules.evaluator import Evaluator
from fossamon.rules.windows import History
from fossamon.storage.jsonl import JsonlWriter
from fossamon.testing import RecordingObserver


def build(tmp_path, *rules: RuleConfig) -> tuple[Pipeline, RecordingObserver]:
    evaluator = Evaluator(rules)
    observer = RecordingObserver()
    pipeline = Pipeline(
        "web-1",
        History(evaluator.retention()),
        evaluator,
        JsonlWriter(tmp_path / "m.jsonl"),
        JsonlWriter(tmp_path / "a.jsonl"),
        [observer],
    )
    return pipeline, observer


def down_rule() -> RuleConfig:
    return RuleConfig.model_validate(
        {"name": "api_down", "metric": "api_up", "direction": "below", "critical": 1}
    )


def api_batch(ts: float, up: float) -> Batch:
    return Batch("api", ts, 0.01, (Sample("api_up", up, make_labels(endpoint="health")),))


class TestIngest:
    def test_a_batch_reaches_the_file_history_evaluator_and_observers(self, tmp_path):
        pipeline, observer = build(tmp_path, down_rule())
        with capture_logs() as logs:
            events = pipeline.ingest(api_batch(100.0, 0.0))
        (event,) = events
        (metrics_line,) = (tmp_path / "m.jsonl").read_text().splitlines()
        assert json.loads(metrics_line)["samples"][0]["value"] == 0.0
        (alert_line,) = (tmp_path / "a.jsonl").read_text().splitlines()
        assert json.loads(alert_line)["fingerprint"] == event.fingerprint
        assert observer.batches[0].ts == 100.0
        assert observer.events == [event]
        (logged,) = [e for e in logs if e["event"] == "alert firing"]
        assert (logged["log_level"], logged["rule"]) == ("error", "api_down")
        assert logged["series"] == 'api_up{endpoint="health"}'

    def test_rules_on_other_metrics_are_not_evaluated_for_this_batch(self, tmp_path):
        pipeline, _ = build(tmp_path, down_rule())
        pipeline.ingest(Batch("system", 1.0, 0.01, (Sample("system_load1", 3.0),)))
        assert pipeline.evaluator.states == {}
        assert not (tmp_path / "a.jsonl").exists()  # opened lazily: no event, no file

    def test_resolved_is_logged_at_info(self, tmp_path):
        pipeline, _ = build(tmp_path, down_rule())
        pipeline.ingest(api_batch(1.0, 0.0))
        with capture_logs() as logs:
            (event,) = pipeline.ingest(api_batch(2.0, 1.0))
        assert str(event.kind) == "resolved"
        assert [e["log_level"] for e in logs if e["event"] == "alert resolved"] == ["info"]
        assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 2
