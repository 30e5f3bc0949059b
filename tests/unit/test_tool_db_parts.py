"""The parts of `fossamon db analyze|optimize`: plans, what-if advice, counters, backups."""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import time
from datetime import UTC, datetime

import pytest

from fossamon.tools import db_schema
from fossamon.tools.db_advice import (
    EXPERT,
    PLAN,
    AdviceError,
    Advisor,
    _parse_expert,
    expert_advice,
    plan_advice,
)
from fossamon.tools.db_analyze import merge_advice
from fossamon.tools.db_backup import (
    BackupError,
    SpaceNeed,
    backup_name,
    shortfalls,
    sqlite_temp_dir,
    take_backup,
)
from fossamon.tools.db_counters import (
    CountersUnavailableError,
    CounterTimeoutError,
    check_version,
    load_counter,
)
from fossamon.tools.db_optimize import estimate_index_bytes, make_plan
from fossamon.tools.db_plan import PlanCost, PlanStep, full_scans, plan_cost
from fossamon.tools.db_read import (
    PragmaRefusedError,
    QueryTimeoutError,
    deadline,
    open_readonly,
    run_counted,
)
from fossamon.tools.db_whatif import IndexKey, InvalidIndexError, WhatIfSchema

SCHEMA = (
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, state TEXT)",
    (
        "CREATE TABLE work_orders (id INTEGER PRIMARY KEY, customer_id INTEGER, status TEXT, "
        "service_code TEXT, created_date TEXT)"
    ),
    "CREATE TABLE dispensers (id INTEGER PRIMARY KEY, work_order_id INTEGER, make TEXT)",
)
ENDLESS = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) SELECT count(*) FROM c"


def schema_db(*extra: str) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    for statement in (*SCHEMA, *extra):
        conn.execute(statement)
    return conn


def file_db(path, rows: int = 1000):
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for statement in SCHEMA:
            conn.execute(statement)
        conn.executemany(
            "INSERT INTO work_orders VALUES (?, ?, ?, ?, ?)",
            ((i, i % 50, "pending" if i % 7 else "done", "2861", f"2026-01-{i % 28 + 1:02d}")
             for i in range(1, rows + 1)),
        )  # fmt: skip
        conn.commit()
    return path


def whatif(*extra: str) -> WhatIfSchema:
    with contextlib.closing(schema_db(*extra)) as conn:
        return WhatIfSchema(conn)


def columns_of(advice_statements: tuple[str, ...], model: WhatIfSchema) -> set[IndexKey]:
    return {model.index_key(statement) for statement in advice_statements}


class TestPlan:
    def test_full_scans_and_cost(self):
        steps = [
            PlanStep(0, "SCAN d"),
            PlanStep(0, "SEARCH w USING INTEGER PRIMARY KEY (rowid=?)"),
            PlanStep(0, "SEARCH c USING AUTOMATIC COVERING INDEX (state=?)"),
            PlanStep(0, "SCAN work_orders USING COVERING INDEX by_status"),
            PlanStep(0, "MATERIALIZE x"),
            PlanStep(1, "SCAN CONSTANT ROW"),
            PlanStep(0, "SCAN (subquery-1)"),
            PlanStep(0, "USE TEMP B-TREE FOR ORDER BY"),
        ]
        assert full_scans(steps) == ["d"]
        assert plan_cost(steps) == PlanCost(
            full_scans=1, automatic_indexes=1, index_scans=1, temp_btrees=1
        )

    def test_a_full_scan_costs_more_than_anything_else(self):
        assert PlanCost(0, 5, 5, 5) < PlanCost(1, 0, 0, 0)
        assert PlanCost(0, 0, 0, 1) < PlanCost(0, 0, 1, 0)  # a sort of a few rows beats a scan


