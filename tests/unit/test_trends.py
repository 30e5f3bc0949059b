"""The trend analysis: the hour's figures kept up to date equal a recomputation."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest

from fossamon.model import Batch, Sample, make_labels
from fossamon.web.trends import HOUR, SPACING, SeriesTrail, TrendStore, trend

T0 = 1_800_000_000.0


def test_trend_of_a_rising_line():
    times = [T0 + 60 * i for i in range(10)]
    found = trend(times, [10.0 + i for i in range(10)])
    assert found is not None
    assert (found.count, found.average, found.median, found.maximum) == (10, 14.5, 14.5, 19.0)
    assert found.slope_per_minute == pytest.approx(1.0)
    assert found.increasing


def test_noise_around_a_flat_line_is_not_increasing():
    times = [T0 + 10 * i for i in range(100)]
    values = [50.0 + (0.1 if i % 2 else -0.1) for i in range(100)]
    found = trend(times, values)
    assert found is not None
    assert not found.increasing


def points_of(readings: list[tuple[float, float]]) -> list[tuple[float, list[float]]]:
    """The hour's points, by the rule: a reading less than SPACING after the start of the
    last point is merged into it."""
    points: list[tuple[float, list[float]]] = []
    for t, v in readings:
        if points and t - points[-1][0] < SPACING:
            points[-1][1].append(v)
        else:
            points.append((t, [v]))
    return points


@pytest.mark.parametrize("seed", range(20))
def test_the_hour_kept_up_to_date_equals_a_recomputation(seed):
    rng = random.Random(seed)
    trail, readings, ts = SeriesTrail(), [], T0
    for i in range(rng.randint(1, 3000)):
        ts += rng.choice([0.5, 1.0, 4.0, 10.0, 60.0, 400.0, 30_000.0])  # gaps; a rebase
        value = rng.gauss(50, 10) + 0.001 * i
        trail.add(ts, value)
        readings.append((ts, value))
    now = ts + rng.random() * 200
    kept = [(t, vs) for t, vs in points_of(readings) if t >= now - HOUR]
    means = [statistics.fmean(vs) for _, vs in kept]
    got, want = trail.hour_trend(now), trend([t for t, _ in kept], means)
    if want is None:
        assert got is None
        return
    assert got is not None
    for field in ("average", "median", "slope_per_minute"):
        assert getattr(got, field) == pytest.approx(getattr(want, field), rel=1e-6, abs=1e-9)
    assert got.count == sum(len(vs) for _, vs in kept)  # readings, not points
    assert got.maximum == max(max(vs) for _, vs in kept)  # the readings' own, not a mean's
    times = [t for t, _ in kept]
    reference = statistics.linear_regression(times, means).slope if len(kept) > 1 else 0
    assert got.slope_per_minute == pytest.approx(reference * 60, rel=1e-6, abs=1e-9)
    assert trail.last_hour(now) == (times, pytest.approx(means))


def test_an_hour_of_1s_readings_is_720_points_and_the_last_10_are_readings():
    trail = SeriesTrail()
    for i in range(2 * 3600):
        trail.add(T0 + i, float(i % 100))
    now = T0 + 2 * 3600 - 1
    times, values = trail.last_hour(now)
    assert len(times) == 720  # a point every 5 readings: the 5th is 4 s after the first
    assert values[-1] == statistics.fmean(float(i % 100) for i in range(7195, 7200))
    assert all(b - a == 5.0 for a, b in itertools.pairwise(times))
    hour = trail.hour_trend(now)
    assert hour is not None
    assert (hour.count, hour.maximum) == (3600, 99.0)
    recent = trend(*trail.recent(now))
    assert recent is not None
    assert (recent.count, recent.maximum, recent.average) == (10, 99.0, 94.5)


def test_a_5s_series_keeps_every_reading_despite_the_schedulers_jitter():
    trail, rng = SeriesTrail(), random.Random(7)
    for i in range(720):
        trail.add(T0 + 5 * i + rng.uniform(-0.005, 0.005), float(i))
    times, values = trail.last_hour(T0 + 5 * 719)
    assert (len(times), values) == (720, [float(i) for i in range(720)])
    assert HOUR / SPACING == 800  # the most points an hour can hold


def test_the_store_keeps_key_series_only_and_at_most_its_limit():
    store = TrendStore(limit=3)
    samples = tuple(
        Sample("api_response_seconds", 0.1, make_labels(endpoint=f"e{i}")) for i in range(5)
    )
    store.add_batch(Batch("api", T0, 0.0, (*samples, Sample("api_up", 1.0))))
    assert len(store.trails) == 3
    assert all(key[0] == "api_response_seconds" for key in store.trails)
    (key, recent, hour), *_ = store.trends(T0)
    assert recent is not None
    assert hour is not None
    assert recent.count == hour.count == 1
    assert key == ("api_response_seconds", (("endpoint", "e0"),))


def test_the_hosts_series_get_a_trail_even_when_endpoints_filled_the_limit():
    store = TrendStore(limit=2)
    endpoints = tuple(
        Sample("api_response_seconds", 0.1, make_labels(endpoint=f"e{i}")) for i in range(5)
    )
    store.add_batch(Batch("api", T0, 0.0, endpoints))
    store.add_batch(Batch("system", T0 + 10, 0.0, (Sample("system_cpu_percent", 5.0),)))
    assert ("system_cpu_percent", ()) in store.trails
    assert len(store.trails) == 3


@pytest.mark.parametrize("quiet_for", [0.0, 2 * HOUR])
def test_a_clock_stepping_back_starts_the_trail_over_instead_of_freezing_it(quiet_for):
    """Also after a silence longer than the hour, which emptied the points but not the last
    10 readings."""
    trail = SeriesTrail()
    for i in range(5):
        trail.add(T0 + 10 * i, float(i))
    if quiet_for:
        assert trail.hour_trend(T0 + quiet_for) is None
    trail.add(T0 - 3600, 7.0)  # an hour back
    found = trail.hour_trend(T0 - 3600)
    assert found is not None
    assert (found.count, found.average) == (1, 7.0)
    assert trail.recent(T0 - 3600) == ([T0 - 3600], [7.0])


def test_infinite_readings_are_left_out():
    """inf - inf is NaN: one would poison the merged mean and the sorted values."""
    store = TrendStore()
    for i, value in enumerate([1.0, math.inf, 2.0, -math.inf, math.nan, 3.0]):
        store.add_batch(Batch("system", T0 + i, 0.0, (Sample("system_cpu_percent", value),)))
    ((_, recent, hour),) = store.trends(T0 + 6)
    assert recent is not None
    assert hour is not None
    # points: 1.0 and 2.0 merged (1.5, 2 s apart), then 3.0; count and max from readings
    assert (hour.count, hour.average, hour.median, hour.maximum) == (3, 2.25, 2.25, 3.0)
    assert recent.count == 3


def test_the_last_10_of_a_series_that_went_quiet_come_from_this_hour_only():
    store = TrendStore()
    for i in range(10):
        store.add_batch(Batch("system", T0 + i, 0.0, (Sample("system_cpu_percent", float(i)),)))
    ((_, recent, hour),) = store.trends(T0 + 2 * HOUR)
    assert recent is None
    assert hour is None
