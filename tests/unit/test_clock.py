"""Steps of the wall clock: seen once, batches begun before one taken in today's terms, and the
pipeline's windows and alert timers moved with it (the daemon-level row is
tests/faults/test_clock_faults.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from fossamon.alerting import AlertDispatcher
from fossamon.clock import STEP_THRESHOLD, WallClock
from fossamon.config import RuleConfig, validate_section
from fossamon.model import (
    Batch,
    EventKind,
    Sample,
    Severity,
    fingerprint,
    make_labels,
    parse_iso_ts,
)
from fossamon.pipeline import Pipeline
from fossamon.rules.evaluator import Evaluator, SeriesState
from fossamon.rules.windows import History, SeriesWindow
from fossamon.sinks.alertmanager import _Alert
from fossamon.storage.jsonl import JsonlWriter

HOUR = 3600.0


@dataclass
class Clocks:
    """A wall clock and a monotonic one, moved by hand."""

    wall_at: float = 1_800_000_000.0
    mono_at: float = 500.0

    def wall(self) -> float:
        return self.wall_at

    def mono(self) -> float:
        return self.mono_at

    def advance(self, seconds: float) -> None:
        self.wall_at += seconds
        self.mono_at += seconds

    def step(self, seconds: float) -> None:
        self.wall_at += seconds


class TestWallClock:
    def test_time_passing_and_slews_are_no_step(self):
        clocks = Clocks()
        clock = WallClock(clocks.wall, clocks.mono)
        clocks.advance(100.0)
        assert clock.sync()[0] == 0.0
        clocks.step(STEP_THRESHOLD * 0.9)  # what slewing could add up to, at most
        assert clock.sync()[0] == 0.0

    @pytest.mark.parametrize("step", [HOUR, -2 * HOUR, 1.0, -1.0])
    def test_a_step_is_seen_once(self, step):
        clocks = Clocks()
        clock = WallClock(clocks.wall, clocks.mono)
        clocks.advance(3.0)
        clocks.step(step)
        assert clock.sync()[0] == step
        clocks.advance(3.0)
        assert clock.sync()[0] == 0.0

    def test_without_a_step_a_reading_is_taken_at_its_word(self):
        clocks = Clocks()
        clock = WallClock(clocks.wall, clocks.mono)
        assert clock.current(100.0, 0.5) == 100.0  # a test's made-up time, say

    def test_a_run_begun_before_the_step_carries_the_old_time(self):
        clocks = Clocks()
        clock = WallClock(clocks.wall, clocks.mono)
        started = clocks.wall_at  # the run reads the clock, then the clock steps back
        clocks.advance(0.2)
        clocks.step(-HOUR)
        clocks.advance(0.2)
        assert clock.sync()[0] == -HOUR
        clocks.advance(0.6)  # the run ends 1 s after it began, after the step was seen
        assert clock.current(started, 1.0) == pytest.approx(started - HOUR)

    def test_a_run_begun_after_the_step_was_seen_is_left_alone(self):
        clocks = Clocks()
        clock = WallClock(clocks.wall, clocks.mono)
        clocks.step(HOUR)
        assert clock.sync()[0] == HOUR
        clocks.advance(0.1)
        started = clocks.wall_at
        clocks.advance(1.0)
        assert clock.current(started, 1.0) == started

    def test_a_run_begun_before_but_read_after_the_step_is_left_alone(self):
        clocks = Clocks()
        clock = WallClock(clocks.wall, clocks.mono)
        clocks.step(HOUR)  # stepped just before the run read the clock, seen during it
        started = clocks.wall_at
        clocks.advance(0.5)
        assert clock.sync()[0] == HOUR
        clocks.advance(0.5)
        assert clock.current(started, 1.0) == started


class TestSeriesWindowShift:
    def test_points_and_fits_move_with_the_step(self):
        window = SeriesWindow(600.0)
        for n in range(50):
            window.add(1000.0 + 10 * n, 2.0 * n + (n % 3))
        origin, slope, intercept = window.fit_since(1000.0, 600.0)  # type: ignore[misc]
        window.shift(-HOUR)
        assert [t for t, _ in window.points] == [1000.0 - HOUR + 10 * n for n in range(50)]
        moved = window.fit_since(1000.0 - HOUR, 600.0)
        assert moved is not None
        assert moved[0] == pytest.approx(origin - HOUR)
        assert moved[1:] == pytest.approx((slope, intercept))
        window.add(1500.0 - HOUR, 7.0)  # later than the last point, in the new terms: taken
        assert window.points[-1] == (1500.0 - HOUR, 7.0)


def rule(**extra: object) -> RuleConfig:
    fields = {"name": "api_down", "metric": "api_up", "direction": "below", "critical": 1}
    return validate_section(RuleConfig, {**fields, **extra})


def build(tmp_path, clocks: Clocks, *rules: RuleConfig, clock: bool = True) -> Pipeline:
    evaluator = Evaluator(rules, no_data_after={"api_up": 5.0})
    alerts = AlertDispatcher("web-1", evaluator, JsonlWriter(tmp_path / "a.jsonl"))
    return Pipeline(
        "web-1",
        History(evaluator.retention()),
        evaluator,
        JsonlWriter(tmp_path / "m.jsonl"),
        alerts,
        clock=WallClock(clocks.wall, clocks.mono) if clock else None,
    )


def up(clocks: Clocks, value: float) -> Batch:
    sample = Sample("api_up", value, make_labels(endpoint="health"))
    return Batch("api", clocks.wall_at, 0.0, (sample,))


class TestPipelineFollowsTheClock:
    @pytest.mark.parametrize("follows", [True, False])
    async def test_for_holds_across_a_step_back(self, tmp_path, follows):
        """Pending for 2 s, the clock steps back an hour: it fires 3 s later, as `for = 5s`
        says, not an hour later (without following the clock, the window would not even
        take the new readings)."""
        clocks = Clocks()
        pipeline = build(tmp_path, clocks, rule(**{"for": "5s"}), clock=follows)
        fired = []
        for second in range(8):
            if second == 2:
                clocks.step(-HOUR)
            fired += [e.kind for e in await pipeline.ingest(up(clocks, 0.0))]
            clocks.advance(1.0)
            if fired:
                break
        if follows:
            assert (fired, second) == ([EventKind.FIRING], 5)
        else:
            assert fired == []

    @pytest.mark.parametrize("follows", [True, False])
    async def test_a_step_forwards_is_no_missing_data(self, tmp_path, follows):
        clocks = Clocks()
        pipeline = build(tmp_path, clocks, rule(), clock=follows)
        await pipeline.ingest(up(clocks, 1.0))
        clocks.advance(1.0)
        clocks.step(HOUR)
        events = await pipeline.tick(clocks.wall_at)
        assert [e.kind for e in events] == ([] if follows else [EventKind.NODATA])

    @pytest.mark.parametrize("follows", [True, False])
    async def test_a_step_back_keeps_the_window_and_takes_new_readings(self, tmp_path, follows):
        clocks = Clocks()
        pipeline = build(tmp_path, clocks, rule(aggregate="avg", window="10s"), clock=follows)
        for _ in range(3):
            await pipeline.ingest(up(clocks, 1.0))
            clocks.advance(1.0)
        clocks.step(-HOUR)
        events = await pipeline.ingest(up(clocks, 0.0))
        (window,) = pipeline.history.series.values()
        if not follows:  # the reading is older than the window's last: dropped
            assert ([v for _, v in window.points], events) == ([1.0, 1.0, 1.0], [])
            return
        assert [v for _, v in window.points] == [1.0, 1.0, 1.0, 0.0]
        times = [t for t, _ in window.points]
        assert times == [clocks.wall_at - 3, clocks.wall_at - 2, clocks.wall_at - 1, clocks.wall_at]
        assert [e.kind for e in events] == [EventKind.FIRING]  # avg 0.75, below 1

    async def test_a_batch_begun_before_the_step_lands_in_the_new_terms(self, tmp_path):
        clocks = Clocks()
        pipeline = build(tmp_path, clocks, rule())
        await pipeline.ingest(up(clocks, 1.0))
        clocks.advance(1.0)
        started = up(clocks, 1.0)  # reads the clock, then runs for 2 s across the step
        clocks.advance(1.0)
        clocks.step(-HOUR)
        await pipeline.tick(clocks.wall_at)  # the step is seen here
        clocks.advance(1.0)
        await pipeline.ingest(Batch("api", started.ts, 2.0, started.samples))
        (window,) = pipeline.history.series.values()
        assert window.points[-1][0] == pytest.approx(started.ts - HOUR)
        last = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[-1])
        assert parse_iso_ts(last["ts"]) == pytest.approx(started.ts, abs=0.001)  # as read


class TestEveryKeptTimeMoves:
    def test_the_evaluators_states_move_and_go_to_the_store(self):
        evaluator = Evaluator([rule()])
        key = ("api_down", make_labels(endpoint="health"))
        evaluator.states[key] = SeriesState(
            severity=Severity.CRITICAL,
            since=1000.0,
            pending_since=1010.0,
            recovering_since=1020.0,
            last_data=1030.0,
            last_sent=1040.0,
            changes=(1000.0, 1005.0),
        )
        never = ("api_down", make_labels(endpoint="quiet"))
        evaluator.states[never] = SeriesState()  # zeros mean "never": they stay zeros
        evaluator.take_changes()
        evaluator.shift(-HOUR)
        moved = evaluator.states[key]
        assert (moved.since, moved.pending_since, moved.recovering_since) == (
            1000.0 - HOUR,
            1010.0 - HOUR,
            1020.0 - HOUR,
        )
        assert (moved.last_data, moved.last_sent, moved.changes) == (
            1030.0 - HOUR,
            1040.0 - HOUR,
            (1000.0 - HOUR, 1005.0 - HOUR),
        )
        assert (evaluator.states[never].since, evaluator.states[never].last_sent) == (0.0, 0.0)
        saved = evaluator.take_changes()
        assert saved[fingerprint(*key)]["state"] == moved.to_json()  # type: ignore[index]

    def test_the_dispatchers_times_move(self, tmp_path):
        alerts = AlertDispatcher("web-1", Evaluator([]), JsonlWriter(tmp_path / "a.jsonl"))
        alerts._saved_at, alerts._silences_read_at = 1000.0, 1001.0
        alerts._output_failing = {"f1": 990.0}
        alerts.shift(HOUR)
        assert (alerts._saved_at, alerts._silences_read_at) == (1000.0 + HOUR, 1001.0 + HOUR)
        assert alerts._output_failing == {"f1": 990.0 + HOUR}

    def test_alertmanager_hears_an_end_now_not_an_hour_ahead(self):
        """Resolved after the clock stepped back past its start: startsAt and endsAt are now
        (Alertmanager refuses an end before the start, and would keep an end ahead firing)."""
        alert = _Alert(labels={"alertname": "api_down"}, annotations={}, starts_at=1000.0)
        alert.end(1000.0 - HOUR + 30, now=1000.0 - HOUR + 30)
        assert (alert.starts_at, alert.ends_at) == (1000.0 - HOUR + 30, 1000.0 - HOUR + 30)
        ended = _Alert(labels={"alertname": "api_down"}, annotations={}, starts_at=1000.0)
        ended.end(1060.0, now=1060.0)
        assert (ended.starts_at, ended.ends_at) == (1000.0, 1060.0)


class TestStepsSeenWhileWaiting:
    async def test_a_step_a_batch_saw_during_the_ticks_wait_is_no_missing_data(self, tmp_path):
        """The tick waits on the store; a batch arriving meanwhile sees a step back and moves
        the states: the tick must then judge them in today's terms, not with the `now` it
        was given."""
        clocks = Clocks()
        pipeline = build(tmp_path, clocks, rule())
        await pipeline.ingest(up(clocks, 1.0))
        clocks.advance(1.0)
        given = clocks.wall_at
        refresh = pipeline.alerts.refresh_silences

        async def a_batch_comes_meanwhile(now: float, *, force: bool = False) -> None:
            clocks.step(-HOUR)
            await pipeline.ingest(up(clocks, 1.0))
            await refresh(now, force=force)

        pipeline.alerts.refresh_silences = a_batch_comes_meanwhile  # type: ignore[method-assign]
        events = await pipeline.tick(given)
        assert events == []
        (state,) = pipeline.evaluator.states.values()
        assert state.severity == Severity.OK
        assert not state.nodata

    async def test_at_start_a_step_before_anything_is_kept_moves_nothing_twice(self, tmp_path):
        """The daemon builds its clock in __init__ and restores states later: restored with
        the time after a step, they must not be moved by it again."""
        clocks = Clocks()
        pipeline = build(tmp_path, clocks, rule(**{"for": "10s"}))
        clocks.advance(2.0)
        clocks.step(-HOUR)  # while the outputs and the state store open
        now = pipeline.follow_clock()  # what the daemon does before restoring
        assert now == clocks.wall_at
        key = ("api_down", make_labels(endpoint="health"))
        pipeline.evaluator.states[key] = SeriesState(last_data=now, pending_since=now)
        clocks.advance(1.0)
        await pipeline.ingest(up(clocks, 0.0))
        state = pipeline.evaluator.states[key]
        assert (state.last_data, state.pending_since) == (clocks.wall_at, now)