class TestPlanAdvice:
    def test_a_filter_gets_an_index_on_its_column(self):
        model = whatif()
        advice = plan_advice(model, "SELECT COUNT(*) FROM work_orders WHERE customer_id = 42")
        assert columns_of(advice.indexes, model) == {IndexKey("work_orders", ("customer_id",))}
        assert advice.plan_with_indexes[0].startswith("SEARCH work_orders USING COVERING INDEX")

    def test_a_filter_and_an_order_get_one_index_on_both(self):
        model = whatif()
        sql = (
            "SELECT * FROM work_orders WHERE service_code = '2861' "
            "ORDER BY created_date DESC LIMIT 100"
        )
        advice = plan_advice(model, sql)
        key = IndexKey("work_orders", ("service_code", "created_date"))
        assert columns_of(advice.indexes, model) == {key}
        assert not any("TEMP B-TREE" in line for line in advice.plan_with_indexes)

    def test_a_join_that_needs_two_indexes_at_once_gets_both(self):
        model = whatif()
        sql = (
            "SELECT COUNT(*) FROM dispensers d JOIN work_orders w ON w.id = d.work_order_id "
            "WHERE w.status = 'pending'"
        )
        advice = plan_advice(model, sql)
        assert columns_of(advice.indexes, model) == {
            IndexKey("work_orders", ("status",)),
            IndexKey("dispensers", ("work_order_id",)),
        }

    def test_no_advice_where_no_index_helps_or_one_exists(self):
        model = whatif("CREATE INDEX by_customer ON work_orders(customer_id)")
        assert plan_advice(model, "SELECT COUNT(*) FROM work_orders").indexes == ()
        sql = "SELECT COUNT(*) FROM work_orders WHERE customer_id = 42"
        assert plan_advice(model, sql).indexes == ()

    def test_a_statement_that_cannot_be_planned(self):
        with pytest.raises(AdviceError, match="no such table: nowhere"):
            plan_advice(whatif(), "SELECT * FROM nowhere")

    def test_statistics_are_copied(self, tmp_path):
        path = file_db(tmp_path / "app.db")
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE INDEX by_status ON work_orders(status)")
            conn.execute("ANALYZE")
            conn.commit()
            model = WhatIfSchema(conn)
        copied = list(model._mem.execute("SELECT tbl, idx, stat FROM sqlite_stat1 ORDER BY 1"))
        assert ("work_orders", "by_status", "1000 500") in copied


class TestIndexValidation:
    @pytest.mark.parametrize(
        ("statement", "reason"),
        [
            ("DROP TABLE work_orders", "only CREATE INDEX statements are accepted"),
            ("CREATE TABLE x (a)", "only CREATE INDEX statements are accepted"),
            ("CREATE INDEX i ON work_orders(nope)", "no such column: nope"),
            ("CREATE INDEX i ON work_orders(status); DROP TABLE work_orders", "one statement"),
            ("CREATE INDEX IF NOT EXISTS existing ON work_orders(status)", "creates no new index"),
        ],
    )
    def test_refused(self, statement, reason):
        model = whatif("CREATE INDEX existing ON dispensers(make)")
        with pytest.raises(InvalidIndexError, match=reason):
            model.index_key(statement)
        assert model.has_object("work_orders")  # and nothing was dropped

    def test_accepted_with_its_key(self):
        model = whatif()
        key = model.index_key("create unique index u ON work_orders(created_date DESC, status)")
        assert key == IndexKey("work_orders", ("created_date DESC", "status"), unique=True)
        assert not model.has_object("u")  # tried, then rolled back

    def test_two_of_one_name_fail_together(self):
        model = whatif()
        with pytest.raises(InvalidIndexError, match="already exists"):
            model.check_together(
                ["CREATE INDEX i ON work_orders(status)", "CREATE INDEX i ON dispensers(make)"]
            )


class TestMergeAdvice:
    def test_one_index_per_key_and_prefixes_folded_into_the_longer(self):
        model = whatif()
        single = "CREATE INDEX a ON work_orders(service_code);"
        double = "CREATE INDEX b ON work_orders(service_code, created_date DESC);"
        descending = "CREATE INDEX c ON work_orders(created_date DESC);"
        ascending = "CREATE INDEX d ON work_orders(created_date);"
        advice = [
            ("q1", _advice(single)),
            ("q2", _advice(double)),
            ("q3", _advice(descending)),
            ("q4", _advice(ascending)),
            ("q5", None),
        ]
        merged = merge_advice(model, advice)
        assert [(m.statement, m.queries) for m in merged] == [
            (double, ("q2", "q1")),
            (descending, ("q3", "q4")),  # one direction serves both
        ]


