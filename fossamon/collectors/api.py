r"""The `api` collector: probes HTTP endpoints, all at once, over kept-alive connections.

Each cycle sends every configured request concurrently (at most `max_concurrency` at a time)
and records, per endpoint:

- `api_up{endpoint}`: 1 when the whole check passed (expected status and body checks), else 0;
- `api_status_code{endpoint}`: whenever response headers arrived;
- `api_response_seconds{endpoint}` and `api_response_size_bytes{endpoint}`: when the body was
  read in full. A refused connection or a timeout has no meaningful latency, so none is made up.

A failed check is one `Failure` with a stable kind: refused, timeout, dns, tls, status,
body_mismatch, too_large, other, or internal (a bug, confined to its endpoint). The timeout bounds
the whole probe (connect, headers and body), so a server trickling a byte a second times out too.
Bodies are read in chunks and abandoned past `max_body`, never buffered whole.

Plain-HTTP probes take a lean path (`_http_request`, `_http_lean`: the request aiohttp would
send, parsed by aiohttp's parser, at a third of aiohttp's CPU per probe); https, and responses
that need aiohttp (a redirect to follow, a compressed body), go through an aiohttp session,
which sends a GET or the like afresh. A POST or PATCH is never sent twice: its compressed
body is decoded on the lean path (`_http_decoding`), and aiohttp follows its redirect from
the lean answer (`_http_redirect`). Either way a probe fails with the same kind and words.
At most `max_concurrency` probes are in flight, and the lean path keeps at most as many
connections open. Probes still running when the collector is closed fail as stopped, and
open no connection.

```toml
[collectors.api]
interval = "15s"
timeout = "10s"
base_url = "http://localhost:8000"
headers = { Accept = "application/json" }
max_body = "1MiB"

[[collectors.api.endpoints]]
name = "health"
path = "/api/health"
body_regex = '"status":\s*"(ok|healthy)"'

[[collectors.api.endpoints]]
name = "auth_validate"
path = "/api/auth/validate"
method = "POST"
json = { token = "${FOSSAMON_PROBE_TOKEN:-probe}" }
expect_status = [200, 401]

[[collectors.api.endpoints]]
name = "work_orders"
url = "http://localhost:8001/api/work-orders?limit=1"
timeout = "2s"
headers = { Authorization = "Bearer ${FOSSAMON_PROBE_TOKEN:-probe}" }
expect_json = { "data.items.0.status" = "open", "total" = 1 }
```
"""

from __future__ import annotations

import asyncio
import math
import re
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.http_exceptions import (
    ContentLengthError,
    HttpProcessingError,
    TransferEncodingError,
)

from fossamon import __version__
from fossamon.collectors import _http_checks as checks
from fossamon.collectors import _http_redirect as redirects
from fossamon.collectors._http_checks import BodyTooLargeError, Exchange
from fossamon.collectors._http_lean import (
    ClientClosedError,
    IncompleteResponseError,
    LeanClient,
    LeanConnectError,
    LeanDnsError,
    MalformedResponseError,
    NeedsFullClientError,
    RedirectError,
)
from fossamon.collectors._http_request import LeanRequest, prepare
from fossamon.model import Batch, ErrorKind, Failure, Sample, make_labels

if TYPE_CHECKING:
    from aiohttp.abc import AbstractResolver

    from fossamon.config import ApiCollectorConfig, EndpointConfig

READ_CHUNK = 64 * 1024
USER_AGENT = f"fossamon/{__version__}"


