"""The db collector on real SQLite files: healthy, broken, locked, slow, replaced, read-only."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

import fossamon
from fossamon.collectors.db import DbCollector
from fossamon.config import DbCollectorConfig, validate_section
from fossamon.model import Batch, ErrorKind, make_labels

ROWS = 3000
COUNT = {"name": "count", "sql": "SELECT COUNT(*) FROM work_orders", "record_value": True}
RECENT = {
    "name": "recent",
    "sql": "SELECT id, created_date FROM work_orders "
    "WHERE created_date > datetime('now', '-1 hour')",
}
COUNT_TO_1E12 = (
    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 1000000000000) "
    "SELECT count(*) FROM c"
)
CROSS_JOIN_SORTED = (
    "SELECT a.id FROM work_orders a, work_orders b, work_orders c "
    "ORDER BY a.created_date || b.status || c.id LIMIT 5"
)
TEN_MILLION_ROWS = (
    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 10000000) "
    "SELECT i, 'row ' || i FROM c"
)
NOBODY = 65534


def build_db(path: Path, rows: int = ROWS, *, wal: bool = False) -> Path:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE work_orders (id INTEGER PRIMARY KEY, created_date TEXT NOT NULL, "
            "status TEXT NOT NULL)"
        )
        conn.executemany(
            "INSERT INTO work_orders (created_date, status) VALUES (datetime('now', ?), ?)",
            ((f"-{i} minutes", "open" if i % 3 else "done") for i in range(rows)),
        )
        conn.commit()
    return path


def db_config(path: Path, *queries: dict[str, object], **options: object) -> dict[str, object]:
    return {"path": str(path), "timeout": "2s", **options, "queries": list(queries)}


def value(batch: Batch, name: str, query: str | None = None) -> float | None:
    labels = make_labels(query=query) if query else ()
    found = [s.value for s in batch.samples if s.name == name and s.labels == labels]
    assert len(found) <= 1
    return found[0] if found else None


def kinds(batch: Batch) -> dict[str, ErrorKind]:
    return {e.target: e.kind for e in batch.errors}


def fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


async def bounded_collect(collector: DbCollector, seconds: float = 5) -> Batch:
    """collect(), failing the test instead of hanging it if the collector's own deadline broke."""
    try:
        return await asyncio.wait_for(collector.collect(), seconds)
    except TimeoutError:
        if collector._conn is not None:
            collector._conn.interrupt_due()  # unstick SQLite, so that teardown can close
        pytest.fail(f"collect() still running after {seconds}s")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return build_db(tmp_path / "fossawork_v2.db")


@pytest.fixture
async def make_collector():
    made: list[DbCollector] = []

    def make(path: Path, *queries: dict[str, object], **options: object) -> DbCollector:
        config = validate_section(DbCollectorConfig, db_config(path, *queries, **options))
        made.append(DbCollector(config))
        return made[-1]

    yield make
    for collector in made:
        await collector.close()


@contextlib.contextmanager
def exclusive_lock(path: Path):
    """Another process holding BEGIN EXCLUSIVE, as a writer in the middle of a transaction."""
    script = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "conn.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
        "conn.execute('ROLLBACK')\n"
        "conn.close()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        yield
    finally:
        proc.communicate("\n", timeout=10)


