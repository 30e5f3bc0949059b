"""Fault matrix, sink rows: a real `fossamon run` whose one sink is broken while alerts fire
and resolve. Each row: collection and the alerts file go on at their cadence (a sink delays
nothing but itself), the failures are retried and logged, and once the receiver works again
it gets every event, in order, without a restart; nothing is lost from the daemon's files."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from daemon_harness import start_daemon
from faults_support import INTERVAL, alert_events, assert_cadence_kept, assert_nothing_lost
from support import daemon_head

if TYPE_CHECKING:
    from pathlib import Path

SINK_TUNING = 'timeout = "300ms"\nretries = 1\nbackoff = "50ms"\nbackoff_max = "1s"\n'


class Switchable:
    """A small HTTP server whose behaviour the test switches: the service the api collector
    watches (/health: 200 or 500) and the receiver of the sink (ok, hang, 500, slow)."""

    def __init__(self) -> None:
        self.healthy = True
        self.mode = "ok"
        self.received: list[Any] = []  # bodies answered 200, in arrival order
        self.attempts = 0
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_route("POST", "/{tail:.*}", self._receive)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, _: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy else 500)

    async def _receive(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.json()
        if self.mode == "hang":
            await self._release.wait()
            return web.Response(status=503)
        if self.mode == "500":
            return web.Response(status=500, text="down for maintenance")
        if self.mode == "slow":
            await asyncio.sleep(0.2)  # under the sink's 300 ms timeout: slow, not failing
        self.received.append(body)
        return web.json_response({})

    def end_fault(self) -> None:
        self.mode = "ok"
        self._release.set()


@pytest.fixture
async def server():
    running = Switchable()
    await running.start()
    yield running
    await running.stop()


def write_config(tmp_path: Path, server: Switchable, sink: str) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        daemon_head(tmp_path)
        + f'[collectors.system]\ninterval = "{INTERVAL}s"\n'
        + f'[collectors.api]\ninterval = "{INTERVAL}s"\ntimeout = "300ms"\n'
        + f'[[collectors.api.endpoints]]\nname = "svc"\nurl = "http://127.0.0.1:{server.port}/health"\n'
        + '[[rules]]\nname = "api_down"\nmetric = "api_up"\ndirection = "below"\ncritical = 1\n'
        + sink
    )
    return config


async def flap(daemon, server: Switchable, times: int = 2) -> list[tuple[str, str]]:
    """The service goes down and comes back `times` times: firing, resolved, ... Returns the
    alerts file's events (event, ts) for api_down."""
    for n in range(times):
        server.healthy = False
        await daemon.wait_for(
            lambda n=n: alert_events(daemon, "api_down").count("firing") > n, what="firing"
        )
        server.healthy = True
        await daemon.wait_for(
            lambda n=n: alert_events(daemon, "api_down").count("resolved") > n, what="resolved"
        )
    return [(a["event"], a["ts"]) for a in daemon.lines(daemon.alerts) if a["rule"] == "api_down"]


async def run_row(tmp_path, server: Switchable, notify, sink: str, delivered) -> bytes:
    """The common story; `delivered()` returns what the receiver got as (event, ts) pairs."""
    config = write_config(tmp_path, server, sink)
    daemon = await start_daemon(config, tmp_path, {"NOTIFY_SOCKET": str(notify.path)})
    await daemon.wait_for(lambda: len(daemon.lines()) >= 2, what="the first runs")
    recorded = await flap(daemon, server)
    assert len(recorded) == 4
    server.end_fault()
    await daemon.wait_for(lambda: delivered() == recorded, timeout=20, what="every event sent")
    rc, _ = await daemon.stop()
    assert rc == 0, daemon.stderr.decode()[-2000:]
    assert b"Traceback" not in daemon.stderr
    assert_cadence_kept(daemon, "system")
    assert_cadence_kept(daemon, "api")
    assert_nothing_lost(daemon)
    return daemon.stderr


