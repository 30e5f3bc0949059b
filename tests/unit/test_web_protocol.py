"""The exporter's HTTP/1.1 server side, over real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket

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
        if request.path == "/unrenderable":
            return Reply(999, b"no such status\n")
        if request.path == "/big":
            return Reply(200, b"m" * 200_000)  # a large /metrics page
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

    async def test_a_refusal_comes_after_the_replies_owed_before_it(self, served):
        _, port = served
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGARBAGE\x00\r\n\r\n")
        assert (await read_reply(reader))[::2] == (200, b"GET /a -\n")
        status, headers, _ = await read_reply(reader)
        assert (status, headers["connection"]) == (400, "close")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()

    async def test_slow_headers_are_a_408(self, served, monkeypatch):
        server, port = served
        monkeypatch.setattr(protocol, "HEADER_TIMEOUT", 0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost")  # and then nothing, well within IDLE_TIMEOUT
        status, headers, _ = await read_reply(reader)
        assert (status, headers["connection"]) == (408, "close")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert server.seen == []

    async def test_connections_past_the_limit_are_dropped(self, served, monkeypatch):
        server, port = served
        monkeypatch.setattr(protocol, "MAX_CONNECTIONS", 2)
        kept = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await read_reply(reader)
        writer.close()
        for kept_reader, kept_writer in kept:  # the first two are served
            kept_writer.write(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
            assert (await read_reply(kept_reader))[0] == 200
            kept_writer.close()
        assert len(server.seen) == 2

    async def test_a_reply_that_cannot_be_rendered_closes_the_connection(self, served):
        _, port = served
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /unrenderable HTTP/1.1\r\nHost: a\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):  # aborted: as good as closed
            assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


class TestFlowControl:
    async def test_a_pipelining_flood_waits_in_the_socket_and_is_all_answered(
        self, served, monkeypatch
    ):
        """Past MAX_QUEUED parsed requests, reading pauses: the rest is answered once
        replies make room, in order, rather than refused."""
        server, port = served
        monkeypatch.setattr(protocol, "MAX_QUEUED", 2)
        server.gate = asyncio.Event()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % n for n in range(300)))
        await asyncio.sleep(0.2)
        (connection,) = server.open
        piece_holds = protocol.FEED_PIECE // len(b"GET /0 HTTP/1.1\r\nHost: a\r\n\r\n") + 1
        assert len(connection._queue) <= 2 + piece_holds
        assert len(server.seen) == 1
        server.gate.set()
        bodies = [(await read_reply(reader))[2] for _ in range(300)]
        assert bodies == [b"GET /%d -\n" % n for n in range(300)]
        writer.close()

    async def test_a_client_that_does_not_read_is_not_buffered_for_and_is_dropped(
        self, served, monkeypatch
    ):
        """Replies wait for the transport's buffer to drain; one that does not drain within
        WRITE_TIMEOUT costs the client its connection."""
        server, port = served
        monkeypatch.setattr(protocol, "WRITE_TIMEOUT", 0.5)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        _, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n" * 200)  # 40 MB of replies
        await asyncio.sleep(0.2)
        (connection,) = server.open
        assert connection._transport is not None
        assert connection._transport.get_write_buffer_size() < 1_000_000
        assert len(server.seen) < 20  # the kernel's buffers hold a few, no more
        for _ in range(50):  # bounded: up to 5 s
            if not server.open:
                break
            await asyncio.sleep(0.1)
        assert not server.open  # aborted: close() would have waited on the unread replies
        writer.close()
