"""The exporter: one aiohttp server inside the daemon, on the daemon's own event loop.

    GET /metrics   Prometheus text, or OpenMetrics when the scraper asks (prometheus_client)
    GET /healthz   200 "ok", or 503 with the reasons: the policy that gates the watchdog
    GET /status    the daemon's state as JSON (fossamon.web.status)
    GET /          a small status page (fossamon.web.page)

Bound to loopback by default. For a wider bind, `[exporter] bearer_token` or basic auth
protects every path (compared in constant time); `fossamon check` warns loudly about a
non-loopback bind without either. Every body goes through fossamon.redact before it leaves.
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
from aiohttp import web

from fossamon.redact import redact, redact_json_line
from fossamon.web.metrics import Snapshot, build_registry, exposition
from fossamon.web.page import render_page, sparklines
from fossamon.web.status import status_document

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from prometheus_client import CollectorRegistry

    from fossamon.config import ExporterConfig
    from fossamon.daemon import Daemon

log = structlog.get_logger(__name__)

SPARKLINE_TTL = 10.0
STATUS_TTL = 1.0


class WebServer:
    def __init__(self, daemon: Daemon, config: ExporterConfig) -> None:
        self.daemon = daemon
        self.config = config
        self.registry: CollectorRegistry = build_registry(daemon)
        self.scrapes = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._drawn: tuple[float, dict[str, list[tuple[float, float]]]] | None = None
        self._status_doc: tuple[float, dict[str, Any]] | None = None

    @property
    def address(self) -> str:
        return self.config.listen if self._site is not None else ""

    async def start(self) -> None:
        """Bind and serve; OSError (the port is taken, the address is not ours) names it."""
        if not self.config.listen:
            return
        await self._ensure_runner()
        try:
            self._site = await self._bind(self.config)
        except OSError:
            await self.stop()
            raise
        log.info("exporter listening", url=f"http://{self.config.listen}/")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = self._site = None

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
        await self._ensure_runner()
        old = self._site
        try:
            site = await self._bind(config)
        except OSError as exc:
            if old is None or exc.errno != errno.EADDRINUSE:
                raise
            await old.stop()
            old = self._site = None
            try:
                site = await self._bind(config)
            except OSError:
                await self._rebind_or_log(self.config)
                raise
        if old is not None:
            await old.stop()
        self._site, self.config = site, config
        log.info("exporter listening", url=f"http://{config.listen}/")

    async def _rebind_or_log(self, config: ExporterConfig) -> None:
        try:
            self._site = await self._bind(config)
        except OSError as exc:
            log.error("the exporter could not go back to its address", error=str(exc))

    async def _ensure_runner(self) -> None:
        if self._runner is None:
            runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
            await runner.setup()
            self._runner = runner

    async def _bind(self, config: ExporterConfig) -> web.TCPSite:
        assert self._runner is not None
        site = web.TCPSite(self._runner, config.host, config.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {config.listen}: {exc.strerror}") from None
        return site

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

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._authorise])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/status", self._status)
        app.router.add_get("/", self._page)
        return app

    @web.middleware
    async def _authorise(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if not self.config.has_auth or self._allowed(request.headers.get("Authorization", "")):
            return await handler(request)
        scheme = "Bearer" if self.config.bearer_token is not None else 'Basic realm="fossamon"'
        return web.Response(status=401, text="unauthorised\n", headers={"WWW-Authenticate": scheme})

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

    async def _metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        # Not redacted as text: every name and label value on /metrics comes from the
        # config's names or fossamon's code (no message a service sent), and masking a secret
        # inside the text would corrupt numbers and break the whole scrape.
        snapshot = Snapshot(list(self.registry.collect()))  # reads the daemon: on the loop
        accept = request.headers.get("Accept")
        body, content_type = await asyncio.to_thread(exposition, snapshot, accept)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _healthz(self, request: web.Request) -> web.Response:
        del request
        health = self.daemon.health
        if health.ok:
            return web.Response(text="ok\n")
        return web.Response(status=503, text=f"unhealthy: {health}\n")

    async def _status(self, request: web.Request) -> web.Response:
        del request
        text = orjson.dumps(self._document(time.time())).decode()
        return web.Response(text=redact_json_line(text) + "\n", content_type="application/json")

    async def _page(self, request: web.Request) -> web.Response:
        del request
        now = time.time()
        html = render_page(self._document(now), self._sparklines(now))
        return web.Response(text=redact(html), content_type="text/html", charset="utf-8")
