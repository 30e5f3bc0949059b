from __future__ import annotations

import math
import random

import pytest
from test_windows import reference_add

from fossamon.config import RuleConfig, validate_section
from fossamon.model import Batch, EventKind, Sample, Severity, make_labels
from fossamon.rules.evaluator import Evaluator, Rule, SeriesState, render_summary, step
from fossamon.rules.windows import History, aggregate
from fossamon.testing import ManualClock


def rule(**fields) -> RuleConfig:
    base = {"name": "r", "metric": "m"}
    for key in ("window", "for_"):
        if isinstance(fields.get(key), int | float):
            fields[key] = f"{fields[key]}s"  # config durations carry a unit
    base.update(fields)
    return validate_section(RuleConfig, base)


class Harness:
    """Feeds one value per step into history and evaluates, as the pipeline does."""

    def __init__(self, *rules: RuleConfig, honor_for: bool = True) -> None:
        self.clock = ManualClock()
        self.evaluator = Evaluator(rules, honor_for=honor_for)
        self.history = History(self.evaluator.retention())

    def feed(self, value: float, *, step: float = 10.0, metric: str = "m", **labels: str):
        now = self.clock.advance(step)
        batch = Batch("x", now, 0.0, (Sample(metric, value, make_labels(labels)),))
        self.history.add_batch(batch)
        return self.evaluator.evaluate(now, self.history, {s.key for s in batch.samples})

    def kinds(self, values, **kw) -> list[tuple[str, str]]:
        out = []
        for value in values:
            out.extend((str(e.kind), e.severity.label) for e in self.feed(value, **kw))
        return out


class TestLevels:
    def test_fires_at_the_worst_breached_level(self):
        h = Harness(rule(warning=60, critical=80))
        assert h.kinds([10, 70]) == [("firing", "warning")]
        assert h.kinds([90]) == [("escalated", "critical")]
        assert h.kinds([70]) == [("deescalated", "warning")]
        assert h.kinds([10]) == [("resolved", "warning")]
        assert h.kinds([10, 10]) == []

    def test_straight_to_critical(self):
        h = Harness(rule(warning=60, critical=80))
        (event,) = h.feed(95)
        assert (event.kind, event.severity, event.threshold, event.value) == (
            EventKind.FIRING,
            Severity.CRITICAL,
            80,
            95,
        )

    def test_equal_to_the_level_is_not_a_breach(self):
        assert Harness(rule(warning=60)).kinds([60]) == []

    def test_direction_below(self):
        h = Harness(rule(direction="below", critical=1))
        assert h.kinds([1, 0]) == [("firing", "critical")]
        assert h.kinds([1]) == [("resolved", "critical")]

    def test_each_label_set_has_its_own_state(self):
        h = Harness(rule(critical=1, direction="below"))
        events = h.feed(0, endpoint="a") + h.feed(1, endpoint="b")
        assert [(e.kind, dict(e.labels)) for e in events] == [(EventKind.FIRING, {"endpoint": "a"})]
        assert len(h.evaluator.firing()) == 1

    def test_label_matchers_limit_the_rule(self):
        h = Harness(rule(critical=1, direction="below", labels={"endpoint": "a"}))
        assert h.feed(0, endpoint="b") == []
        assert len(h.feed(0, endpoint="a")) == 1


class TestFor:
    def test_breach_must_hold_for_the_duration(self):
        h = Harness(rule(warning=60, for_=30))
        assert h.kinds([70, 70, 70]) == []  # pending for 0, 10, 20 s
        (event,) = h.feed(70)  # 30 s
        assert event.kind == EventKind.FIRING
        assert h.clock.now - event.since == 30  # `since` is when the breach began

    def test_a_recovery_while_pending_resets_the_clock(self):
        h = Harness(rule(warning=60, for_=30))
        assert h.kinds([70, 70, 10, 70, 70, 70]) == []
        assert h.kinds([70]) == [("firing", "warning")]

    def test_one_shot_mode_ignores_for(self):
        h = Harness(rule(warning=60, for_=3600), honor_for=False)
        assert h.kinds([70]) == [("firing", "warning")]


