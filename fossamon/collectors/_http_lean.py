"""The api collector's lean path: plain-HTTP probes over keep-alive asyncio protocols.

Why: an aiohttp `ClientSession` request costs about 0.25-0.3 ms of CPU (measured against
static nginx on loopback, benchmarks/probes.py), which alone is the whole budget of a probe;
this path costs a fraction of that. It sends the very request aiohttp would (the same request
line and headers, in the same order: `_http_request.prepare`) and parses the response with
`httptools` (llhttp, aiohttp's own parser, with aiohttp's leniencies). What it does not do, it
leaves to aiohttp, so behaviour stays aiohttp's:

- at construction (`prepare` returns None): https (TLS), credentials in the URL, and the
  headers aiohttp gives a meaning of its own (Host, Content-Length, Connection, ...);
- per response (`NeedsFullClientError`, and the collector sends that probe through aiohttp
  from then on): a redirect to follow, a compressed body (gzip, deflate, br, zstd), a
  protocol switch (101).

Otherwise it keeps aiohttp's conduct: connections are reused while idle less than 15 s
(aiohttp's keep-alive timeout); host names go through the same resolver and
happy-eyeballs connect (`aiohappyeyeballs`, 0.25 s); a request that fails before its
response began is sent once more if its method is idempotent (as aiohttp does, RFC 9112
9.3.1); interim 1xx responses are skipped; a body ends with its length, its last chunk or
the end of the connection. Errors are raised as the collector classifies them: the connect
and DNS errors below, `ClosedBeforeResponseError` (a reset), `BodyTooLargeError`, and
`ConnectionError`s for a response cut short or malformed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import TYPE_CHECKING, Any, cast

import aiohappyeyeballs
import httptools
from aiohttp import DefaultResolver

from fossamon.collectors._http_checks import BodyTooLargeError, declared_too_large, read_too_large

if TYPE_CHECKING:
    from aiohttp.abc import AbstractResolver, ResolveResult

    from fossamon.collectors._http_checks import Exchange
    from fossamon.collectors._http_request import LeanRequest

KEEPALIVE = 15.0  # aiohttp's default keepalive_timeout
HAPPY_EYEBALLS_DELAY = 0.25  # aiohttp's default
REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DECODED = frozenset({b"gzip", b"deflate", b"br", b"zstd"})  # what aiohttp decompresses
# content-length, transfer-encoding, content-encoding, location, uri
_HEADER_LENGTHS = frozenset({14, 17, 16, 8, 3})


class NeedsFullClientError(Exception):
    """The response needs what only aiohttp does; the probe is sent again through it."""


class ClosedBeforeResponseError(ConnectionResetError):
    """The server closed the connection before a response began."""


class LeanConnectError(OSError):
    """No connection to `host`:`port` (as the URL names them); `os_error` says why."""

    def __init__(self, host: str, port: int, os_error: OSError) -> None:
        super().__init__(os_error.errno, os_error.strerror or str(os_error))
        self.host, self.port, self.os_error = host, port, os_error


class LeanDnsError(LeanConnectError):
    """`host` could not be resolved."""


class LeanClient:
    """Keep-alive connections per (host, port), shared by the probes of a collector."""

    def __init__(self, resolver: AbstractResolver | None = None) -> None:
        self._resolver = resolver
        self._own_resolver: AbstractResolver | None = None
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._busy: set[_Connection] = set()

    async def exchange(
        self, request: LeanRequest, exchange: Exchange, max_body: int, *, follow: bool
    ) -> tuple[int, bytes]:
        """(status, body) of one request; raises what went wrong (see the module docstring)."""
        retry = request.idempotent
        while True:
            connection = await self._acquire(request)
            self._busy.add(connection)
            try:
                result = await connection.send(request, exchange, max_body, follow=follow)
            except ClosedBeforeResponseError:
                if not retry:
                    raise
                retry = False  # once, as aiohttp does: a kept connection the server dropped
                continue
            finally:
                self._busy.discard(connection)
            self._release(connection)
            return result

    def close(self) -> None:
        for connection in [*self._busy, *(c for idle in self._idle.values() for c in idle)]:
            connection.abort()
        self._busy.clear()
        self._idle.clear()

    async def aclose(self) -> None:
        self.close()
        resolver, self._own_resolver = self._own_resolver, None
        if resolver is not None:
            await resolver.close()

    async def _acquire(self, request: LeanRequest) -> _Connection:
        loop = asyncio.get_running_loop()
        idle = self._idle.get((request.host, request.port))
        while idle:
            connection = idle.pop()
            if not connection.closed and loop.time() - connection.idle_since < KEEPALIVE:
                return connection
            connection.abort()
        return await self._connect(loop, request)

    def _release(self, connection: _Connection) -> None:
        if connection.closed:
            return
        connection.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(connection.origin, []).append(connection)

    async def _connect(self, loop: asyncio.AbstractEventLoop, request: LeanRequest) -> _Connection:
        host, port = request.host, request.port
        addr_infos = await self._addresses(host, port)
        try:
            sock = await aiohappyeyeballs.start_connection(
                addr_infos, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY, loop=loop
            )
        except OSError as exc:
            raise LeanConnectError(host, port, exc) from exc
        connection = _Connection(loop, (host, port))
        try:
            await loop.create_connection(lambda: connection, sock=sock)
        except BaseException as exc:
            sock.close()  # a timeout or cancellation in between must not leak it
            if isinstance(exc, OSError):
                raise LeanConnectError(host, port, exc) from exc
            raise
        return connection

    async def _addresses(self, host: str, port: int) -> list[aiohappyeyeballs.AddrInfoType]:
        """What aiohttp's connector hands to the happy-eyeballs connect."""
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        except ValueError:
            pass
        else:
            addr: tuple[Any, ...] = (
                (host, port, 0, 0) if family == socket.AF_INET6 else (host, port)
            )
            return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", addr)]
        resolver = self._resolver or self._default_resolver()
        try:
            hosts = await resolver.resolve(host, port, family=socket.AF_UNSPEC)
        except OSError as exc:
            raise LeanDnsError(host, port, exc) from exc
        return [_addr_info(found) for found in hosts]

    def _default_resolver(self) -> AbstractResolver:
        if self._own_resolver is None:
            self._own_resolver = DefaultResolver()
        return self._own_resolver


