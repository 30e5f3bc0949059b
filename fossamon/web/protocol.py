"""A small HTTP/1.1 server side for the exporter: requests in, replies out, on asyncio.

The exporter answers GET (and HEAD) on four paths, so it needs no web framework: aiohttp's
server cost the daemon 1.3 MB of RSS (mime tables read at import, websockets, multipart),
about a tenth of its whole budget. Requests are parsed by httptools (llhttp, the parser
aiohttp and uvicorn use; the api collector loads it anyway), in the shape of uvicorn's
httptools protocol: a connection parses what arrives, queues whole requests, and answers them
in order, one at a time (pipelining works); keep-alive as the client asks.

Limits, so that no client can hold the daemon's memory or descriptors: at most
MAX_CONNECTIONS open (more are aborted at once); a request (line, headers, any body, which
is read and dropped) of at most MAX_REQUEST bytes, its headers within HEADER_TIMEOUT of its
first byte; at most MAX_QUEUED pipelined requests parsed and waiting (past that, reading
pauses: the rest waits in the socket); replies written only while the transport's buffer
has room (asyncio's flow control), and a client that reads none of it for WRITE_TIMEOUT is
aborted; a connection must bring a whole request within IDLE_TIMEOUT of opening or of the
last reply, or it is closed. A request refused (400, 408, 413) is answered after the replies
owed to the requests before it, and then the connection closes.
"""

from __future__ import annotations

import asyncio
import http
from collections import deque
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING

import httptools
import structlog

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

log = structlog.get_logger(__name__)

MAX_REQUEST = 64 * 1024
MAX_QUEUED = 8
FEED_PIECE = 1024  # parsed at a time: bounds the requests one piece can add past MAX_QUEUED
MAX_CONNECTIONS = 256
IDLE_TIMEOUT = 60.0
HEADER_TIMEOUT = 10.0
WRITE_TIMEOUT = 10.0
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]  # names in lower case; a repeated header: the last one
    keep_alive: bool


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()


def render(reply: Reply, *, head_only: bool, keep_alive: bool) -> bytes:
    """The reply as bytes on the wire; HEAD gets the same headers and no body."""
    reason = http.HTTPStatus(reply.status).phrase
    lines = [
        f"HTTP/1.1 {reply.status} {reason}",
        f"Date: {formatdate(usegmt=True)}",
        f"Content-Type: {reply.content_type}",
        f"Content-Length: {len(reply.body)}",
        *(f"{name}: {value}" for name, value in reply.headers),
    ]
    if not keep_alive:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + reply.body


