"""The `db` collector: times the configured queries on the application's SQLite file.

The file is only ever read: it is opened with `mode=ro` (so a wrong path is reported, never
created), `PRAGMA query_only=1` and an authorizer that refuses ATTACH, and nothing here runs
ANALYZE or any other writing statement. The connection is kept across cycles, but the path is
checked every cycle: a deleted file is reported as `missing`, a replaced one (restored from a
backup) is reopened.

Per cycle:

- `db_up`: 1 when the file opened and a trivial read of the schema succeeded, else 0;
- `db_file_bytes`, and `db_wal_bytes` while a `-wal` file exists;
- per query: `db_query_seconds{query}`, `db_query_rows{query}` (rows read, at most `max_rows`),
  `db_query_truncated{query}` (1 when the result had more than `max_rows` rows) and, with
  `record_value`, `db_query_value{query}`: the first column of the first row.

Results are stepped through in chunks of at most CHUNK_ROWS rows and about CHUNK_BYTES (one row
at a time where rows are large BLOBs or texts) and abandoned at `max_rows`, so a query returning
millions of rows, or huge ones, costs bounded memory and time. A query still running at its
timeout is interrupted (`sqlite3_interrupt`) and reported as `timeout`; the connection stays
usable. Failure kinds:
missing, permission, not_a_database (also a 0-byte file), locked, readonly_shm, no_such_table,
timeout, sql (an error in a configured query), other, internal (a bug).

```toml
[collectors.db]
interval = "60s"
path = "/backend/fossawork_v2.db"
timeout = "5s"
max_rows = 10000

[[collectors.db.queries]]
name = "work_orders_count"
sql = "SELECT COUNT(*) FROM work_orders"
record_value = true

[[collectors.db.queries]]
name = "work_orders_last_hour"
sql = "SELECT COUNT(*) FROM work_orders WHERE created_date > datetime('now', '-1 hour')"
record_value = true
timeout = "2s"

[[collectors.db.queries]]
name = "recent_work_orders"
sql = "SELECT * FROM work_orders ORDER BY created_date DESC LIMIT 100"
```
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiosqlite

from fossamon.collectors import _sqlite_open as sq
from fossamon.model import Batch, ErrorKind, Failure, Sample, make_labels

if TYPE_CHECKING:
    from fossamon.config import DbCollectorConfig, QueryConfig

CHUNK_ROWS = 500
CHUNK_BYTES = 4 * 1024 * 1024
_PROBE_SQL = "SELECT 1 FROM sqlite_master LIMIT 1"
# A wait for a writer's lock cannot be interrupted, so SQLite must give up on its own, before the
# deadline: the query then ends as `locked`, not as a `timeout` that hides the cause.
_BUSY_SHARE = 0.9
_REINTERRUPT_SECONDS = 0.05


class _TimeoutError(Exception):
    """The statement was interrupted at its deadline."""


@dataclass(frozen=True, slots=True)
class _Read:
    seconds: float
    rows: int
    first: Any
    """The first row, or None when there was none."""
    truncated: bool


class DbCollector:
    name = "db"
    METRICS = (
        "db_up",
        "db_file_bytes",
        "db_wal_bytes",
        "db_query_seconds",
        "db_query_rows",
        "db_query_truncated",
        "db_query_value",
    )

    def __init__(self, config: DbCollectorConfig) -> None:
        self.interval = config.interval
        self.jitter = config.jitter
        # the schema read, then each query in turn, each under its own deadline
        self.run_limit = config.timeout + sum(q.timeout or config.timeout for q in config.queries)
        self._config = config
        self._path = config.path
        self._conn: aiosqlite.Connection | None = None
        # The file as sniffed, held open while the connection lives: an inode that is still open
        # cannot be freed, so its number cannot be reused by a new file at the path, and
        # comparing (st_dev, st_ino) with the path's reliably tells a replaced file.
        self._pin: sq.Sniffed | None = None
        self._wal = False

    async def collect(self) -> Batch:
        ts, started = time.time(), time.perf_counter()
        samples: list[Sample] = []
        errors: list[Failure] = []
        try:
            await self._collect(samples, errors)
        except Exception as exc:  # noqa: BLE001 - a bug must become data, not kill the job
            errors.append(Failure(self._path, ErrorKind.INTERNAL, f"{type(exc).__name__}: {exc}"))
            with contextlib.suppress(Exception):  # already reported; start afresh next cycle
                await self._drop()
        duration = time.perf_counter() - started
        return Batch(self.name, ts, duration, tuple(samples), tuple(errors))

    async def close(self) -> None:
        conn = self._conn
        if conn is None:
            await self._drop()
            return
        # A run cancelled at shutdown leaves its statement running in aiosqlite's thread, and
        # close() queues behind it: interrupt until the close has gone through.
        stopper = asyncio.create_task(_interrupt_after(conn, 0.0, asyncio.Event()))
        try:
            await self._drop()
        finally:
            stopper.cancel()
            await asyncio.wait([stopper])

    async def _collect(self, samples: list[Sample], errors: list[Failure]) -> None:
        conn = await self._connection(samples, errors)
        samples.append(Sample("db_up", 0.0 if conn is None else 1.0))
        if conn is None:
            return
        # One after another on the one connection: SQLite runs one statement at a time per
        # connection anyway, and aiosqlite keeps the event loop free meanwhile.
        for query in self._config.queries:
            await self._run_query(conn, query, samples, errors)

    async def _connection(
        self, samples: list[Sample], errors: list[Failure]
    ) -> aiosqlite.Connection | None:
        """The kept connection, checked against the path; None (with a Failure) if unusable."""
        try:
            # In a thread, like every file-system call here: a hung mount must not stall the loop.
            state = await asyncio.to_thread(sq.file_state, self._path)
        except OSError as exc:
            await self._drop()
            errors.append(Failure(self._path, *sq.os_failure(exc)))
            return None
        samples.append(Sample("db_file_bytes", float(state.size)))
        if state.wal_size is not None:
            samples.append(Sample("db_wal_bytes", float(state.wal_size)))
        if self._pin is not None and self._pin.identity != state.identity:
            # Replaced under us: the kept connection would read the old, unlinked file forever.
            await self._drop()
        try:
            conn = self._conn if self._conn is not None else await self._open()
            await self._read(conn, _PROBE_SQL, self._config.timeout, max_rows=1)
        except sq.OpenProblemError as problem:
            kind, message = problem.kind, problem.message
        except _TimeoutError:
            timeout = self._config.timeout
            kind, message = ErrorKind.TIMEOUT, f"reading the schema took over {timeout:g}s"
        except sqlite3.Error as exc:
            kind, message = sq.classify(
                exc, path=self._path, wal=self._wal, fallback=ErrorKind.OTHER
            )
        else:
            return conn
        # Reopening is cheap, and a fresh open re-reads the header (the file may have changed).
        await self._drop()
        errors.append(Failure(self._path, kind, message))
        return None

    async def _open(self) -> aiosqlite.Connection:
        self._pin = await asyncio.to_thread(sq.sniff, self._path)
        self._wal = self._pin.wal
        # isolation_level=None: Python's sqlite3 never issues an implicit BEGIN on our behalf.
        self._conn = await aiosqlite.connect(
            sq.readonly_uri(self._path), uri=True, isolation_level=None
        )
        await self._conn.execute_fetchall("PRAGMA query_only = 1")
        await self._conn.set_authorizer(sq.deny_attach)
        return self._conn

    async def _drop(self) -> None:
        conn, pin = self._conn, self._pin
        self._conn, self._pin = None, None
        try:
            if conn is not None:
                await conn.close()
        finally:
            # Only after SQLite has closed: closing any descriptor of a file releases all of
            # this process's POSIX locks on it, including SQLite's.
            if pin is not None:
                pin.file.close()

    async def _run_query(
        self,
        conn: aiosqlite.Connection,
        query: QueryConfig,
        samples: list[Sample],
        errors: list[Failure],
    ) -> None:
        labels = make_labels(query=query.name)
        timeout = query.timeout or self._config.timeout
        try:
            read = await self._read(conn, query.sql, timeout, self._config.max_rows)
        except _TimeoutError:
            errors.append(Failure(query.name, ErrorKind.TIMEOUT, f"interrupted after {timeout:g}s"))
            return
        except sqlite3.Error as exc:
            kind, message = sq.classify(exc, path=self._path, wal=self._wal, fallback=ErrorKind.SQL)
            errors.append(Failure(query.name, kind, message))
            return
        samples.append(Sample("db_query_seconds", read.seconds, labels))
        samples.append(Sample("db_query_rows", float(read.rows), labels))
        samples.append(Sample("db_query_truncated", float(read.truncated), labels))
        if query.record_value:
            value = _recorded_value(read.first)
            if isinstance(value, str):
                errors.append(Failure(query.name, ErrorKind.OTHER, value))
            else:
                samples.append(Sample("db_query_value", value, labels))

    async def _read(
        self, conn: aiosqlite.Connection, sql: str, limit: float, max_rows: int
    ) -> _Read:
        """Run one statement under a deadline; raise _TimeoutError if it was interrupted."""
        expired = asyncio.Event()
        watchdog = asyncio.create_task(_interrupt_after(conn, limit, expired))
        try:
            busy_ms = int(limit * 1000 * _BUSY_SHARE)
            await conn.execute_fetchall(f"PRAGMA busy_timeout = {busy_ms}")
            started = time.perf_counter()
            # Closing the cursor (leaving the block) ends the statement, which releases the
            # shared lock a half-read result would otherwise hold against the app's writers.
            async with conn.execute(sql) as cursor:
                rows, first, truncated = await _read_capped(cursor, max_rows)
            return _Read(time.perf_counter() - started, rows, first, truncated)
        except sqlite3.OperationalError as exc:
            if expired.is_set() and sq.is_interrupt(exc):
                raise _TimeoutError from exc
            raise
        finally:
            watchdog.cancel()
            # asyncio.wait, unlike awaiting the task, neither raises its CancelledError nor
            # swallows a cancellation of ours.
            await asyncio.wait([watchdog])


async def _interrupt_after(
    conn: aiosqlite.Connection, delay: float, expired: asyncio.Event
) -> None:
    """Interrupt the running statement at the deadline, and again while it keeps running:
    SQLite ignores an interrupt that lands between two statements."""
    await asyncio.sleep(delay)
    expired.set()
    while True:
        # aiosqlite calls sqlite3_interrupt() directly from this thread; SQLite allows that.
        try:
            await conn.interrupt()
        except (sqlite3.ProgrammingError, ValueError):
            return  # the connection has closed meanwhile: nothing left to interrupt
        await asyncio.sleep(_REINTERRUPT_SECONDS)


def _recorded_value(first_row: Any) -> float | str:
    """The number to record, or why there is none."""
    if first_row is None:
        return "record_value is set, but the query returned no rows"
    value = first_row[0]
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            return f"record_value is set, but the value {value!r} is not a finite number"
        return float(value)
    return f"record_value is set, but the first column of the first row is {value!r}, not a number"


async def _read_capped(cursor: aiosqlite.Cursor, max_rows: int) -> tuple[int, Any, bool]:
    """Step through at most max_rows rows, never fetching a result whole.

    Memory is bounded by bytes, not rows: a chunk holds at most CHUNK_ROWS rows and about
    CHUNK_BYTES, sized by the rows seen so far, and starts with one row, so a result of
    megabyte BLOBs is read one row at a time. Small rows still come CHUNK_ROWS at a time: one
    hop to aiosqlite's thread per row would add its cost to the measured query time.

    Returns the rows read, the first row (None if there was none) and whether rows were left.
    """
    first: Any = None
    rows = 0
    chunk_rows = 1
    while rows < max_rows:
        chunk = list(await cursor.fetchmany(min(chunk_rows, max_rows - rows)))
        if not chunk:
            return rows, first, False
        if first is None:
            first = chunk[0]
        rows += len(chunk)
        size = max(1, *(_row_bytes(row) for row in chunk))
        chunk_rows = max(1, min(CHUNK_ROWS, CHUNK_BYTES // size))
        del chunk
    return rows, first, await cursor.fetchone() is not None


def _row_bytes(row: Any) -> int:
    """About what a row costs in memory: its strings and BLOBs, plus a little per value."""
    return sum(len(value) if isinstance(value, str | bytes) else 0 for value in row) + 16 * len(row)
