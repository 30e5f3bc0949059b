"""The status page: rendering from a hand-built /status document, and the sparkline series
from a LiveView fed real batches."""

from __future__ import annotations

import re
import statistics

import pytest
from support import Dom

from fossamon.model import Batch, Sample, make_labels
from fossamon.web.live import LiveView
from fossamon.web.page import render_page, sparklines

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def document(**overrides):
    doc = {
        "v": 1,
        "host": "fossa-01",
        "version": "1.2.3",
        "generation": 1,
        "started_at": "2024-05-01T10:00:00.000Z",
        "uptime_seconds": 3600.0,
        "health": {"ok": True, "reasons": []},
        "collectors": {
            "api": {
                "interval_seconds": 15.0,
                "runs": 240,
                "failed_runs": 2,
                "last_run": "2024-05-01T10:59:55.000Z",
                "last_duration_seconds": 0.0432,
                "ok": False,
                "errors": [{"target": "orders", "kind": "status", "message": "HTTP 500 <b>x</b>"}],
            },
            "system": {
                "interval_seconds": 10.0,
                "runs": 360,
                "failed_runs": 0,
                "last_run": "2024-05-01T10:59:58.000Z",
                "last_duration_seconds": 0.002,
                "ok": True,
                "errors": [],
            },
        },
        "alerts": [
            {
                "event": "firing",
                "rule": "api_p95_latency",
                "severity": "critical",
                "labels": {"endpoint": "orders"},
                "value": 2.41,
                "threshold": 2.0,
                "since": "2024-05-01T10:55:00.000Z",
                "summary": "p95 over 1m is 2.41s",
                "metric": "api_response_seconds",
                "silenced_by": None,
            }
        ],
        "latest": {
            "system": {
                "ts": "2024-05-01T10:59:58.000Z",
                "samples": [
                    {"name": "system_cpu_percent", "labels": {}, "value": 23.4},
                    {"name": "system_memory_percent", "labels": {}, "value": 61.25},
                    {"name": "system_load1", "labels": {}, "value": 0.52},
                    {"name": "system_disk_percent", "labels": {"mount": "/"}, "value": 48.3},
                ],
            },
            "api": {
                "ts": "2024-05-01T10:59:55.000Z",
                "samples": [
                    {"name": "api_up", "labels": {"endpoint": "health"}, "value": 1.0},
                    {
                        "name": "api_response_seconds",
                        "labels": {"endpoint": "health"},
                        "value": 0.0123,
                    },
                    {"name": "api_status_code", "labels": {"endpoint": "health"}, "value": 200.0},
                    {"name": "api_up", "labels": {"endpoint": "orders"}, "value": 0.0},
                ],
            },
            "db": {
                "ts": "2024-05-01T10:59:50.000Z",
                "samples": [
                    {"name": "db_query_seconds", "labels": {"query": "count"}, "value": 0.0042},
                ],
            },
        },
    }
    doc.update(overrides)
    return doc


T0 = 1_714_557_600.0
FOUR = {"CPU %": [], "Memory %": [], "Disk % (/)": [], "API p95": []}


def points_of(svg_points: str) -> list[tuple[float, float]]:
    return [tuple(float(n) for n in pair.split(",")) for pair in svg_points.split()]