@dataclass(frozen=True, slots=True)
class _Probe:
    """One endpoint with the collector's defaults applied, resolved once at construction."""

    name: str
    method: str
    url: str
    headers: dict[str, str]
    json_body: Any
    body: bytes | None
    timeout: float
    expect_status: tuple[int, ...]
    body_regex: re.Pattern[str] | None
    expect_json: dict[str, Any]
    lean: LeanRequest | None  # None: only aiohttp can send it (https, say)
    request: redirects.Request  # as aiohttp sends it

    @classmethod
    def from_config(
        cls, endpoint: EndpointConfig, api: ApiCollectorConfig, *, lean: bool
    ) -> _Probe:
        url = endpoint.url or api.base_url.rstrip("/") + (endpoint.path or "")
        headers = checks.merge_headers(api.headers, endpoint.headers)
        body = None if endpoint.body is None else endpoint.body.encode()
        return cls(
            name=endpoint.name,
            method=endpoint.method,
            url=url,
            headers=headers,
            json_body=endpoint.json_body,
            body=body,
            timeout=endpoint.timeout or api.timeout,
            expect_status=tuple(endpoint.expect_status),
            body_regex=None if endpoint.body_regex is None else re.compile(endpoint.body_regex),
            expect_json=dict(endpoint.expect_json),
            lean=(
                prepare(
                    endpoint.method,
                    url,
                    headers,
                    endpoint.json_body,
                    body,
                    {"User-Agent": USER_AGENT},
                )
                if lean
                else None
            ),
            request=redirects.Request(
                endpoint.method, url, headers, endpoint.json_body, body, api.max_redirects
            ),
        )


