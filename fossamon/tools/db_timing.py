"""Timing a query as the collector runs it: one warm-up run, then N timed runs.

The warm-up brings the pages into the cache, so the first timed run is not the only one paying
for the disk. Where SQLite's counters can be read (db_counters), the warm-up is the counting
run; otherwise it is a plain untimed run. The timed runs use Python's sqlite3, as the db
collector does, so the figures compare with `db_query_seconds`.
"""

from __future__ import annotations

import sqlite3
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fossamon.model import ErrorKind
from fossamon.tools.db_counters import (
    CountersUnavailableError,
    CounterTimeoutError,
    StatementCounter,
    StatementCounters,
    load_counter,
)
from fossamon.tools.db_read import QueryTimeoutError, run_counted

if TYPE_CHECKING:
    from fossamon.tools.db_read import ReadOnlyDatabase


@dataclass(frozen=True, slots=True)
class NamedQuery:
    name: str
    sql: str
    timeout: float
    """Seconds: the query's own timeout in the config, else the db collector's."""


@dataclass(frozen=True, slots=True)
class QueryTiming:
    name: str
    sql: str
    timeout: float
    run_seconds: tuple[float, ...]
    rows: int | None
    """Rows returned, counted while stepping through them."""
    counters: StatementCounters | None
    counters_note: str | None
    """Why `counters` is None."""
    error: str | None = None
    error_kind: ErrorKind | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.run_seconds) if self.run_seconds else None

    @property
    def fastest(self) -> float | None:
        return min(self.run_seconds, default=None)

    @property
    def slowest(self) -> float | None:
        return max(self.run_seconds, default=None)


@dataclass(frozen=True, slots=True)
class CounterSource:
    """The counting run's library, or why there is none (given once per command)."""

    counter: StatementCounter | None
    note: str | None


def time_query(
    db: ReadOnlyDatabase, source: CounterSource, query: NamedQuery, runs: int
) -> QueryTiming:
    name, sql, timeout = query.name, query.sql, query.timeout
    counters, note = None, source.note
    if source.counter is not None:
        try:
            counters = source.counter.count(db.path, sql, timeout)
        except CounterTimeoutError:
            # Stepping without reading a column is the fastest way through a result: the
            # timed runs would only repeat the timeout.
            message = f"interrupted after {timeout:g}s"
            return QueryTiming(name, sql, timeout, (), None, None, None, message, ErrorKind.TIMEOUT)
        except CountersUnavailableError as exc:
            note = f"SQLite's counters unknown: {exc}"
    seconds: list[float] = []
    rows = None
    # The first of the runs is the warm-up when the counting run did not serve as one.
    planned = runs if counters is not None else runs + 1
    for number in range(planned):
        try:
            run = run_counted(db.conn, sql, timeout)
        except QueryTimeoutError as exc:
            return QueryTiming(
                name, sql, timeout, (), None, counters, note, str(exc), ErrorKind.TIMEOUT
            )
        except sqlite3.Error as exc:
            kind, message = db.describe(exc)
            return QueryTiming(name, sql, timeout, (), None, counters, note, message, kind)
        rows = run.rows
        if counters is not None or number > 0:
            seconds.append(run.seconds)
    return QueryTiming(name, sql, timeout, tuple(seconds), rows, counters, note)


def counter_source() -> CounterSource:
    try:
        return CounterSource(load_counter(), None)
    except CountersUnavailableError as exc:
        return CounterSource(None, f"SQLite's counters unknown: {exc}")
