"""The api collector's lean HTTP path, held against aiohttp's: the same request bytes, and the
same outcome (samples and failures) for the same server behaviour, on loopback servers that
misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from fossamon.collectors import _http_checks, _http_lean, _http_request
from fossamon.collectors.api import ApiCollector
from fossamon.config import parse_config
from fossamon.model import ErrorKind

if TYPE_CHECKING:
    from collections.abc import Callable

    from fossamon.model import Batch

DEADLINE = 10.0
BODY = b'{"status":"healthy"}'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: the same escapes
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    raise TypeError(value)


def api_config(endpoints: list[dict[str, Any]], **settings: Any) -> Any:
    lines = ["[collectors.api]", *(f"{k} = {toml_value(v)}" for k, v in settings.items())]
    for endpoint in endpoints:
        lines.append("[[collectors.api.endpoints]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in endpoint.items()]
    config = parse_config("\n".join(lines) + "\n", "test.toml")
    assert config.collectors.api is not None
    return config.collectors.api


@dataclass
class RawServer:
    """An HTTP/1.1 server written out by hand: `answer(request_head, body, n)` returns the
    bytes to send back for the n-th request of a connection (None: close without a word)."""

    answer: Callable[[bytes, bytes, int], bytes | None]
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    open: int = 0  # connections being served
    in_flight: int = 0
    most_in_flight: int = 0
    delay: float = 0.0
    close_after: bool = False  # close the connection after each reply
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        try:
            await self._serve(reader, writer)
        finally:
            self.open -= 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
                length = re.search(rb"(?im)^content-length: *(\d+)", head)
                body = await reader.readexactly(int(length.group(1))) if length else b""
                self.requests.append(head + body)
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                try:
                    if self.delay:
                        await asyncio.sleep(self.delay)
                    reply = self.answer(head, body, n)
                finally:
                    self.in_flight -= 1
                n += 1
                if reply is None:
                    break
                if head.startswith(b"HEAD "):  # the headers only, as HTTP says
                    reply = reply[: reply.index(b"\r\n\r\n") + 4]
                writer.write(reply)
                await writer.drain()
                if self.close_after:
                    break
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.fixture
async def raw_server():
    servers: list[asyncio.Server] = []
    raws: list[RawServer] = []

    async def start(answer: Callable[[bytes, bytes, int], bytes | None]) -> RawServer:
        raw = RawServer(answer)
        raws.append(raw)
        server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        raw.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return raw

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()
    # let the handlers see their clients go, rather than be cut off with the loop
    for _ in range(100):
        if not any(raw.open for raw in raws):
            break
        await asyncio.sleep(0.02)


def client_sockets(ports: set[int]) -> list[Any]:
    """This process's open TCP connections to `ports` (the servers' ends left out)."""
    return [
        c
        for c in psutil.Process().net_connections("tcp")
        if c.raddr and c.raddr.port in ports and c.status == psutil.CONN_ESTABLISHED
    ]


def ok(body: bytes = BODY, *, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def always(reply: bytes) -> Callable[[bytes, bytes, int], bytes]:
    return lambda _head, _body, _n: reply


def outcome(batch: Batch) -> tuple[list[tuple[str, str, float]], list[tuple[str, str, str]]]:
    """Samples (timings left out: they differ run to run) and failures (where a body past
    max_body was given up depends on how each path reads it)."""
    samples = [
        (s.name, s.labels[0][1], s.value) for s in batch.samples if s.name != "api_response_seconds"
    ]
    failures = [
        (
            e.target,
            str(e.kind),
            re.sub(r"stopped after \d+ bytes", "stopped after N bytes", e.message),
        )
        for e in batch.errors
    ]
    return samples, failures


async def both(
    endpoints: list[dict[str, Any]], cycles: int = 1, **settings: Any
) -> tuple[list[Batch], list[Batch]]:
    """The batches of `cycles` cycles, lean and through aiohttp."""
    results = []
    for lean in (True, False):
        collector = ApiCollector(api_config(endpoints, **settings), lean=lean)
        try:
            results.append(
                [await asyncio.wait_for(collector.collect(), DEADLINE) for _ in range(cycles)]
            )
        finally:
            await collector.close()
    return results[0], results[1]


async def same_outcome(
    endpoints: list[dict[str, Any]], cycles: int = 1, **settings: Any
) -> list[Batch]:
    lean, full = await both(endpoints, cycles, **settings)
    assert [outcome(b) for b in lean] == [outcome(b) for b in full]
    return lean


def redirect(status: int, location: str) -> bytes:
    return f"HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()


def encoded(coding: str, body: bytes) -> bytes:
    return ok(body, extra=f"Content-Encoding: {coding}\r\n")


_RAW_DEFLATE = zlib.compressobj(wbits=-zlib.MAX_WBITS)
# replies to a POST or PATCH that need what the lean path leaves to aiohttp, and the
# collector's settings; OTHER in a reply is another origin's port
NOT_SENT_TWICE: dict[str, tuple[bytes, dict[str, Any]]] = {
    "gzip": (encoded("gzip", gzip.compress(BODY)), {}),
    "gzip-twice": (encoded("GZip ", gzip.compress(BODY[:9]) + gzip.compress(BODY[9:])), {}),
    "deflate": (encoded("deflate", zlib.compress(BODY)), {}),
    "raw-deflate": (encoded("deflate", _RAW_DEFLATE.compress(BODY) + _RAW_DEFLATE.flush()), {}),
    "bad-gzip": (encoded("gzip", b"not gzip at all"), {}),
    "cut-deflate": (encoded("deflate", zlib.compress(BODY)[:8]), {}),
    "br": (encoded("br", b"not brotli"), {}),
    "too-large": (encoded("gzip", gzip.compress(b"x" * 5000)), {"max_body": 4000}),
    "empty": (encoded("gzip", b""), {}),
    "301": (redirect(301, "/done"), {}),
    "302": (redirect(302, "/done"), {}),
    "303": (redirect(303, "/done"), {}),
    "307": (redirect(307, "/done"), {}),
    "308": (redirect(308, "http:/done"), {}),
    "elsewhere": (redirect(303, "http://127.0.0.1:OTHER/done"), {}),
    "elsewhere-307": (redirect(307, "//127.0.0.1:OTHER/done"), {}),
    "uri": (b"HTTP/1.1 302 Found\r\nURI: /done\r\nContent-Length: 0\r\n\r\n", {}),
    "not-http": (redirect(302, "ftp://127.0.0.1/done"), {}),
    "not-a-url": (redirect(302, "http://[::1/done"), {}),
    "limit": (redirect(302, "/done"), {"max_redirects": 1}),
    "unfollowed": (redirect(302, "/done"), {"follow_redirects": False}),
    "101": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n", {}),
}


REQUESTS = [
    {"name": "get", "path": "/a b/c?q=1&z=ä#frag"},
    {"name": "headers", "path": "/h", "headers": {"accept": "application/json", "X-One": "1"}},
    {"name": "agent", "path": "/ua", "headers": {"user-agent": "probe/1", "Cookie": "a=b"}},
    {"name": "post_json", "path": "/p", "method": "POST", "json": {"token": "t", "n": [1, 2]}},
    {"name": "put_body", "path": "/p", "method": "PUT", "body": "raw ✓"},
    {"name": "post_empty", "path": "/p", "method": "POST"},
    {"name": "patch_json", "path": "/p", "method": "PATCH", "json": {"a": True}},
    {"name": "put_json", "path": "/p", "method": "PUT", "json": {"a": [1, "b"]}},
    {"name": "delete", "path": "/d", "method": "DELETE"},
    {"name": "options", "path": "/o", "method": "OPTIONS"},
    {"name": "get_json", "path": "/g", "json": {"q": "x"}},
    {
        "name": "typed",
        "path": "/t",
        "method": "POST",
        "body": "x",
        "headers": {"Content-Type": "text/plain"},
    },
]


class TestRequestsAreAiohttps:
    @pytest.mark.parametrize("endpoint", REQUESTS, ids=[e["name"] for e in REQUESTS])
    async def test_the_same_bytes_reach_the_server(self, raw_server, endpoint):
        server = await raw_server(always(ok()))
        settings = {"base_url": f"http://127.0.0.1:{server.port}", "headers": {"X-Fleet": "a"}}
        lean = ApiCollector(api_config([endpoint], **settings))
        full = ApiCollector(api_config([endpoint], **settings), lean=False)
        try:
            for collector in (lean, full):
                batch = await asyncio.wait_for(collector.collect(), DEADLINE)
                assert batch.errors == ()
        finally:
            await lean.close()
            await full.close()
        assert lean._probes[0].lean is not None  # it did take the lean path
        sent_lean, sent_full = server.requests
        assert sent_lean == sent_full

    async def test_host_header_leaves_the_default_port_out(self):
        request = _http_request.prepare("GET", "http://example.test:80/x", {}, None, None, {})
        assert request is not None
        assert b"\r\nHost: example.test\r\n" in request.data
        assert request.port == 80

    @pytest.mark.parametrize(
        ("url", "headers"),
        [
            ("https://127.0.0.1/x", {}),
            ("http://user:pw@127.0.0.1/x", {}),
            ("http://127.0.0.1/x", {"Host": "other"}),
            ("http://127.0.0.1/x", {"Connection": "close"}),
            ("http://127.0.0.1/x", {"Transfer-Encoding": "chunked"}),
        ],
    )
    def test_what_aiohttp_gives_a_meaning_stays_with_aiohttp(self, url, headers):
        assert _http_request.prepare("GET", url, headers, None, None, {}) is None


class TestResponsesAsAiohttpSeesThem:
    async def test_plain_chunked_close_delimited_and_interim(self, raw_server):
        chunked = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        close_delimited = b"HTTP/1.0 200 OK\r\n\r\nuntil the end"
        interim = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" + ok()
        bare_lf = b"HTTP/1.1 200 OK\nContent-Length: 2\nX-Odd: a\x01b\n\n{}"  # aiohttp takes it
        replies = {
            b"/chunked": chunked,
            b"/close": close_delimited,
            b"/interim": interim,
            b"/lf": bare_lf,
        }

        def answer(head: bytes, _body: bytes, _n: int) -> bytes:
            return replies.get(head.split()[1], ok())

        server = await raw_server(answer)
        server.close_after = True  # which ends the HTTP/1.0 body
        endpoints = [
            {"name": "plain", "path": "/plain", "expect_json": {"status": "healthy"}},
            {"name": "chunked", "path": "/chunked", "body_regex": "hello world"},
            {"name": "close", "path": "/close", "body_regex": "the end$"},
            {"name": "interim", "path": "/interim"},
            {"name": "bare_lf", "path": "/lf"},
            {"name": "head", "path": "/plain", "method": "HEAD"},
        ]
        lean = await same_outcome(endpoints, cycles=2, base_url=f"http://127.0.0.1:{server.port}")
        assert lean[-1].errors == ()

    @pytest.mark.parametrize(
        ("reply", "kind"),
        [
            (ok(b"{}", extra="X: y\r\n")[:-5], ErrorKind.REFUSED),  # no whole response
            (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", ErrorKind.OTHER),
            (b"NOT HTTP AT ALL\r\n\r\n", ErrorKind.OTHER),
            (b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n", ErrorKind.STATUS),
            (ok(b"x" * 2000), ErrorKind.TOO_LARGE),
        ],
        ids=["cut-headers", "cut-body", "garbage", "status", "declared-too-large"],
    )
    async def test_broken_responses_fail_with_the_same_kind(self, raw_server, reply, kind):
        server = await raw_server(lambda _h, _b, _n: reply)
        server.close_after = True
        endpoints = [{"name": "bad", "path": "/"}]
        lean, full = await both(
            endpoints, base_url=f"http://127.0.0.1:{server.port}", max_body=1000
        )
        for batch in (lean[0], full[0]):
            assert [(e.target, e.kind) for e in batch.errors] == [("bad", kind)]
        assert outcome(lean[0]) == outcome(full[0])  # the same samples, and the same words

    @pytest.mark.parametrize(
        ("reply", "message"),
        [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
                "response not complete: connection closed after 3 body bytes",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
                "response not complete: connection closed after 3 body bytes",
            ),
            (b"NOT HTTP\r\n\r\n", "malformed response: Expected HTTP/, RTSP/ or ICE/"),
            (b"HTTP/2 200 OK\r\n\r\n", "malformed response: Expected dot"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\n{}",
                "malformed response: Invalid character in Content-Length",
            ),
            # a body longer than its Content-Length, in the same read: the rest does not parse
            (ok() + b"garbage", "malformed response: Expected HTTP/, RTSP/ or ICE/"),
        ],
        ids=["cut-body", "cut-chunk", "garbage", "http2", "bad-length", "longer-body"],
    )
    async def test_a_broken_response_reads_the_same_on_both_paths(self, raw_server, reply, message):
        server = await raw_server(always(reply))
        server.close_after = True
        lean, full = await both(
            [{"name": "bad", "path": "/"}], base_url=f"http://127.0.0.1:{server.port}"
        )
        for batch in (lean[0], full[0]):
            assert [(e.kind, e.message) for e in batch.errors] == [(ErrorKind.OTHER, message)]
        assert outcome(lean[0]) == outcome(full[0])

    @pytest.mark.parametrize(
        ("head", "message"),
        [
            (
                b"X-Big: " + b"a" * 9000 + b"\r\n",
                f"Got more than 8190 bytes when reading: {b'a' * 100 + b'...'!r}.",
            ),
            (
                b"X-" + b"n" * 9000 + b": 1\r\n",
                f"Got more than 8190 bytes when reading: {b'X-' + b'n' * 98 + b'...'!r}.",
            ),
            (b"".join(b"X-%d: v\r\n" % i for i in range(128)), "Too many headers received"),
            (b"X-A: a\x00b \r\n", "Invalid HTTP header: b'a\\x00b'"),
        ],
        ids=["long-value", "long-name", "129-headers", "nul"],
    )
    async def test_a_head_past_aiohttps_limits_fails_on_both_paths(self, raw_server, head, message):
        reply = b"HTTP/1.1 200 OK\r\n" + head + b"Content-Length: 2\r\n\r\n{}"
        server = await raw_server(always(reply))
        lean = await same_outcome(
            [{"name": "bad", "path": "/"}], base_url=f"http://127.0.0.1:{server.port}"
        )
        assert [e.message for e in lean[0].errors] == [f"malformed response: {message}"]

    async def test_a_long_reason_phrase_fails_on_both_paths(self, raw_server):
        reply = b"HTTP/1.1 200 " + b"O" * 9000 + b"\r\nContent-Length: 2\r\n\r\n{}"
        server = await raw_server(always(reply))
        lean = await same_outcome(
            [{"name": "bad", "path": "/"}], base_url=f"http://127.0.0.1:{server.port}"
        )
        shown = bytearray(b"O" * 100 + b"...")
        assert [e.message for e in lean[0].errors] == [
            f"malformed response: Got more than 8190 bytes when reading: {shown!r}."
        ]

    async def test_the_128th_header_is_still_taken(self, raw_server):
        head = b"".join(b"X-%d: v\r\n" % i for i in range(127))
        reply = b"HTTP/1.1 200 OK\r\n" + head + b"Content-Length: 2\r\n\r\n{}"
        server = await raw_server(always(reply))
        lean = await same_outcome(
            [{"name": "ok", "path": "/"}], base_url=f"http://127.0.0.1:{server.port}"
        )
        assert lean[0].errors == ()

    async def test_an_endless_header_is_not_buffered(self):
        # A header that never ends (bounded here: 4 MiB, then the server closes). aiohttp
        # gives up at 8190 bytes; the lean path stops reading at MAX_HEAD_BYTES and leaves
        # the probe to aiohttp, instead of buffering all of it.
        async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            total = 0
            with contextlib.suppress(ConnectionError):
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
                writer.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
                while total < 4 * 1024 * 1024:
                    writer.write(b"a" * 16384)
                    total += 16384
                    await writer.drain()
            writer.close()

        server = await asyncio.start_server(endless, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        collector = ApiCollector(
            api_config([{"name": "endless", "path": "/"}], base_url=f"http://127.0.0.1:{port}")
        )
        try:
            batch = await asyncio.wait_for(collector.collect(), DEADLINE)
            assert collector._session is not None
            assert collector._session.through_aiohttp == {"endless"}
        finally:
            await collector.close()
            server.close()
            await server.wait_closed()
        assert [e.message for e in batch.errors] == [
            f"malformed response: Got more than 8190 bytes when reading: {b'a' * 100 + b'...'!r}."
        ]

    async def test_body_past_max_body_without_a_length(self, raw_server):
        streamed = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (b"400\r\n" + b"x" * 1024 + b"\r\n") * 8
            + b"0\r\n\r\n"
        )
        server = await raw_server(always(streamed))
        lean, full = await both(
            [{"name": "big", "path": "/"}],
            base_url=f"http://127.0.0.1:{server.port}",
            max_body=4000,
        )
        for batch in (lean[0], full[0]):
            (error,) = batch.errors
            assert error.kind == ErrorKind.TOO_LARGE
            assert error.message.startswith("body exceeds max_body 3.9 KiB (stopped after ")

    async def test_bytes_after_a_response_are_not_taken_for_the_next_one(self, raw_server):
        # The first answer on each connection comes in one write with the start of another
        # response: the stream is out of step, and the connection must not be reused.
        stale = b"HTTP/1.1 500 Stale\r\nContent-Length: 10\r\n\r\nabc"
        server = await raw_server(lambda _h, _b, n: ok() + stale if n == 0 else ok())
        lean = await same_outcome(
            [{"name": "e", "path": "/", "body_regex": "healthy"}],
            cycles=3,
            base_url=f"http://127.0.0.1:{server.port}",
            max_concurrency=1,
        )
        assert [batch.errors for batch in lean] == [(), (), ()]

    @pytest.mark.parametrize(
        "coding", ["identity", "gzip", "chunked, identity"], ids=["identity", "gzip", "last"]
    )
    async def test_a_body_without_chunked_last_ends_with_the_connection(self, raw_server, coding):
        # RFC 9112 6.3: only a final chunked coding delimits the body
        reply = f"HTTP/1.1 200 OK\r\nTransfer-Encoding: {coding}\r\n\r\n".encode() + BODY
        server = await raw_server(always(reply))
        server.close_after = True
        lean = await same_outcome(
            [{"name": "e", "path": "/", "body_regex": "healthy"}],
            cycles=2,
            base_url=f"http://127.0.0.1:{server.port}",
        )
        assert [batch.errors for batch in lean] == [(), ()]

    async def test_closed_before_a_response_is_retried_once_if_idempotent(self, raw_server):
        # every connection answers its first request and drops the second without a word,
        # like a server whose keep-alive ran out while the request was on its way
        server = await raw_server(lambda _h, _b, n: ok() if n == 0 else None)
        endpoints = [
            {"name": "post", "path": "/p", "method": "POST", "json": {"a": 1}},
            {"name": "get", "path": "/g"},
        ]
        lean = await same_outcome(
            endpoints, cycles=2, base_url=f"http://127.0.0.1:{server.port}", max_concurrency=1
        )
        # In the next cycle each finds its connection dropped: GET is sent again on a new one
        # (on the lean path, and on aiohttp's), POST is not (it goes through aiohttp).
        assert [e.target for e in lean[0].errors] == []
        assert [(e.target, e.kind) for e in lean[1].errors] == [("post", ErrorKind.REFUSED)]
        assert server.connections == 6  # 3 each: lean GET twice and aiohttp's POST; aiohttp's


class TestLeftToAiohttp:
    async def test_redirect_and_compressed_bodies_go_through_aiohttp_from_then_on(self, raw_server):
        def answer(head: bytes, _body: bytes, _n: int) -> bytes:
            path = head.split()[1]
            if path == b"/moved":
                return b"HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 0\r\n\r\n"
            if path == b"/gzip":
                return ok(gzip.compress(BODY), extra="Content-Encoding: gzip\r\n")
            return ok()

        server = await raw_server(answer)
        endpoints = [
            {"name": "moved", "path": "/moved", "expect_json": {"status": "healthy"}},
            {"name": "gzip", "path": "/gzip", "expect_json": {"status": "healthy"}},
            {"name": "plain", "path": "/ok"},
        ]
        collector = ApiCollector(api_config(endpoints, base_url=f"http://127.0.0.1:{server.port}"))
        try:
            for _ in range(2):
                batch = await asyncio.wait_for(collector.collect(), DEADLINE)
                assert batch.errors == ()
            assert collector._session is not None
            assert collector._session.through_aiohttp == {"moved", "gzip"}
        finally:
            await collector.close()
        paths = [r.split()[1] for r in server.requests]
        # cycle 1: /moved lean, then aiohttp's /moved and /ok; cycle 2: aiohttp's only
        assert paths.count(b"/moved") == 3
        assert paths.count(b"/gzip") == 3

    @pytest.mark.parametrize("case", list(NOT_SENT_TWICE), ids=list(NOT_SENT_TWICE))
    @pytest.mark.parametrize("method", ["POST", "PATCH"])
    async def test_a_request_that_is_not_idempotent_is_sent_once(self, raw_server, method, case):
        # Its response needs what the lean path leaves to aiohttp, which would mean sending it
        # again. It is handled from the lean answer instead, with aiohttp's outcome.
        reply, settings = NOT_SENT_TWICE[case]
        elsewhere = await raw_server(always(ok()))  # another origin

        def answer(head: bytes, _body: bytes, _n: int) -> bytes:
            if head.split()[1] != b"/orders":
                return ok()
            return reply.replace(b"OTHER", str(elsewhere.port).encode())

        server = await raw_server(answer)
        endpoint = {
            "name": "create",
            "path": "/orders",
            "method": method,
            "json": {"a": 1},
            "headers": {"Authorization": "Bearer t"},
        }
        await same_outcome(
            [endpoint], cycles=2, base_url=f"http://127.0.0.1:{server.port}", **settings
        )
        # per cycle, lean and aiohttp: once to /orders, then as the redirect says
        orders = [r for r in server.requests if r.split()[1] == b"/orders"]
        assert [r.split()[0] for r in orders] == [method.encode()] * 4
        for target in (server, elsewhere):  # the lean collector's requests, then aiohttp's
            half = len(target.requests) // 2
            assert target.requests[:half] == target.requests[half:]
        assert bool(elsewhere.requests) == (b"OTHER" in reply)
        assert all(b"Bearer" not in r for r in elsewhere.requests)  # credentials stay home

    async def test_a_redirect_loop_of_a_post_ends_as_aiohttps(self, raw_server):
        loop = b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /orders\r\nContent-Length: 0\r\n\r\n"
        server = await raw_server(always(loop))
        endpoint = {"name": "create", "path": "/orders", "method": "POST", "json": {"a": 1}}
        lean = await same_outcome(
            [endpoint], base_url=f"http://127.0.0.1:{server.port}", max_redirects=3
        )
        assert [e.message for e in lean[0].errors] == ["too many redirects (limit 3)"]
        assert len(server.requests) == 6  # 3 each: the request and two redirects followed

    async def test_an_unfollowed_redirect_stays_lean(self, raw_server):
        moved = b"HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 0\r\n\r\n"
        server = await raw_server(always(moved))
        endpoints = [{"name": "moved", "path": "/moved", "expect_status": [302]}]
        lean = await same_outcome(
            endpoints, base_url=f"http://127.0.0.1:{server.port}", follow_redirects=False
        )
        assert lean[0].errors == ()


class TestConnections:
    async def test_concurrency_is_capped_and_connections_are_kept(self, raw_server):
        server = await raw_server(always(ok()))
        server.delay = 0.02
        endpoints = [{"name": f"e{i}", "path": f"/{i}"} for i in range(40)]
        collector = ApiCollector(
            api_config(endpoints, base_url=f"http://127.0.0.1:{server.port}", max_concurrency=5)
        )
        try:
            for _ in range(3):
                batch = await asyncio.wait_for(collector.collect(), DEADLINE)
                assert batch.errors == ()
        finally:
            await collector.close()
        assert server.most_in_flight == 5
        assert server.connections == 5  # opened in the first cycle, reused by the next two

    async def test_an_idle_connection_past_the_keepalive_is_not_reused(
        self, raw_server, monkeypatch
    ):
        server = await raw_server(always(ok()))
        monkeypatch.setattr(_http_lean, "KEEPALIVE", 0.05)
        collector = ApiCollector(
            api_config([{"name": "e", "path": "/"}], base_url=f"http://127.0.0.1:{server.port}")
        )
        try:
            await collector.collect()
            await collector.collect()
            assert server.connections == 1
            await asyncio.sleep(0.1)
            await collector.collect()
        finally:
            await collector.close()
        assert server.connections == 2

    async def test_connections_are_capped_across_origins(self, raw_server):
        servers = [await raw_server(always(ok())) for _ in range(6)]
        endpoints = [
            {"name": f"e{i}", "url": f"http://127.0.0.1:{s.port}/"} for i, s in enumerate(servers)
        ]
        collector = ApiCollector(api_config(endpoints, max_concurrency=2))
        try:
            for _ in range(2):
                batch = await asyncio.wait_for(collector.collect(), DEADLINE)
                assert batch.errors == ()
            ports = {s.port for s in servers}
            assert len(client_sockets(ports)) <= 2
        finally:
            await collector.close()

    async def test_close_during_a_cycle_opens_nothing_more_and_leaves_nothing_open(
        self, raw_server
    ):
        slow = await raw_server(always(ok()))
        slow.delay = 0.3
        # headers and half a body that would end with the connection, then nothing
        stalled = await raw_server(always(b"HTTP/1.0 200 OK\r\n\r\n" + BODY[:10]))
        stalled.delay = 0.0
        endpoints = [
            *({"name": f"slow{i}", "url": f"http://127.0.0.1:{slow.port}/"} for i in range(4)),
            {"name": "stalled", "url": f"http://127.0.0.1:{stalled.port}/", "timeout": "5s"},
            {"name": "tls", "url": f"https://127.0.0.1:{slow.port}/", "timeout": "5s"},
        ]
        collector = ApiCollector(api_config(endpoints, max_concurrency=3))
        cycle = asyncio.create_task(collector.collect())
        await asyncio.sleep(0.1)  # slow0-2 waiting for their answers, the rest queued
        clients = collector._session
        assert clients is not None
        await collector.close()
        connections = slow.connections + stalled.connections
        batch = await asyncio.wait_for(cycle, DEADLINE)
        await asyncio.sleep(0.05)

        # none opened a connection after close, or left one open, and none reported up
        assert slow.connections + stalled.connections == connections
        assert clients._session is None  # no aiohttp session made anew for the https probe
        assert client_sockets({slow.port, stalled.port}) == []
        assert {s.value for s in batch.samples if s.name == "api_up"} == {0.0}
        assert {e.target: e.message for e in batch.errors} == {
            e["name"]: _http_checks.CLOSED_PROBLEM for e in endpoints
        }

    async def test_a_host_name_is_resolved_as_aiohttp_does(self, raw_server):
        server = await raw_server(always(ok()))
        endpoints = [{"name": "named", "url": f"http://localhost:{server.port}/"}]
        lean = await same_outcome(endpoints)
        assert lean[0].errors == ()