class _Clients:
    """The collector's connections: the lean client's, and an aiohttp session made on first
    need (aiohttp binds it to the running loop). Kept across cycles, for keep-alive."""

    def __init__(self, config: ApiCollectorConfig, resolver: AbstractResolver | None) -> None:
        self._config = config
        self._resolver = resolver
        self.lean = LeanClient(resolver, limit=config.max_concurrency)
        self.through_aiohttp: set[str] = set()  # probes whose responses needed aiohttp
        self._session: aiohttp.ClientSession | None = None
        self.closed = False

    def session(self) -> aiohttp.ClientSession:
        if self.closed:  # a probe of a cycle still running must not open a session anew
            raise ClientClosedError
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._config.max_concurrency,
                ssl=self._config.verify_tls,
                resolver=self._resolver,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # A probe must measure the service, not a proxy from the daemon's environment,
                # and must not carry one probe's cookies into another.
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                # Each probe has its own deadline over connect, headers and body (see _probe);
                # aiohttp's defaults would only cut it differently.
                timeout=aiohttp.ClientTimeout(),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def close(self) -> None:
        self.closed = True
        await self.lean.aclose()
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class ApiCollector:
    name = "api"
    METRICS = ("api_up", "api_status_code", "api_response_seconds", "api_response_size_bytes")

    def __init__(
        self,
        config: ApiCollectorConfig,
        *,
        resolver: AbstractResolver | None = None,
        lean: bool = True,
    ) -> None:
        """`lean=False` sends every probe through aiohttp (a comparison, in tests and
        benchmarks/probes.py); by default plain-HTTP probes take the lean path."""
        self.interval = config.interval
        self.jitter = config.jitter
        # probes beyond max_concurrency wait for a slot, then get their own full timeout
        longest = max((ep.timeout or config.timeout) for ep in config.endpoints)
        self.run_limit = math.ceil(len(config.endpoints) / config.max_concurrency) * longest
        self._config = config
        self._resolver = resolver
        self._probes = tuple(_Probe.from_config(ep, config, lean=lean) for ep in config.endpoints)
        # aiohttp reads max_redirects=0 as "no limit"; an operator writing 0 means "follow none".
        self._follow_redirects = config.follow_redirects and config.max_redirects > 0
        self._session: _Clients | None = None

    async def collect(self) -> Batch:
        ts = time.time()
        started = time.perf_counter()
        clients = self._open_session()
        results: list[tuple[list[Sample], Failure | None]] = [([], None)] * len(self._probes)
        # At most max_concurrency probes in flight: as many workers, each taking the next probe
        # when its last one is done, so a probe's timeout starts when it gets a worker, not
        # while it queues behind slower endpoints (and no semaphore wakes a thousand waiters).
        queue = iter(enumerate(self._probes))

        async def worker() -> None:
            for index, probe in queue:
                results[index] = await self._probe(clients, probe)

        async with asyncio.TaskGroup() as group:
            for _ in range(min(self._config.max_concurrency, len(self._probes))):
                group.create_task(worker())
        samples: list[Sample] = []
        errors: list[Failure] = []
        for probe_samples, failure in results:
            samples.extend(probe_samples)
            if failure is not None:
                errors.append(failure)
        return Batch(
            collector=self.name,
            ts=ts,
            duration=time.perf_counter() - started,
            samples=tuple(samples),
            errors=tuple(errors),
        )

    async def close(self) -> None:
        clients, self._session = self._session, None
        if clients is not None:
            await clients.close()

    def _open_session(self) -> _Clients:
        if self._session is None:
            self._session = _Clients(self._config, self._resolver)
        return self._session

    async def _probe(self, clients: _Clients, probe: _Probe) -> tuple[list[Sample], Failure | None]:
        exchange = Exchange()
        try:
            async with asyncio.timeout(probe.timeout):
                status, body = await self._exchange(clients, probe, exchange)
            failure = _check(probe, status, body)
        except Exception as exc:  # noqa: BLE001 - a failed probe is data, never an exception
            if clients.closed:  # whatever the abort looked like on the wire
                kind, message = ErrorKind.OTHER, checks.CLOSED_PROBLEM
            else:
                kind, message = _classify(exc, probe, exchange, self._config.max_redirects)
            failure = Failure(probe.name, kind, checks.one_line(message))
        return _samples(probe, exchange, failure), failure

    async def _exchange(
        self, clients: _Clients, probe: _Probe, exchange: Exchange
    ) -> tuple[int, bytes]:
        started = time.perf_counter()
        request = probe.request
        if probe.lean is not None and probe.name not in clients.through_aiohttp:
            try:
                status, body = await clients.lean.exchange(
                    probe.lean, exchange, self._config.max_body, follow=self._follow_redirects
                )
            except NeedsFullClientError as exc:
                exchange.status, exchange.bytes_read = None, 0
                if isinstance(exc, RedirectError) and not probe.lean.idempotent:
                    # The server has the request: it is never sent again. aiohttp sends the
                    # request that follows the redirect, as it would have.
                    request = redirects.follow(request, exc)
                else:
                    # a redirect to follow or a compressed body: this response and the next
                    # ones are aiohttp's to handle; it sends the request afresh
                    clients.through_aiohttp.add(probe.name)
                    started = time.perf_counter()
            else:
                exchange.seconds = time.perf_counter() - started
                return status, body
        async with clients.session().request(
            request.method,
            request.url,
            headers=request.headers,
            json=request.json_body,
            data=request.body,
            allow_redirects=self._follow_redirects,
            max_redirects=request.max_redirects,
        ) as response:
            exchange.status = response.status
            body = await _read_capped(response, self._config.max_body, exchange)
            exchange.seconds = time.perf_counter() - started
        return response.status, body


async def _read_capped(response: aiohttp.ClientResponse, limit: int, exchange: Exchange) -> bytes:
    """The body, or BodyTooLargeError as soon as it passes `limit` (buffering one chunk more)."""
    if response.method == "HEAD":
        return b""
    declared = response.content_length
    if declared is not None and declared > limit:
        response.close()
        raise BodyTooLargeError(checks.declared_too_large(declared, limit))
    body = bytearray()
    async for chunk in response.content.iter_chunked(READ_CHUNK):
        body += chunk
        exchange.bytes_read = len(body)
        if len(body) > limit:
            # Close, not release: the connection cannot be reused with the rest of the body unread.
            response.close()
            raise BodyTooLargeError(checks.read_too_large(limit, len(body)))
    return bytes(body)


