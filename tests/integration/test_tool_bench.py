"""`fossamon bench` against the stand-in target and demo database: real processes, real
timings, the monitored file hashed before and after."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import ClassVar

import pytest
from support import daemon_head, demo_collectors

from fossamon.config import load_config
from fossamon.demo.target import DemoTarget
from fossamon.tools.bench_baseline import Baseline, BaselineItem
from fossamon.tools.bench_measure import ItemRun, measure
from fossamon.tools.bench_output import build_rows
from fossamon.tools.bench_stats import Verdict, compare, fails_gate, summarize

QUERIES = ("work_orders_count", "recent_work_orders")
ENDPOINTS = ("health", "work_orders")
ITEMS = sorted([*(f"db:{q}" for q in QUERIES), *(f"api:{e}" for e in ENDPOINTS)])


def bench_config(tmp_path: Path, url: str, db: Path, extra_query: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        daemon_head(tmp_path)
        + demo_collectors(
            url, db, interval=None, system_interval=None, api_timeout="5s", record_value=False
        )
        + f"""
[[collectors.db.queries]]
name = "recent_work_orders"
sql = "SELECT * FROM work_orders ORDER BY created_date DESC LIMIT 100"
{extra_query}
"""
    )
    return path


async def bench(config: Path, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FOSSAMON_CONFIG"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fossamon",
        "bench",
        "-c",
        str(config),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def fingerprint(db: Path) -> tuple[str, list[str]]:
    """The file's bytes, and what lies next to it (a -journal or -wal would be a write)."""
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    return digest, sorted(p.name for p in db.parent.iterdir())


@pytest.fixture
async def target(small_demo_db):
    async with DemoTarget(small_demo_db) as running:
        yield running


class TestBaselineRoundTrip:
    async def test_save_then_compare_and_the_database_is_untouched(
        self, tmp_path, target, small_demo_db
    ):
        before = fingerprint(small_demo_db)
        config = bench_config(tmp_path, target.url, small_demo_db)

        rc, out, err = await bench(config, "--save-baseline", "--repeat", "5")
        assert rc == 0, err + out
        saved = tmp_path / "state" / "bench-baseline.json"
        assert f"baseline saved to {saved}" in out
        doc = json.loads(saved.read_text())
        assert doc["format"] == "fossamon-bench-baseline"
        assert sorted(f"{i['kind']}:{i['name']}" for i in doc["items"]) == ITEMS
        assert all(len(i["samples"]) == 5 for i in doc["items"])
        assert all(s > 0 for i in doc["items"] for s in i["samples"])
        assert [p.name for p in saved.parent.iterdir()] == [saved.name]  # no temp file left
        for line in ("ITEM", "db:work_orders_count", "api:health", "MEDIAN", "IQR"):
            assert line in out

        rc, out, err = await bench(config, "--compare", "--repeat", "5", "--json")
        assert rc == 0, err + out
        result = json.loads(out)
        assert result["baseline"]["path"] == str(saved)
        verdicts = {c["key"]: c for c in result["comparison"]}
        assert sorted(verdicts) == ITEMS
        for entry in verdicts.values():
            assert entry["verdict"] in {"IMPROVED", "UNCHANGED", "DEGRADED"}
            base, now = entry["baseline"]["median"], entry["current"]["median"]
            assert entry["change_percent"] == pytest.approx((now - base) / base * 100)
        assert result["gate"] is None
        assert {i["key"]: len(i["samples"]) for i in result["items"]} == dict.fromkeys(ITEMS, 5)

        assert fingerprint(small_demo_db) == before

    async def test_writing_sql_in_the_config_cannot_change_the_file(
        self, tmp_path, target, small_demo_db
    ):
        before = fingerprint(small_demo_db)
        hostile = """
[[collectors.db.queries]]
name = "wipe"
sql = "DELETE FROM work_orders"
[[collectors.db.queries]]
name = "copy_out"
sql = "ATTACH DATABASE 'file:stolen.db' AS x"
"""
        config = bench_config(tmp_path, target.url, small_demo_db, hostile)
        rc, out, err = await bench(config, "--repeat", "2", "--save-baseline")
        assert rc == 1, err + out
        assert "readonly database" in out  # the DELETE's failure, shown under the table
        assert "not saving a baseline" in err
        assert not (tmp_path / "state" / "bench-baseline.json").exists()
        assert fingerprint(small_demo_db) == before
        assert not list(tmp_path.glob("**/stolen.db"))
        assert not Path("stolen.db").exists()


