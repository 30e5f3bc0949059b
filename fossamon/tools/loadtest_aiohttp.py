"""`--engine aiohttp`: the same workers over one pooled aiohttp `ClientSession` per process.

The session is set up as the api collector's is (no cookies, no proxies from the
environment, no automatic decompression), with a connection pool as large as the process's
worker pool, so every worker keeps a connection alive. Redirects are not followed, as in the
lean engine: a load test measures the URL it was given. Failures are named by the api
collector's own rules (`fossamon.collectors._http_checks`).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import aiohttp
from yarl import URL

from fossamon import __version__
from fossamon.collectors import _http_checks as checks
from fossamon.model import ErrorKind

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fossamon.tools.loadtest_plan import Endpoint


class AiohttpClient:
    def __init__(
        self, endpoints: Sequence[Endpoint], *, workers: int, verify_tls: bool = True
    ) -> None:
        self._endpoints = tuple(endpoints)
        self._urls = tuple(URL(ep.url) for ep in endpoints)
        self._headers = tuple(dict(ep.headers) for ep in endpoints)
        self._timeouts = tuple(aiohttp.ClientTimeout(total=ep.timeout) for ep in endpoints)
        self._workers = workers
        self._verify_tls = verify_tls
        self._session: aiohttp.ClientSession | None = None

    def worker(self) -> AiohttpWorker:
        return AiohttpWorker(self)

    def session(self) -> aiohttp.ClientSession:
        """Created on first use: aiohttp binds a session to the running loop."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._workers, limit_per_host=0, ssl=self._verify_tls
                ),
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(),
                headers={"User-Agent": f"fossamon/{__version__}"},
            )
        return self._session

    async def exchange(self, endpoint: int) -> tuple[int, int]:
        session = self._session or self.session()
        ep = self._endpoints[endpoint]
        async with session.request(
            ep.method,
            self._urls[endpoint],
            headers=self._headers[endpoint],
            data=ep.body,
            allow_redirects=False,
            timeout=self._timeouts[endpoint],
        ) as response:
            body = await response.read()
            return response.status, len(body)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def classify(self, exc: Exception, endpoint: int) -> tuple[ErrorKind, str]:
        ep = self._endpoints[endpoint]
        where = checks.address(ep.url)
        if isinstance(exc, TimeoutError):
            return ErrorKind.TIMEOUT, f"no complete response from {where} within {ep.timeout:g}s"
        if isinstance(exc, aiohttp.ClientConnectorError | ssl.SSLError):
            return checks.connect_failure(exc, where)
        if checks.is_reset(exc):
            return ErrorKind.REFUSED, f"connection to {where} closed before a response"
        expected = isinstance(exc, aiohttp.ClientError | OSError)
        kind = ErrorKind.OTHER if expected else ErrorKind.INTERNAL
        return kind, f"{where}: {type(exc).__name__}: {exc}"


class AiohttpWorker:
    """Workers share the client's session; its connector keeps one connection per worker."""

    def __init__(self, client: AiohttpClient) -> None:
        self._client = client

    async def exchange(self, endpoint: int) -> tuple[int, int]:
        return await self._client.exchange(endpoint)

    def close(self) -> None:
        """Nothing of its own to close: the session is the client's."""