def _advice(*statements: str):
    from fossamon.tools.db_advice import Advice

    return Advice(EXPERT, statements, ())


class TestExpert:
    def test_output_parsed(self):
        output = (
            "CREATE INDEX dispensers_idx_8ac67cba ON dispensers(work_order_id);\n"
            "CREATE INDEX work_orders_idx_0074785c ON work_orders(status);\n\n"
            "SEARCH w USING COVERING INDEX work_orders_idx_0074785c (status=?)\n"
            "SEARCH d USING COVERING INDEX dispensers_idx_8ac67cba (work_order_id=?)\n\n"
        )
        advice = _parse_expert(output)
        assert advice.indexes == (
            "CREATE INDEX dispensers_idx_8ac67cba ON dispensers(work_order_id);",
            "CREATE INDEX work_orders_idx_0074785c ON work_orders(status);",
        )
        assert len(advice.plan_with_indexes) == 2
        assert _parse_expert("(no new indexes)\n\nSCAN work_orders\n\n").indexes == ()

    def test_a_line_the_shell_would_obey_is_never_sent(self, tmp_path):
        sql = "SELECT 1 /*\n.shell touch pwned\n*/"
        with pytest.raises(AdviceError, match=re.escape("starts with '.' or '#'")):
            expert_advice("/nonexistent/sqlite3", str(tmp_path / "x.db"), sql, 1.0)


class TestCounters:
    def test_full_scan_rows_sorts_and_refusals(self, tmp_path):
        path = str(file_db(tmp_path / "app.db", rows=1000))
        counter = load_counter()
        scan = counter.count(path, "SELECT COUNT(*) FROM work_orders WHERE status = 'done'", 5)
        # SQLite counts the steps from one row to the next: 999 for 1000 rows
        assert (scan.rows, scan.fullscan_steps, scan.sorts) == (1, 999, 0)
        sorted_rows = counter.count(path, "SELECT id FROM work_orders ORDER BY created_date", 5)
        assert (sorted_rows.rows, sorted_rows.sorts) == (1000, 1)
        lookup = counter.count(path, "SELECT * FROM work_orders WHERE id = 5", 5)
        assert (lookup.rows, lookup.fullscan_steps) == (1, 0)
        with pytest.raises(CountersUnavailableError, match="writes"):
            counter.count(path, "DELETE FROM work_orders", 5)
        attached = tmp_path / "attached.db"
        with pytest.raises(CountersUnavailableError, match="not authorized"):
            counter.count(path, f"ATTACH '{attached}' AS other", 5)
        assert not attached.exists()
        started = time.monotonic()
        with pytest.raises(CounterTimeoutError):
            counter.count(path, ENDLESS, 0.2)
        assert time.monotonic() - started < 2


class TestReading:
    def test_rows_counted_across_chunks_and_interrupted_at_the_deadline(self, tmp_path):
        path = str(file_db(tmp_path / "app.db", rows=1234))
        with open_readonly(path, 5.0) as db:
            assert run_counted(db.conn, "SELECT * FROM work_orders", 5.0).rows == 1234
            started = time.monotonic()
            with pytest.raises(QueryTimeoutError, match=re.escape("interrupted after 0.2s")):
                run_counted(db.conn, ENDLESS, 0.2)
            assert time.monotonic() - started < 2
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                run_counted(db.conn, "DELETE FROM work_orders", 5.0)


