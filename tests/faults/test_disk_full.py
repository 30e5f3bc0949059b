"""A disk that fills for real: a small tmpfs under the metrics file.

The daemon keeps running and collecting; the lines it cannot write are counted (never torn);
the problem is logged once, not per line, and the internal alert `output_write_failing`
fires; writing resumes by itself when space returns, and the alert resolves.
Needs root (mount); skips without it, but not under FOSSAMON_E2E=require.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from daemon_harness import start_daemon
from faults_support import ARTIFACTS
from support import daemon_head


@pytest.fixture
def small_disk(tmp_path: Path, need):
    need(os.geteuid() == 0 and shutil.which("mount") is not None, "root, to mount a tmpfs")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """A filler file that leaves about `leave` bytes free."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with filler.open("wb") as handle, contextlib.suppress(OSError):
        handle.write(b"\0" * max(0, free - leave))
    return filler


async def test_disk_full_is_counted_logged_once_and_recovers(
    tmp_path: Path, small_disk: Path
) -> None:
    metrics = small_disk / "metrics.jsonl"
    config = tmp_path / "config.toml"
    head = daemon_head(tmp_path, metrics=str(metrics), alerts=f"{tmp_path}/alerts.jsonl")
    config.write_text(head + '[collectors.system]\ninterval = "100ms"\n')
    filler = fill(small_disk, leave=8 * 1024)
    daemon = await start_daemon(config, tmp_path)
    stderr = bytearray()

    async def pump() -> None:
        assert daemon.proc.stderr is not None
        while chunk := await daemon.proc.stderr.read(4096):
            stderr.extend(chunk)

    reader = asyncio.get_running_loop().create_task(pump())
    try:
        await daemon.wait_for(
            lambda: b"cannot write output file" in stderr, timeout=20, what="the disk to fill"
        )
        await asyncio.sleep(1.0)  # a second of failing writes: still one log line
        assert daemon.proc.returncode is None
        filler.unlink()
        await daemon.wait_for(
            lambda: b"writing output file again" in stderr, timeout=10, what="writing to resume"
        )
        # The internal alert resolves at the next 1 s tick after writing works again.
        alerts_file = tmp_path / "alerts.jsonl"
        await daemon.wait_for(
            lambda: alerts_file.exists() and '"resolved"' in alerts_file.read_text(),
            timeout=10,
            what="output_write_failing to resolve",
        )
        daemon.proc.terminate()
        await asyncio.wait_for(daemon.proc.wait(), 10)
        await asyncio.wait_for(reader, 5)
    finally:
        reader.cancel()
    text = stderr.decode()
    assert daemon.proc.returncode == 0, text[-2000:]
    assert text.count("cannot write output file") == 1, text[-3000:]
    said = re.search(r"stopped .*lines_dropped=(\d+)", text)
    closed = next(
        line for line in text.splitlines() if "output closed" in line and "file=metrics" in line
    )
    counted = re.search(r"lines_written=(\d+)", closed)
    assert said is not None, text[-2000:]
    assert counted is not None, closed
    dropped, written = int(said.group(1)), int(counted.group(1))
    lines = metrics.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # none torn
    assert dropped > 0
    assert len(records) == written  # every line counted as written is there, whole
    alerts = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    internal = [(a["event"], a["rule"], a["labels"]) for a in alerts]
    assert internal == [
        ("firing", "output_write_failing", {"file": "metrics"}),
        ("resolved", "output_write_failing", {"file": "metrics"}),
    ]
    assert "Errno 28" in alerts[0]["summary"]  # ENOSPC: "No space left", or a short write
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "disk-full.txt").write_text(
        f"256 KiB tmpfs, 8 KiB left: lines written {written}, dropped {dropped}, "
        f"found {len(records)}; 'cannot write' logged {text.count('cannot write output file')}x\n"
    )
