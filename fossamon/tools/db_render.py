"""`db analyze`'s report: aligned tables for people, JSON for programs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fossamon.tables import aligned
from fossamon.tools.db_plan import render_plan
from fossamon.units import format_bytes, format_duration

if TYPE_CHECKING:
    from fossamon.tools.db_analyze import AnalyzeReport, QueryReport
    from fossamon.tools.db_counters import StatementCounters
    from fossamon.tools.db_schema import Table
    from fossamon.tools.db_timing import QueryTiming

_NONE = "-"


def render_json(report: AnalyzeReport) -> str:
    facts = report.facts
    document = {
        "database": {
            "path": report.path,
            "file_bytes": report.file_bytes,
            "wal_bytes": report.wal_bytes,
            "sqlite_version": facts.sqlite_version,
            "page_size": facts.page_size,
            "page_count": facts.page_count,
            "freelist_pages": facts.freelist_pages,
            "journal_mode": facts.journal_mode,
            "has_statistics": facts.has_statistics,
            "sizes_note": facts.sizes_note,
        },
        "tables": [_table_json(table) for table in report.tables],
        "runs": report.runs,
        "queries": [_query_json(query) for query in report.queries],
        "advisor": report.advisor,
        "advised_indexes": [
            {
                "sql": index.statement,
                "table": index.key.table,
                "columns": list(index.key.columns),
                "queries": list(index.queries),
            }
            for index in report.advised
        ],
        "schema_notes": list(report.schema_notes),
    }
    return json.dumps(document, indent=2)


def timing_json(timing: QueryTiming) -> dict[str, Any]:
    return {
        "name": timing.name,
        "sql": timing.sql,
        "timeout_seconds": timing.timeout,
        "median_seconds": timing.median,
        "min_seconds": timing.fastest,
        "max_seconds": timing.slowest,
        "run_seconds": list(timing.run_seconds),
        "rows_returned": timing.rows,
        "counters": _counters_json(timing.counters),
        "counters_note": timing.counters_note,
        "error": timing.error,
        "error_kind": timing.error_kind.value if timing.error_kind else None,
    }


def _counters_json(counters: StatementCounters | None) -> dict[str, int] | None:
    if counters is None:
        return None
    return {
        "fullscan_steps": counters.fullscan_steps,
        "sorts": counters.sorts,
        "autoindex_rows": counters.autoindex_rows,
        "vm_steps": counters.vm_steps,
    }


def _query_json(query: QueryReport) -> dict[str, Any]:
    advice = query.advice
    return {
        **timing_json(query.timing),
        "plan": render_plan(query.plan),
        "plan_error": query.plan_error,
        "full_scans": list(query.full_scans),
        "advice": None
        if advice is None
        else {
            "source": advice.source,
            "indexes": list(advice.indexes),
            "plan_with_indexes": list(advice.plan_with_indexes),
        },
        "advice_note": query.advice_note,
    }


def _table_json(table: Table) -> dict[str, Any]:
    return {
        "name": table.name,
        "rows": table.rows,
        "rows_note": table.rows_note,
        "pages": table.pages,
        "bytes": table.bytes,
        "columns": [
            {"name": c.name, "type": c.type, "not_null": c.not_null, "primary_key": c.primary_key}
            for c in table.columns
        ],
        "indexes": [
            {
                "name": i.name,
                "columns": list(i.columns),
                "unique": i.unique,
                "origin": i.origin,
                "pages": i.pages,
                "bytes": i.bytes,
            }
            for i in table.indexes
        ],
    }


def render_table(report: AnalyzeReport) -> str:
    return "\n".join(
        [
            *_database_lines(report),
            "",
            *_tables_lines(report),
            "",
            *_queries_lines(report),
            "",
            *_plans_lines(report),
            "",
            *_advice_lines(report),
        ]
    )


def _database_lines(report: AnalyzeReport) -> list[str]:
    facts = report.facts
    wal = f", -wal {format_bytes(report.wal_bytes)}" if report.wal_bytes is not None else ""
    statistics = (
        "ANALYZE statistics present"
        if facts.has_statistics
        else "no ANALYZE statistics (the planner guesses table sizes)"
    )
    summary = (
        f"database {report.path}: {format_bytes(report.file_bytes)}{wal}; "
        f"{facts.page_count} pages of {facts.page_size} B, {facts.freelist_pages} free; "
        f"journal {facts.journal_mode}; SQLite {facts.sqlite_version}; {statistics}"
    )
    lines = [summary]
    if facts.sizes_note:
        lines.append(f"  {facts.sizes_note}")
    lines += [f"  not copied for advice: {note}" for note in report.schema_notes]
    return lines


def _tables_lines(report: AnalyzeReport) -> list[str]:
    rows: list[tuple[str, ...]] = [("table", "rows", "columns", "size", "indexes")]
    for table in report.tables:
        indexes = (
            "; ".join(
                f"{i.name} ({', '.join(i.columns)})"
                + (f" {format_bytes(i.bytes)}" if i.bytes is not None else "")
                for i in table.indexes
            )
            or "none"
        )
        rows.append(
            (
                table.name,
                str(table.rows) if table.rows is not None else f"? ({table.rows_note})",
                str(len(table.columns)),
                format_bytes(table.bytes) if table.bytes is not None else "?",
                indexes,
            )
        )
    return aligned(rows)


def _queries_lines(report: AnalyzeReport) -> list[str]:
    rows: list[tuple[str, ...]] = [
        (
            f"query ({report.runs} run{'s' if report.runs != 1 else ''})",
            "median",
            "fastest",
            "slowest",
            "rows",
            "scanned",
            "sorts",
            "auto-index",
        )
    ]
    problems, notes = [], set()
    for query in report.queries:
        rows.append(timing_cells(query.timing))
        if query.timing.error:
            problems.append(f"  {query.timing.name}: {query.timing.error}")
        if query.plan_error:
            problems.append(f"  {query.timing.name}: no plan: {query.plan_error}")
        if query.timing.counters_note:
            notes.add(f"  {query.timing.counters_note}")
    footer = (
        "  scanned: rows stepped through in full table scans (SQLite's own count); "
        "auto-index: rows put into an index SQLite built for one run"
    )
    return [*aligned(rows), footer, *sorted(notes), *problems]


def timing_cells(timing: QueryTiming) -> tuple[str, ...]:
    def seconds(value: float | None) -> str:
        return format_duration(value) if value is not None else _NONE

    counters = timing.counters
    return (
        timing.name,
        seconds(timing.median) if not timing.error else "failed",
        seconds(timing.fastest),
        seconds(timing.slowest),
        str(timing.rows) if timing.rows is not None else _NONE,
        str(counters.fullscan_steps) if counters else "?",
        str(counters.sorts) if counters else "?",
        str(counters.autoindex_rows) if counters else "?",
    )


def _plans_lines(report: AnalyzeReport) -> list[str]:
    lines = ["plans (EXPLAIN QUERY PLAN)"]
    for query in report.queries:
        lines.append(f"  {query.timing.name}: {query.timing.sql}")
        lines += [f"    {line}" for line in render_plan(query.plan)]
    return lines


def _advice_lines(report: AnalyzeReport) -> list[str]:
    lines = [f"index advice, from {report.advisor}"]
    lines += [f"  {q.timing.name}: {q.advice_note}" for q in report.queries if q.advice_note]
    if not report.advised:
        lines.append("  none: no index would improve these plans")
        return lines
    rows = [(f"  {i.statement}", f"-- {', '.join(i.queries)}") for i in report.advised]
    lines += aligned(rows)
    lines.append(
        "  create them with: fossamon db optimize --advised (a verified backup is taken first;"
        " --dry-run shows the plan)"
    )
    return lines