class TestBackup:
    def test_a_second_backup_in_the_same_second_gets_its_own_name(self, tmp_path):
        path = file_db(tmp_path / "app.db")
        first = take_backup(str(path), tmp_path, 1.0)
        second = take_backup(str(path), tmp_path, 1.0)
        assert first != second
        assert second.name == f"{first.name}-1"
        with contextlib.closing(sqlite3.connect(second)) as copy:
            assert copy.execute("SELECT COUNT(*) FROM work_orders").fetchone() == (1000,)

    def test_the_backup_of_a_wal_database_leaves_no_wal_or_shm(self, tmp_path):
        path = file_db(tmp_path / "app.db")
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        backups = tmp_path / "backups"
        backups.mkdir()
        backup = take_backup(str(path), backups, 1.0)
        assert sorted(p.name for p in backups.iterdir()) == [backup.name]
        with contextlib.closing(sqlite3.connect(f"file:{backup}?mode=ro", uri=True)) as copy:
            assert copy.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert copy.execute("SELECT COUNT(*) FROM work_orders").fetchone() == (1000,)

    def test_the_name_carries_the_utc_time(self, tmp_path):
        moment = datetime(2026, 11, 26, 23, 47, 5, tzinfo=UTC)
        assert backup_name(tmp_path / "app.db", moment) == "app.db.backup-20261126T234705Z"

    def test_disk_space_adds_up_per_file_system(self):
        mib = 2**20
        needs = [
            SpaceNeed("backup", "/srv", 40 * mib, device=1, free=100 * mib),
            SpaceNeed("VACUUM's journal", "/srv", 40 * mib, device=1, free=100 * mib),
            SpaceNeed("VACUUM's copy", "/var/tmp", 40 * mib, device=2, free=100 * mib),
        ]
        assert shortfalls(needs) == []
        tight = [SpaceNeed(n.purpose, n.directory, n.bytes, n.device, 70 * mib) for n in needs]
        assert shortfalls(tight) == [
            (
                "needs 80.0 MiB free (backup 40.0 MiB in /srv, VACUUM's journal 40.0 MiB in /srv) "
                "on one file system; 70.0 MiB free there"
            )
        ]

    def test_temp_dir_as_sqlite_picks_it(self, tmp_path, monkeypatch):
        monkeypatch.setenv("SQLITE_TMPDIR", str(tmp_path))
        assert sqlite_temp_dir() == str(tmp_path)
        monkeypatch.setenv("SQLITE_TMPDIR", str(tmp_path / "missing"))
        monkeypatch.setenv("TMPDIR", str(tmp_path / "missing"))
        assert sqlite_temp_dir() == "/var/tmp"


