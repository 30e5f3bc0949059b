"""`fossamon loadtest`'s pure parts: histogram, picking, splitting, scenarios, verdicts."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fossamon.config import parse_config
from fossamon.errors import ConfigError
from fossamon.model import ErrorKind
from fossamon.tools import loadtest_scenario as scenario
from fossamon.tools.loadtest_engine import Picker, ShareResult, split
from fossamon.tools.loadtest_histogram import (
    MAX_MICROS,
    Histogram,
    bucket_of,
    highest_in,
)
from fossamon.tools.loadtest_lean import encode_request
from fossamon.tools.loadtest_plan import DEFAULT_TIMEOUT, Endpoint, Kpi, Plan
from fossamon.tools.loadtest_processes import RunResult, merge
from fossamon.tools.loadtest_report import build_report, render, verdict
from fossamon.tools.loadtest_tally import Tally

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "loadtest-runbook.toml"


def exact_percentile(values: list[int], percent: float) -> int:
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def histogram_of(values: list[int]) -> Histogram:
    histogram = Histogram()
    for value in values:
        histogram.record(value)
    return histogram


class TestHistogram:
    @given(st.integers(min_value=0, max_value=MAX_MICROS))
    def test_a_bucket_holds_its_value_within_a_thousandth(self, value):
        bucket = bucket_of(value)
        top = highest_in(bucket)
        assert value <= top
        assert top - value <= value / 1024
        assert bucket_of(top) == bucket
        assert bucket == 0 or highest_in(bucket - 1) < value

    @settings(max_examples=200)
    @given(
        st.lists(st.integers(min_value=0, max_value=10**10), min_size=1, max_size=300),
        st.sampled_from([0, 1, 50, 90, 95, 99, 99.9, 100]),
    )
    def test_percentiles_are_exact_to_a_thousandth_and_never_understate(self, values, percent):
        histogram = histogram_of(values)
        exact = exact_percentile(values, percent) if percent else min(values)
        found = histogram.percentile(percent)
        assert found is not None
        assert exact <= found <= exact + exact / 1024
        assert histogram.min == min(values)
        assert histogram.max == max(values)
        assert histogram.count == len(values)
        assert histogram.total == sum(values)

    @given(
        st.lists(st.integers(min_value=0, max_value=10**8), max_size=100),
        st.lists(st.integers(min_value=0, max_value=10**8), max_size=100),
    )
    def test_merging_equals_recording_everything_in_one(self, first, second):
        merged = histogram_of(first)
        merged.merge(histogram_of(second))
        together = histogram_of(first + second)
        assert merged.counts == together.counts
        assert merged.to_json() == together.to_json()
        for percent in (50, 95, 99):
            assert merged.percentile(percent) == together.percentile(percent)

    def test_json_round_trip_and_a_corrupt_count_is_refused(self):
        histogram = histogram_of([1, 5, 5000, 70_000, 3_000_000])
        data = json.loads(json.dumps(histogram.to_json()))
        again = Histogram.from_json(data)
        assert again.to_json() == histogram.to_json()
        assert again.percentile(50) == histogram.percentile(50)
        data["count"] += 1
        with pytest.raises(ValueError, match="do not add up"):
            Histogram.from_json(data)

    def test_empty_has_no_percentiles_and_out_of_range_values_are_clamped(self):
        assert Histogram().percentile(50) is None
        assert Histogram().mean() is None
        histogram = histogram_of([-5, MAX_MICROS * 4])
        assert histogram.min == 0
        assert histogram.max == MAX_MICROS

    def test_seconds_become_microseconds(self):
        histogram = Histogram()
        histogram.record_seconds(0.0505)
        assert histogram.max == 50_500


class TestPicker:
    def test_smooth_weighted_round_robin_spreads_picks(self):
        picker = Picker([5, 1, 1])
        assert [picker.next() for _ in range(7)] == [0, 0, 1, 0, 2, 0, 0]

    def test_fractional_weights_get_their_exact_share(self):
        picker = Picker([0.5, 1.5, 2.0])
        picks = [picker.next() for _ in range(4000)]
        assert [picks.count(i) for i in range(3)] == [500, 1500, 2000]

    def test_one_endpoint(self):
        picker = Picker([3.0])
        assert {picker.next() for _ in range(5)} == {0}


class TestSplit:
    def plan(self, **changes):
        return Plan(endpoints=(Endpoint("a", "http://127.0.0.1:1/"),), **changes)

    def test_workers_and_requests_are_shared_evenly(self):
        shares = split(self.plan(concurrency=50, processes=2, requests=7, duration=None))
        assert [(s.index, s.of, s.workers, s.requests) for s in shares] == [
            (0, 2, 25, 4),
            (1, 2, 25, 3),
        ]

    def test_no_process_without_a_worker_or_a_request(self):
        assert len(split(self.plan(concurrency=3, processes=8))) == 3
        assert len(split(self.plan(concurrency=50, processes=8, requests=2, duration=None))) == 2
        assert [s.requests for s in split(self.plan(processes=4))] == [None] * 4


class TestScenarioFile:
    def test_the_runbook_example_parses(self):
        plan = scenario.load_scenario(str(EXAMPLE))
        assert [ep.name for ep in plan.endpoints] == [
            "health",
            "work_orders",
            "dispensers",
            "auth_validate",
        ]
        assert [ep.weight for ep in plan.endpoints] == [1, 4, 3, 2]
        auth = plan.endpoints[3]
        assert auth.method == "POST"
        assert json.loads(auth.body or b"") == {"token": "probe"}
        assert ("Content-Type", "application/json") in auth.headers
        assert ("Accept", "application/json") in auth.headers
        assert auth.expect_status == (200, 401)
        assert plan.endpoints[1].url == "http://127.0.0.1:8000/api/work-orders?limit=20"
        assert (plan.concurrency, plan.duration, plan.requests) == (50, 60.0, None)
        assert plan.kpi == Kpi(0.5, 100, 99)

    def test_base_url_can_be_replaced(self):
        plan = scenario.load_scenario(str(EXAMPLE), base_url="http://127.0.0.1:9/x")
        assert plan.endpoints[0].url == "http://127.0.0.1:9/x/api/health"

    def test_the_docstring_example_parses(self):
        block = re.search(r"```toml\n(.*?)```", scenario.__doc__ or "", re.DOTALL)
        assert block is not None
        plan = scenario.parse_scenario(tomllib.loads(block.group(1)))
        assert len(plan.endpoints) == 2

    def test_defaults(self):
        plan = scenario.parse_scenario({"endpoints": [{"name": "a", "url": "http://127.0.0.1/"}]})
        assert (plan.concurrency, plan.duration, plan.requests, plan.rate) == (50, 10.0, None, None)
        assert plan.endpoints[0].timeout == DEFAULT_TIMEOUT
        assert plan.endpoints[0].expect_status == ()

    def test_every_problem_is_named_by_its_key_path(self):
        raw = {
            "base_url": "http://127.0.0.1:8000",
            "requests": 10,
            "duration": "1s",
            "endpoints": [
                {"name": "a", "path": "/a", "wieght": 2},
                {"name": "b", "path": "/b", "weight": 0},
            ],
        }
        with pytest.raises(ConfigError) as caught:
            scenario.parse_scenario(raw, "s.toml")
        paths = {p.path for p in caught.value.problems}
        assert paths == {"endpoints[0].wieght", "endpoints[1].weight"}
        del raw["endpoints"][0]["wieght"]
        raw["endpoints"][1] = {"name": "a", "path": "b", "url": "http://127.0.0.1/"}
        raw["endpoints"].append({"name": "c", "path": "/c", "json": {}, "body": "x"})
        with pytest.raises(ConfigError) as caught:
            scenario.parse_scenario(raw, "s.toml")
        found = {(p.path, p.message) for p in caught.value.problems}
        assert ("requests", 'give at most one of "requests" and "duration"') in found
        assert ("endpoints[1].name", 'duplicate name "a"') in found
        assert ("endpoints[1]", 'give exactly one of "path" (joined to base_url) or "url"') in found
        assert ("endpoints[2]", 'give at most one of "json" and "body"') in found

    def test_a_path_needs_a_base_url(self):
        with pytest.raises(ConfigError, match=r"endpoints\[0\]\.path: \"path\" needs base_url"):
            scenario.parse_scenario({"endpoints": [{"name": "a", "path": "/a"}]})

    def test_unreadable_and_invalid_files(self, tmp_path):
        with pytest.raises(ConfigError, match="No such file"):
            scenario.load_scenario(str(tmp_path / "missing.toml"))
        bad = tmp_path / "bad.toml"
        bad.write_text("endpoints = [")
        with pytest.raises(ConfigError, match="invalid TOML"):
            scenario.load_scenario(str(bad))


class TestCommandLinePlan:
    def test_json_makes_a_post_with_its_content_type(self):
        endpoint = scenario.endpoint_from_url(
            "http://127.0.0.1:8000/api/auth/validate", json_text='{"token": "x"}'
        )
        assert endpoint.method == "POST"
        assert endpoint.body == b'{"token": "x"}'
        assert endpoint.headers == (("Content-Type", "application/json"),)
        assert endpoint.name == "/api/auth/validate"

    def test_bad_values_name_their_option(self):
        with pytest.raises(ValueError, match="--json: not valid JSON"):
            scenario.endpoint_from_url("http://127.0.0.1/", json_text="{")
        with pytest.raises(ValueError, match="--url: expected an http"):
            scenario.endpoint_from_url("ftp://127.0.0.1/")
        with pytest.raises(ValueError, match="--header: 'X Y' is not a valid HTTP header name"):
            scenario.endpoint_from_url("http://127.0.0.1/", headers={"X Y": "1"})
        with pytest.raises(ValueError, match="expected 'Name: value'"):
            scenario.parse_header("no colon")
        assert scenario.parse_header("Authorization: Bearer a:b") == ("Authorization", "Bearer a:b")

    def test_requests_and_duration_replace_each_other(self):
        plan = Plan(endpoints=())
        assert (plan.requests, plan.duration) == (None, 10.0)
        by_count = scenario.with_overrides(plan, requests=5, duration=None, rate=None)
        assert (by_count.requests, by_count.duration) == (5, None)
        by_time = scenario.with_overrides(by_count, duration=2.0)
        assert (by_time.requests, by_time.duration) == (None, 2.0)

    def test_the_daemons_api_endpoints(self):
        config = parse_config(
            """
            [collectors.api]
            base_url = "http://127.0.0.1:8000/"
            timeout = "3s"
            headers = { Accept = "application/json" }
            verify_tls = false
            [[collectors.api.endpoints]]
            name = "health"
            path = "/api/health"
            [[collectors.api.endpoints]]
            name = "auth"
            url = "http://127.0.0.1:8001/api/auth/validate"
            method = "POST"
            json = { token = "t" }
            expect_status = [200, 401]
            timeout = "1s"
            """,
            env={},
        )
        assert config.collectors.api is not None
        plan = scenario.plan_from_api(config.collectors.api, "config.toml")
        health, auth = plan.endpoints
        assert (health.url, health.timeout, health.weight) == (
            "http://127.0.0.1:8000/api/health",
            3.0,
            1.0,
        )
        assert (auth.method, auth.body, auth.timeout) == ("POST", b'{"token":"t"}', 1.0)
        assert auth.expect_status == (200, 401)
        assert ("Content-Type", "application/json") in auth.headers
        assert not plan.verify_tls
        assert plan.source == "config.toml"


class TestEncodeRequest:
    def test_get_with_query_and_port(self):
        endpoint = Endpoint(
            "w", "http://127.0.0.1:8000/api/work-orders?limit=20&status=open", headers=(("A", "1"),)
        )
        assert encode_request(endpoint) == (
            b"GET /api/work-orders?limit=20&status=open HTTP/1.1\r\n"
            b"Host: 127.0.0.1:8000\r\n"
            b"User-Agent: fossamon/" + __import__("fossamon").__version__.encode() + b"\r\n"
            b"A: 1\r\n\r\n"
        )

    def test_post_with_body_default_port_ipv6_and_own_host(self):
        endpoint = Endpoint(
            "p",
            "http://[::1]/x y",
            method="POST",
            headers=(("User-Agent", "me"),),
            body=b'{"a":1}',
        )
        request = encode_request(endpoint)
        assert request.startswith(b"POST /x%20y HTTP/1.1\r\nHost: [::1]\r\nUser-Agent: me\r\n")
        assert request.endswith(b'Content-Length: 7\r\n\r\n{"a":1}')
        assert b"fossamon/" not in request
        empty = encode_request(Endpoint("e", "https://h.example/", method="PUT"))
        assert b"Host: h.example\r\n" in empty
        assert b"Content-Length: 0\r\n" in empty
        own = encode_request(Endpoint("o", "http://127.0.0.1/", headers=(("Host", "a"),)))
        assert own.count(b"Host:") == 1


def tally_with(statuses: list[int], failures: list[ErrorKind], expect=()) -> Tally:
    tally = Tally(expect)
    for status in statuses:
        tally.response(status, 10, 0.020)
    for kind in failures:
        tally.failure(kind, f"{kind} happened")
    return tally


class TestTally:
    def test_counts_add_up_and_the_first_message_is_kept(self):
        tally = tally_with([200, 200, 503, 404], [ErrorKind.REFUSED, ErrorKind.TIMEOUT])
        tally.failure(ErrorKind.REFUSED, "second refusal")
        assert tally.requests == 7
        assert tally.ok == 2
        assert tally.errors == {"status": 2, "refused": 2, "timeout": 1}
        assert tally.requests == tally.ok + sum(tally.errors.values())
        assert tally.responses == 4 == tally.latency.count
        assert tally.messages["status"] == "status 503, expected 2xx"
        assert tally.messages["refused"] == "refused happened"
        assert tally.bytes == 40

    def test_expected_statuses(self):
        tally = tally_with([200, 401, 500], [], expect=(200, 401))
        assert tally.ok == 2
        assert tally.messages["status"] == "status 500, expected one of 200, 401"

    def test_merge_and_json(self):
        first = tally_with([200], [ErrorKind.DNS])
        second = Tally.from_json(json.loads(json.dumps(tally_with([500], []).to_json())))
        first.merge(second)
        assert (first.requests, first.ok, first.statuses) == (3, 1, {200: 1, 500: 1})
        assert first.errors == {"dns": 1, "status": 1}
        assert first.latency.count == 2


def run_result(tallies: list[Tally], wall: float = 2.0) -> RunResult:
    return RunResult(
        tallies=tallies,
        wall_seconds=wall,
        processes=1,
        workers=50,
        cpu_seconds=0.5,
        unsent=0,
        stopped=False,
        loop="uvloop",
    )


TWO = Plan(
    endpoints=(
        Endpoint("a", "http://u:secret@127.0.0.1/a?token=abcdef"),
        Endpoint("b", "http://127.0.0.1/b"),
    )
)


class TestReport:
    def test_rates_are_total_requests_over_wall_time(self):
        report = build_report(
            TWO,
            run_result([tally_with([200] * 300, []), tally_with([200] * 100, [])], wall=2.0),
            "t",
        )
        assert report["overall"]["rps"] == 200.0  # not the mean of per-endpoint rates (100)
        assert [e["rps"] for e in report["endpoints"]] == [150.0, 50.0]
        assert report["overall"]["latency_ms"]["p50"] == 20.0
        assert report["verdict"]["passed"]
        assert "secret" not in report["endpoints"][0]["url"]
        assert "abcdef" not in report["endpoints"][0]["url"]
        assert report["client_cpu_seconds_per_1000"] == 1.25

    def test_an_all_failed_run_reports_and_fails(self):
        failed = [tally_with([], [ErrorKind.REFUSED] * 5), tally_with([], [ErrorKind.REFUSED])]
        report = build_report(TWO, run_result(failed), "t")
        json.dumps(report)
        assert report["overall"]["requests"] == 6
        assert report["overall"]["errors"] == {"refused": 6}
        assert set(report["overall"]["latency_ms"].values()) == {None}
        assert not report["verdict"]["passed"]
        text = render(report)
        assert "status codes: none (no response at all)" in text
        assert "errors: refused x 6 (first: refused happened)" in text
        assert "FAIL  p95 latency: no responses" in text
        assert text.endswith("verdict: FAIL")

    def test_verdict_boundaries(self):
        kpi = Kpi(max_p95=0.5, min_rps=100, min_success=99)

        def overall(p95, rps, success):
            return {"latency_ms": {"p95": p95}, "rps": rps, "success_percent": success}

        def passed(**kw):
            return {c.name: c.passed for c in verdict(overall(**kw), kpi)}

        assert passed(p95=499.9, rps=100, success=99) == {"p95": True, "rps": True, "success": True}
        assert passed(p95=500.0, rps=99.9, success=98.99) == {
            "p95": False,
            "rps": False,
            "success": False,
        }
        assert passed(p95=None, rps=0, success=None)["success"] is False

    def test_shares_merge_into_one_result(self):
        plan = Plan(endpoints=TWO.endpoints, processes=2, concurrency=4)
        shares = split(plan)
        results = [
            ShareResult([tally_with([200], []), tally_with([], [])], 10.0, 11.0, 0.2),
            ShareResult([tally_with([200, 500], []), tally_with([204], [])], 10.0, 11.5, 0.3),
        ]
        merged = merge(plan, shares, results)
        assert merged.wall_seconds == 1.5
        assert [t.requests for t in merged.tallies] == [3, 1]
        assert merged.cpu_seconds == 0.5
        assert merged.workers == 4


class TestUnsentAndPartialLatency:
    """Open model: what was never sent counts; p95 says what it covers."""

    OPEN = Plan(endpoints=(Endpoint("a", "http://127.0.0.1/a"),), rate=100.0, duration=2.0)

    def result(self, tally: Tally, unsent: int, *, stopped: bool = False) -> RunResult:
        return dataclasses.replace(run_result([tally]), unsent=unsent, stopped=stopped)

    def test_unsent_requests_fail_success_and_the_verdict(self):
        # a 300 ms endpoint at --rate 100 --concurrency 2 for 2 s: 14 sent, 186 unsent
        report = build_report(self.OPEN, self.result(tally_with([200] * 14, []), 186), "t")
        overall = report["overall"]
        assert overall["success_percent"] == 7.0
        assert overall["unsent"] == 186
        assert not report["verdict"]["passed"]
        failed = {c["name"] for c in report["verdict"]["checks"] if not c["passed"]}
        assert {"success", "unsent"} <= failed
        text = render(report)
        assert "FAIL  186 of 200 planned requests unsent" in text
        assert "raise --concurrency" in text
        assert text.endswith("verdict: FAIL")

    def test_the_concurrency_hint_is_only_for_an_open_model_that_did_not_keep_up(self):
        stopped = build_report(
            self.OPEN, self.result(tally_with([200] * 14, []), 186, stopped=True), "t"
        )
        assert stopped["overall"]["success_percent"] == 100.0  # Ctrl-C: not the target's fault
        assert "raise --concurrency" not in render(stopped)
        budget = Plan(endpoints=self.OPEN.endpoints, requests=200, duration=None)
        closed = build_report(
            budget, self.result(tally_with([200] * 14, []), 186, stopped=True), "t"
        )
        assert "raise --concurrency" not in render(closed)

    def test_p95_says_it_covers_the_responses_only(self):
        tally = tally_with([200] * 90, [ErrorKind.TIMEOUT] * 10)
        report = build_report(self.OPEN, self.result(tally, 0), "t")
        (p95,) = [c for c in report["verdict"]["checks"] if c["name"] == "p95"]
        assert p95["text"].endswith("(covers the responses only: 90 of 100 requests)")
        assert "90 of 100 requests" in render(report)
        whole = build_report(self.OPEN, self.result(tally_with([200] * 5, []), 0), "t")
        assert "covers" not in render(whole)


class TestReportFile:
    def test_the_report_is_written_atomically(self, tmp_path, monkeypatch):
        from fossamon.tools import loadtest

        target = tmp_path / "r.json"
        target.write_text("old")
        assert loadtest._unwritable(str(target)) is None
        assert loadtest._unwritable(str(tmp_path)) == "is a directory"
        assert loadtest._unwritable(str(tmp_path / "missing" / "r.json")) is not None

        def fail(*_args):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(Path, "replace", fail)
        with pytest.raises(OSError, match="No space"):
            loadtest._write_atomically(target, "new")
        assert target.read_text() == "old"  # never half-written
        monkeypatch.undo()
        loadtest._write_atomically(target, "new")
        assert target.read_text() == "new"
        assert [f.name for f in tmp_path.iterdir()] == ["r.json"]  # no temporary left


class TestWorkerProcess:
    def test_a_failing_worker_stops_the_others(self, monkeypatch):
        import multiprocessing
        import threading
        import time

        from fossamon.tools import loadtest_processes

        async def broken(*_args, **_kwargs):
            raise RuntimeError("boom")

        monkeypatch.setattr(loadtest_processes, "run_share", broken)
        monkeypatch.setattr(loadtest_processes.signal, "signal", lambda *_: None)
        parent, child = multiprocessing.Pipe()
        stop = threading.Event()
        plan = Plan(endpoints=(Endpoint("a", "http://127.0.0.1:9/"),), requests=1)
        share = split(plan)[0]
        parent.send(("go", time.monotonic()))
        loadtest_processes.worker_main(plan, share, child, [0], stop)
        assert parent.recv() == ("ready", None)
        assert parent.recv() == ("error", "RuntimeError: boom")
        assert stop.is_set()  # the other processes hear it at their next poll
