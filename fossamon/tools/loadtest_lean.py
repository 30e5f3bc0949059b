"""The default load-test client: HTTP/1.1 keep-alive over asyncio protocols, llhttp parsing.

Why not aiohttp's `ClientSession` here (the daemon's probes use it, and `--engine aiohttp`
still does): measured against static nginx on loopback, a `ClientSession` request costs
about 0.2 ms of CPU here, so one process tops out near 4,000 requests/s and two near what
the runbook's script reached; `hey` costs about 0.05 ms. This client does what a load test
needs and no more, at roughly 0.03 ms per request:

- each worker owns one connection per origin, kept alive and reused; a connection the
  server closes, or one that failed or timed out, is replaced on the next request;
- each endpoint's request is encoded once (request line, headers, body) and written as one
  buffer; the response is parsed by `httptools` (llhttp, the parser aiohttp and Node use),
  which handles Content-Length, chunked bodies and `Connection: close`;
- bodies are counted, never kept; redirects are not followed (a load test measures the URL
  it was given); nothing is compressed, no cookies are kept, no proxy is used;
- credentials in the URL (`http://user:pw@host/`) are sent as Basic auth, as aiohttp does
  (unless a header sets `Authorization`); a body delimited by the server closing the
  connection (HTTP/1.0, or `Connection: close` with neither a length nor chunks) is a
  response; interim 1xx responses (103 Early Hints) are skipped;
- one deadline per request covers connecting, sending and the whole response; deadlines are
  checked every 50 ms (or a quarter of the shortest timeout), not by a timer per request.
"""

from __future__ import annotations

import asyncio
import base64
import math
import socket
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import httptools
from yarl import URL

from fossamon import __version__
from fossamon.collectors._http_checks import _os_reason, address, connect_failure, is_reset
from fossamon.model import ErrorKind

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fossamon.tools.loadtest_plan import Endpoint

_DEFAULT_PORTS = {"http": 80, "https": 443}
TIMEOUT_TICK = 0.05
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True, slots=True)
class _Target:
    """An endpoint ready to send: where to connect, and its request as bytes."""

    origin: tuple[str, str, int]
    tls: ssl.SSLContext | None
    request: bytes
    head: bool
    timeout: float
    address: str


class ClosedEarlyError(ConnectionError):
    """The server closed the connection before the response was complete."""

    def __init__(self, got_headers: bool) -> None:
        self.got_headers = got_headers
        super().__init__("closed mid-response" if got_headers else "closed before a response")