class TestHysteresis:
    def test_stays_firing_until_past_clear(self):
        h = Harness(rule(warning=60, critical=80, clear=50))
        assert h.kinds([90]) == [("firing", "critical")]
        # between clear and warning: still firing, de-escalated to the lowest level
        assert h.kinds([55]) == [("deescalated", "warning")]
        assert h.kinds([58, 52]) == []
        assert h.kinds([49]) == [("resolved", "warning")]

    def test_no_flapping_around_the_level(self):
        h = Harness(rule(warning=60, clear=55))
        assert h.kinds([61, 59, 61, 59, 61, 59]) == [("firing", "warning")]

    def test_without_clear_it_flaps(self):
        h = Harness(rule(warning=60))
        assert len(h.kinds([61, 59, 61, 59])) == 4


class TestWindows:
    def test_p95_over_window(self):
        h = Harness(rule(metric="lat", aggregate="p95", window=60, warning=0.5))
        for _ in range(19):
            assert h.feed(0.1, metric="lat", step=1) == []
        # p95 of 19 × 0.1 and one 5.0 is 0.1 + 0.05 × 4.9 = 0.345: one outlier is tolerated
        assert h.feed(5.0, metric="lat", step=1) == []
        # with a second 5.0 among 21 points, p95 is the 20th of 21 sorted values: 5.0
        (event,) = h.feed(5.0, metric="lat", step=1)
        assert (event.kind, event.value) == (EventKind.FIRING, 5.0)

    def test_avg_over_window_forgets_old_points(self):
        h = Harness(rule(aggregate="avg", window=30, warning=50))
        assert h.kinds([100], step=10) == [("firing", "warning")]
        assert h.kinds([0, 0], step=10) == [("resolved", "warning")]
        # after 30 s the 100 has left the window; avg is 0
        assert h.kinds([0, 0], step=10) == []

    def test_no_data_gives_no_event(self):
        h = Harness(rule(warning=1))
        assert h.evaluator.evaluate(h.clock.now, h.history, None) == []


class TestEvents:
    def test_event_fields_and_default_summary(self):
        h = Harness(rule(name="api_p95", metric="api_response_seconds", warning=0.5, critical=2))
        (event,) = h.feed(0.8, metric="api_response_seconds", endpoint="health")
        doc = event.to_json("web-1")
        assert doc["event"] == "firing"
        assert doc["severity"] == "warning"
        assert doc["labels"] == {"endpoint": "health"}
        assert doc["value"] == 0.8
        assert doc["threshold"] == 0.5
        assert len(doc["fingerprint"]) == 16
        assert doc["summary"] == (
            'api_response_seconds{endpoint="health"} last is 800ms (above warning level 500ms)'
        )
        (resolved,) = h.feed(0.1, metric="api_response_seconds", endpoint="health")
        assert resolved.summary.endswith("is 100ms (back below 500ms)")
        assert resolved.fingerprint == event.fingerprint

    def test_summary_template(self):
        h = Harness(rule(critical=1, direction="below", summary="{labels[endpoint]} down: {value}"))
        (event,) = h.feed(0, endpoint="health")
        assert event.summary == "health down: 0"

    def test_missing_template_keys_render_visibly(self):
        text = render_summary("{nope} and {labels[gone]} and {0}", {"labels": {}})
        assert text == "<missing:nope> and <missing:gone> and <missing:0>"

    def test_broken_template_does_not_raise(self):
        assert "<template error" in render_summary("{unclosed", {})


class TestReload:
    def test_unchanged_rules_keep_state_changed_ones_start_over(self):
        keep, change = rule(name="keep", warning=1), rule(name="change", warning=1)
        h = Harness(keep, change)
        assert len(h.feed(5)) == 2
        (resolved,) = h.evaluator.replace_rules([keep, rule(name="change", warning=2)], 1.0)
        assert (resolved.rule, resolved.kind) == ("change", EventKind.RESOLVED)
        assert resolved.summary.endswith("(rule changed)")
        firing = {name for name, _, _ in h.evaluator.firing()}
        assert firing == {"keep"}
        # the kept rule does not fire again; the changed one fires afresh
        assert [(e.rule, str(e.kind)) for e in h.feed(5)] == [("change", "firing")]

    def test_retention_is_the_longest_window_per_metric(self):
        evaluator = Evaluator(
            [
                rule(name="a", aggregate="avg", window=60, warning=1),
                rule(name="b", aggregate="max", window=300, warning=1),
                rule(name="c", metric="other", warning=1),
            ]
        )
        assert evaluator.retention() == {"m": 300, "other": 0}


