"""The status page of a real `fossamon run`, rendered by a real headless Chromium (Debian
`chromium`): the daemon watches the demo target with the exporter on a free loopback port, a
rule that always breaches fires, and after a few cycles Chromium loads `/`. The rendered DOM
must show the host, the firing alert, four drawn sparklines and the collectors; a screenshot
is kept as artifacts/status-page.png.

Chromium runs in a session of its own, so its helper processes (zygote, renderer) are killed
with it, pass or fail; the daemon is stopped with SIGTERM and killed if it does not go.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from support import CHROMIUM, Dom, chromium_argv, daemon_head, demo_collectors, free_port

from fossamon.demo.target import DemoTarget

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
HOSTNAME = "e2e <fossa> & co"  # markup in the host name: the page must show it as text
SERIES = ("CPU %", "Memory %", "Disk % (/)", "API p95")


def config(tmp_path: Path, port: int, url: str, db: Path) -> Path:
    head = daemon_head(tmp_path, exporter=f"127.0.0.1:{port}")
    head = head.replace("[daemon]\n", f'[daemon]\nhostname = "{HOSTNAME}"\n', 1)
    path = tmp_path / "config.toml"
    path.write_text(
        head
        + demo_collectors(url, db, api_timeout="2s", record_value=False)
        + """
[[rules]]
name = "cpu_seen"
metric = "system_cpu_percent"
warning = -1
"""
    )
    return path


@pytest.fixture
def browser(need):
    need(CHROMIUM.exists(), "Debian chromium (/usr/bin/chromium)")


@pytest.fixture
async def target(small_demo_db):
    async with DemoTarget(small_demo_db) as running:
        yield running


@pytest.fixture
async def daemon(tmp_path, target, small_demo_db):
    """A `fossamon run` with the exporter on a free port: (base URL, its stderr log)."""
    port = free_port()
    log = tmp_path / "daemon.log"
    with log.open("wb") as stderr:  # a file, not a pipe nobody reads: it can never fill up
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fossamon",
            "run",
            "-c",
            str(config(tmp_path, port, target.url, small_demo_db)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
            env={
                k: v for k, v in os.environ.items() if k not in {"NOTIFY_SOCKET", "JOURNAL_STREAM"}
            },
        )
    try:
        yield f"http://127.0.0.1:{port}", log
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await asyncio.wait_for(proc.wait(), 10)


def ready(status: dict) -> bool:
    """The alert fires, every collector ran a few times, every sparkline has two points."""
    firing = any(a["rule"] == "cpu_seen" for a in status["alerts"])
    runs = [c["runs"] for c in status["collectors"].values()]
    counts = {t["metric"]: (t["last_hour"] or {}).get("count", 0) for t in status["trends"]}
    wanted = ("system_cpu_percent", "system_memory_percent", "system_disk_percent")
    return (
        firing
        and len(runs) == 3
        and min(runs) >= 3
        # 12 readings 0.5 s apart span two of the hour's points (4.5 s apart: trends.py)
        and all(counts.get(m, 0) >= 12 for m in (*wanted, "api_response_seconds"))
    )


async def wait_ready(base: str, log: Path, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    last: object = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{base}/status") as response:
                    status = await response.json()
                if ready(status):
                    return status
                last = status
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = exc  # not listening yet
            await asyncio.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    pytest.fail(f"the daemon did not get ready within {timeout}s: {last!r}\n{tail}")


async def chromium(tmp_path: Path, *args: str, timeout: float = 60.0) -> bytes:
    """One headless Chromium run in a session of its own; the whole group dies with it."""
    profile = tmp_path / f"chromium-{time.monotonic_ns()}"
    proc = await asyncio.create_subprocess_exec(
        *chromium_argv(profile, *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its group: helpers included
        if proc.returncode is None:
            await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


async def test_status_page_in_a_real_browser(browser, tmp_path, daemon):
    began = time.monotonic()
    base, log = daemon
    status = await wait_ready(base, log)
    assert status["host"] == HOSTNAME

    dom = Dom((await chromium(tmp_path, "--dump-dom", f"{base}/")).decode())

    assert [e.text for e in dom.find("span", id="host")] == [HOSTNAME]
    assert dom.find("title")[0].text == f"fossamon · {HOSTNAME}"
    [alert] = dom.find("tr", data_rule="cpu_seen")
    assert "warning" in alert.text
    assert "-1" in alert.text  # value vs threshold
    svgs = {e.attrs["data-series"]: e for e in dom.find("svg", class_="sparkline")}
    assert sorted(svgs) == sorted(SERIES)
    for line in dom.find("polyline", class_="line"):
        assert len((line.attrs["points"] or "").split()) >= 2
    assert len(dom.find("polyline", class_="line")) == 4
    collectors = {e.attrs["data-collector"]: e.text for e in dom.find("tr", class_="collector")}
    assert sorted(collectors) == ["api", "db", "system"]
    assert all(" ago" in text for text in collectors.values())
    assert "ok" in collectors["system"]
    assert dom.find("tr", data_endpoint="health")
    assert dom.find("tr", data_query="work_orders_count")

    shot = tmp_path / "status-page.png"
    await chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1000", f"{base}/")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    artifacts = REPO / "artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copyfile(shot, artifacts / "status-page.png")
    print(f"status page e2e: {time.monotonic() - began:.1f}s, screenshot {artifacts}")
