"""`fossamon db optimize`: a verified backup first, then indexes, REINDEX, ANALYZE, VACUUM.

Everything that can refuse does so before anything changes: the `--apply` statements are
checked in the schema copy (db_whatif), the free disk space is measured, the configured
queries are timed (read-only), and the write lock is taken, waiting at most the busy timeout.
Only then is the backup made (db_backup), with the write lock held, so that it is exactly the
database the changes start from. REINDEX comes before the new indexes (rebuilding them would
be wasted work), ANALYZE after them (so it measures them too), and all three commit together;
VACUUM cannot run inside a transaction and comes last.

`--dry-run` only reads, as `db analyze` does: the database's bytes and mtime stay the same, but
on a cleanly closed WAL database the reads leave a 0-byte `-wal` and a 32 KiB `-shm` (SQLite's
read marks) next to it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fossamon.collectors import _sqlite_open as sq
from fossamon.model import ErrorKind
from fossamon.tools.db_advice import AdviceError, choose_advisor
from fossamon.tools.db_analyze import configured_queries, merge_advice, undirected
from fossamon.tools.db_backup import (
    BackupError,
    SpaceNeed,
    measure_need,
    shortfalls,
    sqlite_temp_dir,
    take_backup,
)
from fossamon.tools.db_optimize_output import OptimizeOutput
from fossamon.tools.db_read import DatabaseProblemError, QueryTimeoutError, deadline, open_readonly
from fossamon.tools.db_timing import QueryTiming, counter_source, time_query
from fossamon.tools.db_whatif import IndexKey, InvalidIndexError, WhatIfSchema, quote_identifier
from fossamon.units import format_duration, parse_duration

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from fossamon.config import DbCollectorConfig
    from fossamon.tools.db_read import ReadOnlyDatabase
    from fossamon.tools.db_timing import NamedQuery


_WIDTH_SAMPLE_ROWS = 10_000
# per index entry besides the key: the rowid (up to 9 bytes), the record header, the cell pointer
_INDEX_ENTRY_OVERHEAD = 16


class RefusedError(Exception):
    """Nothing was changed; the message says why."""


class FailedError(Exception):
    """Something failed half-way; the message says what was changed and what not."""


@dataclass(frozen=True, slots=True)
class PlannedIndex:
    statement: str
    key: IndexKey
    reason: str
    """"--apply", or the queries it was advised for."""


@dataclass(frozen=True, slots=True)
class OptimizePlan:
    path: str
    database_bytes: int
    backup_dir: Path
    indexes: tuple[PlannedIndex, ...]
    vacuum: bool
    busy_timeout: float
    space: tuple[SpaceNeed, ...]
    notes: tuple[str, ...] = ()
    """What the advisors said besides their advice (a fallback and why, a query refused)."""


def run_optimize(args: argparse.Namespace, db: DbCollectorConfig) -> int:
    output = OptimizeOutput(as_json=args.json)
    try:
        _optimize(args, db, output)
    except RefusedError as exc:
        return output.refused(str(exc))
    except FailedError as exc:
        return output.failed(str(exc))
    return output.finish(0)


def _optimize(args: argparse.Namespace, db: DbCollectorConfig, output: OptimizeOutput) -> None:
    try:
        busy_timeout = parse_duration(args.busy_timeout) if args.busy_timeout else db.timeout
    except ValueError as exc:
        raise RefusedError(f"--busy-timeout {exc}") from exc
    queries = configured_queries(db, ())
    try:
        plan = make_plan(args, db, busy_timeout)
        output.plan(plan, dry_run=args.dry_run)
        if args.dry_run:
            return
        output.timings("before", time_all(plan, queries, args.runs, refuse_locked=True))
    except DatabaseProblemError as problem:
        if problem.kind is ErrorKind.LOCKED:
            message = _locked_message(db.path, busy_timeout, problem.message)
            raise RefusedError(message) from problem
        raise RefusedError(f"{db.path}: {problem.message}") from problem
    except AdviceError as exc:
        raise RefusedError(str(exc)) from exc
    apply_plan(plan, output)
    try:
        output.timings("after", time_all(plan, queries, args.runs, refuse_locked=False))
    except DatabaseProblemError as problem:
        raise FailedError(f"the changes are made, but timing them failed: {problem}") from problem


def make_plan(args: argparse.Namespace, db: DbCollectorConfig, busy_timeout: float) -> OptimizePlan:
    """What optimize would do; read-only. Raises RefusedError (or DatabaseProblemError)."""
    path = db.path
    backup_dir = Path(args.backup_dir) if args.backup_dir else Path(path).resolve().parent
    if not backup_dir.is_dir():
        raise RefusedError(f"--backup-dir {backup_dir}: not a directory")
    notes: list[str] = []
    with open_readonly(path, busy_timeout) as ro:
        page_size = int(ro.conn.execute("PRAGMA page_size").fetchone()[0])
        page_count = int(ro.conn.execute("PRAGMA page_count").fetchone()[0])
        whatif = WhatIfSchema(ro.conn)
        try:
            indexes = _planned_indexes(args, db, ro, whatif, notes)
        finally:
            whatif.close()
        added = sum(estimate_index_bytes(ro, index.key, busy_timeout) for index in indexes)
    size = page_size * page_count
    here = Path(path).resolve().parent
    needs = [measure_need("backup", backup_dir, size)]
    if added:
        # the new indexes' pages, written to the journal or WAL and then the database itself
        needs.append(measure_need("the new indexes", here, 2 * added))
    if not args.no_vacuum:
        # VACUUM writes a whole new copy to SQLite's temp dir, then copies it back through the
        # journal (or the WAL), which can grow to the database's size next to the file; both
        # include the new indexes.
        needs.append(measure_need("VACUUM's copy", sqlite_temp_dir(), size + added))
        needs.append(measure_need("VACUUM's journal", here, size + added))
    problems = shortfalls(needs)
    if problems:
        hint = "" if args.no_vacuum else " (--no-vacuum needs less)"
        raise RefusedError(f"not enough disk space: {'; '.join(problems)}{hint}")
    return OptimizePlan(
        path,
        size,
        backup_dir,
        tuple(indexes),
        not args.no_vacuum,
        busy_timeout,
        tuple(needs),
        tuple(notes),
    )


def estimate_index_bytes(ro: ReadOnlyDatabase, key: IndexKey, limit: float) -> int:
    """About what an index on `key` takes: the table's rows times its entries' width (the key
    values' average length over a bounded sample, plus the rowid and SQLite's per-cell
    overhead), with a quarter more for pages left part-empty. 0 when it cannot be measured."""
    table = quote_identifier(key.table)
    widths = []
    for column in key.columns:
        name = column.removesuffix(" DESC")
        widths.append(
            "8" if name == "<expr>" else f"coalesce(avg(length({quote_identifier(name)})), 0)"
        )
    # quoted names of the checked index's table and columns
    count = f"SELECT COUNT(*) FROM {table}"  # noqa: S608
    sample = f"SELECT {' + '.join(widths)} FROM (SELECT * FROM {table} LIMIT ?)"  # noqa: S608
    try:
        with deadline(ro.conn, limit):
            (rows,) = ro.conn.execute(count).fetchone()
            (width,) = ro.conn.execute(sample, (_WIDTH_SAMPLE_ROWS,)).fetchone()
    except (sqlite3.Error, QueryTimeoutError):
        return 0
    return int(int(rows) * (float(width or 0) + _INDEX_ENTRY_OVERHEAD) * 1.25)


def _planned_indexes(
    args: argparse.Namespace,
    db: DbCollectorConfig,
    ro: ReadOnlyDatabase,
    whatif: WhatIfSchema,
    notes: list[str],
) -> list[PlannedIndex]:
    existing = {undirected(key): name for key, name in whatif.existing_index_keys().items()}
    planned: dict[IndexKey, PlannedIndex] = {}
    for statement in args.apply:
        try:
            key = undirected(whatif.index_key(statement))
        except InvalidIndexError as exc:
            raise RefusedError(f"--apply {statement!r}: {exc}") from exc
        if key in existing:
            raise RefusedError(
                f"--apply {statement!r}: index {existing[key]} on {key.describe()} exists already"
            )
        planned.setdefault(key, PlannedIndex(statement, key, "--apply"))
    if args.advised:
        advisor = choose_advisor(args.advisor)
        advice = []
        for query in configured_queries(db, ()):
            found, note = advisor.advise(whatif, ro.path, query.sql, query.timeout)
            if note is not None:
                notes.append(f"query {query.name}: {note}")
            advice.append((query.name, found))
        for index in merge_advice(whatif, advice):
            reason = f"advised for {', '.join(index.queries)}"
            planned.setdefault(index.key, PlannedIndex(index.statement, index.key, reason))
    try:
        whatif.check_together([index.statement for index in planned.values()])
    except InvalidIndexError as exc:
        raise RefusedError(f"the indexes cannot all be created: {exc}") from exc
    return list(planned.values())


def time_all(
    plan: OptimizePlan, queries: Sequence[NamedQuery], runs: int, *, refuse_locked: bool
) -> list[QueryTiming]:
    source = counter_source()
    with open_readonly(plan.path, plan.busy_timeout) as ro:
        timings = [time_query(ro, source, query, runs) for query in queries]
    locked = [t for t in timings if t.error_kind is ErrorKind.LOCKED]
    if refuse_locked and locked:
        detail = f"query {locked[0].name}: {locked[0].error}"
        raise RefusedError(_locked_message(plan.path, plan.busy_timeout, detail))
    return timings


def _locked_message(path: str, busy_timeout: float, detail: str) -> str:
    return (
        f"{path} is locked by another connection ({detail}); waited the busy timeout of "
        f"{format_duration(busy_timeout)} (collectors.db.timeout, or --busy-timeout). "
        "Nothing was changed; try again when the application is quieter."
    )


def apply_plan(plan: OptimizePlan, output: OptimizeOutput) -> None:
    uri = sq.readonly_uri(plan.path).replace("?mode=ro", "?mode=rw")  # rw: never create it
    with contextlib.closing(sqlite3.connect(uri, uri=True, isolation_level=None)) as writer:
        writer.execute(f"PRAGMA busy_timeout = {int(plan.busy_timeout * 1000)}")
        try:
            writer.execute("BEGIN IMMEDIATE")  # the write lock, or SQLITE_BUSY after the wait
        except sqlite3.OperationalError as exc:
            raise RefusedError(_locked_message(plan.path, plan.busy_timeout, str(exc))) from exc
        try:
            started = time.perf_counter()
            try:
                backup = take_backup(plan.path, plan.backup_dir, plan.busy_timeout)
            except BackupError as exc:
                raise RefusedError(f"{exc}; nothing was changed") from exc
            output.step(f"backup {backup} (integrity_check ok)", started)
            output.backup = str(backup)
            _run(writer, "REINDEX", output)
            before = _index_names(writer)
            for index in plan.indexes:
                _run(writer, index.statement, output)
            created = sorted(_index_names(writer) - before)
            _run(writer, "ANALYZE", output)
            _run(writer, "COMMIT", output)
            output.committed = created
        except BaseException:
            if writer.in_transaction:
                writer.execute("ROLLBACK")
            raise
        if plan.vacuum:
            try:
                _run(writer, "VACUUM", output)
            except FailedError as exc:
                raise FailedError(
                    f"{exc}; the indexes and statistics are committed, only VACUUM is missing "
                    "(run again with --no-vacuum to skip it, or later)"
                ) from exc
        if str(writer.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            _checkpoint(writer, output)


def _checkpoint(writer: sqlite3.Connection, output: OptimizeOutput) -> None:
    """Move the new pages from the -wal into the database and empty the -wal, which the
    indexes and VACUUM grew to about the database's size. Busy (a reader still needs the old
    pages) is not a failure: the application's checkpoints finish it."""
    started = time.perf_counter()
    statement = "PRAGMA wal_checkpoint(TRUNCATE)"
    try:
        busy, _log, _done = writer.execute(statement).fetchone()
    except sqlite3.Error as exc:
        output.step(f"{statement}: {exc} (the application's checkpoints will do it)", started)
        return
    if busy:
        statement += (
            " (busy: a reader still uses the -wal; the application's checkpoints finish it)"
        )
    output.step(statement, started)


def _index_names(writer: sqlite3.Connection) -> set[str]:
    rows = writer.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
    return {str(name) for (name,) in rows}


def _run(writer: sqlite3.Connection, statement: str, output: OptimizeOutput) -> None:
    started = time.perf_counter()
    try:
        writer.execute(statement)
    except sqlite3.Error as exc:
        changed = "nothing was changed" if statement != "VACUUM" else "VACUUM changed nothing"
        raise FailedError(f"{statement}: {exc} (rolled back: {changed})") from exc
    output.step(statement, started)
