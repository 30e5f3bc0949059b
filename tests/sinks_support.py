"""Helpers for the sink tests: events, a recording outbox, a real loopback HTTP receiver."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fossamon.model import AlertEvent, EventKind, Severity, fingerprint, make_labels

T0 = 1_800_000_000.0


def event(
    kind: EventKind = EventKind.FIRING,
    severity: Severity = Severity.WARNING,
    *,
    rule: str = "api_latency",
    labels: dict[str, str] | None = None,
    previous: Severity = Severity.OK,
    ts: float = T0,
    since: float | None = None,
    value: float | None = 1.5,
    threshold: float | None = 1.0,
    silenced_by: str | None = None,
    summary: str = "p95 latency 1.5s above 1s",
) -> AlertEvent:
    pairs = make_labels(labels if labels is not None else {"endpoint": "health"})
    return AlertEvent(
        ts=ts,
        kind=kind,
        rule=rule,
        severity=severity,
        labels=pairs,
        value=value,
        threshold=threshold,
        since=ts if since is None else since,
        summary=summary,
        metric="api_response_seconds",
        aggregate="p95",
        window=60.0,
        fingerprint=fingerprint(rule, pairs),
        previous=previous,
        silenced_by=silenced_by,
    )


@dataclass
class RecordingOutbox:
    """The state store's Outbox side, recording what the workers report."""

    delivered_ids: list[int] = field(default_factory=list)
    dropped_ids: list[int] = field(default_factory=list)

    def delivered(self, ids: Any) -> None:
        self.delivered_ids.extend(ids)

    def dropped(self, ids: Any) -> None:
        self.dropped_ids.extend(ids)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: Any
    at: float  # time.monotonic() on arrival


class Receiver:
    """A real aiohttp server on 127.0.0.1 and a free port.

    - `/ok/...`: records and answers 200;
    - `/fail/{n}/...`: answers 500 to the first n requests on that path, then 200 (recorded);
    - `/hang/...`: records, then never answers (until the receiver stops);
    - `/status/{code}/...`: answers with that status.
    """

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.arrived = asyncio.Event()
        self._release = asyncio.Event()
        self._counts: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def on(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, count: int, timeout: float = 5.0, path: str | None = None) -> None:
        """Until `count` requests (on `path`, if given) arrived; bounded by `timeout`."""
        async with asyncio.timeout(timeout):
            while len(self.on(path) if path else self.requests) < count:
                self.arrived.clear()
                await self.arrived.wait()

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        self.requests.append(Request(request.path, dict(request.headers), body, time.monotonic()))
        self.arrived.set()
        parts = request.path.strip("/").split("/")
        if parts[0] == "hang":
            await self._release.wait()
            return web.Response(status=503)
        if parts[0] == "fail":
            seen = self._counts.get(request.path, 0)
            self._counts[request.path] = seen + 1
            if seen < int(parts[1]):
                return web.Response(status=500, text="try again later")
        if parts[0] == "status":
            return web.Response(status=int(parts[1]), text=f"status {parts[1]}")
        return web.Response(status=200, text="ok")
