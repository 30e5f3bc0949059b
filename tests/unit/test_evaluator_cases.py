"""Golden cases (tests/cases/<name>/: config.toml, input.jsonl, expected.jsonl) and property
tests of the evaluator's invariants.

An input line is `{"t": seconds, "samples": [...]}` (a batch arriving) or
`{"t": seconds, "tick": true}` (time passing). An expected line lists the fields that must
match, in order; the fields it leaves out are not compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fossamon.config import RuleConfig, parse_config, validate_section
from fossamon.model import AlertEvent, Batch, EventKind, Sample, Severity, fingerprint, make_labels
from fossamon.rules.evaluator import Evaluator, Rule, SeriesState, _calm, _observed, step
from fossamon.rules.windows import History

CASES = Path(__file__).parent.parent / "cases"
EPOCH = 1_800_000_000.0  # the cases count seconds from here


def run_case(directory: Path) -> list[AlertEvent]:
    config = parse_config((directory / "config.toml").read_text(), file="config.toml", env={})
    evaluator = Evaluator(config.rules)
    history = History(evaluator.retention())
    events: list[AlertEvent] = []
    for line in (directory / "input.jsonl").read_text().splitlines():
        item = json.loads(line)
        now = EPOCH + item["t"]
        if item.get("tick"):
            events.extend(evaluator.tick(now))
            continue
        samples = tuple(
            Sample(s["name"], float(s["value"]), make_labels(s.get("labels", {})))
            for s in item["samples"]
        )
        batch = Batch("case", now, 0.0, samples)
        history.add_batch(batch)
        events.extend(evaluator.evaluate(now, history, {s.key for s in samples}))
    return events


def project(event: AlertEvent, wanted: dict[str, Any]) -> dict[str, Any]:
    full = {
        "t": round(event.ts - EPOCH, 3),
        "event": str(event.kind),
        "rule": event.rule,
        "severity": event.severity.label,
        "labels": dict(event.labels),
        "value": event.value,
        "threshold": event.threshold,
        "since": round(event.since - EPOCH, 3),
        "summary": event.summary,
    }
    return {key: full[key] for key in wanted}


@pytest.mark.parametrize("name", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
def test_golden_case(name: str) -> None:
    directory = CASES / name
    expected = [
        json.loads(line) for line in (directory / "expected.jsonl").read_text().splitlines()
    ]
    events = run_case(directory)
    got = [project(e, want) for e, want in zip(events, expected, strict=False)]
    assert got == expected[: len(got)]
    assert len(events) == len(expected), [
        project(e, {"t": 1, "event": 1, "rule": 1}) for e in events
    ]


def test_every_case_is_complete() -> None:
    for directory in CASES.iterdir():
        assert {p.name for p in directory.iterdir()} >= {
            "config.toml",
            "input.jsonl",
            "expected.jsonl",
        }


# --- property tests ---------------------------------------------------------------------------

OPENERS = {EventKind.FIRING, EventKind.NODATA}
INSIDE = {EventKind.ESCALATED, EventKind.DEESCALATED, EventKind.REPEAT}


@st.composite
def rules(draw: st.DrawFn) -> RuleConfig:
    above = draw(st.booleans())
    warning = draw(st.one_of(st.none(), st.integers(20, 60)))
    critical = draw(st.one_of(st.none(), st.integers(61, 90))) if warning is not None else 70
    if not above:  # mirror the levels: breaching is going below
        warning, critical = (
            (None if warning is None else 100 - warning),
            (None if critical is None else 100 - critical),
        )
    fields: dict[str, Any] = {
        "name": "r",
        "metric": "m",
        "direction": "above" if above else "below",
        "warning": warning,
        "critical": critical,
        "for": f"{draw(st.sampled_from([0, 10, 25]))}s",
        "keep_firing_for": f"{draw(st.sampled_from([0, 15]))}s",
        "no_data": draw(st.sampled_from(["alert", "keep", "ok"])),
        "no_data_after": "30s",
        "repeat_every": f"{draw(st.sampled_from([0, 20]))}s",
        "flap_threshold": draw(st.sampled_from([0, 3, 6])),
        "flap_window": "60s",
    }
    lowest = warning if warning is not None else critical
    if draw(st.booleans()):
        fields["clear"] = lowest - 10 if above else lowest + 10
    return validate_section(RuleConfig, {k: v for k, v in fields.items() if v is not None})


# Each step: seconds to wait, then a value (data arrives) or None (only a tick).
steps = st.lists(
    st.tuples(st.sampled_from([1, 5, 10, 20, 40]), st.one_of(st.none(), st.integers(0, 100))),
    min_size=1,
    max_size=60,
)


def replay(config: RuleConfig, script: list[tuple[int, int | None]]):
    rule = Rule(config)
    labels = make_labels(endpoint="e")
    state = SeriesState(since=0.0)
    now = 0.0
    observed: list[tuple[float, float]] = []
    events: list[AlertEvent] = []
    for wait, value in script:
        now += wait
        if value is not None:
            observed.append((now, float(value)))
        state, out = step(rule, labels, state, now, None if value is None else float(value))
        events.extend(out)
    return rule, observed, events


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules(), steps)
def test_episode_invariants(config: RuleConfig, script: list[tuple[int, int | None]]) -> None:
    rule = Rule(config)
    labels = make_labels(endpoint="e")
    state = SeriesState(since=0.0)
    now = 0.0
    open_episode = False
    for wait, value in script:
        now += wait
        state, events = step(rule, labels, state, now, None if value is None else float(value))
        for event in events:
            kind = event.kind
            if kind == EventKind.FIRING:
                assert not open_episode, "two firings without a resolve between them"
                open_episode = True
            elif kind in {EventKind.NODATA, EventKind.FLAPPING}:
                open_episode = True  # opens one, or marks the open one
            elif kind == EventKind.RESOLVED:
                assert open_episode, "resolved without a prior firing"
                open_episode = False
            else:
                assert kind in INSIDE
                assert open_episode, f"{kind} outside an episode"
            assert event.severity > Severity.OK
            assert event.fingerprint == fingerprint("r", labels)
        # what sinks were told matches what the state says is open
        assert state.open == open_episode, (now, state)


def _breaches(rule: Rule, value: float, level: float) -> bool:
    return value > level if rule.above else value < level


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules(), steps)
def test_for_and_hysteresis_are_respected(
    config: RuleConfig, script: list[tuple[int, int | None]]
) -> None:
    rule, observed, events = replay(config, script)
    lowest = rule.levels[-1]
    for event in events:
        if event.kind == EventKind.FIRING and "data is back" not in event.summary:
            # every observation from (at most) `for` ago up to now breached the lowest level
            held = [v for t, v in observed if event.since <= t <= event.ts]
            assert held, "fired without data"
            assert all(_breaches(rule, v, lowest.level) for v in held)
            assert event.ts - event.since >= config.for_
        reason = event.summary.removesuffix(")").split("(")[-1]
        if event.kind == EventKind.RESOLVED and reason not in {
            "no data",
            "data is back",
            "stopped flapping",
        }:
            last = [v for t, v in observed if t <= event.ts][-1]
            # back past the clear level (hysteresis), held for keep_firing_for
            assert not _breaches(rule, last, lowest.clear)
            recent = [v for t, v in observed if event.ts - config.keep_firing_for <= t <= event.ts]
            assert all(not _breaches(rule, v, lowest.clear) for v in recent)


@settings(max_examples=200, deadline=None)
@given(rules(), steps)
def test_state_survives_a_json_round_trip(
    config: RuleConfig, script: list[tuple[int, int | None]]
) -> None:
    """What the state store keeps is enough: replaying from a restored state gives the same
    events as never having stopped."""
    rule = Rule(config)
    labels = make_labels()
    state = SeriesState(since=0.0)
    now = 0.0
    for wait, value in script:
        now += wait
        restored = SeriesState.from_json(json.loads(json.dumps(state.to_json())))
        a_state, a_events = step(rule, labels, state, now, None if value is None else float(value))
        b_state, b_events = step(
            rule, labels, restored, now, None if value is None else float(value)
        )
        assert a_events == b_events
        assert a_state == b_state
        state = a_state


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules(), steps)
def test_the_calm_shortcut_is_what_step_would_do(
    config: RuleConfig, script: list[tuple[int, int | None]]
) -> None:
    """The evaluator skips `step()` for a calm series and records the value itself: the
    result must be exactly `step()`'s, in every state the machine can reach."""
    rule = Rule(config)
    labels = make_labels(endpoint="e")
    state = SeriesState(since=0.0)
    now = 0.0
    for wait, value in script:
        now += wait
        reading = None if value is None else float(value)
        stepped = step(rule, labels, state, now, reading)
        if reading is not None and _calm(rule, state, reading):
            assert stepped == (_observed(rule, state, now, reading), [])
            assert stepped[0].durable() == state.durable()
        state = stepped[0]