class Connection(asyncio.Protocol):
    """One client connection; httptools calls the `on_*` methods while it parses."""

    def __init__(
        self, handler: Callable[[Request], Awaitable[Reply]], open_set: set[Connection]
    ) -> None:
        self._handler = handler
        self._open = open_set
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._pending = bytearray()  # received, not yet parsed: the queue was full
        self._queue: deque[Request] = deque()
        self._refusal: Reply | None = None  # owed after the queued replies; then close
        self._serving: asyncio.Task[None] | None = None
        self._writable = asyncio.Event()  # clear while the transport's buffer is too full
        self._writable.set()
        self._reading = True
        self._idle: asyncio.TimerHandle | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._unfinished = 0  # bytes parsed since the last whole request
        self._size = 0  # bytes of the request being parsed (URL, headers, body)
        self._too_large = False
        self._eof = False  # the client will send no more: close once its replies are out
        self._url = b""
        self._headers: dict[str, str] = {}

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if len(self._open) >= MAX_CONNECTIONS:
            transport.abort()  # no reply: writing one would cost what the limit saves
            return
        self._open.add(self)
        self._start_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        del exc
        self._open.discard(self)
        self._stop_idle()
        for timer in (self._header_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._pending.clear()
        self._queue.clear()
        if self._serving is not None:
            self._serving.cancel()

    def pause_writing(self) -> None:
        self._writable.clear()
        self._update_reading()
        self._abort_unless_drained()

    def resume_writing(self) -> None:
        closing = self._transport is not None and self._transport.is_closing()
        if self._write_timer is not None and not closing:  # closing: the rest must go too
            self._write_timer.cancel()
            self._write_timer = None
        self._writable.set()
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            # Nothing after a refused request is parsed, but it is read until the close:
            # closing with unread bytes makes the kernel send a reset, which can destroy
            # the refusal's reply before the client reads it.
            return
        self._pending += data
        self._feed()

    def eof_received(self) -> bool:
        if self._serving is None and not self._queue and not self._pending:
            return False  # nothing owed: asyncio closes the transport
        self._eof = True  # half-closed: the replies still owed go out first
        return True

    def close(self) -> None:
        """Close once what is buffered is sent; abort if that takes past WRITE_TIMEOUT."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.close()
        if transport.get_write_buffer_size():
            self._abort_unless_drained()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _abort_unless_drained(self) -> None:
        """A client that does not read what it was sent within WRITE_TIMEOUT loses it."""
        if self._write_timer is not None:
            self._write_timer.cancel()
        self._write_timer = asyncio.get_running_loop().call_later(WRITE_TIMEOUT, self.abort)

    # --- parsing ------------------------------------------------------------------------------

    def _feed(self) -> None:
        """Parse what was received, a piece at a time, while the queue has room: the rest
        waits unparsed (and reading pauses) until replies make room, so a flood of
        pipelined requests is slowed down, not refused or held as parsed requests."""
        while self._pending and len(self._queue) < MAX_QUEUED and self._refusal is None:
            piece = bytes(self._pending[:FEED_PIECE])
            del self._pending[:FEED_PIECE]
            self._unfinished += len(piece)
            try:
                self._parser.feed_data(piece)
            except httptools.HttpParserUpgrade:
                self._refuse(400, "upgrades are not served here\n")
            except httptools.HttpParserError:
                self._refuse(400, "bad request\n")
            else:
                if self._too_large or self._unfinished > MAX_REQUEST or self._size > MAX_REQUEST:
                    self._refuse(413, "request too large\n")
        self._update_reading()

    def _update_reading(self) -> None:
        """Read only while what is read can be parsed and its replies can be sent."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        wanted = self._refusal is not None or (  # read and dropped: see data_received
            self._writable.is_set() and not self._pending and len(self._queue) < MAX_QUEUED
        )
        if wanted and not self._reading:
            transport.resume_reading()
        elif self._reading and not wanted:
            transport.pause_reading()
        self._reading = wanted

    def _refuse(self, status: int, text: str) -> None:
        """A request this server will not read on: its reply goes after those owed to the
        requests before it, and then the connection closes."""
        if self._refusal is not None:
            return
        self._refusal = Reply(status, text.encode())
        self._pending.clear()
        self._stop_header_timer()
        self._update_reading()
        self._start_serving()

    # --- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url, self._headers, self._size = b"", {}, 0
        self._start_header_timer()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        self._size += len(name) + len(value)

    def on_headers_complete(self) -> None:
        self._stop_header_timer()

    def on_body(self, body: bytes) -> None:
        self._size += len(body)  # read and dropped: nothing here takes a body

    def on_message_complete(self) -> None:
        self._unfinished = 0
        if self._too_large or self._size > MAX_REQUEST:
            self._too_large = True  # refused once the parser returns; nothing after it is read
            return
        self._stop_idle()
        try:
            path = httptools.parse_url(self._url).path.decode("latin-1")
        except httptools.HttpParserInvalidURLError:
            path = ""  # answered 404: no such path
        request = Request(
            self._parser.get_method().decode("latin-1"),
            path,
            self._headers,
            self._parser.should_keep_alive(),
        )
        self._queue.append(request)
        self._start_serving()

    # --- replies ----------------------------------------------------------------------------

    def _start_serving(self) -> None:
        if self._serving is None:
            self._serving = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        try:
            await self._answer_queued()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("exporter reply failed")  # e.g. a reply that cannot be rendered
            self.abort()
            return
        finally:
            self._serving = None
        if self._refusal is not None:
            self._write(render(self._refusal, head_only=False, keep_alive=False))
            self.close()
        elif self._eof and not self._pending:
            self.close()
        elif self._transport is not None and not self._transport.is_closing():
            self._start_idle()

    async def _answer_queued(self) -> None:
        while self._queue:
            await self._writable.wait()  # the client reads what it was sent before more
            request = self._queue.popleft()
            reply = await self._reply(request)
            if self._transport is None or self._transport.is_closing():
                return
            head_only = request.method == "HEAD"
            self._write(render(reply, head_only=head_only, keep_alive=request.keep_alive))
            if not request.keep_alive:
                self._refusal = None  # nothing after this request is answered
                self._pending.clear()
                self._queue.clear()
                self.close()
                return
            self._feed()  # the queue has room again

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def _reply(self, request: Request) -> Reply:
        try:
            return await self._handler(request)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("exporter request failed", path=request.path)
            return Reply(500, b"internal error\n")

    # --- timeouts ---------------------------------------------------------------------------

    def _start_idle(self) -> None:
        self._stop_idle()
        self._idle = asyncio.get_running_loop().call_later(IDLE_TIMEOUT, self._idle_out)

    def _stop_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _idle_out(self) -> None:
        transport = self._transport
        if transport is not None and transport.get_write_buffer_size():
            transport.abort()  # the client does not read: close() would wait for it
        else:
            self.close()

    def _start_header_timer(self) -> None:
        self._stop_header_timer()
        self._header_timer = asyncio.get_running_loop().call_later(
            HEADER_TIMEOUT, self._refuse, 408, "request headers too slow\n"
        )

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
