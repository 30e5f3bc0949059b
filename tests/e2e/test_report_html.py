"""`fossamon report --html` opened in a real headless Chromium (Debian `chromium`), offline:
two hours of every key series, split over a gzipped built-in archive and the live file, and
an alert episode. The rendered DOM must hold one drawn chart per series, the series table
and the alert summary; a screenshot is kept as artifacts/report.png.

Chromium runs in a session of its own, so its helpers die with it, pass or fail. Name
resolution is mapped to nowhere and the proxy points at a closed port, so any attempt of the
page to reach the network would fail: it opens, and renders, without one.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import CHROMIUM, Dom, chromium_argv, daemon_head

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
START = 1_795_600_800.0  # 2026-11-25T10:00:00Z
STEP, READINGS = 30.0, 240  # two hours
HOST = "web-1 <&>"  # markup in the host name: shown as text
SERIES = [
    "system_cpu_percent",
    "system_memory_percent",
    'system_disk_percent{mount="/"}',
    "system_load1",
    'api_response_seconds{endpoint="health"}',
    'api_response_seconds{endpoint="work_orders"}',
    'db_query_seconds{query="work_orders_count"}',
]


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def record(ts: float, collector: str, samples: list[tuple[str, dict, float]]) -> str:
    return json.dumps(
        {
            "v": 1,
            "ts": iso(ts),
            "host": HOST,
            "collector": collector,
            "duration_ms": 2.0,
            "samples": [{"name": n, "labels": labels, "value": v} for n, labels, v in samples],
            "errors": [],
        }
    )


def readings(i: int) -> list[str]:
    ts = START + i * STEP
    wave = math.sin(i / 12)
    system = [
        ("system_cpu_percent", {}, 35 + 20 * wave + (30 if i % 50 == 0 else 0)),
        ("system_memory_percent", {}, 40 + i * 0.05),  # a slow leak: "rising"
        ("system_disk_percent", {"mount": "/"}, 61.5),
        ("system_load1", {}, 0.8 + 0.3 * wave),
    ]
    api = [
        ("api_response_seconds", {"endpoint": "health"}, 0.004 + 0.001 * wave),
        ("api_response_seconds", {"endpoint": "work_orders"}, 0.04 + 0.03 * (i % 7) / 7),
        ("api_up", {"endpoint": "health"}, 1.0),
    ]
    db = [("db_query_seconds", {"query": "work_orders_count"}, 0.002 + 0.0005 * wave)]
    return [record(ts, "system", system), record(ts + 1, "api", api), record(ts + 2, "db", db)]


@pytest.fixture
def browser(need):
    need(CHROMIUM.exists(), "Debian chromium (/usr/bin/chromium)")


@pytest.fixture
def config(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    lines = [line for i in range(READINGS) for line in readings(i)]
    half = len(lines) // 2
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(START + READINGS * STEP / 2))
    archive = out / f"metrics-{stamp}.jsonl.gz"
    archive.write_bytes(gzip.compress("\n".join(lines[:half]).encode() + b"\n"))
    torn = '{"v":1,"ts":"' + iso(START + 3601) + '","host":"web-1","coll'
    (out / "metrics.jsonl").write_text("\n".join([*lines[half:], torn]) + "\n")
    alerts = [
        {"event": "firing", "severity": "warning", "at": START + 600},
        {"event": "escalated", "severity": "critical", "at": START + 900},
        {"event": "resolved", "severity": "critical", "at": START + 1500},
    ]
    (out / "alerts.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "v": 1,
                    "ts": iso(a["at"]),
                    "host": HOST,
                    "event": a["event"],
                    "rule": "cpu_high",
                    "severity": a["severity"],
                    "labels": {},
                    "since": iso(START + 600),
                    "fingerprint": "f00d",
                }
            )
            + "\n"
            for a in alerts
        )
    )
    path = tmp_path / "config.toml"
    path.write_text(
        daemon_head(tmp_path, metrics=str(out / "metrics.jsonl"), alerts=str(out / "alerts.jsonl"))
    )
    return path


def run(argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
    """A process in a session of its own; its whole group is killed afterwards."""
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def chromium(tmp_path: Path, *args: str) -> bytes:
    profile = tmp_path / f"chromium-{time.monotonic_ns()}"
    done = run(
        chromium_argv(
            profile,
            # offline: no name resolves, and every proxied request goes to a closed port
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--proxy-server=127.0.0.1:9",
            *args,
        )
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return width, height


def test_html_report_renders_offline_in_a_real_browser(browser, tmp_path, config):
    began = time.monotonic()
    page = tmp_path / "report.html"
    since, until = iso(START - 60), iso(START + READINGS * STEP + 60)
    done = run(
        [
            sys.executable,
            "-m",
            "fossamon",
            "report",
            "-c",
            str(config),
            "--since",
            since,
            "--until",
            until,
            "--html",
            str(page),
        ]
    )
    assert done.returncode == 0, done.stderr.decode()
    text = page.read_text()
    for external in ("<script", "<link", "<img", "src=", "href=", "url(", "http:", "https:"):
        assert external not in text, external

    dom = Dom(chromium(tmp_path, "--dump-dom", page.as_uri()).decode())

    assert dom.one("span", id="host").text == HOST
    assert dom.find("title")[0].text.startswith(f"fossamon report · {HOST} · ")
    charts = {e.attrs["data-series"]: e for e in dom.find("figure", class_="chart")}
    assert list(charts) == SERIES
    assert all(e.attrs["data-points"] == str(READINGS) for e in charts.values())
    svgs = dom.find("svg", class_="sparkline")
    assert len(svgs) == len(SERIES)
    lines = dom.find("polyline", class_="line")
    assert len(lines) == len(SERIES)
    for line in lines:
        points = (line.attrs["points"] or "").split()
        assert len(points) == READINGS
        assert all(len(p.split(",")) == 2 for p in points)
    rows = {e.attrs["data-series"]: e.text for e in dom.find("tr", class_="series")}
    assert list(rows) == SERIES
    assert "yes" in rows["system_memory_percent"]  # the leak is "increasing"
    [alert] = dom.find("tr", class_="alert-rule")
    assert (alert.attrs["data-rule"], alert.attrs["data-severity"]) == ("cpu_high", "critical")
    assert "15m" in alert.text  # 10:10 to 10:25
    assert "skipped 1 unparsable line(s): metrics.jsonl:" in dom.one("section", id="sources").text

    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1000", page.as_uri())
    assert png_size(shot.read_bytes()) == (1280, 1000)
    artifacts = REPO / "artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copyfile(shot, artifacts / "report.png")
    print(f"report html e2e: {time.monotonic() - began:.1f}s, screenshot {artifacts}")
