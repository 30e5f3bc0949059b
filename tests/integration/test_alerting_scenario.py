"""Issue 4's "done when": the demo target's latency raised and lowered gives exactly
firing(warning) → escalated(critical) → deescalated(warning) → resolved in the alerts JSONL,
at a webhook receiver and in a real Alertmanager; a hung webhook leaves the collection
cadence alone; SIGKILL + restart mid-firing gives no second firing.

The daemon is a real `fossamon run` process; the target, the webhook receivers and
Alertmanager are real servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import sqlite3
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from daemon_harness import start_daemon
from support import daemon_head, free_port

from fossamon.demo.target import DemoTarget
from fossamon.model import parse_iso_ts

RULE = "work_orders_latency"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
ARTIFACTS = Path(__file__).parent.parent.parent / "artifacts"


class Receiver:
    """A webhook receiver on loopback: records every POST, or hangs every request."""

    def __init__(self, *, hang: bool = False) -> None:
        self.hang = hang
        self.fail_with: int | None = None  # answer every POST with this status
        self.refused = 0
        self.received: list[dict] = []
        self.hung = 0
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        if self.hang:
            self.hung += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), 60)
            return web.Response(status=503)
        if self.fail_with is not None:
            self.refused += 1
            return web.Response(status=self.fail_with)
        self.received.append(await request.json())
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def kinds(self, rule: str = RULE) -> list[tuple[str, str]]:
        return [(r["event"], r["severity"]) for r in self.received if r.get("rule") == rule]


@contextlib.asynccontextmanager
async def alertmanager(tmp_path: Path, need):
    need(Path(ALERTMANAGER).exists(), f"{ALERTMANAGER} (Debian package prometheus-alertmanager)")
    config = tmp_path / "am.yml"
    config.write_text("route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        ALERTMANAGER,
        f"--config.file={config}",
        f"--storage.path={tmp_path / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/-/ready") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("alertmanager did not become ready within 10 s")
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.wait_for(proc.wait(), 10)


async def am_alerts(url: str) -> list[dict]:
    params = {"active": "true"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/api/v2/alerts", params=params) as resp,
    ):
        return [a for a in await resp.json() if a["labels"].get("alertname") == RULE]


def scenario_config(tmp_path: Path, target: str, sinks: str) -> Path:
    text = (
        daemon_head(tmp_path, grace="2s")
        + f"""
[collectors.system]
interval = "500ms"
[collectors.api]
interval = "500ms"
timeout = "5s"
base_url = "{target}"
[[collectors.api.endpoints]]
name = "work_orders"
path = "/api/work-orders?limit=10"
[[rules]]
name = "{RULE}"
metric = "api_response_seconds"
labels = {{ endpoint = "work_orders" }}
warning = "300ms"
critical = "900ms"
clear = "200ms"
summary = "{{labels[endpoint]}} answers in {{value}} ({{severity}} over {{threshold}})"
{sinks}
"""
    )
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def alert_kinds(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r["event"], r["severity"]) for r in records if r["rule"] == RULE]


def outbox_rows(tmp_path: Path) -> int:
    with contextlib.closing(
        sqlite3.connect(f"file:{tmp_path / 'state' / 'state.db'}?mode=ro", uri=True)
    ) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


async def wait_until(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        await asyncio.sleep(0.1)
    pytest.fail(f"{what} not reached within {timeout}s")


EXPECTED = [
    ("firing", "warning"),
    ("escalated", "critical"),
    ("deescalated", "warning"),
    ("resolved", "warning"),
]


async def test_latency_up_and_down_reaches_file_webhook_and_alertmanager(
    tmp_path: Path, small_demo_db: Path, need
) -> None:
    recorder, hung = Receiver(), Receiver(hang=True)
    await recorder.start()
    await hung.start()
    target = DemoTarget(small_demo_db)
    await target.start()
    am_seen: list[tuple[str, list[str]]] = []
    try:
        async with alertmanager(tmp_path, need) as am_url:
            sinks = f"""
