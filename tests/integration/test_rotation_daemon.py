"""A real `fossamon run` rotating its metrics file: every line written is found (or counted
as removed by retention) after SIGTERM; none torn, none twice."""

from __future__ import annotations

import asyncio
import gzip
import json
import re

import pytest
from daemon_harness import daemon_config, start_daemon

from fossamon.control import STATE_FILE
from fossamon.demo.target import DemoTarget
from fossamon.storage.rotation import list_archives

KEEP = 3


@pytest.fixture
async def target(small_demo_db):
    async with DemoTarget(small_demo_db) as running:
        yield running


def closed_counters(stderr: str, file: str) -> dict[str, int]:
    line = next(x for x in stderr.splitlines() if "output closed" in x and f"file={file}" in x)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)(?=\s|$)", line)}


class TestBuiltinRotation:
    async def test_accounting_holds_across_many_rotations(self, tmp_path, target, small_demo_db):
        config = daemon_config(tmp_path, target.url, small_demo_db, system_interval="100ms")
        text = config.read_text()
        policy = f'max_size = "4KiB"\nkeep = {KEEP}\nrotate_every = "1m"\n'
        metrics_path = f'path = "{tmp_path}/out/metrics.jsonl"\n'
        config.write_text(text.replace(metrics_path, metrics_path + policy))
        daemon = await start_daemon(config, tmp_path)
        out = tmp_path / "out" / "metrics.jsonl"
        seen: set[str] = set()

        def pruned_some() -> bool:
            seen.update(a.plain.name for a in list_archives(out))
            return len(seen) >= KEEP + 3  # so retention has removed archives too

        await daemon.wait_for(pruned_some, what="rotations beyond keep")
        rc, _ = await daemon.stop()
        stderr = daemon.stderr.decode()
        assert rc == 0, stderr[-2000:]
        counters = closed_counters(stderr, "metrics")
        archives = list_archives(out)
        assert len(archives) == KEEP
        assert all(a.has_gz and not a.has_plain and not a.has_tmp for a in archives)
        archived = [
            line for a in archives for line in gzip.decompress(a.gz.read_bytes()).splitlines()
        ]
        current = out.read_bytes().splitlines()
        records = [json.loads(line) for line in [*archived, *current]]  # a torn line would raise
        keys = [(r["collector"], r["ts"]) for r in records]
        assert len(keys) == len(set(keys))
        found = len(archived) + len(current)
        assert found + counters["lines_removed"] == counters["lines_written"]
        assert counters["archives_removed"] == counters["rotations"] - KEEP
        assert counters["archiving_unfinished"] == 0
        print(  # the figures for the closing note (pytest -s)
            f"written={counters['lines_written']} current={len(current)} "
            f"archived={len(archived)} removed={counters['lines_removed']} "
            f"archives={len(archives)} rotations={counters['rotations']}"
        )


class TestStopFlushes:
    async def test_sigterm_writes_every_buffered_line(self, tmp_path, target, small_demo_db):
        """With a long flush_interval nothing reaches the file while the daemon runs; SIGTERM
        must write every line it holds, whole, before the exit."""
        config = daemon_config(tmp_path, target.url, small_demo_db, system_interval="100ms")
        metrics_path = f'path = "{tmp_path}/out/metrics.jsonl"\n'
        hold = 'flush_interval = "1h"\nbuffer_limit = "64MiB"\n'
        config.write_text(config.read_text().replace(metrics_path, metrics_path + hold))
        daemon = await start_daemon(config, tmp_path)
        out = tmp_path / "out" / "metrics.jsonl"
        await daemon.wait_for((tmp_path / "run" / STATE_FILE).exists, what="the daemon started")
        await asyncio.sleep(2.0)
        assert out.stat().st_size == 0  # all of it is still in the buffer
        rc, _ = await daemon.stop()
        stderr = daemon.stderr.decode()
        assert rc == 0, stderr[-2000:]
        counters = closed_counters(stderr, "metrics")
        records = [json.loads(line) for line in out.read_bytes().splitlines()]
        assert len(records) == counters["lines_written"] >= 20  # 2 s of 100 ms system runs
        stopped = next(x for x in stderr.splitlines() if " stopped " in x or "event=stopped" in x)
        assert "lines_dropped=0" in stopped
        assert "worker threads still blocked" not in stderr  # idle archive threads let go
        assert {r["collector"] for r in records} >= {"system", "api", "db"}
        print(f"buffered at SIGTERM and written on the way out: {len(records)} lines")
