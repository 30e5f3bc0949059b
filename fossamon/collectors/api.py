r"""The `api` collector: probes HTTP endpoints, all at once, over one pooled session.

Each cycle sends every configured request concurrently and records, per endpoint:

- `api_up{endpoint}`: 1 when the whole check passed (expected status and body checks), else 0;
- `api_status_code{endpoint}`: whenever response headers arrived;
- `api_response_seconds{endpoint}` and `api_response_size_bytes{endpoint}`: when the body was
  read in full. A refused connection or a timeout has no meaningful latency, so none is made up.

A failed check is one `Failure` with a stable kind: refused, timeout, dns, tls, status,
body_mismatch, too_large, other, or internal (a bug, confined to its endpoint). The timeout bounds
the whole probe (connect, headers and body), so a server trickling a byte a second times out too.
Bodies are read in chunks and abandoned past `max_body`, never buffered whole.

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

from fossamon import __version__
from fossamon.collectors import _http_checks as checks
from fossamon.model import Batch, ErrorKind, Failure, Sample, make_labels
from fossamon.units import format_bytes

if TYPE_CHECKING:
    from aiohttp.abc import AbstractResolver

    from fossamon.config import ApiCollectorConfig, EndpointConfig

READ_CHUNK = 64 * 1024


class _BodyTooLargeError(Exception):
    """The body passed max_body; raised so the read stops instead of buffering the rest."""


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

    @classmethod
    def from_config(cls, endpoint: EndpointConfig, api: ApiCollectorConfig) -> _Probe:
        return cls(
            name=endpoint.name,
            method=endpoint.method,
            url=endpoint.url or api.base_url.rstrip("/") + (endpoint.path or ""),
            headers=checks.merge_headers(api.headers, endpoint.headers),
            json_body=endpoint.json_body,
            body=None if endpoint.body is None else endpoint.body.encode(),
            timeout=endpoint.timeout or api.timeout,
            expect_status=tuple(endpoint.expect_status),
            body_regex=None if endpoint.body_regex is None else re.compile(endpoint.body_regex),
            expect_json=dict(endpoint.expect_json),
        )


@dataclass(slots=True)
class _Exchange:
    """What a probe observed before it ended; decides which samples it can honestly report."""

    status: int | None = None
    bytes_read: int = 0
    seconds: float | None = None  # set only once the body was read in full


class ApiCollector:
    name = "api"
    METRICS = ("api_up", "api_status_code", "api_response_seconds", "api_response_size_bytes")

    def __init__(
        self, config: ApiCollectorConfig, *, resolver: AbstractResolver | None = None
    ) -> None:
        self.interval = config.interval
        self.jitter = config.jitter
        # probes beyond max_concurrency wait for a slot, then get their own full timeout
        longest = max((ep.timeout or config.timeout) for ep in config.endpoints)
        self.run_limit = math.ceil(len(config.endpoints) / config.max_concurrency) * longest
        self._config = config
        self._resolver = resolver
        self._probes = tuple(_Probe.from_config(ep, config) for ep in config.endpoints)
        # aiohttp reads max_redirects=0 as "no limit"; an operator writing 0 means "follow none".
        self._follow_redirects = config.follow_redirects and config.max_redirects > 0
        self._session: aiohttp.ClientSession | None = None

    async def collect(self) -> Batch:
        ts = time.time()
        started = time.perf_counter()
        session = self._open_session()
        # The connector's limit caps sockets; this caps probes as well, so a probe's timeout
        # starts when it gets a slot, not while it queues behind slower endpoints.
        slots = asyncio.Semaphore(self._config.max_concurrency)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._probe(session, p, slots)) for p in self._probes]
        samples: list[Sample] = []
        errors: list[Failure] = []
        for task in tasks:
            probe_samples, failure = task.result()
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
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _open_session(self) -> aiohttp.ClientSession:
        """The pooled session, created on first use: aiohttp binds it to the running loop."""
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
                headers={"User-Agent": f"fossamon/{__version__}"},
            )
        return self._session

    async def _probe(
        self, session: aiohttp.ClientSession, probe: _Probe, slots: asyncio.Semaphore
    ) -> tuple[list[Sample], Failure | None]:
        exchange = _Exchange()
        async with slots:
            try:
                async with asyncio.timeout(probe.timeout):
                    status, body = await self._exchange(session, probe, exchange)
                failure = _check(probe, status, body)
            except Exception as exc:  # noqa: BLE001 - a failed probe is data, never an exception
                kind, message = _classify(exc, probe, exchange, self._config.max_redirects)
                failure = Failure(probe.name, kind, checks.one_line(message))
        return _samples(probe, exchange, failure), failure

    async def _exchange(
        self, session: aiohttp.ClientSession, probe: _Probe, exchange: _Exchange
    ) -> tuple[int, bytes]:
        started = time.perf_counter()
        async with session.request(
            probe.method,
            probe.url,
            headers=probe.headers,
            json=probe.json_body,
            data=probe.body,
            allow_redirects=self._follow_redirects,
            max_redirects=self._config.max_redirects,
        ) as response:
            exchange.status = response.status
            body = await _read_capped(response, self._config.max_body, exchange)
            exchange.seconds = time.perf_counter() - started
        return response.status, body


async def _read_capped(response: aiohttp.ClientResponse, limit: int, exchange: _Exchange) -> bytes:
    """The body, or _BodyTooLargeError as soon as it passes `limit` (buffering one chunk more)."""
    if response.method == "HEAD":
        return b""
    declared = response.content_length
    if declared is not None and declared > limit:
        response.close()
        raise _BodyTooLargeError(
            f"body of {declared} bytes (Content-Length) exceeds max_body {format_bytes(limit)}"
        )
    body = bytearray()
    async for chunk in response.content.iter_chunked(READ_CHUNK):
        body += chunk
        exchange.bytes_read = len(body)
        if len(body) > limit:
            # Close, not release: the connection cannot be reused with the rest of the body unread.
            response.close()
            raise _BodyTooLargeError(
                f"body exceeds max_body {format_bytes(limit)} (stopped after {len(body)} bytes)"
            )
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


def _classify(
    exc: Exception, probe: _Probe, exchange: _Exchange, max_redirects: int
) -> tuple[ErrorKind, str]:
    """Map what went wrong to a stable kind and a one-line message with the useful detail."""
    if isinstance(exc, _BodyTooLargeError):
        return ErrorKind.TOO_LARGE, str(exc)
    if isinstance(exc, TimeoutError):
        return ErrorKind.TIMEOUT, _timeout_message(probe.timeout, exchange)
    if isinstance(exc, aiohttp.ClientConnectorError | ssl.SSLError):
        return checks.connect_failure(exc, checks.address(probe.url))
    if isinstance(exc, aiohttp.TooManyRedirects):
        return ErrorKind.OTHER, f"too many redirects (limit {max_redirects})"
    if exchange.status is None and checks.is_reset(exc):
        where = checks.address(probe.url)
        return ErrorKind.REFUSED, f"connection to {where} closed before a response"
    # aiohttp and the OS report transport trouble with these; anything else is our own bug.
    expected = isinstance(exc, aiohttp.ClientError | OSError)
    return ErrorKind.OTHER if expected else ErrorKind.INTERNAL, f"{type(exc).__name__}: {exc}"


def _timeout_message(timeout: float, exchange: _Exchange) -> str:
    if exchange.status is None:
        return f"no response within {timeout:.2f}s"
    return (
        f"body not complete within {timeout:.2f}s "
        f"(status {exchange.status}, {exchange.bytes_read} bytes read)"
    )


def _samples(probe: _Probe, exchange: _Exchange, failure: Failure | None) -> list[Sample]:
    labels = make_labels(endpoint=probe.name)
    samples = [Sample("api_up", 0.0 if failure else 1.0, labels)]
    if exchange.status is not None:
        samples.append(Sample("api_status_code", float(exchange.status), labels))
    if exchange.seconds is not None:
        samples.append(Sample("api_response_seconds", exchange.seconds, labels))
        samples.append(Sample("api_response_size_bytes", float(exchange.bytes_read), labels))
    return samples