class TestDegradation:
    async def test_injected_latency_is_degraded_and_fails_the_gate(
        self, tmp_path, target, small_demo_db
    ):
        config = bench_config(tmp_path, target.url, small_demo_db)
        rc, out, err = await bench(config, "--save-baseline", "--repeat", "8")
        assert rc == 0, err + out

        target.faults.set("/api/work-orders", latency=0.15)
        rc, out, err = await bench(config, "--fail-over", "50", "--repeat", "4", "--json")
        assert rc == 1, err + out
        result = json.loads(out)
        slow = next(c for c in result["comparison"] if c["key"] == "api:work_orders")
        assert slow["verdict"] == "DEGRADED"
        assert slow["current"]["median"] >= 0.15
        assert slow["change_percent"] > 50
        # the injected item fails the gate; on a busy machine another item's drift may too
        assert result["gate"]["fail_over_percent"] == 50.0
        assert "api:work_orders" in result["gate"]["failed"]

        # the same degradation under a threshold it does not reach: shown, not failed
        rc, out, err = await bench(config, "--fail-over", "1000000", "--repeat", "3")
        assert rc == 0, err + out
        # the second table (the comparison) has the verdict last
        rows = [line for line in out.splitlines() if line.startswith("api:work_orders ")]
        assert len(rows) == 2
        assert rows[1].split()[-1] == "DEGRADED"
        assert "--fail-over 1000000%: pass" in out


class TestNoise:
    async def test_timings_of_the_same_conditions_are_unchanged(
        self, tmp_path, target, small_demo_db
    ):
        """Two runs of identical work under identical conditions: the even and the odd rounds
        of one real measurement (rounds alternate, so both halves saw the same host load).
        Separate runs add the drift of the host between them, which no test can hold still;
        the --min-change floor is for that."""
        config = load_config(str(bench_config(tmp_path, target.url, small_demo_db)))
        items = await measure(config, repeat=20)
        assert all(len(item.samples) == 20 for item in items)
        baseline = Baseline(
            tmp_path / "b.json",
            "even rounds",
            "test",
            10,
            {
                i.key: BaselineItem(i.kind, i.name, i.definition, tuple(i.samples[::2]))
                for i in items
            },
        )
        for item in items:
            item.samples = item.samples[1::2]
        rows = build_rows(items, baseline, min_change=0.05)
        verdicts = {row.key: row.comparison.verdict for row in rows if row.comparison}
        assert verdicts == dict.fromkeys(ITEMS, Verdict.UNCHANGED), rows


class TestVerdictRule:
    """The noise band on figures worked out by hand: IQRs by linear interpolation."""

    # quartiles (inclusive) of 1..9 ms: Q1 3, median 5, Q3 7 -> IQR 4 ms
    BASE: ClassVar[list[float]] = [i / 1000 for i in range(1, 10)]

    def shifted(self, by: float) -> list[float]:
        return [v + by for v in self.BASE]

    def test_a_shift_within_both_iqrs_is_unchanged(self):
        # change 7.9 ms, noise = 4 + 4 = 8 ms
        result = compare(summarize(self.BASE), summarize(self.shifted(0.0079)))
        assert result.verdict is Verdict.UNCHANGED
        assert result.change_percent == pytest.approx(158.0)
        assert result.noise_percent == pytest.approx(160.0)

    def test_a_shift_beyond_both_iqrs_is_degraded_or_improved(self):
        assert compare(summarize(self.BASE), summarize(self.shifted(0.0081))).verdict is (
            Verdict.DEGRADED
        )
        faster = [v / 4 for v in self.BASE]  # median 1.25 ms, IQR 1 ms: noise 5 ms
        result = compare(summarize(self.BASE), summarize(faster))
        assert result.verdict is Verdict.UNCHANGED  # -3.75 ms is within 5 ms
        tight = [0.001] * 9  # IQR 0
        result = compare(summarize(tight), summarize([0.0005] * 9))
        assert result.verdict is Verdict.IMPROVED
        assert result.change_percent == pytest.approx(-50.0)

    def test_the_floor_holds_for_steady_timings(self):
        steady = [0.010] * 9  # IQR 0: only the 5 % floor is left
        assert compare(summarize(steady), summarize([0.0104] * 9)).verdict is Verdict.UNCHANGED
        assert compare(summarize(steady), summarize([0.0106] * 9)).verdict is Verdict.DEGRADED
        lenient = compare(summarize(steady), summarize([0.0106] * 9), min_change=0.10)
        assert lenient.verdict is Verdict.UNCHANGED


