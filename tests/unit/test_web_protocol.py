"""The exporter's HTTP/1.1 server side, over real loopback sockets."""

from __future__ import annotations

import asyncio

import pytest

from fossamon.web import protocol
from fossamon.web.protocol import Connection, Reply, Request


class Server:
    """A listening Connection factory whose handler echoes what it was asked."""

    def __init__(self) -> None:
        self.seen: list[Request] = []
        self.open: set[Connection] = set()
        self.server: asyncio.Server | None = None
        self.gate: asyncio.Event | None = None  # set: replies wait for it

    async def handle(self, request: Request) -> Reply:
        self.seen.append(request)
        if self.gate is not None:
            await self.gate.wait()
        if request.path == "/boom":
            raise RuntimeError("a handler bug")
        body = f"{request.method} {request.path} {request.headers.get('accept', '-')}\n"
        return Reply(200, body.encode(), headers=(("X-Seen", str(len(self.seen))),))

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: Connection(self.handle, self.open), "127.0.0.1", 0
        )
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for connection in list(self.open):
            connection.close()


@pytest.fixture
async def served():
    server = Server()
    port = await server.start()
    yield server, port
    server.close()
    await asyncio.sleep(0)


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines)}
    length = int(headers["content-length"])
    return int(status_line.split()[1]), headers, await reader.readexactly(length)


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        return await read_reply(reader)
    finally:
        writer.close()


class TestRequests:
    async def test_a_get_with_its_path_query_and_headers(self, served):
        _, port = served
        status, headers, body = await exchange(
            port, b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/plain\r\n\r\n"
        )
        assert (status, body) == (200, b"GET /metrics text/plain\n")
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert headers["date"].endswith("GMT")
        assert "connection" not in headers  # HTTP/1.1: kept alive

    async def test_head_has_the_headers_of_get_and_no_body(self, served):
        _, port = served
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"Content-Length: 10\r\n" in head  # "HEAD /x -\n": the length GET would have
        status, _, body = await read_reply(reader)  # the next reply follows at once
        writer.close()
        assert (status, body) == (200, b"GET /y -\n")

    async def test_keep_alive_and_pipelined_requests_are_answered_in_order(self, served):
        server, port = served
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % n for n in range(5)))
        bodies = [(await read_reply(reader))[2] for _ in range(5)]
        writer.write(b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n")
        bodies.append((await read_reply(reader))[2])
        writer.close()
        assert bodies == [b"GET /%d -\n" % n for n in range(5)] + [b"GET /again -\n"]
        assert len(server.open) == 1  # one connection served them all

    async def test_http_1_0_and_connection_close_end_the_connection(self, served):
        _, port = served
        for raw in (
            b"GET /a HTTP/1.0\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw)
            _, headers, _ = await read_reply(reader)
            assert headers["connection"] == "close"
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
            writer.close()

    async def test_a_client_that_stops_sending_still_gets_its_reply(self, served):
        _, port = served
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /half HTTP/1.1\r\nHost: a\r\n\r\n")
        writer.write_eof()
        status, _, body = await read_reply(reader)
        assert (status, body) == (200, b"GET /half -\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


class TestRefusals:
    async def test_garbage_is_a_400_and_the_connection_closes(self, served):
        server, port = served
        status, headers, body = await exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
        assert (status, body) == (400, b"bad request\n")
        assert headers["connection"] == "close"
        assert server.seen == []

    async def test_a_request_past_the_limit_is_a_413(self, served, monkeypatch):
        server, port = served
        monkeypatch.setattr(protocol, "MAX_REQUEST", 1000)
        raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 2000 + b"\r\n\r\n"
        status, _, _ = await exchange(port, raw + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        assert status == 413
        assert server.seen == []  # nor the request that came after it

    async def test_a_handler_that_fails_is_a_500_and_the_connection_lives_on(self, served):
        _, port = served
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /boom HTTP/1.1\r\nHost: a\r\n\r\nGET /ok HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await read_reply(reader))[0] == 500
        assert (await read_reply(reader))[:1] == (200,)
        writer.close()

    async def test_a_connection_that_brings_no_whole_request_is_closed(self, served, monkeypatch):
        server, port = served
        monkeypatch.setattr(protocol, "IDLE_TIMEOUT", 0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost")  # and then nothing
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert server.seen == []

    async def test_pipelining_is_bounded(self, served, monkeypatch):
        """Requests queued past MAX_QUEUED (in one read: reading pauses while one is
        answered) are refused, and the connection closes."""
        server, port = served
        monkeypatch.setattr(protocol, "MAX_QUEUED", 2)
        server.gate = asyncio.Event()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /p HTTP/1.1\r\nHost: a\r\n\r\n" * 6)
        status, headers, _ = await read_reply(reader)
        assert (status, headers["connection"]) == (429, "close")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert len(server.seen) == 1  # the one being answered when the flood came
