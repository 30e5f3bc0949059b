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

import base64
import hmac
import time
from typing import TYPE_CHECKING

import orjson
import structlog
from aiohttp import web

from fossamon.redact import redact, redact_json_line
from fossamon.web.metrics import build_registry, exposition
from fossamon.web.page import render_page, sparklines
from fossamon.web.status import status_document

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from prometheus_client import CollectorRegistry

    from fossamon.config import ExporterConfig
    from fossamon.daemon import Daemon

log = structlog.get_logger(__name__)

SPARKLINE_TTL = 10.0


class WebServer:
    def __init__(self, daemon: Daemon, config: ExporterConfig) -> None:
        self.daemon = daemon
        self.config = config
        self.registry: CollectorRegistry = build_registry(daemon)
        self.scrapes = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._drawn: tuple[float, dict[str, list[tuple[float, float]]]] | None = None

    @property
    def address(self) -> str:
        return self.config.listen if self._site is not None else ""

    async def start(self) -> None:
        """Bind and serve; OSError (the port is taken, the address is not ours) names it."""
        if not self.config.listen:
            return
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(
                exc.errno, f"cannot listen on {self.config.listen}: {exc.strerror}"
            ) from None
        self._runner, self._site = runner, site
        log.info("exporter listening", url=f"http://{self.config.listen}/")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = self._site = None

    async def reconfigure(self, config: ExporterConfig) -> None:
        """A reload: same address, new credentials apply at once; a new address is bound
        before the old one is let go, so a failed bind (OSError) leaves the old one serving."""
        if config.listen == self.config.listen:
            self.config = config
            return
        successor = WebServer(self.daemon, config)
        successor.registry = self.registry
        await successor.start()
        await self.stop()
        self.config, self._runner, self._site = config, successor._runner, successor._site

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
        config = self.config
        if config.bearer_token is not None:
            expected = f"Bearer {config.bearer_token}"
        else:
            pair = f"{config.basic_auth_user}:{config.basic_auth_password}".encode()
            expected = "Basic " + base64.b64encode(pair).decode()
        return hmac.compare_digest(header.encode(), expected.encode())

    async def _metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        body, content_type = exposition(self.registry, request.headers.get("Accept"))
        return web.Response(
            body=redact(body.decode()).encode(), headers={"Content-Type": content_type}
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        del request
        health = self.daemon.health
        if health.ok:
            return web.Response(text="ok\n")
        return web.Response(status=503, text=f"unhealthy: {health}\n")

    async def _status(self, request: web.Request) -> web.Response:
        del request
        text = orjson.dumps(status_document(self.daemon)).decode()
        return web.Response(text=redact_json_line(text) + "\n", content_type="application/json")

    async def _page(self, request: web.Request) -> web.Response:
        del request
        now = time.time()
        document = status_document(self.daemon, now)
        html = render_page(document, self._sparklines(now))
        return web.Response(text=redact(html), content_type="text/html", charset="utf-8")
