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
  protocol switch (101), a head past MAX_HEAD_BYTES (so that the lean path never holds more
  of one, while aiohttp's own limits, per line and per header, are kept below).

That sends the request again, which only an idempotent one may be. A POST or PATCH is never
sent again: its compressed body is decoded here (`_http_decoding`, as aiohttp decodes it), a
101 is its response (as in aiohttp), a head past MAX_HEAD_BYTES fails it, and its redirect
(`RedirectError`) is followed by the collector from this answer (`_http_redirect`).

Otherwise it keeps aiohttp's conduct: connections are reused while idle less than 15 s
(aiohttp's keep-alive timeout), and never after bytes beyond the response arrived; host names
go through the same resolver and happy-eyeballs connect (`aiohappyeyeballs`, 0.25 s); a
request that fails before its response began is sent once more if its method is idempotent
(as aiohttp does, RFC 9112 9.3.1); interim 1xx responses are skipped; a body ends with its
length, its last chunk or the end of the connection (RFC 9112 6.3); a response is refused at
aiohttp's limits (a status line, or a header's name and value, over 8190 bytes; more than 128
headers; a NUL in a header value), and when bytes after it in the same read do not parse. At
most `limit` connections are open. Errors are raised as the collector classifies them: the
connect and DNS errors below, `ClosedBeforeResponseError` (a reset), `BodyTooLargeError`,
`MalformedResponseError`, `IncompleteResponseError` and `ClientClosedError`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import TYPE_CHECKING, Any, cast

import aiohappyeyeballs
import httptools
from aiohttp import DefaultResolver
from aiohttp.http_exceptions import InvalidHeader, LineTooLong

from fossamon.collectors import _http_decoding as decoding
from fossamon.collectors._http_checks import (
    BodyTooLargeError,
    declared_too_large,
    incomplete_problem,
    read_too_large,
)

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
# aiohttp's response parser's limits (client_proto.ResponseHandler), and its words for them
MAX_LINE_SIZE = 8190  # the status line
MAX_FIELD_SIZE = 8190  # a header's name and value together
MAX_HEADERS = 128
TOO_MANY_HEADERS = "Too many headers received"
# A head this long goes to aiohttp instead (real ones are a few hundred bytes; nginx refuses an
# upstream's over 4-8 KiB): it keeps what one connection buffers bounded, while aiohttp's own
# limits above, per line and per header, still decide.
MAX_HEAD_BYTES = 64 * 1024


class NeedsFullClientError(Exception):
    """The response needs what only aiohttp does; the probe is sent again through it.
    Raised for idempotent requests only, but for RedirectError."""


class RedirectError(NeedsFullClientError):
    """A redirect to follow: to `location` (as aiohttp reads it), after `status`. A request
    that is not idempotent is not sent again: the collector follows the redirect."""

    def __init__(self, status: int, location: str) -> None:
        super().__init__(f"status {status}")
        self.status, self.location = status, location


class ClosedBeforeResponseError(ConnectionResetError):
    """The server closed the connection before a response began."""


class MalformedResponseError(ConnectionError):
    """The response does not parse, or passes aiohttp's limits; `reason` says how.

    aiohttp's parser fails the read it was parsing as a whole (the headers that came in it were
    never seen), but for a body it cannot decode (`whole_read=False`), which fails the body.
    """

    def __init__(self, reason: str, *, whole_read: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.whole_read = whole_read


class IncompleteResponseError(ConnectionError):
    """The connection ended in the middle of the body."""


class ClientClosedError(ConnectionAbortedError):
    """The client was closed while the request was on its way."""


class LeanConnectError(OSError):
    """No connection to `host`:`port` (as the URL names them); `os_error` says why."""

    def __init__(self, host: str, port: int, os_error: OSError) -> None:
        super().__init__(os_error.errno, os_error.strerror or str(os_error))
        self.host, self.port, self.os_error = host, port, os_error


class LeanDnsError(LeanConnectError):
    """`host` could not be resolved."""


class LeanClient:
    """Keep-alive connections per (host, port), shared by the probes of a collector; at most
    `limit` open (busy or idle), the longest idle closed to make room."""

    def __init__(self, resolver: AbstractResolver | None = None, *, limit: int = 100) -> None:
        self._resolver = resolver
        self._own_resolver: AbstractResolver | None = None
        self._limit = limit
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._idle_count = 0
        self._busy: set[_Connection] = set()
        self._connecting = 0
        self._closed = False

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
        """Abort every connection: a request on its way fails with ClientClosedError, and none
        is sent from now on."""
        self._closed = True
        for connection in [*self._busy, *(c for idle in self._idle.values() for c in idle)]:
            connection.abort()
        self._busy.clear()
        self._idle.clear()
        self._idle_count = 0

    async def aclose(self) -> None:
        self.close()
        resolver, self._own_resolver = self._own_resolver, None
        if resolver is not None:
            await resolver.close()

    async def _acquire(self, request: LeanRequest) -> _Connection:
        self._check_open()
        loop = asyncio.get_running_loop()
        idle = self._idle.get((request.host, request.port))
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if not connection.closed and loop.time() - connection.idle_since < KEEPALIVE:
                return connection
            connection.abort()
        if len(self._busy) + self._connecting + self._idle_count >= self._limit:
            self._close_longest_idle()
        self._connecting += 1
        try:
            connection = await self._connect(loop, request)
        finally:
            self._connecting -= 1
        try:
            self._check_open()  # closed while it connected
        except ClientClosedError:
            connection.abort()
            raise
        return connection

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError

    def _release(self, connection: _Connection) -> None:
        if connection.closed:
            return
        if self._closed:
            connection.abort()
            return
        connection.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(connection.origin, []).append(connection)
        self._idle_count += 1

    def _close_longest_idle(self) -> None:
        """Make room for a connection to another origin: each origin's list is in the order its
        connections fell idle, so the longest idle is the first of one of them."""
        lists = [idle for idle in self._idle.values() if idle]
        if lists:
            oldest = min(lists, key=lambda idle: idle[0].idle_since)
            oldest.pop(0).abort()
            self._idle_count -= 1

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
    """One keep-alive connection; httptools calls the `on_*` methods while it parses.

    A response complete in the middle of a read is answered only once the whole read parsed:
    bytes after it that do not parse fail it (as aiohttp's parser, fed the same read, does),
    and bytes after it that do mean the stream is out of step: the connection is not reused.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: tuple[str, int]) -> None:
        self.origin = origin
        self.closed = False
        self.idle_since = 0.0
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = self._new_parser()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._exchange: Exchange | None = None
        self._response: tuple[int, bytes] | None = None  # complete, answered after the read
        self._stray = False  # bytes beyond the response: never reuse the connection
        self._keep_alive = False  # as the response says
        self._decoder: decoding.Decoder | None = None  # the body's Content-Encoding, undone
        self._body = bytearray()
        self._limit = 0
        self._follow = False
        self._head = False
        self._got_headers = False
        self._had_headers = False  # before the read being parsed
        self._head_bytes = 0  # read before the headers were complete
        self._status_bytes = 0
        self._reason = b""  # its first 100 bytes, for the message when it is too long
        self._headers = 0
        self._length = False  # a Content-Length
        self._coded = False  # a Transfer-Encoding
        self._chunked = False  # ... whose final coding is chunked
        self._interim = False  # the message being parsed is a 1xx before the real response
        self._declared: int | None = None
        self._idempotent = True  # the request's: if not, it is never sent again
        self._coding: str | None = None  # a Content-Encoding aiohttp undoes
        self._location: bytes | None = None  # the first Location header's value
        self._uri: bytes | None = None  # the first URI header's value

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
        self._idempotent = request.idempotent
        self._body = bytearray()
        self._response = None
        self._decoder = None
        self._got_headers = self._interim = False
        self._head_bytes = 0
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
        """Close at once; a request still waiting fails with ClientClosedError (a body that
        would end with the connection must not be taken for complete)."""
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ClientClosedError())
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

    def _live(self) -> bool:
        """A response is awaited and not yet complete."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and self._response is None

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._live():
            return
        assert self._waiter is not None
        delimited = self._chunked or (self._length and not self._coded)
        self._had_headers = self._got_headers  # no read: what came before stands
        if exc is None and self._got_headers and not (delimited or self._interim):
            self._complete()  # a body that ends where the connection does (HTTP/1.0 style)
            self._answer()
            return
        error: Exception
        if self._got_headers:
            error = IncompleteResponseError(incomplete_problem(len(self._body)))
        else:
            error = ClosedBeforeResponseError("closed before a response")
        error.__cause__ = exc
        self._waiter.set_exception(error)

    def data_received(self, data: bytes) -> None:
        if not self._live():
            self.abort()  # bytes nobody asked for: the stream is no longer in step
            return
        self._had_headers = self._got_headers
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._response is None:  # else a 101 answered here (on_headers_complete)
                self._fail(NeedsFullClientError("protocol switch"))
        except httptools.HttpParserError as exc:
            # also when a response completed earlier in this read: aiohttp fails it too
            self._fail(MalformedResponseError(str(exc)))
        if self._response is not None:
            self._answer()
        elif not self._got_headers and self._live():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                reason = f"a head over {MAX_HEAD_BYTES} bytes"
                # what aiohttp would make of it is left to aiohttp, when it may be sent again
                self._fail(
                    NeedsFullClientError(reason)
                    if self._idempotent
                    else MalformedResponseError(reason)
                )

    # --- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._response is not None:
            # The next message began in the same read: the connection is out of step. It is
            # still parsed, and still checked as aiohttp checks it, since aiohttp would fail
            # the response for it.
            self._stray = True
        # what the message before said (a 1xx, or the last response) is forgotten
        self._status_bytes = self._headers = 0
        self._reason = b""
        self._length = self._coded = self._chunked = False
        self._coding = None
        self._location = self._uri = None
        self._declared = None

    def on_status(self, piece: bytes) -> None:
        # llhttp hands the reason phrase over in pieces; aiohttp's limit is on it whole, and
        # its message shows the first 100 bytes
        if len(self._reason) < 100:
            self._reason += piece
        self._status_bytes += len(piece)
        if self._status_bytes > MAX_LINE_SIZE:
            # a bytearray, as aiohttp passes it (its message shows the type)
            shown = cast("bytes", bytearray(self._reason[:100]) + b"...")
            self._fail(MalformedResponseError(LineTooLong(shown, MAX_LINE_SIZE).message))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        # `0 in value` (memchr) is ten times quicker than `b"\0" in value`: this runs for
        # every header of every probe
        if len(name) + len(value) > MAX_FIELD_SIZE or 0 in value or self._headers > MAX_HEADERS:
            self._refuse(name, value)
            return
        if len(name) not in _HEADER_LENGTHS:
            return  # most headers: not one of the few read below
        name = name.lower()
        if name == b"content-length":
            self._length = True
            self._declared = int(value) if value.strip().isdigit() else None
        elif name == b"transfer-encoding":
            # RFC 9112 6.3: chunked delimits the body only as the final coding
            self._coded = True
            self._chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
        elif name == b"content-encoding":
            # the last one counts, as in aiohttp, which strips it of spaces and tabs
            coding = value.rstrip(b" \t").lower()
            self._coding = coding.decode() if coding in _DECODED else None
        elif name == b"location":
            if self._location is None:
                self._location = value
        elif name == b"uri" and self._uri is None:
            self._uri = value

    def _refuse(self, name: bytes, value: bytes) -> None:
        """A header past aiohttp's limits: fail as aiohttp does, checking in its order."""
        if len(name) + len(value) > MAX_FIELD_SIZE:
            line = name if len(name) > MAX_FIELD_SIZE else value
            reason = LineTooLong(line[:100] + b"...", MAX_FIELD_SIZE).message
        elif 0 in value:
            reason = InvalidHeader(value.rstrip(b" \t")).message
        else:
            reason = TOO_MANY_HEADERS
        self._fail(MalformedResponseError(reason))

    def on_headers_complete(self) -> None:
        if not self._live():
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim = True  # 100 Continue, 103 Early Hints: the real response follows
            return
        # aiohttp's redirect target: the first Location, unless empty, else the first URI
        target = self._location or self._uri
        if self._follow and status in REDIRECTS and target is not None:
            location = target.rstrip(b" \t").decode("utf-8", "surrogateescape")
            self._fail(RedirectError(status, location))
            return
        if self._idempotent and (status == 101 or self._coding is not None):
            why = "a protocol switch" if status == 101 else f"a {self._coding} body"
            self._fail(NeedsFullClientError(why))
            return
        assert self._exchange is not None
        self._exchange.status = status
        self._got_headers = True
        if self._coding is not None:
            try:
                self._decoder = decoding.Decoder(self._coding)
            except decoding.DecodingError as exc:
                self._fail(MalformedResponseError(str(exc)))
                return
        if self._head or status == 101:
            # A 101 to a request that is not sent again: as aiohttp, the switch is the
            # response (no body), and the connection is not used after it.
            self._stray = status == 101
            self._complete()
        elif self._declared is not None and self._declared > self._limit:
            self._fail(BodyTooLargeError(declared_too_large(self._declared, self._limit)))

    def on_body(self, chunk: bytes) -> None:
        if not self._live():
            if self._response is not None:
                self._stray = True  # a body after a HEAD's headers: out of step
            return
        if self._interim:
            return
        self._body += chunk
        assert self._exchange is not None
        self._exchange.bytes_read = len(self._body)
        if len(self._body) > self._limit:
            self._fail(BodyTooLargeError(read_too_large(self._limit, len(self._body))))

    def on_message_complete(self) -> None:
        if self._interim:  # the real response follows
            self._interim = False
            return
        if not self._head:
            self._complete()

    def _complete(self) -> None:
        if not self._live():
            return
        body = bytes(self._body)
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            try:
                body = decoder.decode(body, self._limit)
            except decoding.DecodingError as exc:
                self._fail(MalformedResponseError(str(exc), whole_read=exc.at_end))
                return
            assert self._exchange is not None
            self._exchange.bytes_read = len(body)
            if len(body) > self._limit:
                self._fail(BodyTooLargeError(read_too_large(self._limit, len(body))))
                return
        self._response = (self._parser.get_status_code(), body)
        # asked now: once the read is parsed, the parser is on to the next message
        self._keep_alive = self._parser.should_keep_alive()

    def _answer(self) -> None:
        """Hand the complete response over, and keep the connection only if it may be."""
        response, self._response = self._response, None
        waiter = self._waiter
        if response is None or waiter is None or waiter.done():
            return
        if self._stray or not self._keep_alive:
            self.closed = True
            if self._transport is not None:
                self._transport.close()
        waiter.set_result(response)

    def _fail(self, error: Exception) -> None:
        """The exchange ends with `error`; the connection cannot be reused mid-response."""
        failed_read = isinstance(error, MalformedResponseError) and error.whole_read
        if failed_read and not self._had_headers and self._exchange is not None:
            self._exchange.status = None  # headers that came in the failed read: never seen
        self._response = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        self.abort()