def _addr_info(found: ResolveResult) -> aiohappyeyeballs.AddrInfoType:
    host = found["host"]
    if ":" in host:
        return (
            socket.AF_INET6,
            socket.SOCK_STREAM,
            socket.IPPROTO_TCP,
            "",
            (host, found["port"], 0, 0),
        )
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, found["port"]))


class _Connection(asyncio.Protocol):
    """One keep-alive connection; httptools calls the `on_*` methods while it parses."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: tuple[str, int]) -> None:
        self.origin = origin
        self.closed = False
        self.idle_since = 0.0
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = self._new_parser()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._exchange: Exchange | None = None
        self._body = bytearray()
        self._limit = 0
        self._follow = False
        self._head = False
        self._got_headers = False
        self._delimited = False  # by a Content-Length or chunks, not by the connection's end
        self._interim = False  # the message being parsed is a 1xx before the real response
        self._declared: int | None = None
        self._encoded = False
        self._location = False

    async def send(
        self, request: LeanRequest, exchange: Exchange, limit: int, *, follow: bool
    ) -> tuple[int, bytes]:
        if request.head or self._head:
            # A reply to HEAD ends with its headers whatever its Content-Length says, which
            # llhttp cannot know: a HEAD's parser, and the one after it, start afresh.
            self._parser = self._new_parser()
        self._exchange, self._limit, self._follow, self._head = (
            exchange,
            limit,
            follow,
            request.head,
        )
        self._body = bytearray()
        self._got_headers = self._delimited = self._interim = False
        self._encoded = self._location = False
        self._declared = None
        waiter: asyncio.Future[tuple[int, bytes]] = self._loop.create_future()
        self._waiter = waiter
        try:
            assert self._transport is not None  # connected before the first send
            self._transport.write(request.data)
            return await waiter
        except BaseException:
            # failed, timed out or cancelled: the stream is in an unknown state
            self.abort()
            raise
        finally:
            self._waiter = None
            self._exchange = None

    def abort(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def _new_parser(self) -> httptools.HttpResponseParser:
        parser = httptools.HttpResponseParser(self)
        # aiohttp's response parser allows the same (outside its debug mode)
        parser.set_dangerous_leniencies(
            lenient_headers=True,
            lenient_optional_cr_before_lf=True,
            lenient_spaces_after_chunk_size=True,
        )
        return parser

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        if exc is None and self._got_headers and not (self._delimited or self._interim):
            self._complete()  # a body that ends where the connection does (HTTP/1.0 style)
            return
        error: Exception
        if self._got_headers:
            error = ConnectionError(
                f"response not complete: connection closed after {len(self._body)} body bytes"
            )
        else:
            error = ClosedBeforeResponseError("closed before a response")
        error.__cause__ = exc
        self._waiter.set_exception(error)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            self.abort()  # bytes nobody asked for: the stream is no longer in step
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(NeedsFullClientError("protocol switch"))
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"malformed response: {exc}"))

    # --- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) not in _HEADER_LENGTHS:
            return  # most headers: not one of the few read below
        name = name.lower()
        if name == b"content-length":
            self._delimited = True
            self._declared = int(value) if value.strip().isdigit() else None
        elif name == b"transfer-encoding":
            self._delimited = True
        elif name == b"content-encoding":
            self._encoded = value.strip().lower() in _DECODED
        elif name in (b"location", b"uri") and value:
            self._location = True

    def on_headers_complete(self) -> None:
        if self._waiter is None or self._waiter.done():
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim = True  # 100 Continue, 103 Early Hints: the real response follows
            return
        if (
            status == 101
            or self._encoded
            or (self._follow and status in REDIRECTS and self._location)
        ):
            self._fail(NeedsFullClientError(f"status {status}"))
            return
        assert self._exchange is not None
        self._exchange.status = status
        self._got_headers = True
        if self._head:
            self._complete()
        elif self._declared is not None and self._declared > self._limit:
            self._fail(BodyTooLargeError(declared_too_large(self._declared, self._limit)))

    def on_body(self, chunk: bytes) -> None:
        if self._waiter is None or self._waiter.done() or self._interim:
            return
        self._body += chunk
        assert self._exchange is not None
        self._exchange.bytes_read = len(self._body)
        if len(self._body) > self._limit:
            self._fail(BodyTooLargeError(read_too_large(self._limit, len(self._body))))

    def on_message_complete(self) -> None:
        if self._interim:  # what its headers said is not about the response that follows
            self._interim = self._delimited = self._encoded = self._location = False
            self._declared = None
            return
        if not self._head:
            self._complete()

    def _complete(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if not self._parser.should_keep_alive():
            self.closed = True
            if self._transport is not None:
                self._transport.close()
        waiter.set_result((self._parser.get_status_code(), bytes(self._body)))

    def _fail(self, error: Exception) -> None:
        """The exchange ends with `error`; the connection cannot be reused mid-response."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        self.abort()
