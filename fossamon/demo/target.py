"""A stand-in for the FossaWork V2 API on loopback, backed by a seeded demo database.

    async with DemoTarget(ensure_demo_database(Path("demo.db"))) as target:
        target.faults.set("/api/work-orders", latency=0.3)
        ...  # point a monitor at target.url; target.stats counts what it asked for

Standalone: `python -m fossamon.demo --db demo.db --port 8000`, then inject faults with
`curl -X POST localhost:8000/_demo/faults -d '{"path": "/api/health", "status": 503}'`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import socket
import sqlite3
import struct
import sys
from collections import Counter
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Self

from aiohttp import ClientConnectionResetError, web

from fossamon.demo._db import ReadOnlyDatabase
from fossamon.demo.api import FossaWorkApi, fastapi_errors
from fossamon.demo.faults import Faults
from fossamon.demo.seed import NotADemoDatabaseError, append_work_order, ensure_demo_database

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

    from aiohttp.typedefs import Handler, Middleware

DEFAULT_TOKEN = "probe"  # noqa: S105 - the demo's published probe token, not a secret
CONTROL_PREFIX = "/_demo/"
HUGE_BODY_BYTES = 100 * 2**20  # the "100 MB body" of issue 9's fault matrix
HUGE_BODY_CHUNK = 2**16
TRICKLE_BYTES = 3_600  # an hour at one byte a second, unless the client or the target stops
# Requests still running when stop() begins get this long before they are cancelled. Hung and
# delayed requests do not count against it: stop() wakes them first.
_SHUTDOWN_GRACE = 0.5
_log = logging.getLogger(__name__)


class DemoTarget:
    """The app, its faults and its counters; `start()` serves it, `stop()` ends every request."""

    def __init__(
        self,
        db_path: Path,
        *,
        token: str = DEFAULT_TOKEN,
        fault_seed: int = 0,
        pool_size: int = 4,
        live_interval: float | None = None,
    ) -> None:
        if live_interval is not None and not live_interval > 0:
            raise ValueError(f"live_interval must be > 0 seconds, got {live_interval}")
        self.db_path = Path(db_path)
        self.faults = Faults(fault_seed)
        self.stats: Counter[str] = Counter()  # requests per path, control API excluded
        self._token = token
        self._pool_size = pool_size
        self._live_interval = live_interval
        self._runner: web.AppRunner | None = None
        self._db: ReadOnlyDatabase | None = None
        self._live_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("DemoTarget is not started")
        return self._url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on `host`:`port` (0 picks a free port; read it back from `url`)."""
        if self._runner is not None:
            raise RuntimeError("DemoTarget is already started")
        self._stopping = asyncio.Event()
        db = ReadOnlyDatabase(self.db_path, size=self._pool_size)
        app = web.Application(middlewares=[self._fault_middleware(), fastapi_errors])
        app.add_routes(FossaWorkApi(db, token=self._token).routes())
        app.add_routes(self._control_routes())
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_GRACE)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            await db.close()
            raise
        bound_host, bound_port = runner.addresses[0][:2]
        self._url = f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}"
        self._runner, self._db = runner, db
        if self._live_interval is not None:
            self._live_task = asyncio.create_task(self._write_live(self._live_interval))

    async def stop(self) -> None:
        """Stop serving. Hung and delayed requests are answered 503 at once; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping.set()
        live, self._live_task = self._live_task, None
        try:
            await runner.cleanup()
        finally:
            # The writer sees `_stopping` and ends after its current insert (milliseconds);
            # not cancelled, so no insert is left running in a thread after stop() returns.
            try:
                if live is not None:
                    await live
            finally:
                if self._db is not None:
                    await self._db.close()
                self._db, self._url = None, None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _fault_middleware(self) -> Middleware:
        @web.middleware
        async def apply_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path.startswith(CONTROL_PREFIX):
                return await handler(request)
            self.stats[request.path] += 1
            decision = self.faults.decide(request.path)
            if decision.latency and await self._stops_within(decision.latency):
                return _stopping_response()
            if decision.hang:
                await self._stopping.wait()
                return _stopping_response()
            if decision.status is not None:
                phrase = _phrase(decision.status)
                return web.json_response(
                    {"detail": phrase, "injected": True}, status=decision.status
                )
            if decision.body is not None:
                return await self._broken_body(request, decision.body)
            return await handler(request)

        return apply_faults

    async def _broken_body(self, request: web.Request, kind: str) -> web.StreamResponse:
        """What a broken server sends instead of the answer (faults.BODY_FAULTS)."""
        if kind == "invalid_json":
            return web.Response(
                body=b'{"status": "healthy", "database": "conn', content_type="application/json"
            )
        if kind == "redirect_loop":
            raise web.HTTPFound(location=request.path_qs)
        if kind == "reset":
            _reset(request)
            return web.Response(status=HTTPStatus.NO_CONTENT)  # never sent: the socket is gone
        trickle = kind == "trickle"
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = TRICKLE_BYTES if trickle else HUGE_BODY_BYTES
        await response.prepare(request)
        try:
            if trickle:  # one byte a second until the whole body is out or the target stops
                for _ in range(TRICKLE_BYTES):
                    await response.write(b" ")
                    if await self._stops_within(1.0):
                        break
            else:
                chunk = b" " * HUGE_BODY_CHUNK
                for _ in range(HUGE_BODY_BYTES // HUGE_BODY_CHUNK):
                    await response.write(chunk)
        except (ConnectionError, ClientConnectionResetError):
            # The client gave up, as a monitor with a body cap or a timeout should (aiohttp
            # says so with a reset, or with a bare ConnectionError while it drains).
            pass
        return response

    async def _stops_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def _control_routes(self) -> list[web.RouteDef]:
        return [
            web.get(f"{CONTROL_PREFIX}faults", self._list_faults),
            web.post(f"{CONTROL_PREFIX}faults", self._set_fault),
            web.delete(f"{CONTROL_PREFIX}faults", self._clear_faults),
            web.get(f"{CONTROL_PREFIX}stats", self._show_stats),
        ]

    async def _list_faults(self, _request: web.Request) -> web.Response:
        return web.json_response({"rules": [rule.to_json() for rule in self.faults.rules]})

    async def _set_fault(self, request: web.Request) -> web.Response:
        try:
            rule = self.faults.set_from_json(await request.json())
        except (
            TypeError,
            ValueError,
        ) as exc:  # not JSON (JSONDecodeError is a ValueError) or bad field
            return web.json_response({"detail": str(exc)}, status=400)
        rules = [r.to_json() for r in self.faults.rules]
        return web.json_response({"rule": rule.to_json(), "rules": rules})

    async def _clear_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"cleared": self.faults.clear(request.query.get("path"))})

    async def _show_stats(self, _request: web.Request) -> web.Response:
        return web.json_response({"requests": dict(sorted(self.stats.items()))})

    async def _write_live(self, interval: float) -> None:
        rng = random.Random()  # noqa: S311 - demo rows, nothing secret
        while not await self._stops_within(interval):
            try:
                await asyncio.to_thread(append_work_order, self.db_path, rng)
            except sqlite3.Error as exc:
                # A busy or missing database is the monitor's business to see, not a reason to
                # stop the target; the next tick tries again.
                _log.warning("live writer: could not add a work order to %s: %s", self.db_path, exc)


def _reset(request: web.Request) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0), as a crashing server does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _stopping_response() -> web.Response:
    return web.json_response(
        {"detail": "Target stopping"}, status=503, headers={"Connection": "close"}
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Injected fault"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fossamon.demo",
        description="Serve a stand-in for the FossaWork V2 API, backed by a seeded SQLite file.",
    )
    parser.add_argument("--db", type=Path, default=Path("fossawork_demo.db"))
    parser.add_argument("--host", default="127.0.0.1", help="default: loopback only")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="accepted bearer token")
    parser.add_argument("--work-orders", type=int, default=100_000)
    parser.add_argument("--dispensers", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--wal", action="store_true", help="build the database in WAL mode")
    parser.add_argument(
        "--live", type=float, metavar="SECONDS", help="add a work order every SECONDS"
    )
    args = parser.parse_args(argv)
    sys.stdout.write(f"Preparing {args.db} (building takes a few seconds the first time)\n")
    sys.stdout.flush()
    try:
        ensure_demo_database(
            args.db,
            work_orders=args.work_orders,
            dispensers=args.dispensers,
            customers=args.customers,
            seed=args.seed,
            wal=args.wal,
        )
    except (NotADemoDatabaseError, ValueError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    target = DemoTarget(args.db, token=args.token, live_interval=args.live)
    try:
        await target.start(args.host, args.port)
    except OSError as exc:
        sys.stderr.write(f"error: cannot listen on {args.host}:{args.port}: {exc}\n")
        return 1
    try:
        example = '{"path": "/api/work-orders", "latency": 0.8}'
        sys.stdout.write(
            f"FossaWork demo target on {target.url} (Ctrl-C stops it)\n"
            f"  curl {target.url}/api/health\n"
            f"  curl -X POST {target.url}/_demo/faults -d '{example}'\n"
            f"  curl -X DELETE {target.url}/_demo/faults\n"
        )
        sys.stdout.flush()
        await stop.wait()
    finally:
        await target.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