[[sinks]]
type = "webhook"
name = "recorder"
url = "{recorder.url}"
[[sinks]]
type = "webhook"
name = "hung"
url = "{hung.url}"
timeout = "60s"
retries = 0
[[sinks]]
type = "alertmanager"
url = "{am_url}"
resend_every = "2s"
"""
            config = scenario_config(tmp_path, target.url, sinks)
            daemon = await start_daemon(config, tmp_path)
            alerts = tmp_path / "out" / "alerts.jsonl"
            phases = [(0.5, 1), (1.2, 2), (0.5, 3), (0.0, 4)]
            for latency, count in phases:
                target.faults.set("/api/work-orders", latency=latency)
                await wait_until(lambda n=count: len(alert_kinds(alerts)) >= n, f"event {count}")
                expected_severity = EXPECTED[count - 1]
                if expected_severity[0] == "resolved":
                    await wait_until(
                        lambda: recorder.kinds()[-1:] == [EXPECTED[-1]], "webhook resolved"
                    )

                    async def gone() -> bool:
                        return not await am_alerts(am_url)

                    for _ in range(100):
                        if await gone():
                            break
                        await asyncio.sleep(0.1)
                    am_seen.append(
                        (
                            "after resolved",
                            [a["labels"]["severity"] for a in await am_alerts(am_url)],
                        )
                    )
                else:
                    for _ in range(100):
                        live = await am_alerts(am_url)
                        if live and live[0]["labels"]["severity"] == expected_severity[1]:
                            break
                        await asyncio.sleep(0.1)
                    am_seen.append((expected_severity[0], [a["labels"]["severity"] for a in live]))
            code, _ = await daemon.stop()
            assert code == 0, daemon.stderr.decode()[-2000:]
    finally:
        await target.stop()
        await recorder.stop()
        await hung.stop()

    assert alert_kinds(alerts) == EXPECTED
    assert recorder.kinds() == EXPECTED
    assert am_seen == [
        ("firing", ["warning"]),
        ("escalated", ["critical"]),
        ("deescalated", ["warning"]),
        ("after resolved", []),
    ]
    assert hung.hung >= 1  # the hung receiver really held a request the whole time

    # The cadence: the system collector ran every 500 ms throughout, the hung webhook
    # notwithstanding (a sink that blocked the loop would show as gaps here).
    lines = [
        json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    ]
    system = [parse_iso_ts(r["ts"]) for r in lines if r["collector"] == "system"]
    gaps = [b - a for a, b in itertools.pairwise(system)]
    assert len(gaps) >= 5
    assert max(gaps) < 0.5 + 0.25, gaps
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "alerting-scenario.txt").write_text(
        "alerts JSONL: "
        + " → ".join(f"{k}({s})" for k, s in alert_kinds(alerts))
        + "\n"
        + "webhook:      "
        + " → ".join(f"{k}({s})" for k, s in recorder.kinds())
        + "\n"
        + f"alertmanager: {am_seen}\n"
        + f"system collector gaps while a webhook hung: n={len(gaps)} "
        f"min={min(gaps):.3f}s max={max(gaps):.3f}s\n"
    )


async def test_sigkill_mid_firing_then_restart_gives_no_second_firing(
    tmp_path: Path, small_demo_db: Path
) -> None:
    recorder = Receiver()
    await recorder.start()
    target = DemoTarget(small_demo_db)
    await target.start()
    alerts = tmp_path / "out" / "alerts.jsonl"
    try:
        sinks = f'[[sinks]]\ntype = "webhook"\nurl = "{recorder.url}"\n'
        config = scenario_config(tmp_path, target.url, sinks)
        target.faults.set("/api/work-orders", latency=0.5)
        daemon = await start_daemon(config, tmp_path)
        await wait_until(lambda: alert_kinds(alerts) == [("firing", "warning")], "firing")
        await wait_until(lambda: recorder.kinds() == [("firing", "warning")], "webhook firing")
        # Delivery is at least once: a kill between the receiver's 200 and the outbox row's
        # deletion (batched, within 0.5 s) sends it again. Kill once the row is gone.
        await wait_until(lambda: outbox_rows(tmp_path) == 0, "outbox flushed")
        daemon.proc.send_signal(signal.SIGKILL)
        await daemon.proc.wait()
        # restarted while still breaching: no second firing, for several cycles
        daemon = await start_daemon(config, tmp_path)
        metrics = tmp_path / "out" / "metrics.jsonl"
        before = len(metrics.read_text().splitlines())
        await wait_until(
            lambda: len(metrics.read_text().splitlines()) >= before + 8, "cycles after restart"
        )
        assert alert_kinds(alerts) == [("firing", "warning")]
        # SIGKILL again; the recovery happens while it is down: reported once after restart
        daemon.proc.send_signal(signal.SIGKILL)
        await daemon.proc.wait()
        target.faults.clear()
        daemon = await start_daemon(config, tmp_path)
        await wait_until(lambda: len(alert_kinds(alerts)) >= 2, "resolved after restart")
        await wait_until(lambda: len(recorder.kinds()) >= 2, "webhook resolved")
        code, _ = await daemon.stop()
        assert code == 0, daemon.stderr.decode()[-2000:]
    finally:
        await target.stop()
        await recorder.stop()
    assert alert_kinds(alerts) == [("firing", "warning"), ("resolved", "warning")]
    assert recorder.kinds() == [("firing", "warning"), ("resolved", "warning")]


async def test_events_a_sink_could_not_take_are_sent_after_a_restart(
    tmp_path: Path, small_demo_db: Path
) -> None:
    """No silent "Aborting event": retries exhausted, the event stays in the state store and
    goes out after the restart, once."""
    recorder = Receiver()
    recorder.fail_with = 500
    await recorder.start()
    target = DemoTarget(small_demo_db)
    await target.start()
    alerts = tmp_path / "out" / "alerts.jsonl"
    try:
        sinks = (
            f'[[sinks]]\ntype = "webhook"\nurl = "{recorder.url}"\nretries = 1\nbackoff = "100ms"\n'
        )
        config = scenario_config(tmp_path, target.url, sinks)
        target.faults.set("/api/work-orders", latency=0.5)
        daemon = await start_daemon(config, tmp_path)
        await wait_until(lambda: alert_kinds(alerts) == [("firing", "warning")], "firing")
        await wait_until(lambda: recorder.refused >= 2, "the first try and one retry")
        await asyncio.sleep(0.3)
        code, _ = await daemon.stop()
        assert code == 0, daemon.stderr.decode()[-2000:]
        assert b"failed" in daemon.stderr
        assert outbox_rows(tmp_path) == 1  # given up, not forgotten
        assert recorder.refused == 2
        recorder.fail_with = None
        daemon = await start_daemon(config, tmp_path)
        await wait_until(lambda: recorder.kinds() == [("firing", "warning")], "re-sent")
        await wait_until(lambda: outbox_rows(tmp_path) == 0, "outbox emptied")
        code, _ = await daemon.stop()
        assert code == 0
    finally:
        await target.stop()
        await recorder.stop()
    assert alert_kinds(alerts) == [("firing", "warning")]
    assert recorder.kinds() == [("firing", "warning")]