def collated_db(path):
    """A database whose schema names a collation only the application has."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.create_collation("app_nocase", lambda a, b: (a.lower() > b.lower()) - (a < b))
        conn.execute("CREATE TABLE t (name TEXT COLLATE app_nocase, n INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(f"n{i}", i) for i in range(50)])
        conn.commit()
    return path


SHELL = shutil.which("sqlite3")


@pytest.fixture
def shell(need):
    """The sqlite3 shell: skipped without it, a failure under FOSSAMON_E2E=require."""
    need(SHELL is not None, "the sqlite3 shell (Debian package sqlite3)")


class TestExpertRefusesWhatIsNotAdvice:
    def test_an_application_collation_is_not_taken_as_no_index_needed(self, tmp_path, shell):
        # .expert cannot start (no such collation); the shell then ran the query itself and
        # its rows were parsed as "(no new indexes)"
        path = str(collated_db(tmp_path / "app.db"))
        assert SHELL is not None
        with pytest.raises(AdviceError, match=r"app_nocase|not its advice"):
            expert_advice(SHELL, path, "SELECT n, 'MARKER' FROM t WHERE n = 5", 2.0)

    def test_advisor_falls_back_to_the_plan_advisor_with_a_note(self, tmp_path, shell):
        path = str(collated_db(tmp_path / "app.db"))
        with open_readonly(path, 2.0) as ro:
            whatif = WhatIfSchema(ro.conn)
            advice, note = Advisor(SHELL).advise(whatif, path, "SELECT n FROM t WHERE n = 5", 2.0)
            whatif.close()
        assert note is not None
        assert "plan advisor answered instead" in note
        assert advice is None or advice.source == PLAN

    @pytest.mark.parametrize(
        "sql",
        [
            "VACUUM INTO '/tmp/never-written.db'",
            "SELECT load_extension('x')",
            "PRAGMA locking_mode = EXCLUSIVE",
            "SELECT 1; SELECT 2",
        ],
    )
    def test_only_a_single_read_reaches_the_shell(self, tmp_path, sql):
        path = str(file_db(tmp_path / "app.db", rows=10))
        # a shell that does not exist: the refusal comes before any attempt to run it
        with pytest.raises(AdviceError, match="not handed to the sqlite3 shell"):
            expert_advice("/nonexistent/sqlite3", path, sql, 1.0)

    def test_output_other_than_expert_shape_is_refused(self):
        for output in ("5|MARKER\n", "CREATE INDEX a ON t(x);\nSCAN t\n", "\n\n"):
            with pytest.raises(AdviceError, match="not its advice"):
                _parse_expert(output)


def counted_rows_db(path, rows: int = 2_000_000):
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE big (x INTEGER)")
        conn.execute(
            "INSERT INTO big WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c "
            f"WHERE i < {rows}) SELECT i FROM c"
        )
        conn.commit()
    return path


class TestSingleInstructionDeadline:
    def test_count_star_is_interrupted_at_the_deadline(self, tmp_path):
        # COUNT(*) is one OP_Count: the progress handler never runs during it
        path = str(counted_rows_db(tmp_path / "big.db"))
        with open_readonly(path, 5.0) as ro:
            started = time.monotonic()
            with pytest.raises(QueryTimeoutError), deadline(ro.conn, 0.001):
                ro.conn.execute("SELECT COUNT(*) FROM big").fetchone()
            assert time.monotonic() - started < 1.0
            # the connection stays usable
            assert run_counted(ro.conn, "SELECT 1", 1.0).rows == 1

    def test_counters_interrupt_count_star_at_the_deadline(self, tmp_path):
        path = str(counted_rows_db(tmp_path / "big.db"))
        with pytest.raises(CounterTimeoutError):
            load_counter().count(path, "SELECT COUNT(*) FROM big", 0.001)

    def test_dbstat_is_skipped_above_its_size_with_a_note(self, tmp_path, monkeypatch):
        path = str(file_db(tmp_path / "app.db", rows=10))
        monkeypatch.setattr(db_schema, "_DBSTAT_MAX_PAGES", 1)
        with open_readonly(path, 5.0) as ro:
            sizes, note = db_schema.btree_sizes(ro, 5.0)
        assert sizes == {}
        assert note is not None
        assert "dbstat reads every page" in note


class TestPragmaAllowList:
    def test_locking_mode_is_refused_by_name_and_the_application_can_still_write(self, tmp_path):
        path = str(file_db(tmp_path / "app.db", rows=10))
        with open_readonly(path, 2.0) as ro:
            for sql in ("PRAGMA locking_mode = EXCLUSIVE", "PRAGMA journal_mode = DELETE"):
                with pytest.raises(PragmaRefusedError, match=sql.split()[1]):
                    run_counted(ro.conn, sql, 2.0)
            run_counted(
                ro.conn, "SELECT * FROM work_orders", 2.0
            )  # a read after the refused PRAGMA
            with contextlib.closing(sqlite3.connect(path, timeout=0.1)) as app:
                app.execute("DELETE FROM work_orders WHERE rowid = 1")
                app.commit()

    @pytest.mark.parametrize(
        "sql",
        [
            "PRAGMA table_info(work_orders)",
            "PRAGMA table_xinfo(work_orders)",
            "PRAGMA index_list(work_orders)",
            "PRAGMA page_count",
            "PRAGMA page_size",
            "PRAGMA freelist_count",
            "PRAGMA journal_mode",
            "PRAGMA user_version",
            "SELECT name FROM pragma_table_info('work_orders')",
        ],
    )
    def test_reading_pragmas_are_allowed(self, tmp_path, sql):
        path = str(file_db(tmp_path / "app.db", rows=10))
        with open_readonly(path, 2.0) as ro:
            run_counted(ro.conn, sql, 2.0)  # no PragmaRefusedError

    def test_user_version_with_an_argument_is_refused(self, tmp_path):
        path = str(file_db(tmp_path / "app.db", rows=10))
        with (
            open_readonly(path, 2.0) as ro,
            pytest.raises(PragmaRefusedError, match="user_version"),
        ):
            run_counted(ro.conn, "PRAGMA user_version = 7", 2.0)


class TestIndexSpace:
    def _wide_db(self, path):
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
            conn.executemany(
                "INSERT INTO notes (body) VALUES (?)", ((f"{i:0200d}",) for i in range(20_000))
            )
            conn.commit()
        return path

    def test_an_index_is_estimated_from_rows_and_key_width(self, tmp_path):
        path = str(self._wide_db(tmp_path / "app.db"))
        with open_readonly(path, 5.0) as ro:
            estimate = estimate_index_bytes(ro, IndexKey("notes", ("body",)), 5.0)
        assert 20_000 * 200 <= estimate <= 20_000 * 200 * 2

    def test_the_disk_needs_include_the_new_indexes(self, tmp_path):
        import argparse

        from fossamon.config import DbCollectorConfig, validate_section

        path = self._wide_db(tmp_path / "app.db")
        db = validate_section(DbCollectorConfig, {"path": str(path), "queries": []})
        args = argparse.Namespace(
            backup_dir=None,
            apply=["CREATE INDEX by_body ON notes(body)"],
            advised=False,
            advisor="plan",
            no_vacuum=False,
        )
        plan = make_plan(args, db, 5.0)
        needs = {need.purpose: need.bytes for need in plan.space}
        size = plan.database_bytes
        assert needs["backup"] == size
        assert needs["the new indexes"] >= 2 * 20_000 * 200
        assert needs["VACUUM's copy"] >= size + 20_000 * 200
        assert needs["VACUUM's journal"] >= size + 20_000 * 200


class TestSmallFindings:
    def test_a_backup_that_needs_the_applications_collation_names_it(self, tmp_path):
        path = collated_db(tmp_path / "app.db")
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.create_collation("app_nocase", lambda a, b: (a > b) - (a < b))
            conn.execute("CREATE INDEX by_name ON t(name)")
            conn.commit()
        backups = tmp_path / "backups"
        backups.mkdir()
        with pytest.raises(BackupError, match="collation app_nocase, which only the application"):
            take_backup(str(path), backups, 1.0)
        assert list(backups.iterdir()) == []

    def test_counters_of_another_sqlite_version_are_skipped_with_the_reason(self):
        check_version("libsqlite3.so.0", sqlite3.sqlite_version, sqlite3.sqlite_version)
        with pytest.raises(CountersUnavailableError, match=r"SQLite 3\.0\.0, but Python"):
            check_version("libsqlite3.so.0", "3.0.0", sqlite3.sqlite_version)
        assert load_counter().version == sqlite3.sqlite_version  # this system: the same library

    def test_a_refused_attach_names_the_tool_not_the_collector(self, tmp_path):
        path = str(file_db(tmp_path / "app.db", rows=10))
        with open_readonly(path, 2.0) as ro:
            with pytest.raises(sqlite3.DatabaseError) as caught:
                run_counted(ro.conn, f"ATTACH '{tmp_path / 'x.db'}' AS x", 2.0)
            _kind, message = ro.describe(caught.value)
        assert "fossamon db analyze|optimize only read" in message
        assert "collector" not in message
        assert not (tmp_path / "x.db").exists()

    def test_the_tools_share_the_collectors_settings(self):
        from fossamon.collectors import db as collector
        from fossamon.tools import db_advice, db_counters, db_read

        for module in (db_read, db_counters, db_advice):
            assert module._BUSY_SHARE is collector._BUSY_SHARE
        assert db_read._PROBE_SQL is collector._PROBE_SQL
