"""`fossamon db optimize`: a verified backup first, then indexes, REINDEX, ANALYZE, VACUUM.

Everything that can refuse does so before anything changes: the `--apply` statements are
checked in the schema copy (db_whatif), the free disk space is measured, the configured
queries are timed (read-only), and the write lock is taken, waiting at most the busy timeout.
Only then is the backup made (db_backup), with the write lock held, so that it is exactly the
database the changes start from. REINDEX comes before the new indexes (rebuilding them would
be wasted work), ANALYZE after them (so it measures them too), and all three commit together;
VACUUM cannot run inside a transaction and comes last.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

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
from fossamon.tools.db_read import DatabaseProblemError, open_readonly
from fossamon.tools.db_timing import QueryTiming, counter_source, time_query
from fossamon.tools.db_whatif import IndexKey, InvalidIndexError, WhatIfSchema
from fossamon.units import format_duration, parse_duration

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from fossamon.config import DbCollectorConfig
    from fossamon.tools.db_read import ReadOnlyDatabase
    from fossamon.tools.db_timing import NamedQuery


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
    size = page_size * page_count
    needs = [measure_need("backup", backup_dir, size)]
    if not args.no_vacuum:
        # VACUUM writes a whole new copy to SQLite's temp dir, then copies it back through the
        # journal (or the WAL), which can grow to the database's size next to the file.
        needs.append(measure_need("VACUUM's copy", sqlite_temp_dir(), size))
        needs.append(measure_need("VACUUM's journal", Path(path).resolve().parent, size))
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
    uri = f"file:{quote(str(Path(plan.path).absolute()))}?mode=rw"  # rw: never create it
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
            for index in plan.indexes:
                _run(writer, index.statement, output)
            _run(writer, "ANALYZE", output)
            _run(writer, "COMMIT", output)
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


def _run(writer: sqlite3.Connection, statement: str, output: OptimizeOutput) -> None:
    started = time.perf_counter()
    try:
        writer.execute(statement)
    except sqlite3.Error as exc:
        changed = "nothing was changed" if statement != "VACUUM" else "VACUUM changed nothing"
        raise FailedError(f"{statement}: {exc} (rolled back: {changed})") from exc
    output.step(statement, started)
