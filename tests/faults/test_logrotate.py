"""The shipped logrotate file, with the real logrotate (Debian package `logrotate`).

`logrotate -d` on the shipped file is clean; and a copy with its paths pointed at a test
directory, forced several times while `fossamon run` writes, loses and tears nothing: every
line the daemon says it wrote is in the current file or a rotated one (gzip included).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from daemon_harness import start_daemon
from support import daemon_head

REPO = Path(__file__).parent.parent.parent
SHIPPED = REPO / "logrotate" / "fossamon"
ARTIFACTS = REPO / "artifacts"
LOGROTATE = shutil.which("logrotate") or "/usr/sbin/logrotate"


@pytest.fixture
def logrotate(need) -> str:
    need(Path(LOGROTATE).exists(), "logrotate (Debian package logrotate)")
    return LOGROTATE


def test_logrotate_debug_run_of_the_shipped_file_is_clean(logrotate: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [logrotate, "-d", "-s", str(tmp_path / "state"), str(SHIPPED)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert not re.search(r"^error", output, re.MULTILINE | re.IGNORECASE), output
    assert "/var/log/fossamon/performance-metrics.jsonl" in output


def read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:  # type: ignore[operator]
        return handle.read().splitlines()


async def test_forced_rotations_while_the_daemon_writes_lose_nothing(
    logrotate: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    metrics = out / "metrics.jsonl"
    config = tmp_path / "config.toml"
    external = 'rotation = "external"'
    head = daemon_head(tmp_path, metrics_extra=external, alerts_extra=external)
    config.write_text(
        head
        + """
[collectors.system]
interval = "100ms"
"""
    )
    daemon = await start_daemon(config, tmp_path)
    await daemon.wait_for(lambda: metrics.exists() and metrics.stat().st_size > 0, what="lines")
    pid = daemon.proc.pid
    # The shipped rules, pointed at this test's files; the postrotate signals this daemon
    # (the shipped one asks systemd), and dates carry seconds so runs a second apart differ.
    text = SHIPPED.read_text()
    text = text.replace("/var/log/fossamon/", f"{out}/")
    text = text.replace("performance-metrics.jsonl", "metrics.jsonl")
    text = text.replace("performance-alerts.jsonl", "alerts.jsonl")
    text = re.sub(r"/usr/bin/systemctl kill [^\n]*", f"/bin/kill -USR1 {pid}", text)
    text = text.replace("dateext", "dateext\n    dateformat -%Y%m%d-%s")
    assert f"/bin/kill -USR1 {pid}" in text
    rules = tmp_path / "logrotate.conf"
    rules.write_text(text)
    for _ in range(4):
        await asyncio.sleep(1.1)
        done = await asyncio.to_thread(
            subprocess.run,
            [logrotate, "-f", "-s", str(tmp_path / "logrotate.state"), str(rules)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    await asyncio.sleep(0.5)
    code, _ = await daemon.stop()
    assert code == 0, daemon.stderr.decode()[-2000:]
    said = re.search(rb"stopped .*lines_written=(\d+)", daemon.stderr)
    assert said is not None, daemon.stderr.decode()[-2000:]
    written = int(said.group(1))

    files = sorted(out.glob("metrics.jsonl*"))
    rotated = [f for f in files if f.name != "metrics.jsonl"]
    assert len(rotated) == 4, [f.name for f in files]
    assert any(f.suffix == ".gz" for f in rotated)  # compressed, one run later (delaycompress)
    lines = [line for f in files for line in read_lines(f)]
    records = [json.loads(line) for line in lines]  # none torn: every line parses
    keys = [(r["collector"], r["ts"]) for r in records]
    assert len(set(keys)) == len(keys)  # none twice
    assert len(lines) == written  # none lost (no alerts in this config: all are metrics)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "logrotate-accounting.txt").write_text(
        f"lines written (daemon's counter): {written}\n"
        f"lines found: {len(lines)} in {len(files)} files: {[f.name for f in files]}\n"
    )