def webhook_sink(server: Switchable) -> str:
    return (
        f'[[sinks]]\ntype = "webhook"\nurl = "http://127.0.0.1:{server.port}/hook"\n' + SINK_TUNING
    )


@pytest.mark.parametrize("mode", ["hang", "500", "slow"])
async def test_webhook(tmp_path, server, notify, mode):
    server.mode = mode

    def delivered() -> list[tuple[str, str]]:
        return [(b["event"], b["ts"]) for b in server.received if b["rule"] == "api_down"]

    stderr = await run_row(tmp_path, server, notify, webhook_sink(server), delivered)
    if mode != "slow":
        assert b"delivery failed" in stderr
        assert server.attempts > 4  # retried, and sent again after giving up
    else:
        assert b"delivery failed" not in stderr


async def test_alertmanager_down_then_back(tmp_path, notify):
    """Alertmanager's API v2 (a stand-in that records what it is sent) is not listening at
    all while the alerts fire and resolve; once it is, it learns how each ended."""
    service = Switchable()
    await service.start()
    alertmanager = Switchable()
    await alertmanager.start()
    port = alertmanager.port
    await alertmanager.stop()  # down: nothing listens on its port
    sink = (
        f'[[sinks]]\ntype = "alertmanager"\nurl = "http://127.0.0.1:{port}"\n'
        'resend_every = "1s"\n' + SINK_TUNING
    )
    config = write_config(tmp_path, service, sink)
    daemon = await start_daemon(config, tmp_path, {"NOTIFY_SOCKET": str(notify.path)})
    try:
        await daemon.wait_for(lambda: len(daemon.lines()) >= 2, what="the first runs")
        recorded = await flap(daemon, service)
        assert len(recorded) == 4
        await alertmanager.start(port)  # back

        def last_state() -> str | None:
            alerts = [a for batch in alertmanager.received for a in batch]
            mine = [a for a in alerts if a["labels"].get("alertname") == "api_down"]
            if not mine:
                return None
            return "resolved" if _ended(mine[-1]) else "firing"  # endsAt passed: resolved

        await daemon.wait_for(lambda: last_state() == "resolved", timeout=20, what="resolved")
        rc, _ = await daemon.stop()
        assert rc == 0, daemon.stderr.decode()[-2000:]
        assert b"Traceback" not in daemon.stderr
        assert_cadence_kept(daemon, "system")
        assert_nothing_lost(daemon)
    finally:
        await alertmanager.stop()
        await service.stop()


def _ended(alert: dict[str, Any]) -> bool:
    from datetime import UTC, datetime

    ends = datetime.fromisoformat(alert["endsAt"])
    return ends <= datetime.now(UTC)


EXEC_HOOK = textwrap.dedent(
    """
    import json, pathlib, sys, time
    out, broken = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    event = json.loads(sys.stdin.read())
    if broken.exists():
        if broken.read_text() == "hang":
            time.sleep(60)
        sys.exit(3)
    with out.open("a") as f:
        f.write(json.dumps(event) + "\\n")
    """
)


@pytest.mark.parametrize("mode", ["hang", "exit 3"])
async def test_exec(tmp_path, server, notify, mode):
    script, out, broken = tmp_path / "hook.py", tmp_path / "hook.jsonl", tmp_path / "broken"
    script.write_text(EXEC_HOOK)
    broken.write_text("hang" if mode == "hang" else "exit")
    command = json.dumps([sys.executable, str(script), str(out), str(broken)])
    sink = f'[[sinks]]\ntype = "exec"\ncommand = {command}\n' + SINK_TUNING
    server.end_fault = broken.unlink  # type: ignore[method-assign]

    def delivered() -> list[tuple[str, str]]:
        if not out.exists():
            return []
        events = [json.loads(x) for x in out.read_text().splitlines()]
        return [(e["event"], e["ts"]) for e in events if e["rule"] == "api_down"]

    stderr = await run_row(tmp_path, server, notify, sink, delivered)
    assert b"delivery failed" in stderr