class TestSeriesSelection:
    def test_only_series_in_the_batch_are_evaluated(self):
        h = Harness(rule(warning=60, for_=30))
        h.feed(70, endpoint="a")  # pending since now
        # "a" stops reporting; batches for "b" must not keep judging "a" on its old value
        for _ in range(5):
            h.feed(10, endpoint="b")
        assert h.evaluator.firing() == []

    def test_forget_resolves_what_was_firing(self):
        h = Harness(rule(critical=1, direction="below"))
        h.feed(0, endpoint="gone")
        h.feed(1, endpoint="kept")
        gone = {("m", make_labels(endpoint="gone"))}
        (event,) = h.evaluator.forget(gone, h.clock.now)
        assert (event.kind, dict(event.labels)) == (EventKind.RESOLVED, {"endpoint": "gone"})
        assert event.summary.endswith("(no longer collected)")
        assert h.evaluator.firing() == []
        assert ("r", make_labels(endpoint="kept")) in h.evaluator.states


class TestNonFinite:
    def test_non_finite_values_are_not_judged(self):
        # kept out of the windows (they would poison every aggregate); the JSONL has null
        h = Harness(rule(warning=1))
        assert h.feed(float("inf")) == []
        assert h.feed(float("nan")) == []
        assert h.evaluator.states == {}

    def test_a_removed_rule_resolves_what_it_had_firing(self):
        h = Harness(rule(name="gone", warning=1), rule(name="stays", warning=100))
        h.feed(5)
        (resolved,) = h.evaluator.replace_rules([rule(name="stays", warning=100)], 2.0)
        assert (resolved.rule, str(resolved.kind)) == ("gone", "resolved")
        assert h.evaluator.states.keys() == {("stays", ())}


class TestRestore:
    """What the state store gives back after a restart."""

    def restarted(self, h: Harness, down_for: float) -> Harness:
        saved = h.evaluator.take_changes()
        last = h.clock.now
        fresh = Harness(*[r.config for r in h.evaluator.rules])
        fresh.clock.advance(last - fresh.clock.now + down_for)
        fresh.evaluator.restore(
            {k: v for k, v in saved.items() if v is not None}, last, fresh.clock.now
        )
        return fresh

    def test_a_firing_alert_stays_firing_without_a_second_firing(self):
        h = Harness(rule(warning=60))
        assert h.kinds([70]) == [("firing", "warning")]
        h2 = self.restarted(h, down_for=30)
        assert h2.kinds([70, 70]) == []
        assert h2.kinds([10]) == [("resolved", "warning")]

    def test_a_pending_alert_keeps_its_elapsed_for_time(self):
        h = Harness(rule(warning=60, for_=60))
        assert h.kinds([70, 70, 70]) == []  # pending for 20 s of 60 s
        h2 = self.restarted(h, down_for=600)  # downtime does not count
        assert h2.kinds([70, 70, 70], step=10) == []  # 50 s of 60 s
        assert h2.kinds([70], step=10) == [("firing", "warning")]

    def test_a_recovery_while_down_is_resolved_once(self):
        h = Harness(rule(warning=60))
        h.kinds([70])
        h2 = self.restarted(h, down_for=120)
        assert h2.kinds([10, 10, 10]) == [("resolved", "warning")]

    def test_states_of_removed_rules_are_not_restored(self):
        h = Harness(rule(name="gone", warning=60))
        h.kinds([70])
        saved = h.evaluator.take_changes()
        other = Evaluator([rule(name="other", warning=60)])
        other.restore({k: v for k, v in saved.items() if v}, h.clock.now, h.clock.now + 1)
        assert other.states == {}

    def test_no_data_counts_from_the_restart(self):
        h = Harness(rule(warning=60, no_data_after="30s"))
        h.kinds([10])
        h2 = self.restarted(h, down_for=3600)
        assert h2.evaluator.tick(h2.clock.advance(20)) == []
        (event,) = h2.evaluator.tick(h2.clock.advance(15))
        assert str(event.kind) == "nodata"

    def test_a_rule_edited_while_down_resolves_its_saved_alerts(self):
        h = Harness(rule(warning=60))
        h.kinds([70])
        saved = h.evaluator.take_changes()
        edited = Evaluator([rule(warning=65)])
        (event,) = edited.restore(saved, h.clock.now, h.clock.now + 5)
        assert (str(event.kind), event.rule, event.severity.label) == ("resolved", "r", "warning")
        assert "rule removed or changed while fossamon was stopped" in event.summary
        assert event.fingerprint == next(iter(saved))
        assert edited.states == {}
        assert edited.take_changes() == {next(iter(saved)): None}  # forgotten in the store

    def test_a_series_no_longer_collected_is_resolved_at_restart(self):
        h = Harness(rule(warning=60))
        h.kinds([70], endpoint="orders")
        saved = h.evaluator.take_changes()
        fresh = Evaluator([rule(warning=60)])
        events = fresh.restore(
            saved,
            h.clock.now,
            h.clock.now + 5,
            lambda _m, labels: dict(labels)["endpoint"] != "orders",
        )
        assert [(str(e.kind), dict(e.labels)) for e in events] == [
            ("resolved", {"endpoint": "orders"})
        ]
        assert fresh.states == {}


