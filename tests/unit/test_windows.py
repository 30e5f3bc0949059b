from __future__ import annotations

import math
import random
import statistics

import pytest

from fossamon.model import Batch, Sample, make_labels
from fossamon.rules import windows
from fossamon.rules.windows import History, SeriesWindow, aggregate, fit_line


def pts(*values: float, step: float = 1.0, start: float = 0.0) -> list[tuple[float, float]]:
    return [(start + i * step, v) for i, v in enumerate(values)]


class TestAggregates:
    def test_basic(self):
        points = pts(1, 2, 3, 4, 10)
        assert aggregate("last", points) == 10
        assert aggregate("avg", points) == 4
        assert aggregate("min", points) == 1
        assert aggregate("max", points) == 10

    def test_percentiles_are_true_order_statistics(self):
        values = list(range(1, 101))  # 1..100
        points = pts(*values)
        # linear interpolation between closest ranks, as numpy.percentile does by default
        assert aggregate("p50", points) == pytest.approx(50.5)
        assert aggregate("p90", points) == pytest.approx(90.1)
        assert aggregate("p95", points) == pytest.approx(95.05)
        assert aggregate("p99", points) == pytest.approx(99.01)

    def test_p95_is_not_a_trimmed_mean(self):
        points = pts(*([0.1] * 19 + [5.0]))
        p95 = aggregate("p95", points)
        assert p95 == pytest.approx(0.1 + 0.05 * (5.0 - 0.1))
        assert p95 != pytest.approx(statistics.fmean(v for _, v in points[:19]))

    def test_single_point_percentile(self):
        assert aggregate("p95", pts(7)) == 7

    def test_empty_is_none(self):
        for name in ("last", "avg", "p95", "rate", "slope"):
            assert aggregate(name, []) is None

    def test_rate_of_a_counter(self):
        assert aggregate("rate", pts(100, 110, 120, 130, step=10)) == pytest.approx(1.0)

    def test_rate_survives_a_counter_reset(self):
        # 100 → 110 (+10), reset to 5 (+5 from zero), → 15 (+10): 25 over 30 s
        assert aggregate("rate", pts(100, 110, 5, 15, step=10)) == pytest.approx(25 / 30)

    def test_rate_needs_two_points(self):
        assert aggregate("rate", pts(5)) is None

    def test_slope_least_squares(self):
        assert aggregate("slope", pts(0, 2, 4, 6, step=2)) == pytest.approx(1.0)
        noisy = pts(1, 3, 2, 4, 3, 5)
        # Sxy = 11, Sxx = 17.5 around the means (x̄ = 2.5, ȳ = 3)
        assert aggregate("slope", noisy) == pytest.approx(11 / 17.5)

    def test_slope_of_simultaneous_points_is_none(self):
        assert aggregate("slope", [(5.0, 1.0), (5.0, 2.0)]) is None


class TestSeriesWindow:
    def test_retention_drops_old_points(self):
        window = SeriesWindow(retention=10)
        for ts in range(30):
            window.add(float(ts), float(ts))
        assert [ts for ts, _ in window.points] == list(range(19, 30))

    def test_zero_retention_keeps_the_last_point(self):
        window = SeriesWindow(retention=0)
        window.add(1.0, 1.0)
        window.add(2.0, 2.0)
        assert list(window.points) == [(2.0, 2.0)]

    def test_out_of_order_points_are_ignored(self):
        window = SeriesWindow(retention=100)
        window.add(10.0, 1.0)
        window.add(5.0, 2.0)
        assert list(window.points) == [(10.0, 1.0)]

    def test_since(self):
        window = SeriesWindow(retention=100)
        for ts in range(10):
            window.add(float(ts), float(ts))
        assert [ts for ts, _ in window.since(7.0)] == [7.0, 8.0, 9.0]


class TestHistory:
    def test_series_are_kept_per_label_set_and_selected_by_matchers(self):
        history = History({"api_up": 60})
        history.add_batch(
            Batch(
                "api",
                100.0,
                0.01,
                (
                    Sample("api_up", 1.0, make_labels(endpoint="a")),
                    Sample("api_up", 0.0, make_labels(endpoint="b")),
                    Sample("api_up", float("nan"), make_labels(endpoint="c")),
                ),
            )
        )
        assert {dict(labels)["endpoint"] for labels, _ in history.select("api_up", {})} == {
            "a",
            "b",
        }
        (only,) = history.select("api_up", {"endpoint": "b"})
        assert only[1].last == (100.0, 0.0)
        assert list(history.select("api_up", {"endpoint": "zzz"})) == []

    def test_set_retention_applies_to_existing_series(self):
        history = History({"m": 1000})
        history.add_batch(Batch("x", 1.0, 0, (Sample("m", 1.0),)))
        history.set_retention({"m": 5})
        (window,) = history.series.values()
        assert window.retention == 5

    def test_set_retention_lets_go_of_what_the_old_windows_kept_sorted(self):
        history = History({"m": 100})
        for ts in range(10):
            history.add_batch(Batch("x", float(ts), 0, (Sample("m", float(ts)),)))
        (window,) = history.series.values()
        assert window.sorted_since(9.0 - 100, 100.0) == [float(v) for v in range(10)]
        history.set_retention({"m": 5})
        assert window._tails == {}  # nothing kept up to date for a window no rule reads
        history.add_batch(Batch("x", 10.0, 0, (Sample("m", 10.0),)))
        assert window.sorted_since(5.0, 5.0) == [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]