def encode_request(endpoint: Endpoint) -> bytes:
    url = URL(endpoint.url, encoded=False)
    host = url.raw_host or ""
    host = f"[{host}]" if ":" in host else host
    if url.port is not None and url.port != _DEFAULT_PORTS.get(url.scheme):
        host = f"{host}:{url.port}"
    given = {name.lower() for name, _ in endpoint.headers}
    lines = [f"{endpoint.method} {url.raw_path_qs or '/'} HTTP/1.1"]
    if "host" not in given:
        lines.append(f"Host: {host}")
    if "user-agent" not in given:
        lines.append(f"User-Agent: fossamon/{__version__}")
    if url.user is not None and "authorization" not in given:
        # as aiohttp does with credentials in the URL; UTF-8 as RFC 7617 recommends
        secret = base64.b64encode(f"{url.user}:{url.password or ''}".encode()).decode()
        lines.append(f"Authorization: Basic {secret}")
    lines.extend(f"{name}: {value}" for name, value in endpoint.headers)
    body = endpoint.body or b""
    if body or endpoint.method in _METHODS_WITH_BODY:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def tls_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class LeanClient:
    """The endpoints prepared once per process; `worker()` gives each worker its connections."""

    def __init__(self, endpoints: Sequence[Endpoint], *, verify_tls: bool = True) -> None:
        context = None
        targets = []
        for endpoint in endpoints:
            url = URL(endpoint.url)
            if url.scheme == "https" and context is None:
                context = tls_context(verify_tls)
            targets.append(
                _Target(
                    origin=(url.scheme, url.raw_host or "", url.port or 0),
                    tls=context if url.scheme == "https" else None,
                    request=encode_request(endpoint),
                    head=endpoint.method == "HEAD",
                    timeout=endpoint.timeout,
                    address=address(endpoint.url),
                )
            )
        self._targets = tuple(targets)
        self._workers: list[LeanWorker] = []
        # a quarter of the shortest timeout, at most TIMEOUT_TICK: how late a timeout may fire
        self._tick = min(TIMEOUT_TICK, min((t.timeout for t in targets), default=1.0) / 4)
        self._reaper: asyncio.Task[None] | None = None

    def worker(self) -> LeanWorker:
        """A worker's own connections. Called on the running loop (starts the timeout check)."""
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap())
        worker = LeanWorker(self._targets)
        self._workers.append(worker)
        return worker

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for worker in self._workers:
            worker.close()

    async def _reap(self) -> None:
        """Time out the exchanges past their deadline.

        One periodic check instead of a timer per request: arming and cancelling a timer for
        every request cost a third of the client's CPU (uvloop, static nginx). A timeout
        therefore fires up to one tick late."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._tick)
            now = loop.time()
            for worker in self._workers:
                worker.time_out_before(now)

    def classify(self, exc: Exception, endpoint: int) -> tuple[ErrorKind, str]:
        return classify(exc, self._targets[endpoint])


class LeanWorker:
    """One worker's connections, one per origin; `exchange` sends and awaits one response."""

    def __init__(self, targets: tuple[_Target, ...]) -> None:
        self._targets = targets
        self._connections: dict[tuple[str, str, int], _Connection] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def exchange(self, endpoint: int) -> tuple[int, int]:
        """(status, body bytes) of one request; raises what went wrong."""
        target = self._targets[endpoint]
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        deadline = loop.time() + target.timeout
        connection = self._connections.get(target.origin)
        if connection is None or connection.closed:
            connection = await self._connect(loop, target, deadline)
        return await connection.send(target, deadline)

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, target: _Target, deadline: float
    ) -> _Connection:
        _, host, port = target.origin
        connection = _Connection(loop)
        try:
            async with asyncio.timeout_at(deadline):
                await loop.create_connection(
                    lambda: connection,
                    host,
                    port,
                    ssl=target.tls,
                    server_hostname=host if target.tls else None,
                )
        except TimeoutError:
            raise TimeoutError(f"connecting to {target.address} timed out") from None
        self._connections[target.origin] = connection
        return connection

    def time_out_before(self, now: float) -> None:
        for connection in self._connections.values():
            if connection.deadline <= now:
                connection.time_out()

    def close(self) -> None:
        for connection in self._connections.values():
            connection.abort()
        self._connections.clear()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; httptools calls the `on_*` methods while it parses."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, int]] | None = None
        self._target: _Target | None = None
        self.deadline = math.inf  # of the exchange in progress; inf when idle
        self._size = 0
        self._head = False
        self._got_headers = False
        self._delimited = False  # the response has a Content-Length or chunks
        self._interim = False  # the message being parsed is a 1xx before the real response
        self.closed = False

    async def send(self, target: _Target, deadline: float) -> tuple[int, int]:
        if target.head or self._head:
            # llhttp cannot know that a reply to HEAD has no body despite its Content-Length:
            # the reply ends with its headers. The parser of the exchange before a HEAD may be
            # mid-message, and the one after a HEAD still expects that Content-Length's body:
            # either way, a fresh parser.
            self._parser = httptools.HttpResponseParser(self)
        self._size = 0
        self._head = target.head
        self._got_headers = False
        self._delimited = False
        self._interim = False
        waiter: asyncio.Future[tuple[int, int]] = self._loop.create_future()
        self._waiter = waiter
        self._target = target
        self.deadline = deadline
        try:
            assert self._transport is not None  # connected before send
            self._transport.write(target.request)
            return await waiter
        except BaseException:
            # a failed, timed-out or cancelled exchange leaves the stream in an unknown state
            self.abort()
            raise
        finally:
            self.deadline = math.inf
            self._waiter = None

    def abort(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def time_out(self) -> None:
        target = self._target
        if target is not None and self._waiter is not None and not self._waiter.done():
            if self._got_headers:
                message = f"response from {target.address} not complete within {target.timeout:g}s"
            else:
                message = f"no response from {target.address} within {target.timeout:g}s"
            self._waiter.set_exception(TimeoutError(message))

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's do not subclass asyncio.Transport, so no isinstance)
        self._transport = cast("asyncio.Transport", transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if (
            exc is None
            and self._got_headers
            and not self._delimited
            and not self._interim
            and not self._head
        ):
            # a body delimited by the end of the connection (HTTP/1.0, or `Connection: close`
            # with neither a length nor chunks): the server closing it ends the response
            self._complete()
            return
        if self._waiter is not None and not self._waiter.done():
            error = ClosedEarlyError(self._got_headers)
            error.__cause__ = exc
            self._waiter.set_exception(error)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_exception(exc)
            self.abort()

    # httptools callbacks

    def on_header(self, name: bytes, _value: bytes) -> None:
        if len(name) in (14, 17) and name.lower() in (b"content-length", b"transfer-encoding"):
            self._delimited = True

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # an interim response (100 Continue, 103 Early Hints): the real one follows
            self._interim = True
            return
        self._got_headers = True
        if self._head:
            self._complete()

    def on_body(self, body: bytes) -> None:
        self._size += len(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self._size = 0
            self._delimited = False
            return
        if not self._head:
            self._complete()

    def _complete(self) -> None:
        status = self._parser.get_status_code()
        if not self._parser.should_keep_alive():
            self.closed = True
            if self._transport is not None:
                self._transport.close()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result((status, self._size))


def classify(exc: Exception, target: _Target) -> tuple[ErrorKind, str]:
    """The api collector's kinds, for errors as asyncio's streams raise them.

    TLS failures go through the collector's own `connect_failure` (same kind, same reason
    text). DNS and refusal do not, and cannot without pretending: `connect_failure` reads
    `host`, `port` and `os_error` off an `aiohttp.ClientConnectorError`, which only aiohttp's
    connector builds (from its `ConnectionKey`); this client gets the bare `OSError` from
    `loop.create_connection`. The wording below is the collector's, with its `_os_reason`."""
    where = target.address
    kind, message = ErrorKind.OTHER, f"{where}: {type(exc).__name__}: {exc}"
    if isinstance(exc, TimeoutError):
        kind, message = ErrorKind.TIMEOUT, str(exc) or f"no response from {where} in time"
    elif isinstance(exc, socket.gaierror):
        kind, message = ErrorKind.DNS, f"cannot resolve {target.origin[1]}: {_os_reason(exc)}"
    elif isinstance(exc, ssl.SSLError):  # ssl.CertificateError is an SSLError
        kind, message = connect_failure(exc, where)
    elif isinstance(exc, ConnectionRefusedError):
        kind, message = ErrorKind.REFUSED, f"connection refused to {where}"
    elif isinstance(exc, ClosedEarlyError):
        kind = ErrorKind.OTHER if exc.got_headers else ErrorKind.REFUSED
        message = f"connection to {where} {exc}"
    elif isinstance(exc, httptools.HttpParserError):
        message = f"malformed response from {where}: {exc}"
    elif is_reset(exc):
        kind, message = ErrorKind.REFUSED, f"connection to {where} closed before a response"
    elif not isinstance(exc, OSError):
        kind = ErrorKind.INTERNAL  # not a network failure: our own bug, counted, not raised
    return kind, message
