"""SIGKILL while writing and rotating: after the restarts, every line that reached a file
is whole (it parses), none is there twice, and the archives a kill left uncompressed are
compressed by the next start."""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
from pathlib import Path

from daemon_harness import start_daemon
from support import daemon_head


def read(path: Path) -> list[str]:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            return handle.read().splitlines()
    return path.read_text(encoding="utf-8").splitlines()


async def test_sigkill_mid_write_leaves_only_whole_lines(tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = tmp_path / "config.toml"
    head = daemon_head(tmp_path, metrics_extra='max_size = "8KiB"\nkeep = 0')
    config.write_text(
        head
        + """
[collectors.system]
interval = "100ms"
per_cpu = true
"""
    )
    metrics = out / "metrics.jsonl"
    for round_ in range(3):
        daemon = await start_daemon(config, tmp_path)
        before = len(list(out.glob("metrics*"))) if out.exists() else 0
        await daemon.wait_for(
            lambda b=before: len(list(out.glob("metrics*"))) >= b + 2, what="a rotation"
        )
        await asyncio.sleep(0.05 * (round_ + 1))
        daemon.proc.send_signal(signal.SIGKILL)
        await daemon.proc.wait()
    daemon = await start_daemon(config, tmp_path)
    await daemon.wait_for(lambda: metrics.exists() and metrics.stat().st_size > 0, what="lines")
    await asyncio.sleep(1.0)  # the start finishes what the kills left (compression)
    code, _ = await daemon.stop()
    assert code == 0, daemon.stderr.decode()[-2000:]

    files = sorted(out.glob("metrics*"))
    assert not [f for f in files if f.name.endswith(".tmp")]
    archives = [f for f in files if f.name != "metrics.jsonl"]
    assert archives
    assert all(f.suffix == ".gz" for f in archives), [f.name for f in archives]
    lines = [line for f in files for line in read(f)]
    records = [json.loads(line) for line in lines]  # every line whole
    keys = [(r["collector"], r["ts"]) for r in records]
    assert len(keys) == len(set(keys))  # none twice
    assert len(records) > 20
