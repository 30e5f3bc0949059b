"""`fossamon db analyze|optimize` as an operator runs them: real processes on the demo database
(100k work orders, the seed module's default sizes), built once in a temporary directory."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fossamon.demo.seed import create_demo_database

REPO = Path(__file__).resolve().parents[2]
# The runbook's index list was fixed (created_date, service_code, customer_id); here the same
# columns have to come out of the queries. The shipped config's queries filter on created_date
# (last hour) and on status + work_order_id (pending dispensers); these two add the others.
RUNBOOK_QUERIES = {
    "orders_by_service_code": (
        "SELECT id, site_name, created_date FROM work_orders WHERE service_code = '2861' "
        "ORDER BY created_date DESC LIMIT 100"
    ),
    "orders_of_customer": "SELECT COUNT(*) FROM work_orders WHERE customer_id = 42",
}
# Every work order with every dispenser of the same customer's orders: 1,019,378 rows on the
# default demo database, the size of the runbook analyzer's unbounded join (1,000,496 rows,
# 1.9 GB peak RSS with fetchall).
MILLION_ROW_JOIN = (
    "SELECT w.id, w.status, w.created_date, d.serial_number, d.make FROM work_orders w "
    "JOIN work_orders w2 ON w2.customer_id = w.customer_id "
    "JOIN dispensers d ON d.work_order_id = w2.id"
)
# The same count, computed per customer, so the test does not trust the query it checks.
MILLION_ROW_JOIN_SIZE = (
    "SELECT SUM(o.n * d.n) FROM "
    "(SELECT customer_id, COUNT(*) AS n FROM work_orders GROUP BY customer_id) AS o JOIN "
    "(SELECT w.customer_id, COUNT(*) AS n FROM dispensers d "
    " JOIN work_orders w ON w.id = d.work_order_id GROUP BY w.customer_id) AS d "
    "USING (customer_id)"
)
COUNT_TO_1E12 = (
    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 1000000000000) "
    "SELECT count(*) FROM c"
)
PEAK_RSS_LIMIT = 150 * 1024 * 1024
RUNS = "3"


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "fossawork_v2.db"
    create_demo_database(path)  # the default sizes: 100k work orders, 20k dispensers
    return path


@pytest.fixture
def db(tmp_path: Path, demo_db: Path) -> Path:
    """A private copy: the tests that optimize must not change what the others read."""
    directory = tmp_path / "backend"
    directory.mkdir()
    return Path(shutil.copy(demo_db, directory / demo_db.name))


def write_config(tmp_path: Path, db: Path, *, timeout: str = "10s") -> Path:
    """The shipped config.toml pointed at `db`, with the runbook's two queries added."""
    text = (REPO / "config.toml").read_text()
    text = text.replace('path = "/backend/fossawork_v2.db"', f'path = "{db}"')
    text = re.sub(r'(\[collectors\.db\][^\[]*?)timeout = "5s"', rf'\1timeout = "{timeout}"', text)
    for name, sql in RUNBOOK_QUERIES.items():
        text += f'\n[[collectors.db.queries]]\nname = "{name}"\nsql = "{sql}"\n'
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def fossamon(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FOSSAMON_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "fossamon", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def fingerprint(*paths: Path) -> dict[str, str | None]:
    """Each file's SHA-256 (None where there is no file)."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
        for path in paths
    }


def content_digest(path: Path) -> str:
    """SHA-256 of the schema and every row of every table in rowid order: equal for equal
    content, whatever the pages look like (`.dump`'s verdict, without its quoting cost)."""
    digest = hashlib.sha256()
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        schema = list(
            conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY 2")
        )
        digest.update(repr(schema).encode())
        for kind, name, _table, _sql in schema:
            if kind == "table" and not name.startswith("sqlite_"):
                for row in conn.execute(f'SELECT * FROM "{name}" ORDER BY rowid'):
                    digest.update(repr(row).encode())
    return digest.hexdigest()


def index_leads(path: Path) -> set[str]:
    """The first column of every index in the database."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")]
        return {conn.execute(f"PRAGMA index_info('{n}')").fetchone()[2] for n in names}


def advised_leads(document: dict[str, object]) -> set[str]:
    indexes = document["advised_indexes"]
    assert isinstance(indexes, list)
    return {index["columns"][0] for index in indexes}


def with_wal_writer(path: Path) -> sqlite3.Connection:
    """Turn `path` into a WAL database with an application connection that keeps committed
    rows in the -wal file (not checkpointed), as a running app does."""
    app = sqlite3.connect(path, isolation_level=None)
    app.execute("PRAGMA journal_mode=WAL")
    app.execute("PRAGMA wal_autocheckpoint=0")
    app.execute("UPDATE work_orders SET notes = 'seen by the app' WHERE id <= 50")
    assert Path(f"{path}-wal").stat().st_size > 0
    return app


# Forks and execs the command, waits for it, and reports its exit status and ru_maxrss. Linux
# counts in a child's ru_maxrss the RSS of the process it was forked from (the copy it was
# until exec): forked from pytest, which grows past 150 MB over the whole suite, every child
# would seem that big. Forked from this small launcher, it is measured as itself.
LAUNCHER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(json.dumps([os.waitstatus_to_exitcode(status), usage.ru_maxrss]))
"""


def run_measured(*args: str | Path, timeout: float = 90) -> tuple[int, str, int, float]:
    """Run fossamon; its exit status, stdout, peak RSS (bytes, from wait4's rusage of that
    one process, forked from a small launcher) and wall time."""
    env = {k: v for k, v in os.environ.items() if k != "FOSSAMON_CONFIG"}
    command = [sys.executable, "-m", "fossamon", *map(str, args)]
    with tempfile.TemporaryFile() as out:
        started = time.monotonic()
        launcher = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, *command],
            stdout=out, stderr=subprocess.PIPE, env=env, start_new_session=True,
        )  # fmt: skip
        try:
            _, err = launcher.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and the command
            launcher.wait()
            pytest.fail(f"fossamon {args} ran over {timeout}s")
        elapsed = time.monotonic() - started
        status, maxrss = json.loads(err.decode().strip().splitlines()[-1])
        out.seek(0)
        return status, out.read().decode(), maxrss * 1024, elapsed


