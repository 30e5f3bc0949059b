"""`fossamon db analyze`: the configured queries' timings, plans and index advice, and what the
database holds. Read-only: the file is opened as the db collector opens it (db_read), the
advisors read its schema, and nothing here writes to the database file: its bytes and mtime
stay the same. Next to a WAL database, though, SQLite's read marks appear when none were there
(the application closed cleanly): a 0-byte `-wal` and a 32 KiB `-shm`, as any reader leaves.
"""

from __future__ import annotations

import sqlite3
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fossamon.collectors import _sqlite_open as sq
from fossamon.tools.db_advice import AdviceError, choose_advisor
from fossamon.tools.db_plan import PlanStep, full_scans, query_plan
from fossamon.tools.db_read import DatabaseProblemError, open_readonly
from fossamon.tools.db_render import render_json, render_table
from fossamon.tools.db_schema import (
    DatabaseFacts,
    Table,
    btree_sizes,
    database_facts,
    tables,
)
from fossamon.tools.db_timing import NamedQuery, QueryTiming, counter_source, time_query
from fossamon.tools.db_whatif import IndexKey, InvalidIndexError, WhatIfSchema

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from fossamon.config import DbCollectorConfig
    from fossamon.tools.db_advice import Advice, Advisor


@dataclass(frozen=True, slots=True)
class QueryReport:
    timing: QueryTiming
    plan: tuple[PlanStep, ...]
    plan_error: str | None
    full_scans: tuple[str, ...]
    advice: Advice | None
    advice_note: str | None


@dataclass(frozen=True, slots=True)
class AdvisedIndex:
    statement: str
    key: IndexKey
    queries: tuple[str, ...]
    """The queries it helps, by name."""


@dataclass(frozen=True, slots=True)
class AnalyzeReport:
    path: str
    file_bytes: int
    wal_bytes: int | None
    facts: DatabaseFacts
    tables: tuple[Table, ...]
    runs: int
    queries: tuple[QueryReport, ...]
    advisor: str
    advised: tuple[AdvisedIndex, ...]
    schema_notes: tuple[str, ...]
    """Schema objects the advisors' copy could not recreate."""

    @property
    def failed(self) -> bool:
        return any(q.timing.error or q.plan_error for q in self.queries)


def configured_queries(db: DbCollectorConfig, extra: Sequence[str]) -> list[NamedQuery]:
    """The config's queries, then `--query` ones, named adhoc_1, adhoc_2, …"""
    queries = [NamedQuery(q.name, q.sql, q.timeout or db.timeout) for q in db.queries]
    queries += [NamedQuery(f"adhoc_{n}", sql, db.timeout) for n, sql in enumerate(extra, 1)]
    return queries


def analyze(
    path: str, queries: Sequence[NamedQuery], timeout: float, runs: int, advisor: Advisor
) -> AnalyzeReport:
    """Raises DatabaseProblemError when the file cannot be read as a database."""
    with open_readonly(path, timeout) as db:
        state = sq.file_state(path)
        sizes, sizes_note = btree_sizes(db, timeout)
        facts = database_facts(db, sizes_note)
        found_tables = tables(db, timeout, sizes)
        whatif = WhatIfSchema(db.conn)
        try:
            source = counter_source()
            reports = []
            for query in queries:
                timing = time_query(db, source, query, runs)
                reports.append(_query_report(db.conn, whatif, advisor, path, timing))
            advised = merge_advice(whatif, [(r.timing.name, r.advice) for r in reports])
        finally:
            whatif.close()
    return AnalyzeReport(
        path,
        state.size,
        state.wal_size,
        facts,
        tuple(found_tables),
        runs,
        tuple(reports),
        advisor.describe(),
        tuple(advised),
        tuple(whatif.skipped),
    )


def _query_report(
    conn: sqlite3.Connection, whatif: WhatIfSchema, advisor: Advisor, path: str, timing: QueryTiming
) -> QueryReport:
    try:
        plan = tuple(query_plan(conn, timing.sql))
    except (sqlite3.Error, sqlite3.Warning) as exc:  # Warning: two statements in one
        return QueryReport(timing, (), str(exc), (), None, None)
    advice, note = advisor.advise(whatif, path, timing.sql, timing.timeout)
    return QueryReport(timing, plan, None, tuple(full_scans(plan)), advice, note)


def merge_advice(
    whatif: WhatIfSchema, advice: Sequence[tuple[str, Advice | None]]
) -> list[AdvisedIndex]:
    """One index per distinct key across the queries; an index whose columns lead another
    advised index of the same table is left out, the longer one serving both."""
    merged: dict[IndexKey, AdvisedIndex] = {}
    existing = {undirected(key) for key in whatif.existing_index_keys()}
    for query, query_advice in advice:
        if query_advice is None:
            continue
        for statement in query_advice.indexes:
            try:
                key = undirected(whatif.index_key(statement))
            except InvalidIndexError:
                continue  # an advisor's statement SQLite refuses helps nobody
            if key in existing:
                continue
            known = merged.get(key)
            names = (*known.queries, query) if known else (query,)
            merged[key] = AdvisedIndex(known.statement if known else statement, key, names)
    kept = {
        key: index
        for key, index in merged.items()
        if not any(_leads(key, other) for other in merged)
    }
    for key, index in merged.items():
        if key not in kept:
            longer_key = next(other for other in kept if _leads(key, other))
            longer = kept[longer_key]
            queries = tuple(dict.fromkeys((*longer.queries, *index.queries)))
            kept[longer_key] = AdvisedIndex(longer.statement, longer_key, queries)
    return list(kept.values())


def undirected(key: IndexKey) -> IndexKey:
    """An index whose columns all run the same way serves both directions: (a DESC) = (a)."""
    if key.columns and all(column.endswith(" DESC") for column in key.columns):
        columns = tuple(column.removesuffix(" DESC") for column in key.columns)
        return IndexKey(key.table, columns, key.unique, key.partial)
    return key


def _leads(short: IndexKey, long: IndexKey) -> bool:
    return (
        short.table == long.table
        and not (short.unique or short.partial or long.partial)
        and len(short.columns) < len(long.columns)
        and long.columns[: len(short.columns)] == short.columns
    )


def run_analyze(args: argparse.Namespace, db: DbCollectorConfig) -> int:
    try:
        advisor = choose_advisor(args.advisor)
    except AdviceError as exc:
        print(f"fossamon db analyze: {exc}", file=sys.stderr)
        return 1
    queries = configured_queries(db, args.query)
    try:
        report = analyze(db.path, queries, db.timeout, args.runs, advisor)
    except DatabaseProblemError as problem:
        print(f"fossamon db analyze: {db.path}: {problem.message}", file=sys.stderr)
        return 1
    print(render_json(report) if args.json else render_table(report))
    return 1 if report.failed else 0
