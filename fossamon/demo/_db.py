"""Read-only access to the demo database that keeps the event loop free.

A few aiosqlite connections (each runs its queries in its own thread) stand in for the
connection pool a FastAPI app keeps, so concurrent requests overlap the way they would there.
Every connection is opened with `mode=ro`: serving the API must never change the file the
monitor is pointed at.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import TYPE_CHECKING, Any

import aiosqlite

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path


class DatabaseUnavailableError(Exception):
    """The database could not be opened or queried (missing file, not a database, locked)."""


class ReadOnlyDatabase:
    def __init__(self, path: Path, *, size: int = 4, timeout: float = 5.0) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self._uri = f"{path.resolve().as_uri()}?mode=ro"
        self._timeout = timeout
        # A slot is None until first used, and again after its connection failed, so a
        # database that appears (or comes back) later is picked up without a restart.
        self._slots: asyncio.Queue[aiosqlite.Connection | None] = asyncio.Queue()
        for _ in range(size):
            self._slots.put_nowait(None)
        self._open: set[aiosqlite.Connection] = set()

    async def fetch_all(self, sql: str, params: Sequence[object] = ()) -> list[dict[str, Any]]:
        rows = await self._run(sql, params)
        return [dict(row) for row in rows]

    async def fetch_value(self, sql: str, params: Sequence[object] = ()) -> Any:
        rows = await self._run(sql, params)
        return rows[0][0] if rows else None

    async def probe(self) -> None:
        """Open a fresh connection and run a trivial query, as a health check would.

        A fresh one, not a pooled one: an open connection keeps reading a file that has since
        been deleted or replaced, and the health check is there to notice exactly that.
        """
        try:
            await asyncio.to_thread(self._probe_sync)
        except sqlite3.Error as exc:
            raise DatabaseUnavailableError(str(exc)) from exc

    async def close(self) -> None:
        while self._open:
            await self._open.pop().close()

    def _probe_sync(self) -> None:
        conn = sqlite3.connect(self._uri, uri=True, timeout=self._timeout)
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()

    async def _run(self, sql: str, params: Sequence[object]) -> list[sqlite3.Row]:
        conn = await self._slots.get()
        try:
            if conn is None:
                conn = await aiosqlite.connect(self._uri, uri=True, timeout=self._timeout)
                self._open.add(conn)
                conn.row_factory = sqlite3.Row
            return list(await conn.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            if conn is not None:
                self._open.discard(conn)
                await conn.close()
                conn = None
            raise DatabaseUnavailableError(str(exc)) from exc
        finally:
            self._slots.put_nowait(conn)