class TestAnalyze:
    def test_expert_advises_the_runbook_indexes_and_the_file_is_untouched(self, tmp_path, db, need):
        need(shutil.which("sqlite3") is not None, "the sqlite3 shell (Debian package sqlite3)")
        config = write_config(tmp_path, db)
        before, files = fingerprint(db), sorted(db.parent.iterdir())
        done = fossamon("db", "analyze", "-c", config, "--runs", RUNS, "--json")
        assert done.returncode == 0, done.stderr
        assert fingerprint(db) == before
        assert sorted(db.parent.iterdir()) == files  # no -journal, -wal or -shm left behind

        report = json.loads(done.stdout)
        assert report["advisor"].startswith("sqlite3 .expert")
        assert {"created_date", "service_code", "customer_id"} <= advised_leads(report)
        queries = {q["name"]: q for q in report["queries"]}
        last_hour = queries["work_orders_last_hour"]
        assert last_hour["plan"] == ["SCAN work_orders"]
        assert last_hour["full_scans"] == ["work_orders"]
        assert last_hour["rows_returned"] == 1
        assert last_hour["counters"]["fullscan_steps"] >= 99_000  # SQLite's own count
        assert len(last_hour["run_seconds"]) == int(RUNS)
        assert last_hour["min_seconds"] <= last_hour["median_seconds"] <= last_hour["max_seconds"]
        assert queries["orders_by_service_code"]["rows_returned"] == 100
        assert queries["orders_by_service_code"]["counters"]["sorts"] == 1
        tables = {t["name"]: t for t in report["tables"]}
        assert tables["work_orders"]["rows"] == 100_000
        assert len(tables["work_orders"]["columns"]) == 14
        assert tables["work_orders"]["bytes"] > 10_000_000
        assert tables["work_orders"]["indexes"] == []
        assert report["database"]["page_count"] * report["database"]["page_size"] == (
            db.stat().st_size
        )

    def test_plan_advisor_finds_the_same_columns(self, tmp_path, db):
        config = write_config(tmp_path, db)
        done = fossamon("db", "analyze", "-c", config, "--runs", "1", "--advisor", "plan", "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["advisor"].startswith("plan")
        assert {"created_date", "service_code", "customer_id", "status", "work_order_id"} <= (
            advised_leads(report)
        )

    def test_table_output_for_people(self, tmp_path, db):
        config = write_config(tmp_path, db)
        extra = "SELECT COUNT(*) FROM dispensers WHERE make = 'Wayne'"
        done = fossamon("db", "analyze", "-c", config, "--runs", "1", "--query", extra)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        header = next(line for line in lines if line.startswith("query (1 run)"))
        assert header.split() == [
            "query", "(1", "run)", "median", "fastest", "slowest", "rows", "scanned", "sorts",
            "auto-index",
        ]  # fmt: skip
        adhoc = next(line for line in lines if line.startswith("adhoc_1 "))
        assert adhoc.split()[4:6] == ["1", "19999"]  # one row returned, the table scanned
        assert any("ON dispensers(make)" in line or '"make"' in line for line in lines)

    def test_peak_memory_stays_bounded_on_a_million_row_join(self, tmp_path, db):
        with contextlib.closing(sqlite3.connect(db)) as conn:
            expected_rows = conn.execute(MILLION_ROW_JOIN_SIZE).fetchone()[0]
        assert expected_rows > 1_000_000
        config = write_config(tmp_path, db)
        args = ("db", "analyze", "-c", config, "--runs", "1", "--json")
        status, out, peak_rss, elapsed = run_measured(*args, "--query", MILLION_ROW_JOIN)
        assert status == 0
        join = next(q for q in json.loads(out)["queries"] if q["name"] == "adhoc_1")
        assert join["rows_returned"] == expected_rows
        print(
            f"\nanalyze with a {expected_rows:,}-row join on the 100k demo database: "
            f"peak RSS {peak_rss / 2**20:.1f} MiB, {elapsed:.2f} s wall "
            f"(the join's timed run {join['median_seconds']:.2f} s)"
        )
        assert peak_rss < PEAK_RSS_LIMIT

    def test_peak_memory_stays_bounded_on_big_blobs(self, tmp_path, db):
        # 1,500 rows of 1 MB each: 500 at a time held 500 MB (1 GB peak RSS)
        config = write_config(tmp_path, db)
        blobs = "SELECT zeroblob(1000000) FROM work_orders LIMIT 1500"
        args = ("db", "analyze", "-c", config, "--runs", "1", "--json", "--query", blobs)
        status, out, peak_rss, _elapsed = run_measured(*args)
        assert status == 0
        run = next(q for q in json.loads(out)["queries"] if q["name"] == "adhoc_1")
        assert run["rows_returned"] == 1500
        assert peak_rss < PEAK_RSS_LIMIT, f"peak RSS {peak_rss / 2**20:.0f} MiB"

    def test_a_runaway_query_is_interrupted_at_the_timeout(self, tmp_path, db):
        config = write_config(tmp_path, db, timeout="1s")
        started = time.monotonic()
        done = fossamon("db", "analyze", "-c", config, "--runs", "1", "--json",
                        "--query", COUNT_TO_1E12)  # fmt: skip
        elapsed = time.monotonic() - started
        assert done.returncode == 1
        runaway = next(q for q in json.loads(done.stdout)["queries"] if q["name"] == "adhoc_1")
        assert runaway["error_kind"] == "timeout"
        assert runaway["error"] == "interrupted after 1s"
        assert elapsed < 20  # the other queries and the advisors, plus one 1 s interruption

    def test_a_wal_database_in_use_is_read_without_a_change(self, tmp_path, db):
        app = with_wal_writer(db)
        try:
            sidecars = (db, Path(f"{db}-wal"))
            before = fingerprint(*sidecars)
            config = write_config(tmp_path, db)
            done = fossamon("db", "analyze", "-c", config, "--runs", "1", "--json")
            assert done.returncode == 0, done.stderr
            assert fingerprint(*sidecars) == before
            counts = {q["name"]: q for q in json.loads(done.stdout)["queries"]}
            assert counts["work_orders_count"]["rows_returned"] == 1
        finally:
            app.close()

    @pytest.mark.parametrize(
        "command", [("analyze", "--runs", "1"), ("optimize", "--advised", "--dry-run")]
    )
    def test_a_cleanly_closed_wal_database_keeps_its_bytes_and_mtime(self, tmp_path, db, command):
        with contextlib.closing(sqlite3.connect(db)) as app:
            app.execute("PRAGMA journal_mode=WAL")
        assert not Path(f"{db}-wal").exists()  # closed cleanly: no -wal, no -shm
        os.utime(db, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
        before, stat_before = fingerprint(db), db.stat()
        config = write_config(tmp_path, db)
        done = fossamon("db", *command, "-c", config)
        assert done.returncode == 0, done.stderr
        assert fingerprint(db) == before
        assert db.stat().st_mtime_ns == stat_before.st_mtime_ns
        assert db.stat().st_size == stat_before.st_size
        # SQLite's read marks, as docs/db-tools.md says: an empty -wal and a 32 KiB -shm
        assert Path(f"{db}-wal").stat().st_size == 0
        assert Path(f"{db}-shm").stat().st_size == 32 * 1024

    def test_a_missing_database_is_named_and_not_created(self, tmp_path):
        missing = tmp_path / "nowhere" / "fossawork_v2.db"
        config = write_config(tmp_path, missing)
        done = fossamon("db", "analyze", "-c", config)
        assert done.returncode == 1
        assert f"{missing}: no such file" in done.stderr
        assert not missing.exists()

    def test_no_db_section_is_a_config_error(self, tmp_path):
        config = tmp_path / "config.toml"
        config.write_text("[daemon]\nlog_level = 'info'\n")
        done = fossamon("db", "analyze", "-c", config)
        assert done.returncode == 78
        assert "no [collectors.db] section" in done.stderr


class TestOptimize:
    def test_dry_run_changes_nothing(self, tmp_path, db):
        app = with_wal_writer(db)
        try:
            sidecars = (db, Path(f"{db}-wal"))
            before, files = fingerprint(*sidecars), sorted(db.parent.iterdir())
            config = write_config(tmp_path, db)
            done = fossamon("db", "optimize", "-c", config, "--advised", "--dry-run")
            assert done.returncode == 0, done.stderr
            assert fingerprint(*sidecars) == before
            assert sorted(db.parent.iterdir()) == files  # no backup either
            assert "dry run, nothing will change" in done.stdout
            assert re.search(r"CREATE INDEX .*created_date", done.stdout)
            assert done.stdout.rstrip().endswith("dry run: nothing was changed")
        finally:
            app.close()

    def test_advised_indexes_make_the_queries_faster_and_the_backup_restores(self, tmp_path, db):
        config = write_config(tmp_path, db)
        original_content = content_digest(db)
        done = fossamon("db", "optimize", "-c", config, "--advised", "--json", "--runs", RUNS)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["outcome"] == "done"
        statements = [step["statement"] for step in result["steps"]]
        assert statements[0].startswith("backup ")
        assert statements[-2:] == ["COMMIT", "VACUUM"]

        assert {"created_date", "service_code", "customer_id", "status", "work_order_id"} <= (
            index_leads(db)
        )
        before = {t["name"]: t for t in result["before"]}
        after = {t["name"]: t for t in result["after"]}
        print("\noptimize --advised on the 100k demo database (median of 3 runs):")
        for name, old in before.items():
            new = after[name]
            print(
                f"  {name}: {old['median_seconds'] * 1000:.3f} ms -> "
                f"{new['median_seconds'] * 1000:.3f} ms "
                f"({old['median_seconds'] / new['median_seconds']:.0f}x), "
                f"full-scan rows {old['counters']['fullscan_steps']} -> "
                f"{new['counters']['fullscan_steps']}"
            )
            assert new["rows_returned"] == old["rows_returned"]
        for name in ("work_orders_last_hour", "pending_dispensers", *RUNBOOK_QUERIES):
            assert before[name]["counters"]["fullscan_steps"] > 10_000
            assert after[name]["counters"]["fullscan_steps"] == 0
            # the fastest runs: the least disturbed by whatever else the machine is doing
            assert after[name]["min_seconds"] < before[name]["min_seconds"] / 5

        backup = Path(result["backup"])
        assert backup.parent == db.parent
        assert re.fullmatch(r"fossawork_v2\.db\.backup-\d{8}T\d{6}Z", backup.name)
        assert content_digest(backup) == original_content
        # The restore the output describes: copy the backup over the database.
        shutil.copyfile(backup, db)
        for sidecar in (Path(f"{db}-wal"), Path(f"{db}-journal")):
            sidecar.unlink(missing_ok=True)
        assert content_digest(db) == original_content
        assert index_leads(db) == set()

    @pytest.mark.parametrize("lock", ["EXCLUSIVE", "IMMEDIATE"])
    def test_a_locked_database_is_refused_and_left_untouched(self, tmp_path, db, lock):
        config = write_config(tmp_path, db, timeout="500ms")
        before, files = fingerprint(db), sorted(db.parent.iterdir())
        holder = sqlite3.connect(db, isolation_level=None)
        try:
            holder.execute(f"BEGIN {lock}")  # what the application does while it writes
            started = time.monotonic()
            done = fossamon("db", "optimize", "-c", config, "--advised")
            elapsed = time.monotonic() - started
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert done.returncode == 1
        assert f"refused: {db} is locked by another connection" in done.stderr
        assert "waited the busy timeout of 500ms" in done.stderr
        assert "Nothing was changed" in done.stderr
        assert elapsed >= 0.45  # it did wait for the lock
        assert fingerprint(db) == before
        assert sorted(db.parent.iterdir()) == files  # and took no backup

    def test_apply_takes_create_index_only(self, tmp_path, db):
        config = write_config(tmp_path, db)
        before = fingerprint(db)
        # the other refusals are in tests/unit/test_tool_db_parts.py (TestIndexValidation)
        statement = "CREATE INDEX i ON work_orders(status); DROP TABLE work_orders"
        done = fossamon("db", "optimize", "-c", config, "--apply", statement)
        assert done.returncode == 1
        assert "You can only execute one statement at a time" in done.stderr
        assert fingerprint(db) == before

        backups = tmp_path / "backups"
        backups.mkdir()
        done = fossamon(
            "db", "optimize", "-c", config, "--no-vacuum", "--runs", "1",
            "--backup-dir", backups, "--apply", "CREATE INDEX by_make ON dispensers(make)",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "done: VACUUM" not in done.stdout.split("done: COMMIT")[1]
        assert index_leads(db) == {"make"}
        assert len(list(backups.iterdir())) == 1
        again = fossamon("db", "optimize", "-c", config, "--dry-run",
                         "--apply", "CREATE INDEX other ON dispensers(make)")  # fmt: skip
        assert again.returncode == 1
        assert "index by_make on dispensers(make) exists already" in again.stderr

    def test_undo_drops_the_created_index_and_warns_about_the_backup(self, tmp_path, db):
        config = write_config(tmp_path, db)
        done = fossamon(
            "db", "optimize", "-c", config, "--no-vacuum", "--runs", "1",
            "--apply", "CREATE INDEX by_make ON dispensers(make)",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert 'to undo: DROP INDEX "by_make";' in done.stdout
        assert "LOSES every write the application made since the backup" in done.stdout
        assert "-wal and -shm" in done.stdout
        assert "copy it over" not in done.stdout.split("last resort")[0]

    def test_a_rolled_back_failure_prints_no_undo(self, tmp_path, db):
        config = write_config(tmp_path, db)
        before = content_digest(db)
        # valid in the schema copy (no rows there), fails on the duplicate makes
        done = fossamon(
            "db", "optimize", "-c", config, "--no-vacuum", "--runs", "1",
            "--apply", "CREATE UNIQUE INDEX one_make ON dispensers(make)",
        )  # fmt: skip
        assert done.returncode == 1
        assert "failed: CREATE UNIQUE INDEX" in done.stderr
        assert "nothing was committed: there is nothing to undo" in done.stdout
        assert "DROP INDEX" not in done.stdout
        assert "copy it over" not in done.stdout
        assert content_digest(db) == before
        assert index_leads(db) == set()

    def test_a_wal_database_is_checkpointed_and_its_wal_emptied(self, tmp_path, db):
        with contextlib.closing(sqlite3.connect(db)) as app:
            app.execute("PRAGMA journal_mode=WAL")
        holder = sqlite3.connect(db)  # keeps the -wal from being removed at the last close
        try:
            holder.execute("SELECT 1").fetchall()
            config = write_config(tmp_path, db)
            done = fossamon(
                "db", "optimize", "-c", config, "--runs", "1",
                "--apply", "CREATE INDEX by_make ON dispensers(make)",
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert "done: PRAGMA wal_checkpoint(TRUNCATE)" in done.stdout
            assert Path(f"{db}-wal").stat().st_size == 0
        finally:
            holder.close()
        assert index_leads(db) == {"make"}