class TestHealthy:
    async def test_two_queries_are_timed_and_the_value_recorded(self, db, make_collector):
        batch = await make_collector(db, COUNT, RECENT).collect()

        assert batch.errors == ()
        assert batch.collector == "db"
        assert batch.duration > 0
        assert value(batch, "db_up") == 1
        assert value(batch, "db_file_bytes") == db.stat().st_size
        assert value(batch, "db_wal_bytes") is None
        for query in ("count", "recent"):
            seconds = value(batch, "db_query_seconds", query)
            assert seconds is not None
            assert 0 < seconds < 1
            assert value(batch, "db_query_truncated", query) == 0
        assert value(batch, "db_query_value", "count") == ROWS
        assert value(batch, "db_query_rows", "count") == 1
        assert value(batch, "db_query_rows", "recent") == 60  # one row a minute, the last hour
        assert value(batch, "db_query_value", "recent") is None  # record_value is off

    async def test_close_is_idempotent(self, db, make_collector):
        collector = make_collector(db, COUNT)
        await collector.close()
        assert value(await collector.collect(), "db_query_value", "count") == ROWS
        await collector.close()
        await collector.close()

    @pytest.mark.parametrize(
        ("sql", "fragment"),
        [
            ("SELECT status FROM work_orders LIMIT 1", "'done', not a number"),
            ("SELECT 1 WHERE 0", "no rows"),
            ("SELECT 9e999", "the value inf is not a finite number"),
        ],
    )
    async def test_record_value_needs_a_number(self, db, make_collector, sql, fragment):
        batch = await make_collector(db, {"name": "q", "sql": sql, "record_value": True}).collect()

        assert kinds(batch) == {"q": ErrorKind.OTHER}
        assert fragment in batch.errors[0].message
        assert value(batch, "db_query_seconds", "q") is not None  # the timing is still recorded
        assert value(batch, "db_query_value", "q") is None