def reference_add(
    points: list[tuple[float, float]], ts: float, value: float, retention: float, cap: int
) -> None:
    """SeriesWindow.add as the plainest list code: out of order ignored, the oldest beyond
    `cap` dropped, then everything older than the retention (keeping the newest point)."""
    if points and ts < points[-1][0]:
        return
    points.append((ts, value))
    if len(points) > cap:
        del points[0]
    while len(points) > 1 and points[0][0] < ts - retention:
        del points[0]


def textbook_quantile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks, written the way textbooks (and numpy's
    default) put it."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low = int(rank)
    if low + 1 == len(ordered):
        return ordered[low]
    return ordered[low] + (ordered[low + 1] - ordered[low]) * (rank - low)


class TestSortedTails:
    """`sorted_since` keeps order statistics up to date as points come and go; it must always
    equal a sort of `since()`, whatever the stream does."""

    @pytest.mark.parametrize("seed", range(6))
    def test_match_a_sort_of_the_window_on_random_streams(self, seed, monkeypatch):
        monkeypatch.setattr(windows, "MAX_POINTS", 40)  # reach the count cap too
        rng = random.Random(seed)
        retention = rng.choice([5.0, 30.0, 90.0])
        window = SeriesWindow(retention)
        plain: list[tuple[float, float]] = []
        now, checked = 1000.0, 0
        for step in range(600):
            now += rng.choice([0.0, 0.5, 1.0, 1.0, 2.0, 7.0])
            ts = now - rng.choice([0.0, 0.0, 0.0, 3.0])  # some arrive out of order
            value = rng.choice([rng.uniform(-5, 5), float(rng.randrange(4))])  # ties too
            if rng.random() < 0.01:
                value = math.nan
            if step == 300:
                retention = window.retention = retention / 2  # a reload shortened it
            window.add(ts, value)
            reference_add(plain, ts, value, retention, 40)
            assert list(window.points) == plain
            span = rng.choice([5.0, 10.0, 30.0, 60.0, 120.0, 11.0, 3.0])  # > MAX_SORTED_TAILS
            at = now - rng.choice([0.0, 0.0, 4.0])  # now and then an earlier `now`
            got = window.sorted_since(at - span, span)
            expected = sorted(v for ts_, v in plain if ts_ >= at - span)
            if got is None:
                assert any(math.isnan(v) for _, v in plain) or span not in window._tails
                continue
            assert got == expected
            if got:
                assert windows.quantile(got, 95) == aggregate("p95", window.since(at - span))
                assert windows.quantile(got, 95) == pytest.approx(textbook_quantile(got, 0.95))
            checked += 1
        assert checked > 200  # the tails were what was compared, not the fallback

    def test_a_nan_turns_them_off_until_it_leaves(self):
        window = SeriesWindow(retention=10)
        window.add(1.0, 3.0)
        assert window.sorted_since(0.0, 10.0) == [3.0]
        window.add(2.0, math.nan)
        assert window.sorted_since(0.0, 10.0) is None
        window.add(13.0, 1.0)  # the NaN (and the 3.0) are older than 10 s now
        assert window.sorted_since(3.0, 10.0) == [1.0]


class TestLineSumsKeptUpToDate:
    """SeriesWindow.fit_since keeps least-squares sums as points come and go: it must give
    what a pass over the window gives (fit_line), whatever the order of calls."""

    @pytest.mark.parametrize("seed", range(40))
    def test_agrees_with_a_pass_over_the_window(self, seed):
        rng = random.Random(seed)
        window = rng.choice([60.0, 600.0, 21600.0])
        series = SeriesWindow(retention=window * rng.choice([1.0, 1.5]))
        ts = 1_800_000_000.0
        for step in range(rng.randint(50, 600)):
            ts += rng.choice([0.0, 1.0, 10.0, window / 7])
            series.add(ts, rng.uniform(0, 100) + step * rng.uniform(-0.01, 0.01))
            if rng.random() < 0.3:
                now = ts - rng.choice([0.0, 0.0, window / 10])  # now and then an earlier `now`
                start = now - window
                expected = fit_line([p for p in series.points if p[0] >= start])
                got = series.fit_since(start, window)
                if expected is None:
                    assert got is None
                    continue
                assert got is not None
                at = now + 86400.0  # compare the lines where predict reads them
                e_origin, e_slope, e_intercept = expected
                g_origin, g_slope, g_intercept = got
                assert g_slope == pytest.approx(e_slope, rel=1e-6, abs=1e-12)
                assert g_intercept + g_slope * (at - g_origin) == pytest.approx(
                    e_intercept + e_slope * (at - e_origin), rel=1e-6, abs=1e-6
                )

    def test_a_nan_makes_the_caller_take_a_pass(self):
        series = SeriesWindow(retention=60.0)
        for n in range(10):
            series.add(1_800_000_000.0 + n, float(n))
        assert series.fit_since(1_800_000_000.0 - 60, 60.0) is not None
        series.add(1_800_000_010.0, float("nan"))
        with pytest.raises(LookupError):
            series.fit_since(1_800_000_010.0 - 60, 60.0)
