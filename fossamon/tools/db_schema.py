"""What the monitored database holds: its tables (rows, columns, size) and their indexes.

Sizes come from the `dbstat` virtual table where SQLite has it (Debian's does): pages and bytes
per table and per index. Without it they are unknown, and said to be; the database's own page
count and size are always there.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fossamon.tools.db_read import QueryTimeoutError, deadline
from fossamon.tools.db_whatif import quote_identifier

if TYPE_CHECKING:
    from fossamon.tools.db_read import ReadOnlyDatabase

# One row per b-tree (aggregate=TRUE): `pageno` is then its page count, `pgsize` its bytes.
_DBSTAT_SQL = "SELECT name, pageno, pgsize FROM dbstat WHERE aggregate = TRUE"
# The aggregate is computed inside one call of the virtual table, out of reach of the progress
# handler and of sqlite3_interrupt: above this many pages (1 GiB of 4 KiB pages, about a
# second) it is not run at all.
_DBSTAT_MAX_PAGES = 262_144


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str
    not_null: bool
    primary_key: bool


@dataclass(frozen=True, slots=True)
class Index:
    name: str
    columns: tuple[str, ...]
    unique: bool
    origin: str
    """How it came to be: "c" CREATE INDEX, "u" a UNIQUE constraint, "pk" a PRIMARY KEY."""
    pages: int | None
    bytes: int | None


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    rows: int | None
    rows_note: str | None
    """Why `rows` is unknown (the count timed out or failed)."""
    columns: tuple[Column, ...]
    indexes: tuple[Index, ...]
    pages: int | None
    bytes: int | None


@dataclass(frozen=True, slots=True)
class DatabaseFacts:
    sqlite_version: str
    page_size: int
    page_count: int
    freelist_pages: int
    journal_mode: str
    has_statistics: bool
    """sqlite_stat1 exists: ANALYZE has run, and the planner uses its figures."""
    sizes_note: str | None
    """Why per-table sizes are unknown (no dbstat), else None."""


def database_facts(db: ReadOnlyDatabase, sizes_note: str | None) -> DatabaseFacts:
    conn = db.conn

    def pragma(name: str) -> object:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]

    stats = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone()
    return DatabaseFacts(
        sqlite_version=sqlite3.sqlite_version,
        page_size=int(str(pragma("page_size"))),
        page_count=int(str(pragma("page_count"))),
        freelist_pages=int(str(pragma("freelist_count"))),
        # Reading the mode changes nothing; only an assignment would.
        journal_mode=str(pragma("journal_mode")),
        has_statistics=stats is not None,
        sizes_note=sizes_note,
    )


def btree_sizes(
    db: ReadOnlyDatabase, timeout: float
) -> tuple[dict[str, tuple[int, int]], str | None]:
    """{table or index: (pages, bytes)}, and why it is empty if it is."""
    pages = int(db.conn.execute("PRAGMA page_count").fetchone()[0])
    if pages > _DBSTAT_MAX_PAGES:
        return {}, (
            f"sizes per table not measured: dbstat reads every page ({pages} here, over "
            f"{_DBSTAT_MAX_PAGES}) in one step that no deadline can stop"
        )
    try:
        with deadline(db.conn, timeout):
            # one row per table and index: few, whatever the data
            rows = list(db.conn.execute(_DBSTAT_SQL))
        sizes = {str(name): (int(pages), int(size)) for name, pages, size in rows}
    except sqlite3.Error as exc:
        return {}, f"sizes per table unknown (dbstat: {exc})"
    except QueryTimeoutError:
        return {}, f"sizes per table unknown (dbstat took over {timeout:g}s)"
    return sizes, None


def tables(db: ReadOnlyDatabase, timeout: float, sizes: dict[str, tuple[int, int]]) -> list[Table]:
    conn = db.conn
    names = [
        str(name)
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
    ]
    found = []
    for name in names:
        quoted = quote_identifier(name)
        rows, rows_note = _row_count(db, quoted, timeout)
        columns = tuple(
            Column(str(col), str(kind), bool(not_null), bool(pk))
            for _cid, col, kind, not_null, _default, pk, hidden in conn.execute(
                f"PRAGMA table_xinfo({quoted})"
            )
            if hidden != 1  # a virtual table's hidden column (2, 3: generated columns)
        )
        pages, size = sizes.get(name, (None, None))
        found.append(
            Table(name, rows, rows_note, columns, _indexes(conn, quoted, sizes), pages, size)
        )
    return found


def _row_count(db: ReadOnlyDatabase, quoted: str, timeout: float) -> tuple[int | None, str | None]:
    sql = f"SELECT COUNT(*) FROM {quoted}"  # noqa: S608 - a quoted name, from sqlite_master
    try:
        with deadline(db.conn, timeout):
            (count,) = db.conn.execute(sql).fetchone()
    except QueryTimeoutError:
        return None, f"counting took over {timeout:g}s"
    except sqlite3.Error as exc:
        return None, db.describe(exc)[1]
    return int(count), None


def _indexes(
    conn: sqlite3.Connection, quoted_table: str, sizes: dict[str, tuple[int, int]]
) -> tuple[Index, ...]:
    found = []
    for _seq, name, unique, origin, _partial in list(
        conn.execute(f"PRAGMA index_list({quoted_table})")
    ):
        columns = tuple(
            str(column) if column is not None else "<expr>"
            for _seqno, _cid, column in conn.execute(f"PRAGMA index_info({quote_identifier(name)})")
        )
        pages, size = sizes.get(str(name), (None, None))
        found.append(Index(str(name), columns, bool(unique), str(origin), pages, size))
    return tuple(found)
