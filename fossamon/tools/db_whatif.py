"""An empty in-memory copy of the monitored database's schema, where indexes cost nothing.

SQLite plans a query from the schema and the `sqlite_stat1` statistics, never from the rows,
so the copy plans exactly as the real file does; a hypothetical index is created there, the
plan read, and the index rolled back. `db analyze` weighs its plan-based advice here, and
`db optimize` checks every `--apply` statement here before the real file is touched.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fossamon.tools.db_plan import PlanStep, query_plan

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

_CREATE_INDEX = re.compile(r"\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s", re.IGNORECASE)
# Tables before what depends on them; triggers only matter to writes and are left out.
_SCHEMA_SQL = """SELECT type, name, sql FROM sqlite_master
WHERE sql IS NOT NULL AND type IN ('table', 'index', 'view') AND name NOT LIKE 'sqlite_%'
ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 ELSE 2 END"""


class InvalidIndexError(Exception):
    """A statement given as an index that is not one, or not a useful one."""


@dataclass(frozen=True, slots=True)
class IndexKey:
    """What an index is, whatever it is called: its table and key columns in order."""

    table: str
    columns: tuple[str, ...]
    """Column names ("<expr>" for an expression), "DESC" appended where descending."""
    unique: bool = False
    partial: bool = False

    def describe(self) -> str:
        kind = ("unique " if self.unique else "") + ("partial " if self.partial else "")
        return f"{kind}{self.table}({', '.join(self.columns)})"


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class WhatIfSchema:
    def __init__(self, source: sqlite3.Connection) -> None:
        self._mem = sqlite3.connect(":memory:", isolation_level=None)
        self.skipped: list[str] = []
        """Objects the copy could not recreate (a virtual table of an unknown module)."""
        for kind, name, sql in list(source.execute(_SCHEMA_SQL)):
            try:
                self._mem.execute(sql)
            except sqlite3.Error as exc:
                self.skipped.append(f"{kind} {name}: {exc}")
        self._copy_statistics(source)

    def close(self) -> None:
        self._mem.close()

    def _copy_statistics(self, source: sqlite3.Connection) -> None:
        has_stats = source.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'"
        ).fetchone()
        if not has_stats:
            return
        # ANALYZE of the empty copy creates an (empty) sqlite_stat1 to fill; a second ANALYZE
        # of sqlite_master makes SQLite load what was filled in.
        self._mem.execute("ANALYZE")
        rows = source.execute("SELECT tbl, idx, stat FROM sqlite_stat1")
        self._mem.executemany("INSERT INTO sqlite_stat1 VALUES (?, ?, ?)", rows)
        self._mem.execute("ANALYZE sqlite_master")

    @contextlib.contextmanager
    def _trial(self) -> Iterator[sqlite3.Connection]:
        """Whatever is created inside is rolled back on leaving."""
        self._mem.execute("SAVEPOINT what_if")
        try:
            yield self._mem
        finally:
            self._mem.execute("ROLLBACK TO what_if")
            self._mem.execute("RELEASE what_if")

    def plan(self, sql: str, indexes: Sequence[str] = ()) -> list[PlanStep]:
        """The plan of `sql` if `indexes` (CREATE INDEX statements) existed."""
        with self._trial() as mem:
            for statement in indexes:
                mem.execute(statement)
            return query_plan(mem, sql)

    def columns_read(self, sql: str) -> list[tuple[str, str]]:
        """The (table, column) pairs `sql` reads, in order: what an index could be built on."""
        found: dict[tuple[str, str], None] = {}

        def record(action: int, table: str | None, column: str | None, *_: str | None) -> int:
            if action == sqlite3.SQLITE_READ and table and column:
                found[table, column] = None
            return sqlite3.SQLITE_OK

        self._mem.set_authorizer(record)
        try:
            query_plan(self._mem, sql)  # SQLite asks the authorizer while preparing
        finally:
            self._mem.set_authorizer(None)
        rows = self._mem.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        tables = {name for (name,) in rows}
        return [pair for pair in found if pair[0] in tables]

    def has_object(self, name: str) -> bool:
        row = self._mem.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone()
        return row is not None

    def existing_index_keys(self) -> dict[IndexKey, str]:
        indexes = list(self._mem.execute("SELECT name FROM sqlite_master WHERE type = 'index'"))
        return {self._key(name): name for (name,) in indexes}

    def index_key(self, statement: str) -> IndexKey:
        """The key of the index `statement` creates; raises InvalidIndexError if it creates
        anything else, or nothing, or fails."""
        if not _CREATE_INDEX.match(statement):
            raise InvalidIndexError("only CREATE INDEX statements are accepted")
        before = self._names()
        with self._trial() as mem:
            try:
                mem.execute(statement)  # one statement only: Python refuses a second
            except (sqlite3.Error, sqlite3.Warning) as exc:
                raise InvalidIndexError(str(exc)) from exc
            created = self._names() - before
            if len(created) != 1:  # "IF NOT EXISTS" of an existing name creates nothing
                raise InvalidIndexError("it creates no new index (the name exists already)")
            return self._key(created.pop())

    def check_together(self, statements: Sequence[str]) -> None:
        """Raises InvalidIndexError if the statements fail when run in order (two of one name)."""
        with self._trial() as mem:
            for statement in statements:
                try:
                    mem.execute(statement)
                except (sqlite3.Error, sqlite3.Warning) as exc:
                    raise InvalidIndexError(f"{statement}: {exc}") from exc

    def _names(self) -> set[str]:
        return {name for (name,) in self._mem.execute("SELECT name FROM sqlite_master")}

    def _key(self, index: str) -> IndexKey:
        (table,) = self._mem.execute(
            "SELECT tbl_name FROM sqlite_master WHERE name = ?", (index,)
        ).fetchone()
        columns = []
        for _seq, _cid, column, descending, _collation, is_key in self._mem.execute(
            f"PRAGMA index_xinfo({quote_identifier(index)})"
        ):
            if is_key:
                name = column or "<expr>"
                columns.append(f"{name} DESC" if descending else name)
        unique, partial = False, False
        for _seq, name, is_unique, _origin, is_partial in self._mem.execute(
            f"PRAGMA index_list({quote_identifier(table)})"
        ):
            if name == index:
                unique, partial = bool(is_unique), bool(is_partial)
        return IndexKey(str(table), tuple(columns), unique, partial)