class TestHousekeeping:
    def test_data_too_thin_for_the_aggregate_is_still_data(self):
        """A predict rule right after a restart has data but no verdict: not 'no data'."""
        config = rule(
            aggregate="predict", window=600, predict_ahead="1h", critical=100, no_data_after="30s"
        )
        h = Harness(config)
        h.kinds([10] * 40, step=10)  # a verdict (ok) once the points cover half the window
        saved, last = h.evaluator.take_changes(), h.clock.now
        restarted = Harness(config)
        restarted.clock.advance(last - restarted.clock.now + 60)
        restarted.evaluator.restore(saved, last, restarted.clock.now)
        assert restarted.kinds([10, 10, 10, 10, 10], step=10) == []  # thin: no verdict yet
        assert restarted.evaluator.tick(restarted.clock.advance(25)) == []  # and no "no data"

    def test_calm_series_that_stopped_reporting_are_forgotten(self):
        h = Harness(rule(warning=60, no_data="keep", no_data_after="30s"))
        h.kinds([10], endpoint="a")
        h.kinds([10], endpoint="b")
        h.evaluator.take_changes()
        assert h.evaluator.tick(h.clock.advance(3000)) == []
        assert len(h.evaluator.states) == 2
        assert h.evaluator.tick(h.clock.advance(700)) == []
        assert h.evaluator.states == {}
        assert set(h.evaluator.take_changes().values()) == {None}

    def test_an_idle_tick_changes_nothing(self):
        h = Harness(rule(warning=60, no_data_after="30s"))
        h.kinds([10])
        ((key, before),) = h.evaluator.states.items()
        h.evaluator.take_changes()
        assert h.evaluator.tick(h.clock.advance(1)) == []
        assert h.evaluator.states[key] is before
        assert h.evaluator.take_changes() == {}


def test_check_warns_about_a_summary_that_would_show_a_marker():
    from fossamon.overview import _template_problem

    assert _template_problem("{labels[endpoint]} is {value} ({severity}, {since})") is None
    assert "{bogus} is not a summary field" in (_template_problem("{value} {bogus}") or "")
    assert "template error" in (_template_problem("{labels[endpoint} x") or "")


