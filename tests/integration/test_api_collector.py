"""The api collector against real aiohttp servers on loopback ports.

No test sends a packet outside 127.0.0.0/8: URLs are loopback IP literals, and the few host names
go to `OfflineResolver`, which answers "loopback" or "no such name" without asking the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass, field
from typing import Any

import psutil
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from fossamon.collectors import _http_checks
from fossamon.collectors.api import ApiCollector
from fossamon.config import ApiCollectorConfig, validate_section
from fossamon.model import Batch, ErrorKind, Failure

HEALTHY = {"status": "healthy", "data": {"items": [{"id": 7, "name": "pump"}, {"id": 8}]}}
BIG_BODY = 20 * 1024 * 1024
CHUNK = b"x" * 65536
CYCLE_DEADLINE = 10.0  # no collect() in these tests may take longer, whatever breaks


@dataclass
class Target:
    """The test server: its handlers, and what they saw."""

    base_url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    peers: list[tuple[str, int]] = field(default_factory=list)
    hang_started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ok", self.ok)
        app.router.add_get("/text", self.text)
        app.router.add_get("/status/{code}", self.status)
        app.router.add_get("/hang", self.hang)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/trickle", self.trickle)
        app.router.add_get("/big/{how}", self.big)
        app.router.add_get("/loop", self.loop)
        app.router.add_route("*", "/echo", self.echo)
        app.router.add_get("/peer", self.peer)
        return app

    async def ok(self, _: web.Request) -> web.Response:
        return web.json_response(HEALTHY)

    async def text(self, _: web.Request) -> web.Response:
        return web.Response(text="hello world")

    async def status(self, request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="status page")

    async def hang(self, _: web.Request) -> web.Response:
        self.hang_started.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.release.wait(), CYCLE_DEADLINE)
        return web.Response(text="too late")

    async def slow(self, _: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return web.json_response(HEALTHY)

    async def trickle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):  # the client gave up, as it should
            for _ in range(50):
                if self.release.is_set():
                    break
                await response.write(b"x")
                await asyncio.sleep(0.2)
        return response

    async def big(self, request: web.Request) -> web.StreamResponse:
        # Streamed in chunks (chunked encoding unless declared): the client has to count, and
        # the server never holds 20 MB itself, which would spoil the RSS measurement.
        response = web.StreamResponse()
        if request.match_info["how"] == "declared":
            response.content_length = BIG_BODY
        await response.prepare(request)
        if request.method == "HEAD":  # headers only, as HTTP says
            return response
        with contextlib.suppress(ConnectionError):
            for _ in range(BIG_BODY // len(CHUNK)):
                await response.write(CHUNK)
        return response

    async def loop(self, _: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(
            {"method": request.method, "headers": request.headers.copy(), "body": body}
        )
        response = web.json_response({"ok": True})
        response.set_cookie("session", "secret")
        return response

    async def peer(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        self.peers.append(request.transport.get_extra_info("peername"))
        return web.Response(text="seen")


async def _serve(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    # A short grace: handlers still hanging at teardown are cancelled instead of awaited.
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    return runner


def _port(runner: web.AppRunner) -> int:
    port: int = runner.addresses[0][1]  # read from the bound server socket
    return port


@pytest.fixture
async def target():
    server = Target()
    runner = await _serve(server.app())
    server.base_url = f"http://127.0.0.1:{_port(runner)}"
    yield server
    server.release.set()
    await runner.cleanup()


@pytest.fixture
async def make_collector():
    made: list[ApiCollector] = []

    def make(
        endpoints: list[dict[str, Any]], resolver: AbstractResolver | None = None, **settings: Any
    ) -> ApiCollector:
        config = validate_section(ApiCollectorConfig, {"endpoints": endpoints, **settings})
        collector = ApiCollector(config, resolver=resolver)
        made.append(collector)
        return collector

    yield make
    for collector in made:
        await collector.close()


@pytest.fixture
def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def hangup_port():
    """A server that reads the request, then closes the connection without a word."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CYCLE_DEADLINE)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.fixture(scope="module")
def self_signed_cert(tmp_path_factory, need):
    openssl = shutil.which("openssl")
    need(openssl is not None, "the openssl command (to make a self-signed certificate)")
    assert openssl is not None
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.fixture
async def tls_target(self_signed_cert):
    cert, key = self_signed_cert
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    runner = await _serve(Target().app(), ssl_context=context)
    yield f"https://127.0.0.1:{_port(runner)}"
    await runner.cleanup()


