"""`fossamon report` on hand-written JSONL files — a built-in gzip archive, a logrotate
dateext archive, the live file with an unparsable line — whose figures are worked out by
hand below."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
import os
import sys
import tracemalloc
from pathlib import Path

import pytest
from support import daemon_head

from fossamon.stats import p95
from fossamon.tools import report_read
from fossamon.tools.report_alerts import AlertEpisodes
from fossamon.tools.report_data import gather
from fossamon.tools.report_read import parse_ts, parse_when
from fossamon.tools.report_series import SeriesCollector
from fossamon.web.svg import PAD, WIDTH

SINCE, UNTIL = "2026-11-26T10:00:00Z", "2026-11-26T11:00:00Z"


def at(clock: str) -> str:
    return f"2026-11-26T{clock}.000Z"


def metrics_line(clock: str, *samples: tuple[str, dict, float | None], host: str = "web-1") -> str:
    record = {
        "v": 1,
        "ts": at(clock),
        "host": host,
        "collector": "test",
        "duration_ms": 1.0,
        "samples": [{"name": n, "labels": labels, "value": v} for n, labels, v in samples],
        "errors": [],
    }
    return json.dumps(record) + "\n"


def cpu(value: float | None) -> tuple[str, dict, float | None]:
    return ("system_cpu_percent", {}, value)


def memory(value: float) -> tuple[str, dict, float]:
    return ("system_memory_percent", {}, value)


def health(seconds: float) -> tuple[str, dict, float]:
    return ("api_response_seconds", {"endpoint": "health"}, seconds)


def alert_line(clock: str, event: str, rule: str, severity: str, fp: str, since: str) -> str:
    record = {
        "v": 1,
        "ts": at(clock),
        "host": "web-1",
        "event": event,
        "rule": rule,
        "severity": severity,
        "labels": {"key": fp},
        "value": 1.0,
        "threshold": 1.0,
        "since": at(since),
        "summary": "",
        "fingerprint": fp,
        "previous_severity": "ok",
        "silenced_by": None,
    }
    return json.dumps(record) + "\n"


def write_gz(path: Path, text: str) -> None:
    path.write_bytes(gzip.compress(text.encode()))


@pytest.fixture
def files(tmp_path):
    """CPU 10, 20, 30, 40, 100 at 10:00 … 10:04 (one per minute), spread over three files;
    memory 50 then 40; health 100, 200, 300 ms. Around them: readings outside the range, a
    null, a metric the report does not cover, an archive wholly before the range (which must
    not even be opened: its one line is garbage), and a torn line in the live file."""
    out = tmp_path / "out"
    out.mkdir()
    write_gz(out / "metrics-20261126T090000Z.jsonl.gz", "garbage from before the range\n")
    write_gz(
        out / "metrics-20261126T100130Z.jsonl.gz",
        metrics_line("09:59:00", cpu(1000.0))  # before the range
        + metrics_line("10:00:00", cpu(10.0), memory(50.0), health(0.1))
        + metrics_line("10:01:00", cpu(20.0), memory(40.0), health(0.2)),
    )
    write_gz(  # logrotate's dateext name; the same host's readings, later ones
        out / "metrics.jsonl-20261126.gz",
        metrics_line("10:02:00", cpu(30.0), health(0.3), ("api_up", {"endpoint": "h"}, 1.0)),
    )
    (out / "metrics.jsonl").write_text(
        metrics_line("10:03:00", cpu(40.0))
        + metrics_line("10:03:20", cpu(None))  # a non-finite reading: no value
        + '{"v":1,"ts":"2026-11-26T10:03:30.000Z","host":"web-1","collector":"sys\n'
        + metrics_line("10:04:00", cpu(100.0))
        + metrics_line("11:30:00", cpu(5.0))  # after the range
    )
    write_gz(
        out / "alerts-20261126T095500Z.jsonl.gz",  # wholly before the range, and read
        alert_line("08:00:00", "firing", "db_down", "critical", "c", "08:00:00")
        + alert_line("08:30:00", "resolved", "db_down", "critical", "c", "08:00:00")
        + alert_line("09:50:00", "firing", "api_down", "critical", "a", "09:50:00"),
    )
    (out / "alerts.jsonl").write_text(
        alert_line("10:10:00", "resolved", "api_down", "critical", "a", "09:50:00")
        + alert_line("10:20:00", "firing", "cpu_high", "warning", "b", "10:19:00")
        + alert_line("10:25:00", "escalated", "cpu_high", "critical", "b", "10:19:00")
        + alert_line("10:30:00", "resolved", "api_down", "critical", "d", "10:15:00")
        + alert_line("10:30:00", "deescalated", "cpu_high", "warning", "b", "10:19:00")
        + alert_line("10:40:00", "resolved", "cpu_high", "warning", "b", "10:19:00")
        + alert_line("10:50:00", "firing", "cpu_high", "warning", "b", "10:50:00")
        + alert_line("11:30:00", "firing", "late", "critical", "e", "11:30:00")
    )
    config = tmp_path / "config.toml"
    config.write_text(
        daemon_head(tmp_path, metrics=str(out / "metrics.jsonl"), alerts=str(out / "alerts.jsonl"))
    )
    return config


async def report(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FOSSAMON_CONFIG"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fossamon",
        "report",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class TestHandComputedCase:
    async def test_json_figures(self, files):
        rc, out, err = await report("-c", str(files), "--since", SINCE, "--until", UNTIL, "--json")
        assert rc == 0, err
        doc = json.loads(out)
        assert (doc["since"], doc["until"]) == (at("10:00:00"), at("11:00:00"))
        metrics = doc["metrics"]
        assert [Path(f).name for f in metrics["files"]] == [  # by time, not by scheme
            "metrics-20261126T100130Z.jsonl.gz",
            "metrics.jsonl-20261126.gz",
            "metrics.jsonl",
        ]
        assert [Path(f).name for f in metrics["skipped_files"]] == [
            "metrics-20261126T090000Z.jsonl.gz"
        ]
        assert metrics["lines"] == 3 + 1 + 5
        assert metrics["unparsable"] == 1
        assert metrics["unparsable_at"] == ["metrics.jsonl:3"]
        assert metrics["records_in_range"] == 6

        series = {(s["metric"], tuple(s["labels"].items())): s for s in doc["series"]}
        assert list(series) == [
            ("system_cpu_percent", ()),
            ("system_memory_percent", ()),
            ("api_response_seconds", (("endpoint", "health"),)),
        ]
        # CPU 10, 20, 30, 40, 100 one minute apart. p95: position 0.95 x 4 = 3.8 of the
        # sorted values, 40 + 0.8 x (100 - 40) = 88. Slope: times centred -120 … 120 s,
        # values centred -30, -20, -10, 0, 60: sum(dt dv) = 12000, sum(dt²) = 36000, so
        # 1/3 per second = 20 per minute; it rises 80 over the span, more than 1 % of 40.
        assert series["system_cpu_percent", ()] == {
            "host": "web-1",
            "metric": "system_cpu_percent",
            "labels": {},
            "count": 5,
            "average": 40.0,
            "median": 30.0,
            "p95": 88.0,
            "max": 100.0,
            "slope_per_minute": pytest.approx(20.0),
            "increasing": True,
            "first": at("10:00:00"),
            "last": at("10:04:00"),
        }
        # memory 50 then 40: p95 40 + 0.95 x 10 = 49.5; slope -10 a minute
        mem = series["system_memory_percent", ()]
        assert (mem["count"], mem["average"], mem["median"], mem["max"]) == (2, 45.0, 45.0, 50.0)
        assert mem["p95"] == pytest.approx(49.5)
        assert mem["slope_per_minute"] == pytest.approx(-10.0)
        assert mem["increasing"] is False
        # health 0.1, 0.2, 0.3 s: p95 0.2 + 0.9 x 0.1 = 0.29; slope 0.1 s a minute
        api = series["api_response_seconds", (("endpoint", "health"),)]
        assert api["count"] == 3
        assert api["average"] == pytest.approx(0.2)
        assert api["median"] == pytest.approx(0.2)
        assert api["p95"] == pytest.approx(0.29)
        assert api["max"] == pytest.approx(0.3)
        assert api["slope_per_minute"] == pytest.approx(0.1)
        assert api["increasing"] is True

        alerts = doc["alerts"]
        assert [Path(f).name for f in alerts["files"]] == [
            "alerts-20261126T095500Z.jsonl.gz",
            "alerts.jsonl",
        ]
        assert alerts["unparsable"] == 0
        # api_down: "a" fired 09:50, resolved 10:10 -> 600 s inside the range; "d" has only
        # its resolved (10:30, since 10:15) -> 900 s. cpu_high: 10:20-10:40 reached critical
        # (1200 s, counted once, as critical); fired again 10:50, open at 11:00 -> 600 s.
        # db_down (08:00-08:30) and the 11:30 event are outside the range.
        assert alerts["rules"] == [
            {
                "rule": "api_down",
                "severity": "critical",
                "episodes": 2,
                "firing_seconds": 1500.0,
                "longest_seconds": 900.0,
                "open_at_end": 0,
            },
            {
                "rule": "cpu_high",
                "severity": "critical",
                "episodes": 1,
                "firing_seconds": 1200.0,
                "longest_seconds": 1200.0,
                "open_at_end": 0,
            },
            {
                "rule": "cpu_high",
                "severity": "warning",
                "episodes": 1,
                "firing_seconds": 600.0,
                "longest_seconds": 600.0,
                "open_at_end": 1,
            },
        ]
        assert alerts["open"] == [
            {
                "rule": "cpu_high",
                "labels": {"key": "b"},
                "severity": "warning",
                "worst": "warning",
                "since": at("10:50:00"),
            }
        ]

    async def test_table_for_people(self, files):
        rc, out, err = await report("-c", str(files), "--since", SINCE, "--until", UNTIL)
        assert rc == 0, err
        lines = out.splitlines()
        assert lines[0] == f"fossamon report for {at('10:00:00')} … {at('11:00:00')} (1h)"
        assert "skipped 1 unparsable line(s): metrics.jsonl:3" in out
        assert "1 older archive(s) not opened (before the range)" in out
        header = next(line for line in lines if line.startswith("SERIES"))
        assert header.split() == [
            "SERIES",
            "READINGS",
            "AVERAGE",
            "MEDIAN",
            "P95",
            "MAX",
            "SLOPE/MIN",
            "RISING",
        ]
        cpu_row = next(line for line in lines if line.startswith("system_cpu_percent "))
        assert cpu_row.split() == ["system_cpu_percent", "5", "40.0", "%", "30.0", "%", "88.0",
                                   "%", "100.0", "%", "+20", "yes"]  # fmt: skip
        api_row = next(line for line in lines if line.startswith("api_response_seconds"))
        assert api_row.split() == ['api_response_seconds{endpoint="health"}', "3", "200ms",
                                   "200ms", "290ms", "300ms", "+0.1", "yes"]  # fmt: skip
        assert header.index("READINGS") == cpu_row.index("5")  # aligned columns
        rules = [line.split() for line in lines if line.startswith(("api_down", "cpu_high"))]
        assert rules[:3] == [
            ["api_down", "critical", "2", "25m", "15m", "0"],
            ["cpu_high", "critical", "1", "20m", "20m", "0"],
            ["cpu_high", "warning", "1", "10m", "10m", "1"],
        ]
        assert "Open at the end of the range (1):" in out
        assert rules[3] == ["cpu_high", "warning", "key=b", at("10:50:00"), "10m"]


class TestRangesAndErrors:
    def test_relative_and_absolute_times(self):
        now = parse_ts("2026-11-26T12:00:00Z")
        assert parse_when("24h", now) == now - 86400
        assert parse_when("90m", now) == now - 5400
        assert parse_when("now", now) == now
        assert parse_when("2026-11-26", now) == parse_ts("2026-11-26T00:00:00Z")
        assert parse_when("2026-11-26T13:00+02:00", now) == parse_ts("2026-11-26T11:00:00Z")
        with pytest.raises(ValueError, match="a duration back from now"):
            parse_when("yesterday", now)

    async def test_bad_range_and_missing_files(self, tmp_path, files):
        rc, _, err = await report("-c", str(files), "--since", "yesterday")
        assert rc == 64
        assert "--since/--until" in err
        assert "yesterday" in err
        rc, _, err = await report("-c", str(files), "--since", UNTIL, "--until", SINCE)
        assert rc == 64
        assert "--since is after --until" in err
        missing = tmp_path / "nowhere" / "m.jsonl"
        rc, out, err = await report("-c", str(files), "--metrics", str(missing))
        assert rc == 66
        assert out == ""
        assert f"no metrics file at {missing}" in err


class TestStreaming:
    def test_a_truncated_archive_is_read_up_to_the_break(self, tmp_path):
        live = tmp_path / "m.jsonl"
        whole = gzip.compress(
            "".join(metrics_line(f"10:0{i}:00", cpu(float(i))) for i in range(5)).encode()
        )
        (tmp_path / "m-20261126T100500Z.jsonl.gz").write_bytes(whole[: len(whole) - 12])
        report_ = gather(live, tmp_path / "a.jsonl", parse_ts(SINCE), parse_ts(UNTIL))
        assert report_.metrics.damaged
        assert "m-20261126T100500Z.jsonl.gz" in report_.metrics.damaged[0]
        assert report_.series[0][0].trend.count == report_.records_in_range > 0
        assert report_.alerts is None

    def test_memory_is_bounded_by_the_line_not_the_file(self, tmp_path, monkeypatch):
        """12 MB of records the report does not keep, a line longer than the line limit, and
        three readings it keeps: the peak stays far below the file's size."""
        monkeypatch.setattr(report_read, "MAX_LINE", 64 * 1024)
        live = tmp_path / "m.jsonl"
        filler = metrics_line(
            "10:10:00", *[("api_up", {"endpoint": f"e{i}"}, 1.0) for i in range(40)]
        )
        with live.open("w") as out:
            out.write(metrics_line("10:00:00", cpu(1.0)))
            out.write(filler * (12_000_000 // len(filler)))
            out.write('{"v": 1, "ts": "' + "x" * 200_000 + '"}\n')
            out.write(metrics_line("10:20:00", cpu(2.0)))
            out.write(metrics_line("10:30:00", cpu(3.0)))
        assert live.stat().st_size > 12_000_000
        tracemalloc.start()
        try:
            found = gather(live, tmp_path / "a.jsonl", parse_ts(SINCE), parse_ts(UNTIL))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 1_000_000, peak
        assert found.metrics.unparsable == 1  # the over-long line, skipped without holding it
        [(figures, points)] = found.series
        assert points == [
            (parse_ts(at(f"10:{m}0:00")), float(v)) for m, v in ((0, 1), (2, 2), (3, 3))
        ]
        assert figures.trend.count == 3


def gather_range(live: Path, alerts: Path, since: str = SINCE, until: str = UNTIL):
    return gather(live, alerts, parse_ts(since), parse_ts(until))


class TestReviewFindings:
    def test_a_numbered_archive_next_to_its_gz_is_read_once(self, tmp_path):
        """A crash while logrotate compressed `m.jsonl.1`: the plain copy is whole, and read."""
        live = tmp_path / "m.jsonl"
        text = metrics_line("10:00:00", cpu(10.0)) + metrics_line("10:01:00", cpu(20.0))
        (tmp_path / "m.jsonl.1").write_text(text)
        write_gz(tmp_path / "m.jsonl.1.gz", text[: len(text) // 2])
        write_gz(tmp_path / "m.jsonl.2.gz", metrics_line("09:59:00", cpu(5.0)))
        found = gather_range(live, tmp_path / "a.jsonl", "2026-11-26T09:00:00Z")
        assert [Path(f).name for f in found.metrics.files] == ["m.jsonl.2.gz", "m.jsonl.1"]
        [(figures, _)] = found.series
        assert figures.trend.count == 3
        assert found.metrics.unparsable == 0

    def test_files_of_two_rotation_schemes_are_read_in_time_order(self, tmp_path):
        """Rotation switched from the built-in one to logrotate: the older built-in archive
        opens the episode, the newer dateext one resolves it (the reviewer's mk2.py)."""
        alerts = tmp_path / "alerts.jsonl"
        write_gz(
            tmp_path / "alerts-20261126T093000Z.jsonl.gz",
            alert_line("09:00:00", "firing", "cpu_high", "warning", "a", "09:00:00"),
        )
        (tmp_path / "alerts.jsonl-20261126").write_text(
            alert_line("10:30:00", "resolved", "cpu_high", "warning", "a", "09:00:00")
        )
        alerts.write_text("")
        (tmp_path / "m.jsonl").write_text(metrics_line("10:00:00", cpu(1.0)))
        summary = gather_range(tmp_path / "m.jsonl", alerts).alerts
        assert summary is not None
        [row] = summary.rules
        assert (row.rule, row.episodes, row.firing_seconds, row.open) == ("cpu_high", 1, 1800, 0)
        assert summary.open == []
        assert [Path(f).name for f in summary.read.files] == [
            "alerts-20261126T093000Z.jsonl.gz",
            "alerts.jsonl-20261126",
            "alerts.jsonl",
        ]

    def test_an_alerts_events_are_replayed_in_time_order(self):
        episodes = AlertEpisodes(parse_ts(UNTIL))
        for clock, event in (("10:30:00", "resolved"), ("10:10:00", "firing")):
            record = json.loads(alert_line(clock, event, "cpu_high", "warning", "a", "10:10:00"))
            assert episodes.add(parse_ts(at(clock)), record)
        [row], still_open = episodes.summary(parse_ts(SINCE))
        assert (row.episodes, row.firing_seconds, row.open, still_open) == (1, 1200, 0, [])

    def test_an_episode_that_ends_as_the_range_begins_is_not_in_it(self, tmp_path):
        alerts = tmp_path / "alerts.jsonl"
        alerts.write_text(
            alert_line("09:00:00", "firing", "api_down", "critical", "a", "09:00:00")
            + alert_line("10:00:00", "resolved", "api_down", "critical", "a", "09:00:00")
            + alert_line("10:00:00", "firing", "cpu_high", "warning", "b", "10:00:00")
            + alert_line("10:00:00", "resolved", "cpu_high", "warning", "b", "10:00:00")
        )
        (tmp_path / "m.jsonl").write_text(metrics_line("10:00:00", cpu(1.0)))
        summary = gather_range(tmp_path / "m.jsonl", alerts).alerts
        assert summary is not None
        # the instant one at the range's start is inside it; the one that ended there is not
        assert [(r.rule, r.episodes) for r in summary.rules] == [("cpu_high", 1)]

    def test_a_rejected_metrics_record_adds_no_reading(self):
        collector = SeriesCollector()
        record = json.loads(metrics_line("10:00:00", cpu(10.0), memory(50.0)))
        record["samples"].append({"name": "system_load1", "labels": "not a mapping", "value": 1})
        assert not collector.add(parse_ts(at("10:00:00")), record)
        record["samples"].insert(1, ["not", "a", "sample"])
        assert not collector.add(parse_ts(at("10:00:00")), record)
        assert collector.series == {}
        assert collector.records == 0
        assert collector.figures() == []

    def test_a_builtin_archive_holds_up_to_a_second_past_its_name(self, tmp_path):
        """The name holds int(now) of the rotation; its last record may be later within that
        second, so a range starting in that second must open it."""
        live = tmp_path / "m.jsonl"
        write_gz(
            tmp_path / "m-20261126T100000Z.jsonl.gz",
            metrics_line("09:59:00", cpu(1.0))
            + metrics_line("10:00:00", cpu(7.0)).replace(".000Z", ".600Z", 1),
        )
        live.write_text(metrics_line("10:01:00", cpu(9.0)))
        found = gather_range(live, tmp_path / "a.jsonl", "2026-11-26T10:00:00.300Z")
        assert found.metrics.skipped_files == []
        [(figures, points)] = found.series
        assert [v for _, v in points] == [7.0, 9.0]
        assert figures.trend.count == 2

    def test_memory_per_reading_and_the_charts_points_are_thinned(self, tmp_path):
        """6 key series x 20,000 records = 120,000 readings: the kept readings are arrays of
        16 bytes a reading, let go of series by series; the chart gets thinned points."""
        live = tmp_path / "m.jsonl"
        n = 20_000
        start = parse_ts(SINCE)
        samples = [
            {"name": "system_cpu_percent", "labels": {}, "value": 0.0},
            {"name": "system_memory_percent", "labels": {}, "value": 50.0},
            {"name": "system_disk_percent", "labels": {"mount": "/"}, "value": 40.0},
            {"name": "system_load1", "labels": {}, "value": 1.5},
            {"name": "api_response_seconds", "labels": {"endpoint": "a"}, "value": 0.01},
            {"name": "api_response_seconds", "labels": {"endpoint": "b"}, "value": 0.02},
        ]
        with live.open("w") as out:
            for i in range(n):
                samples[0]["value"] = float(i % 100)
                ts = dt.datetime.fromtimestamp(start + i * 0.05, dt.UTC).isoformat()
                out.write(json.dumps({"ts": ts, "host": "h", "samples": samples}) + "\n")
        tracemalloc.start()
        try:
            found = gather_range(live, tmp_path / "a.jsonl")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        readings = 6 * n
        assert peak / readings < 48, peak / readings
        assert len(found.series) == 6
        for figures, points in found.series:
            assert figures.trend.count == n
            assert len(points) <= 2 * (WIDTH - 2 * PAD) + 1
        cpu_figures, cpu_points = found.series[0]
        assert cpu_figures.metric == "system_cpu_percent"
        assert cpu_figures.p95 == pytest.approx(p95([float(i % 100) for i in range(n)]))
        assert {v for _, v in cpu_points} >= {0.0, 99.0}  # the extremes survive thinning


def test_one_p95_for_the_status_page_and_the_report():
    from fossamon.tools import report_series
    from fossamon.web import page

    assert page.p95 is report_series.p95 is p95
    assert p95([3.0]) == 3.0
    assert p95([1.0, 2.0]) == pytest.approx(1.95)
    assert p95([float(i) for i in range(1, 101)]) == pytest.approx(95.05)
