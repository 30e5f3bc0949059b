"""A small HTTP/1.1 server side for the exporter: requests in, replies out, on asyncio.

The exporter answers GET (and HEAD) on four paths, so it needs no web framework: aiohttp's
server cost the daemon 1.3 MB of RSS (mime tables read at import, websockets, multipart),
about a tenth of its whole budget. Requests are parsed by httptools (llhttp, the parser
aiohttp and uvicorn use; the api collector loads it anyway), in the shape of uvicorn's
httptools protocol: a connection parses what arrives, queues whole requests, and answers them
in order, one at a time (pipelining works); keep-alive as the client asks.

Limits, so that no client can hold the daemon's memory or descriptors: a request (line,
headers, any body, which is read and dropped) of at most MAX_REQUEST bytes; at most
MAX_QUEUED pipelined requests waiting (reading pauses while one is answered); and a
connection must bring a whole request within IDLE_TIMEOUT of opening or of the last reply,
or it is closed.
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
IDLE_TIMEOUT = 60.0
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
        self._queue: deque[Request] = deque()
        self._serving: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._unfinished = 0  # bytes received since the last whole request
        self._size = 0  # bytes of the request being parsed (URL, headers, body)
        self._too_large = False
        self._eof = False  # the client will send no more: close once its replies are out
        self._url = b""
        self._headers: dict[str, str] = {}

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._open.add(self)
        self._start_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        del exc
        self._open.discard(self)
        self._stop_idle()
        if self._serving is not None:
            self._serving.cancel()

    def data_received(self, data: bytes) -> None:
        self._unfinished += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "upgrades are not served here\n")
        except httptools.HttpParserError:
            self._refuse(400, "bad request\n")
        else:
            if self._too_large or self._unfinished > MAX_REQUEST or self._size > MAX_REQUEST:
                self._refuse(413, "request too large\n")
            elif len(self._queue) > MAX_QUEUED:
                self._refuse(429, "too many requests at once\n")

    def eof_received(self) -> bool:
        if self._serving is None and not self._queue:
            return False  # nothing owed: asyncio closes the transport
        self._eof = True  # half-closed: the replies still owed go out first
        return True

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # --- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url, self._headers, self._size = b"", {}, 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        self._size += len(name) + len(value)

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
        if self._transport is not None:
            self._transport.pause_reading()  # until this one is answered
        if self._serving is None:
            self._serving = asyncio.get_running_loop().create_task(self._serve())

    # --- replies ----------------------------------------------------------------------------

    async def _serve(self) -> None:
        try:
            while self._queue:
                request = self._queue.popleft()
                reply = await self._reply(request)
                if self._transport is None or self._transport.is_closing():
                    return
                head_only = request.method == "HEAD"
                self._transport.write(
                    render(reply, head_only=head_only, keep_alive=request.keep_alive)
                )
                if not request.keep_alive:
                    self._transport.close()
                    return
                self._transport.resume_reading()
        finally:
            self._serving = None
        if self._eof:
            self.close()
        else:
            self._start_idle()

    async def _reply(self, request: Request) -> Reply:
        try:
            return await self._handler(request)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("exporter request failed", path=request.path)
            return Reply(500, b"internal error\n")

    def _refuse(self, status: int, text: str) -> None:
        """A request this server will not read on: say why, and close."""
        if self._transport is None or self._transport.is_closing():
            return
        reply = Reply(status, text.encode())
        self._transport.write(render(reply, head_only=False, keep_alive=False))
        self._transport.close()

    # --- idle timeout -----------------------------------------------------------------------

    def _start_idle(self) -> None:
        self._stop_idle()
        self._idle = asyncio.get_running_loop().call_later(IDLE_TIMEOUT, self.close)

    def _stop_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
