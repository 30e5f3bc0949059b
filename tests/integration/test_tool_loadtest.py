"""`fossamon loadtest` for real: real servers on free loopback ports, the real command line.

The demo target (with its fault injection) and small aiohttp servers with known behaviour
(a fixed latency, a stall, connections closed or reset) stand in for the API. The command
runs as a subprocess, as an operator runs it, while the server runs on the test's loop.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from support import free_port

from fossamon.demo.target import DemoTarget
from fossamon.model import ErrorKind
from fossamon.tools.loadtest_engine import Share, run_share
from fossamon.tools.loadtest_plan import Endpoint, Plan

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    report: dict[str, Any] | None


async def loadtest(tmp_path: Path, *args: str, timeout: float = 60) -> Outcome:
    report = tmp_path / f"report-{time.monotonic_ns()}.json"
    env = {k: v for k, v in os.environ.items() if k != "FOSSAMON_CONFIG"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fossamon",
        "loadtest",
        *args,
        "--report",
        str(report),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    data = json.loads(report.read_text()) if report.exists() else None
    assert proc.returncode is not None
    return Outcome(proc.returncode, out.decode(), err.decode(), data)


async def counted_run(
    tmp_path: Path, url: str, *args: str, requests: int, concurrency: int, processes: int
) -> Outcome:
    """`fossamon loadtest` sending a fixed number of requests to one URL."""
    return await loadtest(
        tmp_path,
        "--url",
        url,
        "--requests",
        str(requests),
        "--concurrency",
        str(concurrency),
        "--processes",
        str(processes),
        *args,
    )


def assert_counts_add_up(figures: dict[str, Any]) -> None:
    errors = figures["errors"]
    statuses = sum(figures["statuses"].values())
    assert figures["requests"] == figures["ok"] + sum(errors.values()), figures
    assert figures["requests"] == statuses + sum(errors.values()) - errors.get("status", 0)
    assert figures["responses"] == statuses == figures["latency_histogram_us"]["count"]


class Server:
    """A small API with known behaviour; counts what it was asked."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.stalled = False
        self.runner: web.AppRunner | None = None
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/fast", self.fast)
        app.router.add_get("/stall-once", self.stall_once)
        app.router.add_get("/close", self.close)
        app.router.add_get("/chunked", self.chunked)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/300ms", self.three_hundred_ms)
        app.router.add_get("/reset", self.reset)
        app.router.add_route("HEAD", "/head", self.fast)
        return app

    async def fast(self, request: web.Request) -> web.Response:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        return web.json_response({"status": "healthy"})

    async def stall_once(self, request: web.Request) -> web.Response:
        if not self.stalled:
            self.stalled = True
            await asyncio.sleep(0.5)
        return await self.fast(request)

    async def close(self, request: web.Request) -> web.Response:
        await self.fast(request)
        return web.json_response({"a": 1}, headers={"Connection": "close"})

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(3):
            await response.write(b"x" * 1000)
        await response.write_eof()
        return response

    async def three_hundred_ms(self, request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return await self.fast(request)

    async def slow(self, _request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    async def reset(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()
        await asyncio.sleep(0.1)
        return web.Response(text="never")

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def server():
    srv = Server()
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def demo(small_demo_db):
    async with DemoTarget(small_demo_db) as target:
        yield target


def write_scenario(tmp_path: Path, text: str) -> str:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return str(path)


async def test_counts_add_up_per_endpoint_and_overall(tmp_path, demo):
    demo.faults.set("/api/dispensers", status=503, error_rate=0.5)
    scenario = write_scenario(
        tmp_path,
        f"""
        base_url = "{demo.url}"
        [[endpoints]]
        name = "health"
        path = "/api/health"
        weight = 2
        [[endpoints]]
        name = "work_orders"
        path = "/api/work-orders?limit=5"
        [[endpoints]]
        name = "dispensers"
        path = "/api/dispensers?limit=5"
        [[endpoints]]
        name = "auth"
        path = "/api/auth/validate"
        method = "POST"
        json = {{ token = "wrong" }}
        expect_status = [200, 401]
        """,
    )
    done = await loadtest(
        tmp_path,
        "--scenario",
        scenario,
        "--requests",
        "500",
        "--concurrency",
        "6",
        "--processes",
        "1",
    )
    assert done.code == 1, done.stderr  # half the dispenser pages fail: success < 99 %
    report = done.report
    assert report is not None
    by_name = {e["name"]: e for e in report["endpoints"]}
    assert report["overall"]["requests"] == 500
    # weights 2:1:1:1, picked by smooth weighted round robin: exact shares
    assert [by_name[n]["requests"] for n in ("health", "work_orders", "dispensers", "auth")] == [
        200,
        100,
        100,
        100,
    ]
    for figures in [*report["endpoints"], report["overall"]]:
        assert_counts_add_up(figures)
    # what the server saw is what the report says was sent
    assert demo.stats["/api/health"] == 200
    assert demo.stats["/api/dispensers"] == 100
    dispensers = by_name["dispensers"]
    assert set(dispensers["statuses"]) == {"200", "503"}
    assert dispensers["errors"] == {"status": dispensers["statuses"]["503"]}
    assert by_name["auth"]["statuses"] == {"401": 100}
    assert by_name["auth"]["ok"] == 100
    failed = {c["name"] for c in report["verdict"]["checks"] if not c["passed"]}
    assert failed == {"success"}
    assert "errors: status x" in done.stdout


@pytest.mark.parametrize("engine", ["lean", "aiohttp"])
async def test_percentiles_match_an_injected_latency(tmp_path, demo, engine):
    demo.faults.set("/api/health", latency=0.05)
    done = await counted_run(
        tmp_path,
        f"{demo.url}/api/health",
        "--engine",
        engine,
        requests=200,
        concurrency=10,
        processes=1,
    )
    assert done.code == 0, done.stdout + done.stderr
    assert done.report is not None
    overall = done.report["overall"]
    latency = overall["latency_ms"]
    assert overall["requests"] == overall["ok"] == 200
    assert 50.0 <= latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p95"]
    assert latency["p95"] <= latency["p99"] <= latency["max"]
    assert latency["p50"] < 70.0, latency
    assert latency["p99"] < 200.0, latency
    assert done.report["engine"] == engine
    # 200 requests of 50 ms over 10 workers: at least 1 s, and not much more
    assert 1.0 <= done.report["wall_seconds"] < 3.0


async def test_the_open_model_keeps_its_rate(tmp_path, server):
    done = await loadtest(
        tmp_path,
        "--url",
        f"{server.url}/fast",
        "--rate",
        "100",
        "--duration",
        "1500ms",
        "--concurrency",
        "6",
        "--processes",
        "2",
    )
    assert done.code == 0, done.stdout + done.stderr
    report = done.report
    assert report is not None
    assert (report["model"], report["processes"]) == ("open", 2)
    assert report["overall"]["requests"] == 150  # due at 0, 10 ms, ... 1490 ms
    assert report["unsent"] == 0
    assert server.hits["/fast"] == 150
    # measured from each due time, and nothing leaves before it is due (no negative latency)
    assert report["overall"]["latency_ms"]["min"] > 0
    assert 1.48 <= report["wall_seconds"] < 1.8


async def test_the_open_model_counts_the_queueing_behind_a_stall(tmp_path):
    """One request stalls 500 ms on a one-worker pool at 50 requests/s: the ~24 requests
    that fell due meanwhile waited, and their latency says so. A closed-model tester
    (coordinated omission) would show them as fast."""
    opened, closed = Server(), Server()
    await opened.start()
    await closed.start()
    try:
        common = ["--concurrency", "1", "--processes", "1"]
        open_run = await loadtest(
            tmp_path,
            "--url",
            f"{opened.url}/stall-once",
            "--rate",
            "50",
            "--duration",
            "1500ms",
            *common,
        )
        closed_run = await loadtest(
            tmp_path, "--url", f"{closed.url}/stall-once", "--requests", "75", *common
        )
    finally:
        await opened.stop()
        await closed.stop()
    assert open_run.report is not None
    assert closed_run.report is not None
    open_latency = open_run.report["overall"]["latency_ms"]
    closed_latency = closed_run.report["overall"]["latency_ms"]
    assert open_run.report["overall"]["requests"] == 75
    assert open_latency["max"] >= 500.0
    # p90 is about the 18th of the 24 delayed requests: ~360 ms after its due time
    assert open_latency["p90"] >= 200.0, open_latency
    assert closed_latency["max"] >= 500.0
    assert closed_latency["p90"] < 50.0, closed_latency


async def test_what_fell_due_while_every_worker_was_busy_is_counted_as_unsent(server):
    """50 requests/s for 1 s on one worker against 300 ms answers: four can go out."""
    endpoint = Endpoint("e", f"{server.url}/300ms")
    plan = Plan(endpoints=(endpoint,), rate=50.0, duration=1.0, concurrency=1)
    result = await run_share(plan, Share(0, 1, 1, None), start_at=time.monotonic())
    sent = result.tallies[0].requests
    assert 3 <= sent <= 5
    assert sent + result.unsent == 50
    # the fourth fell due at 60 ms, went out at 0.9 s, was answered at 1.2 s: ~1.14 s late
    assert result.tallies[0].latency.max >= 1_000_000


async def test_a_run_where_every_request_fails_still_reports_and_fails(tmp_path):
    port = free_port()
    done = await counted_run(
        tmp_path, f"http://127.0.0.1:{port}/api/health", requests=40, concurrency=4, processes=2
    )
    assert done.code == 1, done.stderr
    report = done.report
    assert report is not None
    overall = report["overall"]
    assert overall["requests"] == 40
    assert overall["errors"] == {ErrorKind.REFUSED: 40}
    assert overall["error_messages"]["refused"] == f"connection refused to 127.0.0.1:{port}"
    assert overall["success_percent"] == 0
    assert set(overall["latency_ms"].values()) == {None}
    assert not report["verdict"]["passed"]
    assert "verdict: FAIL" in done.stdout
    assert "Traceback" not in done.stderr


async def test_worker_processes_merge(tmp_path, demo):
    demo.faults.set("/api/health", latency=0.02)
    done = await counted_run(
        tmp_path, f"{demo.url}/api/health", requests=301, concurrency=8, processes=2
    )
    assert done.code == 0, done.stdout + done.stderr
    report = done.report
    assert report is not None
    assert (report["processes"], report["concurrency"]) == (2, 8)
    overall = report["overall"]
    assert overall["requests"] == overall["ok"] == 301 == demo.stats["/api/health"]
    assert_counts_add_up(overall)
    assert overall["latency_ms"]["min"] >= 20.0
    assert overall["latency_ms"]["p50"] < 40.0
    # the overall histogram is the sum of both processes' requests, not an average
    assert overall["latency_histogram_us"]["count"] == 301
    assert report["client_cpu_seconds"] > 0


@pytest.mark.parametrize(
    ("options", "code", "failed"),
    [
        ([], 0, set()),
        (["--max-p95", "1ms"], 1, {"p95"}),
        (["--min-rps", "1000000"], 1, {"rps"}),
        (["--min-success", "99.9"], 1, {"success"}),
        (["--min-success", "80"], 0, set()),
    ],
)
async def test_the_kpi_verdict_decides_the_exit_code(tmp_path, demo, options, code, failed):
    demo.faults.set("/api/health", latency=0.01, status=500, error_rate=0.05)
    done = await counted_run(
        tmp_path,
        f"{demo.url}/api/health",
        "--min-success",
        "90",
        *options,
        requests=200,
        concurrency=10,
        processes=1,
    )
    assert done.code == code, done.stdout + done.stderr
    assert done.report is not None
    assert {c["name"] for c in done.report["verdict"]["checks"] if not c["passed"]} == failed
    assert done.report["verdict"]["passed"] is (code == 0)


async def test_without_url_or_scenario_the_configs_endpoints_are_loaded(tmp_path, demo):
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
        [collectors.api]
        base_url = "{demo.url}"
        [[collectors.api.endpoints]]
        name = "health"
        path = "/api/health"
        [[collectors.api.endpoints]]
        name = "dispensers"
        path = "/api/dispensers?limit=1"
        """
    )
    done = await loadtest(
        tmp_path, "-c", str(config), "--requests", "20", "--concurrency", "2", "--processes", "1"
    )
    assert done.code == 0, done.stdout + done.stderr
    assert done.report is not None
    assert [(e["name"], e["requests"]) for e in done.report["endpoints"]] == [
        ("health", 10),
        ("dispensers", 10),
    ]
    assert done.report["source"] == str(config)
    assert demo.stats["/api/health"] == 10


async def test_usage_and_scenario_errors(tmp_path):
    done = await loadtest(tmp_path, "--method", "POST", "--requests", "1")
    assert done.code == 64
    assert "--method goes with --url" in done.stderr
    done = await loadtest(tmp_path, "-c", str(tmp_path / "missing.toml"))
    assert done.code == 78
    assert "no such file" in done.stderr
    bad = write_scenario(
        tmp_path, '[[endpoints]]\nname = "a"\nurl = "http://127.0.0.1:1/"\nwieght = 2\n'
    )
    done = await loadtest(tmp_path, "--scenario", bad)
    assert done.code == 78
    assert "endpoints[0].wieght: unknown key" in done.stderr
    assert done.report is None


def lean_plan(url: str, requests: int, method: str = "GET", timeout: float = 5.0) -> Plan:
    endpoint = Endpoint("e", url, method=method, timeout=timeout)
    return Plan(endpoints=(endpoint,), requests=requests, duration=None)


class TestLeanClient:
    """The default engine's HTTP/1.1 handling, in-process against the server on this loop."""

    async def run(self, plan: Plan, workers: int = 2):
        share = Share(0, 1, workers, plan.requests)
        result = await run_share(plan, share, start_at=time.monotonic())
        return result.tallies[0]

    async def test_connection_close_chunked_and_head(self, server):
        for path, size in (("/close", 8), ("/chunked", 3000), ("/fast", 21)):
            tally = await self.run(lean_plan(server.url + path, 20))
            assert (tally.requests, tally.ok, tally.errors) == (20, 20, {}), path
            assert tally.bytes == 20 * size, path
        head = await self.run(lean_plan(server.url + "/head", 5, method="HEAD"))
        assert (head.ok, head.bytes) == (5, 0)
        assert server.hits["/close"] == 20

    async def test_timeouts_and_resets_are_counted_by_kind(self, server):
        slow = await self.run(lean_plan(server.url + "/slow", 2, timeout=0.2))
        assert slow.errors == {"timeout": 2}
        assert slow.messages["timeout"] == f"no response from {server.url[7:]} within 0.2s"
        reset = await self.run(lean_plan(server.url + "/reset", 3))
        assert reset.errors == {"refused": 3}
        assert "closed before a response" in reset.messages["refused"]


class RawServer:
    """Canned HTTP/1.1 bytes by path (after the reviewer's rawserver.py), on the test's loop:
    the replies aiohttp's server would never send (no length, 1xx, HEAD with a length)."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.url = ""
        self.requests = 0
        self.authorization: list[str] = []

    REPLIES = {  # noqa: RUF012 - read only
        "/h1000": b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"y" * 1000,
        "/201": b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nabcde",
        "/103": b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    }
    CLOSING = {  # noqa: RUF012 - read only; the body ends when the connection does
        "/close-eof": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello world",
        "/http10": b"HTTP/1.0 200 OK\r\n\r\nhello",
    }

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(10_000):  # bounded: one connection never serves more
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                method, path, _ = head.split(b"\r\n", 1)[0].decode().split(" ")
                for line in head.split(b"\r\n")[1:]:
                    if line.lower().startswith(b"authorization:"):
                        self.authorization.append(line.split(b":", 1)[1].strip().decode())
                if path in self.CLOSING:
                    writer.write(self.CLOSING[path])
                    await writer.drain()
                    return
                reply = self.REPLIES.get(path, b"HTTP/1.1 404 NF\r\nContent-Length: 0\r\n\r\n")
                if method == "HEAD":  # the headers (with the Content-Length), no body
                    reply = reply.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def raw():
    srv = RawServer()
    await srv.start()
    yield srv
    await srv.stop()


class TestLeanClientRaw:
    """The lean client against replies written byte by byte."""

    async def run(self, plan: Plan, workers: int = 1):
        share = Share(0, 1, workers, plan.requests)
        result = await run_share(plan, share, start_at=time.monotonic())
        return result.tallies

    async def test_head_and_get_alternate_on_one_connection(self, raw):
        # after a HEAD whose reply has a Content-Length, the next reply is not its body
        endpoints = (
            Endpoint("head", f"{raw.url}/h1000", method="HEAD", timeout=0.5),
            Endpoint("get", f"{raw.url}/201", timeout=0.5, expect_status=(201,)),
        )
        plan = Plan(endpoints=endpoints, requests=40, duration=None, concurrency=1)
        head, get = await self.run(plan)
        assert (head.requests, head.ok, head.errors, head.bytes) == (20, 20, {}, 0)
        assert (get.requests, get.ok, get.errors, get.bytes) == (20, 20, {}, 100)
        assert raw.requests == 40

    @pytest.mark.parametrize(("path", "size"), [("/close-eof", 11), ("/http10", 5)])
    async def test_a_body_ended_by_closing_the_connection_is_a_response(self, raw, path, size):
        (tally,) = await self.run(lean_plan(raw.url + path, 6, timeout=1.0), workers=2)
        assert (tally.requests, tally.ok, tally.errors) == (6, 6, {}), tally.messages
        assert (tally.statuses, tally.bytes) == ({200: 6}, 6 * size)

    async def test_an_interim_1xx_response_is_skipped(self, raw):
        (tally,) = await self.run(lean_plan(raw.url + "/103", 10, timeout=1.0))
        assert (tally.ok, tally.statuses, tally.bytes, tally.errors) == (10, {200: 10}, 20, {})

    async def test_credentials_in_the_url_are_sent_as_basic_auth(self, raw):
        url = raw.url.replace("//", "//us%3Aer:p%40ss@") + "/201"
        plan = lean_plan(url, 2)
        plan = Plan(endpoints=(replace(plan.endpoints[0], expect_status=(201,)),), requests=2)
        (tally,) = await self.run(plan)
        assert tally.ok == 2
        assert raw.authorization == ["Basic " + base64.b64encode(b"us:er:p@ss").decode()] * 2

    async def test_tls_failures_are_named_as_the_collector_names_them(self, server):
        # https to a plain-HTTP server (it answers the ClientHello with a 400): the reason
        (tally,) = await self.run(lean_plan(server.url.replace("http:", "https:") + "/", 1))
        assert tally.errors == {"tls": 1}
        message = tally.messages["tls"]
        assert message.startswith(f"TLS with {server.url[7:]} failed: "), message
        assert "_ssl.c" not in message  # the reason, not the C source location


async def test_an_unwritable_report_path_is_refused_before_the_run(tmp_path, server):
    bad = tmp_path / "no-such-dir" / "r.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fossamon",
        "loadtest",
        "--url",
        f"{server.url}/fast",
        "--duration",
        "30s",
        "--processes",
        "1",
        "--report",
        str(bad),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 73, err.decode()
    assert f"cannot write {bad}" in err.decode()
    assert server.hits == {}  # nothing was sent


async def test_ctrl_c_stops_sending_and_still_reports(tmp_path, server):
    report = tmp_path / "stopped.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fossamon",
        "loadtest",
        "--url",
        f"{server.url}/fast",
        "--duration",
        "30s",
        "--concurrency",
        "2",
        "--processes",
        "2",
        "--report",
        str(report),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while server.hits.get("/fast", 0) < 50:
            assert time.monotonic() < deadline, "the load test did not start"
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 130, err.decode()
    data = json.loads(report.read_text())
    assert data["stopped_early"]
    assert data["overall"]["requests"] == server.hits["/fast"]
    assert data["wall_seconds"] < 25


def test_benchmark_smoke(need, tmp_path):
    need(shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists(), "nginx")
    import subprocess

    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "loadtest.py"),
            "--duration",
            "1",
            "--repeat",
            "1",
            "--processes",
            "1",
            "--engines",
            "lean",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| fossamon")]
    assert rows, done.stdout
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert float(cells[1].replace(",", "")) > 0  # req/s