def _check(probe: _Probe, status: int, body: bytes) -> Failure | None:
    """The first expectation the response misses: status first, then the body checks."""
    problem = checks.status_problem(status, probe.expect_status)
    if problem is not None:
        return Failure(probe.name, ErrorKind.STATUS, problem)
    if probe.body_regex is not None:
        problem = checks.regex_problem(body.decode("utf-8", errors="replace"), probe.body_regex)
    if problem is None and probe.expect_json:
        problem = checks.json_problem(body, probe.expect_json)
    return None if problem is None else Failure(probe.name, ErrorKind.BODY_MISMATCH, problem)


def _classify(  # noqa: PLR0911 - one return per kind reads as the table it is
    exc: Exception, probe: _Probe, exchange: Exchange, max_redirects: int
) -> tuple[ErrorKind, str]:
    """Map what went wrong to a stable kind and a one-line message with the useful detail."""
    if isinstance(exc, BodyTooLargeError):
        return ErrorKind.TOO_LARGE, str(exc)
    if isinstance(exc, TimeoutError):
        return ErrorKind.TIMEOUT, _timeout_message(probe.timeout, exchange)
    if isinstance(exc, LeanDnsError):
        return checks.dns_problem(exc.host, exc.os_error)
    if isinstance(exc, LeanConnectError):
        return checks.connect_problem(exc.host, exc.port, exc.os_error)
    if isinstance(exc, aiohttp.ClientConnectorError | ssl.SSLError):
        return checks.connect_failure(exc, checks.address(probe.url))
    if isinstance(exc, aiohttp.TooManyRedirects):
        return ErrorKind.REDIRECT, f"too many redirects (limit {max_redirects})"
    problem = _response_problem(exc, exchange)
    if problem is not None:
        return ErrorKind.OTHER, problem
    if exchange.status is None and checks.is_reset(exc):
        where = checks.address(probe.url)
        return ErrorKind.REFUSED, f"connection to {where} closed before a response"
    # aiohttp and the OS report transport trouble with these; anything else is our own bug.
    expected = isinstance(exc, aiohttp.ClientError | OSError)
    return ErrorKind.OTHER if expected else ErrorKind.INTERNAL, f"{type(exc).__name__}: {exc}"


def _response_problem(exc: Exception, exchange: Exchange) -> str | None:
    """A response cut short or malformed, in the same words from either path."""
    if isinstance(exc, MalformedResponseError):
        return checks.malformed_problem(exc.reason)
    if isinstance(exc, aiohttp.ClientResponseError) and isinstance(
        exc.__cause__, HttpProcessingError
    ):
        return checks.malformed_problem(checks.parser_reason(exc.message))
    if isinstance(exc, IncompleteResponseError):
        return checks.incomplete_problem(exchange.bytes_read)
    if isinstance(exc, aiohttp.ClientPayloadError):
        cause = exc.__cause__
        if isinstance(cause, ContentLengthError | TransferEncodingError):
            return checks.incomplete_problem(exchange.bytes_read)
        if isinstance(cause, HttpProcessingError):  # a body it cannot decode, say
            return checks.malformed_problem(checks.parser_reason(cause.message))
    return None


def _timeout_message(timeout: float, exchange: Exchange) -> str:
    if exchange.status is None:
        return f"no response within {timeout:.2f}s"
    return (
        f"body not complete within {timeout:.2f}s "
        f"(status {exchange.status}, {exchange.bytes_read} bytes read)"
    )


def _samples(probe: _Probe, exchange: Exchange, failure: Failure | None) -> list[Sample]:
    labels = make_labels(endpoint=probe.name)
    samples = [Sample("api_up", 0.0 if failure else 1.0, labels)]
    if exchange.status is not None:
        samples.append(Sample("api_status_code", float(exchange.status), labels))
    if exchange.seconds is not None:
        samples.append(Sample("api_response_seconds", exchange.seconds, labels))
        samples.append(Sample("api_response_size_bytes", float(exchange.bytes_read), labels))
    return samples