class TestOpenFailures:
    @pytest.mark.parametrize("relative", ["absent.db", "no/such/dir/absent.db"])
    async def test_missing_file_is_reported_and_never_created(
        self, tmp_path, make_collector, relative
    ):
        path = tmp_path / relative
        collector = make_collector(path, COUNT)
        for _ in range(3):
            batch = await collector.collect()
            assert kinds(batch) == {str(path): ErrorKind.MISSING}
            assert value(batch, "db_up") == 0
        assert not path.exists()
        assert not path.parent.exists() or sorted(path.parent.iterdir()) == []

    @pytest.mark.parametrize(
        ("content", "fragment"),
        [
            (b"", "empty file"),
            (os.urandom(8192), "no SQLite header"),
            (b"SQLite format 3\x00" + b"\x01" * 20, "truncated"),
        ],
        ids=["empty", "garbage", "short-header"],
    )
    async def test_not_a_database(self, tmp_path, make_collector, content, fragment):
        path = tmp_path / "app.db"
        path.write_bytes(content)
        batch = await make_collector(path, COUNT).collect()

        assert kinds(batch) == {str(path): ErrorKind.NOT_A_DATABASE}
        assert fragment in batch.errors[0].message
        assert value(batch, "db_up") == 0
        assert path.read_bytes() == content

    async def test_directory_at_the_path(self, tmp_path, make_collector):
        batch = await make_collector(tmp_path, COUNT).collect()
        assert kinds(batch) == {str(tmp_path): ErrorKind.NOT_A_DATABASE}

    async def test_first_half_of_a_database_is_an_error_not_a_crash(self, tmp_path, make_collector):
        whole = build_db(tmp_path / "whole.db", rows=20000).read_bytes()
        path = tmp_path / "half.db"
        path.write_bytes(whole[: len(whole) // 2])
        batch = await make_collector(path, COUNT, RECENT).collect()

        assert batch.errors
        assert {e.kind for e in batch.errors} <= {ErrorKind.NOT_A_DATABASE, ErrorKind.OTHER}

    async def test_locked_by_a_writer_ends_as_locked_within_the_timeout(self, db, make_collector):
        collector = make_collector(db, COUNT, timeout="500ms")
        with exclusive_lock(db):
            started = time.perf_counter()
            batch = await bounded_collect(collector)
            elapsed = time.perf_counter() - started

        assert kinds(batch) == {str(db): ErrorKind.LOCKED}
        assert "database is locked" in batch.errors[0].message
        assert value(batch, "db_up") == 0
        assert elapsed < 0.5 + 0.3
        after = await collector.collect()
        assert after.errors == ()
        assert value(after, "db_query_value", "count") == ROWS


class TestQueryFailures:
    @pytest.mark.parametrize(
        ("sql", "kind", "fragment"),
        [
            ("SELECT COUNT(*) FROM no_such_thing", ErrorKind.NO_SUCH_TABLE, "no such table"),
            ("SELEC 1", ErrorKind.SQL, "syntax error"),
            ("SELECT nope FROM work_orders", ErrorKind.SQL, "no such column"),
            ("DELETE FROM work_orders", ErrorKind.SQL, "readonly database"),
            ("SELECT 1; SELECT 2", ErrorKind.SQL, "one statement"),
        ],
    )
    async def test_kind_and_sqlite_text(self, db, make_collector, sql, kind, fragment):
        before = fingerprint(db)
        batch = await make_collector(db, {"name": "bad", "sql": sql}, COUNT).collect()

        assert kinds(batch) == {"bad": kind}
        assert fragment in batch.errors[0].message
        assert value(batch, "db_query_seconds", "bad") is None
        assert value(batch, "db_query_value", "count") == ROWS  # the next query still runs
        assert value(batch, "db_up") == 1
        assert fingerprint(db) == before

    @pytest.mark.parametrize("verb", ["ATTACH '{}' AS extra", "VACUUM INTO '{}'"])
    async def test_configured_sql_cannot_create_files(self, db, tmp_path, make_collector, verb):
        # Both would create the file even on a mode=ro, query_only connection.
        extra = tmp_path / "extra.db"
        batch = await make_collector(db, {"name": "q", "sql": verb.format(extra)}).collect()

        assert kinds(batch) == {"q": ErrorKind.SQL}
        assert not extra.exists()

    @pytest.mark.parametrize("slow_sql", [COUNT_TO_1E12, CROSS_JOIN_SORTED], ids=["cte", "sort"])
    async def test_runaway_query_is_interrupted_at_its_timeout(self, db, make_collector, slow_sql):
        collector = make_collector(db, {"name": "slow", "sql": slow_sql, "timeout": "300ms"}, COUNT)
        for _ in range(2):  # and the connection is still good for the next cycle
            started = time.perf_counter()
            batch = await bounded_collect(collector)
            elapsed = time.perf_counter() - started

            assert kinds(batch) == {"slow": ErrorKind.TIMEOUT}
            assert "0.3s" in batch.errors[0].message
            assert elapsed < 1.5
            # The query after it ran promptly: SQLite really stopped working on the first one.
            assert value(batch, "db_query_value", "count") == ROWS
            count_seconds = value(batch, "db_query_seconds", "count")
            assert count_seconds is not None
            assert count_seconds < 0.5

    async def test_huge_result_stops_at_max_rows(self, db, make_collector):
        collector = make_collector(
            db, {"name": "many", "sql": TEN_MILLION_ROWS, "record_value": True}, max_rows=1000
        )
        started = time.perf_counter()
        batch = await bounded_collect(collector)

        assert time.perf_counter() - started < 1
        assert batch.errors == ()
        assert value(batch, "db_query_rows", "many") == 1000
        assert value(batch, "db_query_truncated", "many") == 1
        assert value(batch, "db_query_value", "many") == 1

    async def test_result_of_exactly_max_rows_is_not_truncated(self, db, make_collector):
        sql = "SELECT id FROM work_orders LIMIT 1000"
        batch = await make_collector(db, {"name": "q", "sql": sql}, max_rows=1000).collect()
        assert value(batch, "db_query_rows", "q") == 1000
        assert value(batch, "db_query_truncated", "q") == 0

    def test_peak_memory_is_bounded_by_bytes_on_big_blobs(self, db):
        # 1,500 rows of 1 MB: chunks of 500 rows held 500 MB (about 1 GB peak RSS)
        sql = "SELECT zeroblob(1000000) FROM work_orders LIMIT 1500"
        config = db_config(db, {"name": "blobs", "sql": sql}, timeout="20s", max_rows=2000)
        proc = subprocess.run(
            [sys.executable, "-c", BIG_BLOBS_COLLECT, json.dumps(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert result["errors"] == []
        assert result["rows"] == [1500]
        assert result["peak"] < 150 * 1024 * 1024, f"peak RSS {result['peak'] / 2**20:.0f} MiB"

    async def test_unexpected_error_becomes_internal(self, db, make_collector, monkeypatch):
        def broken(*_args: object) -> None:  # raised on the collector's thread
            raise RuntimeError("boom")

        collector = make_collector(db, COUNT)
        monkeypatch.setattr("fossamon.collectors.db._Connection.cycle", broken)
        batch = await collector.collect()
        assert kinds(batch) == {str(db): ErrorKind.INTERNAL}
        assert "boom" in batch.errors[0].message
        monkeypatch.undo()
        assert (await collector.collect()).errors == ()


def build_many_pages(path: Path, rows: int = 150_000) -> Path:
    """A table SQLite counts page by page: 512-byte pages of two rows each (75,000 pages for
    the default rows, ~40 MB, built in well under a second)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA page_size = 512")
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("CREATE TABLE work_orders (id INTEGER PRIMARY KEY, note TEXT NOT NULL)")
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO work_orders SELECT i, printf('%.200c', 'x') FROM n",
            (rows,),
        )
        conn.commit()
    return path


def seconds_to_run(path: Path, sql: str) -> float:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(sql).fetchall()  # warm the page cache, as the collector's runs find it
        started = time.perf_counter()
        conn.execute(sql).fetchall()
        return time.perf_counter() - started


class TestStopping:
    """Deadlines, cancellation and close() stop a statement where SQLite can stop it."""

    async def test_a_count_over_a_whole_table_stops_at_its_timeout(self, tmp_path, make_collector):
        # COUNT(*) over a table is one VM step, so the progress handler never runs inside it;
        # only sqlite3_interrupt, from the loop at the deadline, stops it.
        path = build_many_pages(tmp_path / "big.db")
        sql = "SELECT COUNT(*) FROM work_orders"
        unstopped = seconds_to_run(path, sql)
        assert unstopped > 0.03  # three times the timeout below
        collector = make_collector(path, {"name": "count", "sql": sql, "timeout": "10ms"})
        for _ in range(2):  # and the connection is still good for the next cycle
            started = time.perf_counter()
            batch = await bounded_collect(collector)
            elapsed = time.perf_counter() - started

            assert kinds(batch) == {"count": ErrorKind.TIMEOUT}
            assert batch.errors[0].message == "interrupted after 0.01s"
            assert value(batch, "db_up") == 1
            assert elapsed < unstopped  # stopped, not run to its end

    async def test_a_cancelled_cycle_runs_no_further_query(self, db, make_collector):
        slow = {"sql": COUNT_TO_1E12, "timeout": "1s"}
        collector = make_collector(db, *({"name": f"slow{i}", **slow} for i in range(3)))
        cycle = asyncio.create_task(collector.collect())
        await asyncio.sleep(0.2)  # the first query is running on the collector's thread
        cycle.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cycle
        # The thread is free at once: the next cycle does not wait behind the rest of this
        # one (the running query up to its 1 s timeout, then two more of 1 s each).
        thread = collector._thread
        assert thread is not None
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(thread, int), 5)
        assert time.perf_counter() - started < 0.3

    async def test_a_cycle_running_at_close_reports_it_was_stopped(self, db, make_collector):
        slow = {"sql": COUNT_TO_1E12, "timeout": "1s"}
        queries = [COUNT, *({"name": f"slow{i}", **slow} for i in range(5))]
        collector = make_collector(db, *queries)
        cycle = asyncio.create_task(collector.collect())
        await asyncio.sleep(0.2)  # slow0 is running
        started = time.perf_counter()
        await asyncio.wait_for(collector.close(), 5)
        closing = time.perf_counter() - started
        batch = await asyncio.wait_for(cycle, 5)

        assert closing < 0.1  # one interrupt, no wait per remaining query
        assert value(batch, "db_query_value", "count") == ROWS
        assert [(e.target, e.kind, e.message) for e in batch.errors] == [
            ("slow0", ErrorKind.OTHER, "stopped: the collector was closed"),
            *(
                (f"slow{i}", ErrorKind.OTHER, "not run: the collector was closed")
                for i in range(1, 5)
            ),
        ]


class TestFileLifecycle:
    async def test_replaced_file_is_reopened(self, db, tmp_path, make_collector):
        collector = make_collector(db, COUNT)
        assert value(await collector.collect(), "db_query_value", "count") == ROWS

        build_db(tmp_path / "restored.db", rows=10).replace(db)  # as a restore from backup does
        batch = await collector.collect()
        assert batch.errors == ()
        assert value(batch, "db_query_value", "count") == 10

    async def test_deleted_then_recreated(self, db, make_collector):
        collector = make_collector(db, COUNT)
        assert value(await collector.collect(), "db_query_value", "count") == ROWS

        db.unlink()
        batch = await collector.collect()
        assert kinds(batch) == {str(db): ErrorKind.MISSING}
        assert not db.exists()

        build_db(db, rows=7)
        batch = await collector.collect()
        assert batch.errors == ()
        assert value(batch, "db_up") == 1
        assert value(batch, "db_query_value", "count") == 7

    async def test_wal_reader_sees_what_the_running_app_committed(self, tmp_path, make_collector):
        path = build_db(tmp_path / "app.db", wal=True)
        collector = make_collector(path, COUNT)
        with contextlib.closing(sqlite3.connect(path)) as app:
            app.execute("PRAGMA wal_autocheckpoint = 0")  # the rows stay in the -wal file
            app.execute("INSERT INTO work_orders (created_date, status) VALUES ('now', 'open')")
            app.commit()
            before = fingerprint(path)
            batch = await collector.collect()

            assert batch.errors == ()
            assert value(batch, "db_query_value", "count") == ROWS + 1
            wal_bytes = value(batch, "db_wal_bytes")
            assert wal_bytes is not None
            assert wal_bytes > 0
        # The app stopped while we still read. The last connection to close checkpoints the WAL
        # into the file, unless it is read-only: that must be us, never writing.
        assert value(await collector.collect(), "db_query_value", "count") == ROWS + 1
        await collector.close()
        assert fingerprint(path) == before


class TestNeverWrites:
    @pytest.mark.parametrize("wal", [False, True], ids=["rollback", "wal"])
    async def test_file_is_byte_identical_after_cycles(self, tmp_path, make_collector, wal):
        path = build_db(tmp_path / "app.db", wal=wal)
        before = fingerprint(path)
        collector = make_collector(path, COUNT, RECENT, {"name": "many", "sql": TEN_MILLION_ROWS})
        for _ in range(3):
            batch = await collector.collect()
            assert batch.errors == ()
            assert not Path(f"{path}-journal").exists()
        await collector.close()

        assert fingerprint(path) == before
        if not wal:
            assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]
        # A WAL reader in a writable directory creates -shm (and -wal): that is SQLite's reader
        # protocol, and it leaves the database file itself untouched.


# --- as an unprivileged user: root bypasses the permissions these cases are about ----------

UNPRIVILEGED_COLLECT = """
import asyncio, concurrent.futures.thread, json, os, sys
from fossamon.collectors.db import DbCollector
from fossamon.config import DbCollectorConfig, validate_section

# Everything is imported first: the interpreter may live where the unprivileged user cannot
# read (pyenv under /root). Then the drop, for good: setuid from root clears the saved uid too.
if os.geteuid() == 0:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    assert (os.getuid(), os.geteuid()) == (NOBODY, NOBODY)

async def main():
    collector = DbCollector(validate_section(DbCollectorConfig, json.loads(sys.argv[1])))
    try:
        batch = await collector.collect()
    finally:
        await collector.close()
    print(json.dumps(batch.to_json("test")))

asyncio.run(main())
""".replace("NOBODY", str(NOBODY))


@pytest.fixture
def shared_dir():
    """A directory the unprivileged user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="fossamon-test-db-"))
    path.chmod(0o755)
    yield path
    for directory in [path, *path.rglob("*")]:
        if directory.is_dir():
            directory.chmod(0o755)
    shutil.rmtree(path)


# The peak is VmHWM, this process's own: ru_maxrss would also count the pytest it was forked
# from (Linux carries the parent's high-water mark over until exec), which outgrows the bound
# over a whole suite.
BIG_BLOBS_COLLECT = """
import asyncio, json, sys
from fossamon.collectors.db import DbCollector
from fossamon.config import DbCollectorConfig, validate_section

async def main():
    collector = DbCollector(validate_section(DbCollectorConfig, json.loads(sys.argv[1])))
    batch = await collector.collect()
    await collector.close()
    rows = [s.value for s in batch.samples if s.name == "db_query_rows"]
    status = open("/proc/self/status").read().splitlines()
    peak = next(int(x.split()[1]) for x in status if x.startswith("VmHWM:")) * 1024
    print(json.dumps({"errors": [e.message for e in batch.errors], "rows": rows, "peak": peak}))

asyncio.run(main())
"""


def collect_unprivileged(config: dict[str, object]) -> dict[str, Any]:
    """One cycle in a process that runs as nobody (when we are root: root ignores permissions)."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": "/"}
    env["PYTHONPATH"] = str(Path(fossamon.__file__).resolve().parent.parent)
    proc = subprocess.run(
        [sys.executable, "-c", UNPRIVILEGED_COLLECT, json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    batch: dict[str, Any] = json.loads(proc.stdout)
    return batch


class TestUnprivileged:
    async def test_wal_without_shm_in_a_read_only_directory(self, shared_dir):
        data = shared_dir / "backend"
        data.mkdir()
        path = build_db(data / "app.db", wal=True)  # closed cleanly: no -shm, no -wal left
        assert sorted(p.name for p in data.iterdir()) == ["app.db"]
        data.chmod(0o555)

        batch = collect_unprivileged(db_config(path, COUNT))

        assert [e["kind"] for e in batch["errors"]] == ["readonly_shm"]
        message = batch["errors"][0]["message"]
        for needed in ("WAL mode", f"{path}-shm", f"ReadWritePaths={data}", "keep the application"):
            assert needed in message
        assert sorted(p.name for p in data.iterdir()) == ["app.db"]

    async def test_wal_in_a_read_only_directory_while_the_app_runs(self, shared_dir):
        # The message's other fix: while the application holds the database open, -shm exists.
        data = shared_dir / "backend"
        data.mkdir()
        path = build_db(data / "app.db", wal=True)
        with contextlib.closing(sqlite3.connect(path)) as app:
            app.execute("INSERT INTO work_orders (created_date, status) VALUES ('now', 'open')")
            app.commit()
            data.chmod(0o555)

            batch = collect_unprivileged(db_config(path, COUNT))

        assert batch["errors"] == []
        values = {s["name"]: s["value"] for s in batch["samples"]}
        assert values["db_up"] == 1
        assert values["db_query_value"] == ROWS + 1

    async def test_unreadable_file_is_permission(self, shared_dir):
        path = build_db(shared_dir / "app.db")
        path.chmod(0o000)

        batch = collect_unprivileged(db_config(path, COUNT))

        assert [e["kind"] for e in batch["errors"]] == ["permission"]
