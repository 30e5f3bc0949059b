"""The exporter: one small HTTP server inside the daemon, on the daemon's own event loop.

    GET /metrics   Prometheus text, or OpenMetrics when the scraper asks (prometheus_client)
    GET /healthz   200 "ok", or 503 with the reasons: the policy that gates the watchdog
    GET /status    the daemon's state as JSON (fossamon.web.status)
    GET /          a small status page (fossamon.web.page)

Bound to loopback by default. For a wider bind, `[exporter] bearer_token` or basic auth
protects every path (compared in constant time); a non-loopback bind without either is a
config error unless `allow_unauthenticated = true` (and `fossamon check` warns loudly about
it then). Every body goes through fossamon.redact before it leaves.
HTTP itself (parsing, keep-alive, limits) is fossamon.web.protocol's.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hmac
import time
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from fossamon.redact import redact, redact_json_line
from fossamon.web.metrics import Snapshot, build_registry, exposition
from fossamon.web.page import render_page, sparklines
from fossamon.web.protocol import Connection, Reply, Request
from fossamon.web.status import status_document

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from prometheus_client import CollectorRegistry

    from fossamon.config import ExporterConfig
    from fossamon.daemon import Daemon

log = structlog.get_logger(__name__)

SPARKLINE_TTL = 10.0
STATUS_TTL = 1.0
ALLOW = (("Allow", "GET, HEAD"),)


class WebServer:
    def __init__(self, daemon: Daemon, config: ExporterConfig) -> None:
        self.daemon = daemon
        self.config = config
        self.registry: CollectorRegistry = build_registry(daemon)
        self.scrapes = 0
        self._site: asyncio.Server | None = None  # the listening socket
        self._connections: set[Connection] = set()
        self._routes: dict[str, Callable[[Request], Awaitable[Reply]]] = {
            "/metrics": self._metrics,
            "/healthz": self._healthz,
            "/status": self._status,
            "/": self._page,
        }
        self._drawn: tuple[float, dict[str, list[tuple[float, float]]]] | None = None
        self._status_doc: tuple[float, dict[str, Any]] | None = None

    @property
    def address(self) -> str:
        return self.config.listen if self._site is not None else ""

    async def start(self) -> None:
        """Bind and serve; OSError (the port is taken, the address is not ours) names it."""
        if not self.config.listen:
            return
        self._site = await self._bind(self.config)
        log.info("exporter listening", url=f"http://{self.config.listen}/")

    async def stop(self) -> None:
        """Stop listening and close every connection (a reply being built is dropped)."""
        if self._site is not None:
            self._site.close()
            self._site = None
        for connection in list(self._connections):
            connection.close()
        await asyncio.sleep(0)  # let the transports' close callbacks run

    async def reconfigure(self, config: ExporterConfig) -> None:
        """A reload. The one app (its handlers read `self.config`) stays; only the listening
        socket moves. New credentials apply at once. A new address is bound before the old
        one is let go, so a failed bind (OSError) leaves the old one serving, except for the
        same port on another address of this host, which Linux refuses while the old socket
        listens: then the old one goes first and comes back if the new one fails."""
        if config.listen == self.config.listen:
            self.config = config
            return
        if not config.listen:
            await self.stop()
            self.config = config
            return
        old = self._site
        try:
            site = await self._bind(config)
        except OSError as exc:
            if old is None or exc.errno != errno.EADDRINUSE:
                raise
            old.close()
            old = self._site = None
            try:
                site = await self._bind(config)
            except OSError:
                await self._rebind_or_log(self.config)
                raise
        if old is not None:
            old.close()  # connections made through it stay until their client is done
        self._site, self.config = site, config
        log.info("exporter listening", url=f"http://{config.listen}/")

    async def _rebind_or_log(self, config: ExporterConfig) -> None:
        try:
            self._site = await self._bind(config)
        except OSError as exc:
            log.error("the exporter could not go back to its address", error=str(exc))

    async def _bind(self, config: ExporterConfig) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        try:
            return await loop.create_server(
                lambda: Connection(self._respond, self._connections),
                config.host,
                config.port,
                reuse_address=True,
            )
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {config.listen}: {exc.strerror}") from None

    def _document(self, now: float) -> dict[str, Any]:
        """/status, built at most once per STATUS_TTL: with a thousand alerts open it takes
        a few hundred ms of the loop, which a refreshing page or a script polling in a loop
        must not multiply."""
        if self._status_doc is None or not 0 <= now - self._status_doc[0] < STATUS_TTL:
            self._status_doc = (now, status_document(self.daemon, now))
        return self._status_doc[1]

    def _sparklines(self, now: float) -> dict[str, list[tuple[float, float]]]:
        """An hour of 500 ms readings takes tens of ms to draw: at most once per
        SPARKLINE_TTL, however many people (each page reloads every 10 s) are watching."""
        if self._drawn is None or not 0 <= now - self._drawn[0] < SPARKLINE_TTL:
            self._drawn = (now, sparklines(self.daemon.live, now))
        return self._drawn[1]

    async def _respond(self, request: Request) -> Reply:
        if self.config.has_auth and not self._allowed(request.headers.get("authorization", "")):
            scheme = "Bearer" if self.config.bearer_token is not None else 'Basic realm="fossamon"'
            return Reply(401, b"unauthorised\n", headers=(("WWW-Authenticate", scheme),))
        route = self._routes.get(request.path)
        if route is None:
            return Reply(404, b"not found\n")
        if request.method not in {"GET", "HEAD"}:
            return Reply(405, b"method not allowed\n", headers=ALLOW)
        return await route(request)

    def _allowed(self, header: str) -> bool:
        """The credential, compared in constant time; the scheme case-insensitively (RFC 7235).
        A header that is not UTF-8 is simply wrong, not a server error."""
        config = self.config
        scheme, _, given = header.partition(" ")
        if config.bearer_token is not None:
            wanted_scheme, expected = "bearer", config.bearer_token
        else:
            pair = f"{config.basic_auth_user}:{config.basic_auth_password}".encode()
            wanted_scheme, expected = "basic", base64.b64encode(pair).decode()
        try:
            given_bytes = given.strip().encode("utf-8")
        except UnicodeError:
            return False
        matches = hmac.compare_digest(given_bytes, expected.encode("utf-8"))
        return matches and scheme.lower() == wanted_scheme

    async def _metrics(self, request: Request) -> Reply:
        self.scrapes += 1
        # Not redacted as text: every name and label value on /metrics comes from the
        # config's names or fossamon's code (no message a service sent), and masking a secret
        # inside the text would corrupt numbers and break the whole scrape.
        snapshot = Snapshot(list(self.registry.collect()))  # reads the daemon: on the loop
        accept = request.headers.get("accept")
        body, content_type = await asyncio.to_thread(exposition, snapshot, accept)
        return Reply(200, body, content_type)

    async def _healthz(self, request: Request) -> Reply:
        del request
        health = self.daemon.health
        if health.ok:
            return Reply(200, b"ok\n")
        return Reply(503, f"unhealthy: {health}\n".encode())

    async def _status(self, request: Request) -> Reply:
        del request
        text = orjson.dumps(self._document(time.time())).decode()
        return Reply(200, (redact_json_line(text) + "\n").encode(), "application/json")

    async def _page(self, request: Request) -> Reply:
        del request
        now = time.time()
        html = render_page(self._document(now), self._sparklines(now))
        return Reply(200, redact(html).encode(), "text/html; charset=utf-8")