class TestRender:
    def test_header_alert_current_values_and_collectors(self):
        dom = Dom(render_page(document(), FOUR))
        assert dom.one(id="host").text == "fossa-01"
        assert dom.one(id="version").text == "1.2.3"
        assert dom.one(id="uptime").text == "1h"
        assert dom.one(id="health").attrs["data-health"] == "healthy"
        row = dom.one("tr", data_rule="api_p95_latency")
        assert "critical" in row.text
        assert 'endpoint="orders"' in row.text
        assert "2.41s / 2s" in row.text
        assert "5m ago" in row.text  # since 10:55, the page's now is 11:00
        assert "p95 over 1m is 2.41s" in row.text
        tiles = {e.attrs["data-metric"]: e.text for e in dom.find(class_="tile")}
        assert tiles["system_cpu_percent"] == "CPU23.4 %"
        assert tiles["system_load1"] == "Load (1m)0.52"
        assert tiles["system_disk_percent"] == "Disk /48.3 %"
        assert "12.3ms" in dom.one("tr", data_endpoint="health").text
        assert "down" in dom.one("tr", data_endpoint="orders").text
        assert "4.2ms" in dom.one("tr", data_query="count").text
        api = dom.one("tr", data_collector="api")
        assert "error" in api.text
        assert "HTTP 500 <b>x</b>" in api.text  # shown as text, not markup
        assert "5s ago" in api.text
        assert "ok" in dom.one("tr", data_collector="system").text

    def test_unhealthy_lists_the_reasons(self):
        health = {"ok": False, "reasons": ["collector api: no run for 45s"]}
        dom = Dom(render_page(document(health=health), FOUR))
        assert dom.one(id="health").attrs["data-health"] == "unhealthy"
        assert dom.one(id="health-reasons").text == "collector api: no run for 45s"

    def test_silenced_alert_names_its_silence(self):
        alert = {**document()["alerts"][0], "silenced_by": "3f2a9c0d11aa"}
        dom = Dom(render_page(document(alerts=[alert]), FOUR))
        assert "yes, by 3f2a9c0d11aa" in dom.one("tr", data_rule="api_p95_latency").text

    def test_hostile_text_is_escaped_everywhere(self):
        error = {"target": HOSTILE, "kind": "status", "message": HOSTILE}
        collectors = {"api": {**document()["collectors"]["api"], "errors": [error]}}
        alert = {
            **document()["alerts"][0],
            "rule": HOSTILE,
            "labels": {"endpoint": HOSTILE},
            "summary": HOSTILE,
        }
        latest = {
            "api": {
                "ts": "x",
                "samples": [{"name": "api_up", "labels": {"endpoint": HOSTILE}, "value": 1.0}],
            }
        }
        doc = document(
            host=HOSTILE,
            version=HOSTILE,
            health={"ok": False, "reasons": [HOSTILE]},
            collectors=collectors,
            alerts=[alert],
            latest=latest,
        )
        page = render_page(doc, {HOSTILE: [(T0, 1.0), (T0 + 10, 2.0)]})
        assert "<script" not in page
        assert "<img" not in page
        assert "&lt;script&gt;" in page
        dom = Dom(page)
        assert dom.one(id="host").text == HOSTILE  # the text survives, as text
        assert dom.one("tr", data_rule=HOSTILE).attrs["class"] == "alert"
        assert dom.one("figure", data_series=HOSTILE)

    def test_no_external_assets_and_no_script(self):
        page = render_page(document(), {"CPU %": [(T0, 1.0), (T0 + 10, 2.0)]})
        assert not re.search(r"""\b(src|href)\s*=""", page)
        assert "http://" not in page
        assert "https://" not in page
        assert "<script" not in page
        assert "@import" not in page
        assert 'http-equiv="refresh" content="10"' in page

    def test_sparkline_points_are_the_data_scaled_to_the_viewbox(self):
        # viewBox 320 x 64 with a 4 px margin: time 0..60 s spans x 4..316, values 0..100
        # span y 60..4 (SVG's y grows downwards)
        series = {"CPU %": [(T0, 0.0), (T0 + 30, 50.0), (T0 + 60, 100.0)]}
        dom = Dom(render_page(document(), series))
        figure = dom.one("figure", data_series="CPU %")
        assert figure.attrs["data-points"] == "3"
        svg = dom.one("svg", class_="sparkline")
        assert svg.attrs["viewbox"] == "0 0 320 64"
        line = dom.one("polyline", class_="line")
        assert points_of(line.attrs["points"]) == [(4.0, 60.0), (160.0, 32.0), (316.0, 4.0)]
        dot = dom.one("circle", class_="dot")
        assert (dot.attrs["cx"], dot.attrs["cy"]) == ("316.0", "4.0")
        assert "min 0.0 %" in figure.text
        assert "max 100.0 %" in figure.text
        assert "last 100.0 %" in figure.text

    def test_a_flat_or_single_reading_series_is_drawn_mid_height(self):
        series = {"Disk % (/)": [(T0, 48.3)], "Memory %": [(T0, 5.0), (T0 + 10, 5.0)]}
        dom = Dom(render_page(document(), series))
        polylines = dom.find("polyline", class_="line")
        assert points_of(polylines[0].attrs["points"]) == [(316.0, 32.0)]
        assert points_of(polylines[1].attrs["points"]) == [(4.0, 32.0), (316.0, 32.0)]

    def test_api_p95_is_labelled_as_a_duration(self):
        series = {"API p95": [(T0, 0.0123), (T0 + 10, 1.5)]}
        figure = Dom(render_page(document(), series)).one("figure", data_series="API p95")
        assert "min 12.3ms" in figure.text
        assert "max 1.5s" in figure.text

    def test_a_long_series_is_thinned_but_keeps_its_spike_and_last_point(self):
        points = [(T0 + i, 10.0) for i in range(10_000)]
        points[4321] = (T0 + 4321, 99.0)
        points[-1] = (points[-1][0], 11.0)
        dom = Dom(render_page(document(), {"CPU %": points}))
        drawn = points_of(dom.one("polyline", class_="line").attrs["points"])
        assert len(drawn) <= 2 * 312 + 1
        assert min(y for _, y in drawn) == 4.0  # the spike is the top of the chart
        assert drawn[-1][0] == 316.0
        assert "max 99.0 %" in dom.one("figure", data_series="CPU %").text
        assert dom.one("figure", data_series="CPU %").attrs["data-points"] == "10000"

    def test_empty_states(self):
        doc = document(alerts=[], collectors={}, latest={})
        dom = Dom(render_page(doc, FOUR))
        assert "No alerts firing." in dom.one(id="alerts").text
        assert "None configured." in dom.one(id="collectors").text
        assert not dom.find("svg")
        figures = dom.find("figure", class_="chart")
        assert [f.attrs["data-series"] for f in figures] == list(FOUR)
        assert all("No data yet." in f.text for f in figures)
        tiles = [e.text for e in dom.find(class_="tile")]
        assert tiles == ["CPU—", "Memory—", "Load (1m)—"]


