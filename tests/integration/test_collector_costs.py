"""What keeps a collector cheap, held in place: one hop to the db collector's thread per cycle,
a statement still running at close stopped at once, and the system collector's own readings
(faster than psutil's) equal to psutil's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
import types
from typing import TYPE_CHECKING

import psutil
import pytest

from fossamon.collectors import system
from fossamon.collectors.db import DbCollector
from fossamon.collectors.system import SystemCollector
from fossamon.config import parse_config

if TYPE_CHECKING:
    from pathlib import Path

FOREVER = (
    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 1000000000000) "
    "SELECT count(*) FROM c"
)


def db_collector(path: Path, queries: list[tuple[str, str]], timeout: str = "2s") -> DbCollector:
    lines = ["[collectors.db]", f'path = "{path}"', f'timeout = "{timeout}"']
    for name, sql in queries:
        lines += ["[[collectors.db.queries]]", f'name = "{name}"', f'sql = "{sql}"']
    config = parse_config("\n".join(lines) + "\n", "test.toml")
    assert config.collectors.db is not None
    return DbCollector(config.collectors.db)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        conn.executemany("INSERT INTO t VALUES (?)", ((i,) for i in range(100)))
        conn.commit()
    return path


class TestDbCollectorThread:
    async def test_a_cycle_is_one_hop_to_the_collectors_thread(self, db):
        collector = db_collector(db, [("a", "SELECT count(*) FROM t"), ("b", "SELECT id FROM t")])
        try:
            assert (await collector.collect()).errors == ()  # opens the file
            thread = collector._thread
            assert thread is not None
            hops = 0
            submit = thread.submit

            def counted(*args, **kwargs):
                nonlocal hops
                hops += 1
                return submit(*args, **kwargs)

            thread.submit = counted  # type: ignore[method-assign]
            batch = await collector.collect()
            in_the_cycle = hops
        finally:
            await collector.close()
        assert batch.errors == ()
        assert in_the_cycle == 1  # the file checked, the schema read and both queries

    async def test_query_time_is_the_statements_own(self, db):
        collector = db_collector(db, [("a", "SELECT count(*) FROM t")])
        try:
            batch = await collector.collect()
        finally:
            await collector.close()
        (seconds,) = [s.value for s in batch.samples if s.name == "db_query_seconds"]
        assert 0 < seconds < batch.duration

    async def test_close_stops_a_statement_left_running_by_a_cancelled_cycle(self, db):
        collector = db_collector(db, [("forever", FOREVER)], timeout="60s")
        cycle = asyncio.create_task(collector.collect())
        await asyncio.sleep(0.3)  # the statement is running on the thread
        cycle.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cycle
        started = time.perf_counter()
        await asyncio.wait_for(collector.close(), 5)
        assert time.perf_counter() - started < 1.0
        assert collector._conn.conn is None


class TestSystemReadings:
    def test_own_memory_and_cpu_as_psutil_reads_them(self):
        collector = SystemCollector(parse_config("", "t.toml").collectors.system)
        ours = {s.name: s.value for s in collector._self()}
        process = psutil.Process(os.getpid())
        times = process.cpu_times()
        rss = process.memory_info().rss
        assert ours["fossamon_process_cpu_seconds_total"] == pytest.approx(
            times.user + times.system, abs=0.05
        )
        assert ours["fossamon_process_resident_memory_bytes"] == pytest.approx(rss, rel=0.05)

    @pytest.mark.parametrize(
        ("total_kb", "free_kb"), [(2_097_148, 1_048_574), (1_000_000, 1), (0, 0)]
    )
    def test_swap_percent_is_psutils(self, tmp_path, monkeypatch, total_kb, free_kb):
        (tmp_path / "meminfo").write_text(
            "MemTotal:        8000000 kB\nMemFree:         1000000 kB\n"
            f"SwapCached:            0 kB\nSwapTotal:       {total_kb} kB\n"
            f"SwapFree:        {free_kb} kB\nDirty:                12 kB\n"
        )
        (tmp_path / "vmstat").write_text("pswpin 10\npswpout 20\n")
        monkeypatch.setattr(psutil, "PROCFS_PATH", str(tmp_path))
        assert system._swap_percent() == psutil.swap_memory().percent

    def test_swap_percent_falls_back_to_psutil_without_the_swap_lines(self, tmp_path, monkeypatch):
        (tmp_path / "meminfo").write_text("MemTotal:        8000000 kB\n")
        monkeypatch.setattr(psutil, "PROCFS_PATH", str(tmp_path))
        asked: list[bool] = []

        def swap_memory():
            asked.append(True)
            return types.SimpleNamespace(percent=25.0)

        monkeypatch.setattr(psutil, "swap_memory", swap_memory)
        assert system._swap_percent() == 25.0
        assert asked
