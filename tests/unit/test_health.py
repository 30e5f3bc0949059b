from __future__ import annotations

from fossamon.health import assess
from fossamon.scheduling import RunStats


def stats(**runs: RunStats) -> dict[str, RunStats]:
    return runs


class TestAssess:
    def test_healthy_when_every_collector_finished_recently(self):
        health = assess(
            stats(api=RunStats(interval=15, added_at=0, last_end=95, runs=3)),
            now=100,
            loop_lag=0.01,
            period=30,
            lag_limit=15,
        )
        assert health.ok
        assert str(health) == "healthy"

    def test_allowed_quiet_is_the_larger_of_two_intervals_and_the_period(self):
        run = RunStats(interval=10, added_at=0, last_end=50, runs=1)
        # 2 x 10 s = 20 s < period 30 s: 29 s of quiet is fine, 31 s is not
        assert assess(stats(db=run), now=79, loop_lag=0, period=30, lag_limit=15).ok
        late = assess(stats(db=run), now=81, loop_lag=0, period=30, lag_limit=15)
        assert not late.ok
        assert late.reasons == ("db: no run finished for 31s (allowed 30s)",)
        slow = RunStats(interval=60, added_at=0, last_end=50, runs=1)
        assert assess(stats(db=slow), now=165, loop_lag=0, period=30, lag_limit=15).ok

    def test_a_first_run_counts_from_when_the_collector_was_added(self):
        waiting = RunStats(interval=1, added_at=100)
        assert assess(stats(db=waiting), now=101.5, loop_lag=0, period=0, lag_limit=5).ok
        (reason,) = assess(stats(db=waiting), now=103, loop_lag=0, period=0, lag_limit=5).reasons
        assert reason == "db: no run finished for 3s (allowed 2s)"

    def test_a_lagging_loop_is_unhealthy(self):
        health = assess({}, now=1, loop_lag=16, period=30, lag_limit=15)
        assert health.reasons == ("event loop lagging 16s",)

    def test_failed_runs_are_not_ill_health(self):
        failing = RunStats(interval=15, added_at=0, last_end=99, runs=5, failed_runs=5)
        assert assess(stats(api=failing), now=100, loop_lag=0, period=30, lag_limit=15).ok


def test_a_run_may_last_its_own_timeouts_before_it_counts_as_wedged():
    # api every 15 s with a 40 s timeout, watchdog 30 s: a hung target makes runs last 40 s,
    # the overlapping ones are skipped, so runs finish about every 45 s. That is a target
    # problem, not a monitor problem.
    api = RunStats(interval=15, jitter=2, run_limit=40, added_at=0, last_end=100, runs=3)
    allowed = 15 + 2 + 40 + 1
    assert assess({"api": api}, now=100 + allowed - 0.5, loop_lag=0, period=30, lag_limit=15).ok
    late = assess({"api": api}, now=100 + allowed + 0.5, loop_lag=0, period=30, lag_limit=15)
    assert late.reasons == ("api: no run finished for 58.5s (allowed 58s)",)