class PlainEvaluator:
    """What `Evaluator.evaluate` does, written the plain way: every rule in order matched
    against every updated series, each aggregate computed from a sort of a list of points
    kept without any index, and every value through `step()`."""

    def __init__(self, rules: list[RuleConfig]) -> None:
        self.rules = [Rule(r) for r in rules]
        self.retention = Evaluator(rules).retention()
        self.points: dict[tuple[str, tuple], list[tuple[float, float]]] = {}
        self.states: dict[tuple[str, tuple], SeriesState] = {}

    def add_batch(self, batch: Batch) -> None:
        for sample in batch.samples:
            if math.isfinite(sample.value):
                points = self.points.setdefault(sample.key, [])
                reference_add(
                    points, batch.ts, sample.value, self.retention.get(sample.name, 0.0), 20_000
                )

    def evaluate(self, now: float, series: set) -> list:
        events = []
        for r in self.rules:
            for name, labels in series:
                points = self.points.get((name, labels))
                wanted = r.config.labels.items()
                if name != r.config.metric or points is None or wanted - set(labels):
                    continue
                window = r.config.window
                since = [p for p in points if p[0] >= now - window] if window else points[-1:]
                value = aggregate(r.config.aggregate, since)
                before = self.states.get((r.name, labels))
                if value is None:
                    if before is not None:
                        self.states[(r.name, labels)] = before._replace(last_data=now)
                    continue
                state, out = step(r, labels, before or SeriesState(since=now), now, value)
                self.states[(r.name, labels)] = state
                events += out
        return events


class TestAgainstAPlainEvaluator:
    """The indexes, sorted windows and shortcuts change how fast, never what: the same
    randomized streams give the same events and states as the plain computation."""

    RULES = (
        {"name": "p95_all", "aggregate": "p95", "window": 300, "warning": 0.5, "critical": 2},
        {"name": "p95_a", "aggregate": "p95", "window": 60, "warning": 0.4, "for_": 20,
         "labels": {"endpoint": "a"}},
        {"name": "p50_long", "aggregate": "p50", "window": 900, "warning": 0.3, "clear": 0.2},
        {"name": "p99_short", "aggregate": "p99", "window": 30, "critical": 1.5,
         "keep_firing_for": "15s"},
        {"name": "low_p90", "aggregate": "p90", "window": 120, "direction": "below",
         "warning": 0.05, "labels": {"endpoint": "b"}},
        {"name": "avg", "aggregate": "avg", "window": 60, "warning": 0.6},
        {"name": "last", "warning": 1.0, "critical": 3.0},
        {"name": "other_metric", "metric": "x", "aggregate": "p95", "window": 60, "warning": 1},
    )  # fmt: skip

    @pytest.mark.parametrize("seed", range(4))
    def test_same_events_and_states_on_random_streams(self, seed):
        configs = [rule(**fields) for fields in self.RULES]
        h, plain = Harness(*configs), PlainEvaluator(configs)
        rng = random.Random(seed)
        now, got, expected = 1000.0, [], []
        for _ in range(1500):
            now += rng.choice([1.0, 2.0, 5.0, 15.0])
            ts = now - rng.choice([0.0, 0.0, 0.0, 0.0, 10.0])  # a late batch now and then
            samples = tuple(
                Sample(
                    rng.choice(["m", "m", "m", "x"]),
                    math.nan if rng.random() < 0.005 else rng.lognormvariate(-1.5, 1.0),
                    make_labels(endpoint=rng.choice("abcd")),
                )
                for _ in range(rng.randrange(1, 6))
            )
            batch = Batch("x", ts, 0.0, samples)
            updated = {s.key for s in samples}
            h.history.add_batch(batch)
            plain.add_batch(batch)
            got += h.evaluator.evaluate(ts, h.history, updated)
            expected += plain.evaluate(ts, updated)
        assert got == expected
        assert h.evaluator.states == plain.states
        assert {e.kind for e in got} >= {EventKind.FIRING, EventKind.RESOLVED}

    def test_a_series_is_read_by_the_rules_of_a_reload(self):
        h = Harness(rule(name="a", warning=1))
        assert [e.rule for e in h.feed(5, endpoint="x")] == ["a"]
        other = rule(name="other", warning=1, labels={"endpoint": "y"})  # now first in line
        h.evaluator.replace_rules([other, rule(name="b", warning=1)], 1.0)
        assert [e.rule for e in h.feed(5, endpoint="x")] == ["b"]