class OfflineResolver(AbstractResolver):
    """`.test` names are loopback and `.invalid` names fail, as a real resolver would answer;
    any other name fails the test loudly, so no test ever queries real DNS."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host.endswith(".test"):
            loopback = ResolveResult(
                hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0, flags=0
            )
            return [loopback]
        if host.endswith(".invalid"):
            raise OSError(socket.EAI_NONAME, "Name or service not known")
        raise AssertionError(f"a test tried to resolve {host!r}")

    async def close(self) -> None:
        return None


async def run(collector: ApiCollector) -> Batch:
    async with asyncio.timeout(CYCLE_DEADLINE):
        return await collector.collect()


def value(batch: Batch, metric: str, endpoint: str) -> float | None:
    found = [s.value for s in batch.samples if s.name == metric and s.labels[0][1] == endpoint]
    assert len(found) <= 1
    return found[0] if found else None


def failure(batch: Batch, endpoint: str) -> Failure | None:
    found = [e for e in batch.errors if e.target == endpoint]
    assert len(found) <= 1
    return found[0] if found else None


def assert_no_latency(batch: Batch, endpoint: str) -> None:
    assert value(batch, "api_response_seconds", endpoint) is None
    assert value(batch, "api_response_size_bytes", endpoint) is None


class TestHealthyEndpoints:
    async def test_reports_up_latency_status_and_size(self, target, make_collector):
        collector = make_collector([{"name": "health", "path": "/ok"}], base_url=target.base_url)
        batch = await run(collector)
        assert batch.collector == "api"
        assert batch.errors == ()
        assert value(batch, "api_up", "health") == 1.0
        assert 0 < value(batch, "api_response_seconds", "health") < batch.duration + 0.001
        assert value(batch, "api_status_code", "health") == 200
        expected_size = len(web.json_response(HEALTHY).body)
        assert value(batch, "api_response_size_bytes", "health") == expected_size
        assert batch.duration > 0
        assert batch.ts > 1_700_000_000

    async def test_head_reads_no_body_whatever_content_length_says(self, target, make_collector):
        endpoints = [
            {"name": "head", "path": "/ok", "method": "HEAD"},
            {"name": "head_big", "path": "/big/declared", "method": "HEAD"},
        ]
        batch = await run(make_collector(endpoints, base_url=target.base_url, max_body="64KB"))
        assert batch.errors == ()
        for name in ("head", "head_big"):
            assert value(batch, "api_status_code", name) == 200
            assert value(batch, "api_response_size_bytes", name) == 0

    async def test_url_overrides_base_url(self, target, make_collector):
        endpoints = [{"name": "direct", "url": f"{target.base_url}/ok"}]
        batch = await run(make_collector(endpoints, base_url="http://127.0.0.1:9/"))
        assert value(batch, "api_up", "direct") == 1.0


class TestTimeouts:
    async def test_hanging_endpoint_times_out_while_the_rest_of_the_cycle_succeeds(
        self, target, make_collector
    ):
        endpoints = [
            {"name": "hang", "path": "/hang", "timeout": "300ms"},
            {"name": "health", "path": "/ok"},
            {"name": "slow", "path": "/slow"},
        ]
        batch = await run(make_collector(endpoints, base_url=target.base_url))
        assert batch.duration < 1.0
        assert failure(batch, "hang") == Failure(
            "hang", ErrorKind.TIMEOUT, "no response within 0.30s"
        )
        assert value(batch, "api_up", "hang") == 0.0
        assert value(batch, "api_status_code", "hang") is None
        assert_no_latency(batch, "hang")
        assert value(batch, "api_up", "health") == 1.0
        assert value(batch, "api_up", "slow") == 1.0

    async def test_trickling_body_is_bounded_by_the_whole_probe_deadline(
        self, target, make_collector
    ):
        endpoints = [{"name": "trickle", "path": "/trickle", "timeout": "500ms"}]
        batch = await run(make_collector(endpoints, base_url=target.base_url))
        assert batch.duration < 1.0
        error = failure(batch, "trickle")
        assert error is not None
        assert error.kind == ErrorKind.TIMEOUT
        assert error.message.startswith("body not complete within 0.50s (status 200, ")
        # headers did arrive, so the status is known; the latency of an unfinished body is not
        assert value(batch, "api_status_code", "trickle") == 200
        assert_no_latency(batch, "trickle")


class TestStatus:
    async def test_server_error_is_a_status_failure(self, target, make_collector):
        endpoints = [{"name": "broken", "path": "/status/500"}]
        batch = await run(make_collector(endpoints, base_url=target.base_url))
        assert failure(batch, "broken") == Failure(
            "broken", ErrorKind.STATUS, "status 500, expected 2xx"
        )
        assert value(batch, "api_up", "broken") == 0.0
        assert value(batch, "api_status_code", "broken") == 500
        assert value(batch, "api_response_seconds", "broken") > 0

    async def test_expect_status_accepts_a_listed_401_and_names_the_list_otherwise(
        self, target, make_collector
    ):
        endpoints = [
            {"name": "auth", "path": "/status/401", "expect_status": [200, 401]},
            {"name": "gone", "path": "/status/404", "expect_status": [200, 401]},
            {"name": "exact", "path": "/ok", "expect_status": [204]},
        ]
        batch = await run(make_collector(endpoints, base_url=target.base_url))
        assert value(batch, "api_up", "auth") == 1.0
        assert value(batch, "api_status_code", "auth") == 401
        assert failure(batch, "gone").message == "status 404, expected one of 200, 401"
        assert failure(batch, "exact").message == "status 200, expected 204"


class TestBodyLimit:
    async def test_streamed_20mb_body_stops_at_the_cap_without_buffering_it(
        self, target, make_collector
    ):
        collector = make_collector(
            [{"name": "big", "path": "/big/streamed"}, {"name": "health", "path": "/ok"}],
            base_url=target.base_url,
        )
        await run(collector)  # warm up: the first cycle's allocations are not the body's
        process = psutil.Process()
        baseline = peak = process.memory_info().rss
        done = asyncio.Event()

        async def watch_rss() -> None:
            nonlocal peak
            while not done.is_set():  # ends with the cycle, which run() bounds
                peak = max(peak, process.memory_info().rss)
                await asyncio.sleep(0.002)

        watcher = asyncio.create_task(watch_rss())
        try:
            batch = await run(collector)
        finally:
            done.set()
            await watcher
        error = failure(batch, "big")
        assert error is not None
        assert error.kind == ErrorKind.TOO_LARGE
        assert error.message.startswith("body exceeds max_body 1.0 MiB (stopped after ")
        assert value(batch, "api_status_code", "big") == 200
        assert_no_latency(batch, "big")
        assert value(batch, "api_up", "health") == 1.0
        assert peak - baseline < 8 * 1024 * 1024, f"RSS grew by {(peak - baseline) / 2**20:.1f} MiB"

    async def test_declared_oversized_body_is_refused_before_reading(self, target, make_collector):
        endpoints = [{"name": "big", "path": "/big/declared"}]
        batch = await run(make_collector(endpoints, base_url=target.base_url, max_body="64KB"))
        error = failure(batch, "big")
        assert error.kind == ErrorKind.TOO_LARGE
        assert error.message == (
            f"body of {BIG_BODY} bytes (Content-Length) exceeds max_body 62.5 KiB"
        )


class TestConnectionFailures:
    async def test_refused(self, closed_port, make_collector):
        endpoints = [{"name": "down", "url": f"http://127.0.0.1:{closed_port}/api/health"}]
        batch = await run(make_collector(endpoints))
        assert failure(batch, "down") == Failure(
            "down", ErrorKind.REFUSED, f"connection refused to 127.0.0.1:{closed_port}"
        )
        assert [s.name for s in batch.samples] == ["api_up"]

    async def test_closed_before_a_response_counts_as_refused(self, hangup_port, make_collector):
        endpoints = [{"name": "rude", "url": f"http://127.0.0.1:{hangup_port}/"}]
        batch = await run(make_collector(endpoints))
        assert failure(batch, "rude") == Failure(
            "rude",
            ErrorKind.REFUSED,
            f"connection to 127.0.0.1:{hangup_port} closed before a response",
        )

    async def test_dns_failure(self, make_collector):
        endpoints = [{"name": "nowhere", "url": "http://api.fossamon.invalid/health"}]
        batch = await run(make_collector(endpoints, resolver=OfflineResolver()))
        assert failure(batch, "nowhere") == Failure(
            "nowhere",
            ErrorKind.DNS,
            "cannot resolve api.fossamon.invalid: Name or service not known",
        )
        assert [s.name for s in batch.samples] == ["api_up"]

    async def test_untrusted_certificate_is_a_tls_failure(self, tls_target, make_collector):
        endpoints = [{"name": "secure", "url": f"{tls_target}/ok"}]
        batch = await run(make_collector(endpoints))
        error = failure(batch, "secure")
        assert error is not None
        assert error.kind == ErrorKind.TLS
        assert error.message.startswith(f"TLS with {tls_target.removeprefix('https://')} failed: ")
        assert "certificate verify failed: self" in error.message  # "self-signed certificate"
        assert_no_latency(batch, "secure")

    async def test_verify_tls_off_accepts_the_same_server(self, tls_target, make_collector):
        endpoints = [{"name": "secure", "url": f"{tls_target}/ok"}]
        batch = await run(make_collector(endpoints, verify_tls=False))
        assert batch.errors == ()
        assert value(batch, "api_up", "secure") == 1.0

    async def test_proxy_from_the_environment_is_ignored(
        self, target, closed_port, make_collector, monkeypatch
    ):
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{closed_port}")
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        batch = await run(
            make_collector([{"name": "health", "path": "/ok"}], base_url=target.base_url)
        )
        assert value(batch, "api_up", "health") == 1.0


class TestRedirects:
    async def test_redirect_loop_ends_in_an_error_not_a_hang(self, target, make_collector):
        endpoints = [{"name": "loop", "path": "/loop"}]
        batch = await run(make_collector(endpoints, base_url=target.base_url, max_redirects=5))
        assert failure(batch, "loop") == Failure(
            "loop", ErrorKind.REDIRECT, "too many redirects (limit 5)"
        )
        assert batch.duration < 2.0

    @pytest.mark.parametrize("settings", [{"follow_redirects": False}, {"max_redirects": 0}])
    async def test_unfollowed_redirect_is_checked_as_the_response(
        self, target, make_collector, settings
    ):
        endpoints = [
            {"name": "moved", "path": "/loop"},
            {"name": "moved_ok", "path": "/loop", "expect_status": [302]},
        ]
        batch = await run(make_collector(endpoints, base_url=target.base_url, **settings))
        assert failure(batch, "moved").message == "status 302, expected 2xx"
        assert value(batch, "api_up", "moved_ok") == 1.0


class TestBodyChecks:
    async def test_body_regex(self, target, make_collector):
        endpoints = [
            {"name": "healthy", "path": "/ok", "body_regex": r'"status":\s*"healthy"'},
            {"name": "degraded", "path": "/ok", "body_regex": "degraded"},
        ]
        batch = await run(make_collector(endpoints, base_url=target.base_url))
        assert value(batch, "api_up", "healthy") == 1.0
        assert failure(batch, "degraded") == Failure(
            "degraded", ErrorKind.BODY_MISMATCH, "body does not match /degraded/"
        )
        assert value(batch, "api_up", "degraded") == 0.0
        assert value(batch, "api_response_seconds", "degraded") > 0

    async def test_expect_json_matches_nested_paths_and_list_indexes(self, target, make_collector):
        expect = {"status": "healthy", "data.items.0.id": 7, "data.items.1": {"id": 8}}
        endpoints = [{"name": "json", "path": "/ok", "expect_json": expect}]
        batch = await run(make_collector(endpoints, base_url=target.base_url))
        assert batch.errors == ()
        assert value(batch, "api_up", "json") == 1.0

    @pytest.mark.parametrize(
        ("path", "expect", "message"),
        [
            ("/ok", {"data.items.1.id": 9}, "expect_json data.items.1.id: expected 9, got 8"),
            ("/ok", {"data.items.0.id": "7"}, 'expect_json data.items.0.id: expected "7", got 7'),
            ("/ok", {"data.items.5.id": 1}, "expect_json data.items.5.id: expected 1, not found"),
            (
                "/ok",
                {"status": "down", "data.total": 2},
                'expect_json status: expected "down", got "healthy" (and 1 more)',
            ),
            ("/text", {"status": "healthy"}, "body is not JSON (Expecting value: line 1 column 1"),
        ],
    )
    async def test_expect_json_mismatch_names_path_expected_and_actual(
        self, target, make_collector, path, expect, message
    ):
        endpoints = [{"name": "json", "path": path, "expect_json": expect}]
        batch = await run(make_collector(endpoints, base_url=target.base_url))
        error = failure(batch, "json")
        assert error.kind == ErrorKind.BODY_MISMATCH
        assert error.message.startswith(message)
        assert value(batch, "api_up", "json") == 0.0

    async def test_status_is_checked_before_the_body(self, target, make_collector):
        endpoints = [{"name": "broken", "path": "/status/500", "body_regex": "nope"}]
        batch = await run(make_collector(endpoints, base_url=target.base_url))
        assert failure(batch, "broken").kind == ErrorKind.STATUS


class TestRequests:
    async def test_post_json_with_merged_headers_reaches_the_server(self, target, make_collector):
        endpoints = [
            {
                "name": "login",
                "path": "/echo",
                "method": "POST",
                "json": {"token": "probe", "scopes": ["read"]},
                "headers": {"authorization": "Bearer endpoint"},
            }
        ]
        collector = make_collector(
            endpoints,
            base_url=target.base_url + "/",
            headers={"Authorization": "Bearer collector", "X-Probe": "fossamon"},
        )
        batch = await run(collector)
        assert batch.errors == ()
        [request] = target.received
        assert request["method"] == "POST"
        assert request["body"] == b'{"token": "probe", "scopes": ["read"]}'
        assert request["headers"]["Content-Type"] == "application/json"
        assert request["headers"].getall("Authorization") == ["Bearer endpoint"]
        assert request["headers"]["X-Probe"] == "fossamon"
        assert request["headers"]["User-Agent"].startswith("fossamon/")

    async def test_raw_body(self, target, make_collector):
        endpoints = [{"name": "put", "path": "/echo", "method": "PUT", "body": "ping ✓"}]
        batch = await run(make_collector(endpoints, base_url=target.base_url))
        assert batch.errors == ()
        assert [(r["method"], r["body"]) for r in target.received] == [("PUT", "ping ✓".encode())]

    async def test_cookies_are_not_carried_between_probes(self, target, make_collector):
        # A host name, not an IP: aiohttp's default jar ignores cookies from IP addresses anyway.
        named = target.base_url.replace("127.0.0.1", "target.fossamon.test")
        collector = make_collector(
            [{"name": "echo", "path": "/echo"}], resolver=OfflineResolver(), base_url=named
        )
        await run(collector)
        await run(collector)
        assert len(target.received) == 2
        assert all("Cookie" not in r["headers"] for r in target.received)


class TestConcurrencyAndSession:
    async def test_fifty_slow_endpoints_run_concurrently(self, target, make_collector):
        endpoints = [{"name": f"slow{i}", "path": "/slow"} for i in range(50)]
        batch = await run(make_collector(endpoints, base_url=target.base_url))
        assert batch.errors == ()
        assert batch.duration < 2.0  # one after another would take 50 x 0.2 s = 10 s
        assert sum(s.value for s in batch.samples if s.name == "api_up") == 50

    async def test_timeout_starts_when_a_probe_gets_a_slot_not_while_it_queues(
        self, target, make_collector
    ):
        endpoints = [{"name": f"slow{i}", "path": "/slow", "timeout": "350ms"} for i in range(4)]
        collector = make_collector(endpoints, base_url=target.base_url, max_concurrency=2)
        batch = await run(collector)
        assert batch.errors == ()
        assert batch.duration >= 0.4  # two rounds of two: the limit held

    async def test_session_and_connection_are_reused_across_cycles(self, target, make_collector):
        collector = make_collector([{"name": "peer", "path": "/peer"}], base_url=target.base_url)
        await run(collector)
        session = collector._session
        await run(collector)
        assert collector._session is session
        assert len(target.peers) == 2
        assert len(set(target.peers)) == 1  # the same client socket: keep-alive worked

    async def test_close_is_safe_before_use_and_twice(self, target, make_collector):
        collector = make_collector([{"name": "health", "path": "/ok"}], base_url=target.base_url)
        await collector.close()
        await run(collector)
        session = collector._session
        await collector.close()
        await collector.close()
        assert session.closed
        assert collector._session is None

    async def test_cancellation_propagates_and_leaves_the_collector_usable(
        self, target, make_collector
    ):
        endpoints = [
            {"name": "hang", "path": "/hang", "timeout": "500ms"},
            {"name": "health", "path": "/ok"},
        ]
        collector = make_collector(endpoints, base_url=target.base_url)
        cycle = asyncio.create_task(collector.collect())
        await asyncio.wait_for(target.hang_started.wait(), CYCLE_DEADLINE)
        cycle.cancel()
        done, _ = await asyncio.wait({cycle}, timeout=CYCLE_DEADLINE)
        assert cycle in done
        assert cycle.cancelled()
        batch = await run(collector)
        assert failure(batch, "hang").kind == ErrorKind.TIMEOUT
        assert value(batch, "api_up", "health") == 1.0

    async def test_a_bug_in_one_probe_is_internal_for_that_endpoint_only(
        self, target, make_collector, monkeypatch
    ):
        def broken_check(body: bytes, expect: dict[str, Any]) -> str | None:
            raise RuntimeError("json check blew up")

        monkeypatch.setattr(_http_checks, "json_problem", broken_check)
        endpoints = [
            {"name": "checked", "path": "/ok", "expect_json": {"status": "healthy"}},
            {"name": "plain", "path": "/ok"},
        ]
        batch = await run(make_collector(endpoints, base_url=target.base_url))
        assert batch.errors == (
            Failure("checked", ErrorKind.INTERNAL, "RuntimeError: json check blew up"),
        )
        assert value(batch, "api_up", "checked") == 0.0
        assert value(batch, "api_up", "plain") == 1.0