def system_batch(ts: float, cpu: float, mounts: tuple[str, ...] = ("/",)) -> Batch:
    samples = [Sample("system_cpu_percent", cpu), Sample("system_memory_percent", 50.0)]
    samples += [Sample("system_disk_percent", 40.0, make_labels(mount=m)) for m in mounts]
    return Batch("system", ts, 0.01, tuple(samples))


def api_batch(ts: float, **seconds: float) -> Batch:
    samples = [
        Sample("api_response_seconds", value, make_labels(endpoint=name))
        for name, value in seconds.items()
    ]
    return Batch("api", ts, 0.05, tuple(samples))


def brute_p95(readings: list[tuple[float, float]], at: float) -> float:
    window = sorted(v for t, v in readings if at - 300 < t <= at)
    if len(window) == 1:
        return window[0]
    return statistics.quantiles(window, n=20, method="inclusive")[-1]


class TestSparklines:
    def test_an_empty_view_gives_four_empty_series(self):
        assert sparklines(LiveView(), T0) == FOUR

    def test_the_last_hour_of_cpu_memory_and_disk(self):
        live = LiveView()
        for i in range(-5, 10):
            live(system_batch(T0 + i * 600, cpu=float(i), mounts=("/data", "/")), [])
        now = T0 + 9 * 600
        got = sparklines(live, now)
        assert list(got) == ["CPU %", "Memory %", "Disk % (/)", "API p95"]
        assert got["CPU %"] == [(T0 + i * 600, float(i)) for i in range(3, 10)]  # within 1h
        assert [v for _, v in got["Memory %"]] == [50.0] * 7
        assert len(got["Disk % (/)"]) == 7
        assert got["API p95"] == []

    def test_disk_falls_back_to_the_first_mount(self):
        live = LiveView()
        live(system_batch(T0, 1.0, mounts=("/srv", "/data")), [])
        got = sparklines(live, T0)
        assert "Disk % (/srv)" in got
        assert got["Disk % (/srv)"] == [(T0, 40.0)]

    def test_api_p95_over_all_endpoints_in_a_trailing_five_minutes(self):
        live = LiveView()
        live(api_batch(T0, health=0.1, orders=0.2), [])
        assert sparklines(live, T0)["API p95"] == [(T0, pytest.approx(0.195))]  # 0.1 + 0.95 x 0.1
        live(api_batch(T0 + 300, health=0.4), [])  # T0's readings are exactly 5 min old: out
        assert sparklines(live, T0 + 300)["API p95"][-1] == (T0 + 300, 0.4)

    def test_api_p95_matches_a_brute_force_over_an_hour_and_more(self):
        live = LiveView()
        readings: list[tuple[float, float]] = []
        for i in range(450):  # 75 minutes of 10 s readings from two endpoints
            ts = T0 + i * 10
            health, orders = 0.01 + (i * 7 % 13) / 100, 0.2 + (i * 5 % 11) / 10
            if i % 9 == 0:
                live(api_batch(ts, health=health), [])  # an endpoint that was down
                readings.append((ts, health))
            else:
                live(api_batch(ts, health=health, orders=orders), [])
                readings += [(ts, health), (ts, orders)]
        now = T0 + 449 * 10
        got = sparklines(live, now)["API p95"]
        # the window sees what the trails hold: the last hour (its first minutes see less)
        readings = [(t, v) for t, v in readings if now - t <= 3600]
        times = sorted({t for t, _ in readings})
        # one point per 15 s at most (every other 10 s reading here), and always the last
        expected, due = [], float("-inf")
        for i, t in enumerate(times):
            if t >= due or i == len(times) - 1:
                expected.append(t)
                due = t + 15
        assert [t for t, _ in got] == expected
        assert got[-1][0] == now
        for ts, value in got:
            assert value == pytest.approx(brute_p95(readings, ts)), ts
