"""The alertmanager sink against a real Alertmanager (Debian `prometheus-alertmanager`).

Alertmanager runs on 127.0.0.1 with a single "null" receiver, its storage in a temp dir and
clustering off (`--cluster.listen-address=` empty, else it listens on 0.0.0.0:9094). Each
test kills it at its end, pass or fail.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from sinks_support import RecordingOutbox, event
from support import free_port

from fossamon.config import AlertmanagerSinkConfig
from fossamon.model import EventKind, Severity
from fossamon.sinks import build_sink_workers
from fossamon.sinks.base import Delivery

pytestmark = pytest.mark.e2e

ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")
AMTOOL = Path("/usr/bin/amtool")
CONFIG = """\
route:
  receiver: "null"
receivers:
  - name: "null"
"""
RESEND = 60.0  # the default resend_every: endsAt = now + 4 minutes
W, C = Severity.WARNING, Severity.CRITICAL


@dataclass
class Alertmanager:
    url: str
    log: Path

    async def alerts(self, session: aiohttp.ClientSession, **params: str) -> list[dict]:
        async with session.get(f"{self.url}/api/v2/alerts", params=params) as response:
            assert response.status == 200, await response.text()
            return list(await response.json())

    def amtool_query(self, *matchers: str) -> list[dict]:
        """`amtool alert query` (as an operator would ask), its JSON output parsed."""
        done = subprocess.run(
            [
                str(AMTOOL),
                f"--alertmanager.url={self.url}",
                "-o",
                "json",
                "alert",
                "query",
                *matchers,
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return list(json.loads(done.stdout or "[]"))


async def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"alertmanager exited ({proc.returncode}):\n{log.read_text()}")
            try:
                async with session.get(f"{url}/-/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    pytest.fail(f"alertmanager not ready within {timeout}s:\n{log.read_text()}")


@pytest.fixture
async def alertmanager(tmp_path, need):
    need(ALERTMANAGER.exists(), f"{ALERTMANAGER} (Debian package prometheus-alertmanager)")
    config = tmp_path / "alertmanager.yml"
    config.write_text(CONFIG)
    log = tmp_path / "alertmanager.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(ALERTMANAGER),
                f"--config.file={config}",
                f"--storage.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        await wait_ready(url, proc, log)
        yield Alertmanager(url, log)
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client:
        yield client


def iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text).astimezone(UTC).timestamp()


async def until_delivered(outbox: RecordingOutbox, ids: list[int], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while outbox.delivered_ids != ids:
            await asyncio.sleep(0.02)


async def test_firing_escalated_then_resolved(alertmanager, session):
    config = AlertmanagerSinkConfig(
        type="alertmanager", url=alertmanager.url, labels={"team": "ops"}, timeout=5.0
    )
    outbox = RecordingOutbox()
    [worker] = build_sink_workers([config], "web1", outbox)
    worker.start()
    try:
        start = time.time()
        firing = event(severity=W, ts=start, since=start - 30)
        worker.submit(Delivery(1, firing, "web1"))
        await until_delivered(outbox, [1])
        [alert] = await alertmanager.alerts(session)
        sent_at = time.time()
        assert alert["labels"] == {
            "alertname": "api_latency",
            "endpoint": "health",
            "instance": "web1",
            "severity": "warning",
            "team": "ops",
        }
        assert alert["annotations"]["summary"] == "p95 latency 1.5s above 1s"
        assert alert["status"]["state"] == "active"
        assert abs(iso_seconds(alert["startsAt"]) - (start - 30)) < 1
        # endsAt ≈ now + 4 × resend_every: Alertmanager will not resolve a live alert by itself
        assert abs(iso_seconds(alert["endsAt"]) - (sent_at + 4 * RESEND)) < 5

        escalated = event(EventKind.ESCALATED, C, previous=W, ts=time.time(), since=start - 30)
        worker.submit(Delivery(2, escalated, "web1"))
        await until_delivered(outbox, [1, 2])
        [alert] = await alertmanager.alerts(session, active="true")
        assert alert["labels"]["severity"] == "critical"  # the warning one was ended with it
        [queried] = alertmanager.amtool_query("alertname=api_latency")
        assert queried["labels"]["severity"] == "critical"

        resolved = event(
            EventKind.RESOLVED, C, previous=C, ts=time.time(), since=start - 30, value=0.2
        )
        assert worker.accepts(resolved)
        worker.submit(Delivery(3, resolved, "web1"))
        await until_delivered(outbox, [1, 2, 3])
        assert await alertmanager.alerts(session, active="true") == []
        assert await alertmanager.alerts(session) == []
        assert alertmanager.amtool_query() == []
        assert worker.stats.sent == 3
        assert worker.stats.failed == 0
    finally:
        await worker.stop(1.0)


async def test_alertmanager_rejects_nothing_we_send(alertmanager, session):
    """Odd label values and a missing value/threshold still make a valid v2 alert."""
    config = AlertmanagerSinkConfig(type="alertmanager", url=alertmanager.url, timeout=5.0)
    outbox = RecordingOutbox()
    [worker] = build_sink_workers([config], "web1", outbox)
    worker.start()
    try:
        labels = {"endpoint": '"; rm -rf /"', "empty": "", "unicode": "café →"}
        now = time.time()
        worker.submit(
            Delivery(
                1,
                event(EventKind.NODATA, C, labels=labels, ts=now, value=None, threshold=None),
                "web1",
            )
        )
        await until_delivered(outbox, [1])
        [alert] = await alertmanager.alerts(session)
        assert alert["labels"]["endpoint"] == '"; rm -rf /"'
        assert alert["labels"]["unicode"] == "café →"
        assert "empty" not in alert["labels"]
        assert set(alert["annotations"]) == {"summary", "description"}
        assert json.dumps(alert)  # a plain JSON document
    finally:
        await worker.stop(1.0)