class TestItemsThatChanged:
    def test_new_gone_redefined_and_failed_items(self, tmp_path):
        def item(name, sql, samples, failures=()):
            return ItemRun("db", name, sql, list(samples), list(failures))

        old = {
            "db:kept": BaselineItem("db", "kept", "SELECT 1", (0.001, 0.002, 0.003)),
            "db:edited": BaselineItem("db", "edited", "SELECT 1", (0.001, 0.002)),
            "db:removed": BaselineItem("db", "removed", "SELECT 1", (0.001, 0.002)),
            "db:broken": BaselineItem("db", "broken", "SELECT 1", (0.001, 0.002)),
        }
        baseline = Baseline(tmp_path / "b.json", "then", "h", 3, old)
        now = [
            item("kept", "SELECT 1", [0.001, 0.002, 0.003]),
            item("edited", "SELECT 2", [0.5, 0.6]),
            item("added", "SELECT 1", [0.001, 0.002]),
            item("broken", "SELECT 1", [], ["sql: no such table: x"] * 2),
        ]
        rows = {row.key: row for row in build_rows(now, baseline, min_change=0.05)}
        verdicts = {key: row.comparison.verdict for key, row in rows.items()}
        assert verdicts == {
            "db:kept": Verdict.UNCHANGED,
            "db:edited": Verdict.REDEFINED,
            "db:added": Verdict.NEW,
            "db:broken": Verdict.FAILED,
            "db:removed": Verdict.GONE,
        }
        gate = [key for key, row in rows.items() if fails_gate(row.comparison, 10.0)]
        assert gate == ["db:broken"]  # a changed config is no degradation; an untimed item is
        assert rows["db:edited"].comparison.change_percent is None


class TestBaselineProblems:
    async def test_missing_baseline_is_a_clear_error(self, tmp_path, small_demo_db):
        config = bench_config(tmp_path, "http://127.0.0.1:9", small_demo_db)
        rc, out, err = await bench(config, "--compare")
        assert rc == 66
        assert out == ""
        path = tmp_path / "state" / "bench-baseline.json"
        assert f"no baseline at {path}" in err
        assert "--save-baseline" in err

    async def test_a_baseline_that_cannot_be_written_keeps_the_figures(
        self, tmp_path, target, small_demo_db
    ):
        config = bench_config(tmp_path, target.url, small_demo_db)
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        rc, out, err = await bench(
            config, "--save-baseline", "--repeat", "2", "--baseline", str(blocker / "b.json")
        )
        assert rc == 73
        assert f"cannot write the baseline {blocker / 'b.json'}" in err
        assert "db:work_orders_count" in out  # the run's figures are printed all the same
        assert "baseline saved" not in out

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            ("{not json", "is not valid JSON"),
            ('{"format": "something else"}', 'no "format": "fossamon-bench-baseline"'),
            (
                (
                    '{"format": "fossamon-bench-baseline", "version": 1, "created": "x", '
                    '"host": "h", "repeat": 3, "items": [{"kind": "db", "name": "q", '
                    '"definition": "s", "samples": [0.1, "fast"]}]}'
                ),
                "items[0].samples is not a list of timings",
            ),
        ],
    )
    async def test_corrupt_baseline_is_a_clear_error(
        self, tmp_path, small_demo_db, content, message
    ):
        config = bench_config(tmp_path, "http://127.0.0.1:9", small_demo_db)
        broken = tmp_path / "elsewhere.json"
        broken.write_text(content)
        rc, _, err = await bench(config, "--fail-over", "10", "--baseline", str(broken))
        assert rc == 66, err
        assert str(broken) in err
        assert message in err
        assert "--save-baseline" in err


def sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


class TestWalDatabase:
    async def test_a_cleanly_closed_wal_database_gets_only_sqlites_read_files(
        self, tmp_path, target, small_demo_db
    ):
        """A WAL database its application closed: SQLite's reader creates `-wal` (0 bytes) and
        `-shm` next to it (docs/bench-and-report.md); the main file is unchanged."""
        folder = tmp_path / "db"
        folder.mkdir()
        db = folder / "wal.db"
        shutil.copyfile(small_demo_db, db)
        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
        assert sorted(p.name for p in folder.iterdir()) == ["wal.db"]  # a clean close
        before = sha(db)
        rc, out, err = await bench(bench_config(tmp_path, target.url, db), "--repeat", "2")
        assert rc == 0, err + out
        assert sha(db) == before
        assert sorted(p.name for p in folder.iterdir()) == ["wal.db", "wal.db-shm", "wal.db-wal"]
        assert (folder / "wal.db-wal").stat().st_size == 0

    async def test_the_wal_of_an_open_database_is_left_as_it_was(
        self, tmp_path, target, small_demo_db
    ):
        """The application has it open with committed pages only in the WAL: the bench reads
        them and changes neither the main file nor the WAL's content."""
        db = tmp_path / "wal.db"
        shutil.copyfile(small_demo_db, db)
        with contextlib.closing(sqlite3.connect(db)) as app:
            app.execute("PRAGMA journal_mode=WAL")
            app.execute("PRAGMA wal_autocheckpoint=0")
            app.execute("DELETE FROM work_orders WHERE rowid % 2 = 0")
            app.commit()
            wal = tmp_path / "wal.db-wal"
            before = (sha(db), sha(wal))
            assert wal.stat().st_size > 0
            rc, out, err = await bench(bench_config(tmp_path, target.url, db), "--repeat", "2")
            assert rc == 0, err + out
            assert (sha(db), sha(wal)) == before
