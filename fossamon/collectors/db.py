"""The `db` collector: times the configured queries on the application's SQLite file.

The file is only ever read: it is opened with `mode=ro` (so a wrong path is reported, never
created), `PRAGMA query_only=1` and an authorizer that refuses ATTACH, and nothing here runs
ANALYZE or any other writing statement. The connection is kept across cycles, but the path is
checked every cycle: a deleted file is reported as `missing`, a replaced one (restored from a
backup) is reopened.

Per cycle:

- `db_up`: 1 when the file opened and a trivial read of the schema succeeded, else 0;
- `db_file_bytes`, and `db_wal_bytes` while a `-wal` file exists;
- per query: `db_query_ok{query}` (1 when it ran and gave what was asked, 0 when it failed:
  what a rule alerts on, as `api_up` for an endpoint), `db_query_seconds{query}`,
  `db_query_rows{query}` (rows read, at most `max_rows`),
  `db_query_truncated{query}` (1 when the result had more than `max_rows` rows) and, with
  `record_value`, `db_query_value{query}`: the first column of the first row.

Everything a cycle does with the file (the checks, the schema read, every query) runs in one
hop to the collector's own thread: a hop costs more CPU here than the three runbook queries
(0.1-0.2 ms, benchmarks/cycle.py), and a hung mount or slow statement must not stall the loop.
Results are stepped through in chunks of at most CHUNK_ROWS rows and about CHUNK_BYTES (one row
at a time where rows are large BLOBs or texts) and abandoned at `max_rows`, so a query returning
millions of rows, or huge ones, costs bounded memory and time. A statement still running at its
timeout is stopped by SQLite and reported as `timeout`; the connection stays usable. Two things
stop it: a progress handler that checks the deadline every PROGRESS_STEPS virtual-machine
steps, and the event loop, which looks every WATCH_SECONDS (and at the deadline) and calls
`sqlite3_interrupt`: one step can take long (a `COUNT(*)` over a whole table is one), and SQLite
checks for an interrupt inside it where it never calls the progress handler. A cycle that is
cancelled, or that runs while the collector is closed, stops too: its running statement is
interrupted and no further one starts. Failure kinds:
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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fossamon.collectors import _sqlite_open as sq
from fossamon.model import Batch, ErrorKind, Failure, Sample, make_labels

if TYPE_CHECKING:
    from fossamon.config import DbCollectorConfig

CHUNK_ROWS = 500
CHUNK_BYTES = 4 * 1024 * 1024
_PROBE_SQL = "SELECT 1 FROM sqlite_master LIMIT 1"
# A wait for a writer's lock cannot be interrupted, so SQLite must give up on its own, before the
# deadline: the query then ends as `locked`, not as a `timeout` that hides the cause.
_BUSY_SHARE = 0.9
# A Python call every this many SQLite VM steps checks the deadline: about every 10 ms of
# query work here. Each call takes the GIL from the event loop's thread, so not more often: a
# deadline in seconds does not need it.
PROGRESS_STEPS = 100_000
# How often the event loop looks whether the running statement is past its deadline (and it
# looks at the deadline too): a cycle of the runbook's queries ends long before, and never
# wakes it.
WATCH_SECONDS = 0.05
_MIN_WAIT = 0.005


class _TimeoutError(Exception):
    """The statement was stopped at its deadline."""


class _StoppedError(Exception):
    """The cycle was stopped from the loop (cancelled, or the collector closed)."""


@dataclass(slots=True, eq=False)  # eq=False: each is itself (hashed by identity)
class _Run:
    """One cycle, as the loop can stop it: `why` says why it was stopped (None: it was not)."""

    why: str | None = None


@dataclass(frozen=True, slots=True)
class _Read:
    seconds: float
    rows: int
    first: Any
    """The first row, or None when there was none."""
    truncated: bool


@dataclass(frozen=True, slots=True)
class _Statement:
    name: str
    sql: str
    timeout: float
    record_value: bool = False


@dataclass(slots=True)
class _Cycle:
    """What one cycle found: the file, why it cannot be read (None if it can), and each
    query's read or failure."""

    state: sq.FileState | None = None
    problem: tuple[ErrorKind, str] | None = None
    reads: list[_Read | tuple[ErrorKind, str]] = field(default_factory=list)


class _Connection:
    """The monitored file as the collector's thread holds it: the kept read-only connection
    and the pinned inode. Used only on that thread, except `stop()` and `interrupt_due()`,
    which the loop calls."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None
        # The file as sniffed, held open while the connection lives: an inode that is still
        # open cannot be freed, so its number cannot be reused by a new file at the path, and
        # comparing (st_dev, st_ino) with the path's reliably tells a replaced file.
        self.pin: sq.Sniffed | None = None
        self.wal = False
        self._busy_ms: int | None = None  # the connection's busy timeout, once set
        # Which statement runs, and its deadline, change only under the guard, and the loop
        # interrupts only under it: an interrupt meant for one statement never stops the next.
        # (One that comes as a statement ends finds none running, which SQLite ignores.)
        self._guard = threading.Lock()
        self._run: _Run | None = None  # the cycle on the thread
        self.deadline = math.inf  # of the statement running; inf between statements

    def stop(self, run: _Run, why: str) -> None:
        """From the loop: `run` runs no further statement, and the one running now is
        interrupted."""
        with self._guard:
            run.why = why
            if self._run is run:
                self._interrupt()

    def interrupt_due(self) -> None:
        """From the loop: interrupt the running statement if it is past its deadline, or its
        cycle was stopped."""
        with self._guard:
            run = self._run
            if time.monotonic() >= self.deadline or (run is not None and run.why is not None):
                self._interrupt()

    def _interrupt(self) -> None:
        conn = self.conn
        if conn is not None and self.deadline < math.inf:  # a statement is running
            with contextlib.suppress(sqlite3.ProgrammingError):  # closed meanwhile
                conn.interrupt()

    def cycle(
        self, run: _Run, probe: _Statement, queries: tuple[_Statement, ...], max_rows: int
    ) -> _Cycle:
        """The file checked against the kept connection, the schema read, then each query."""
        with self._guard:
            self._run = run
        try:
            return self._cycle(run, probe, queries, max_rows)
        finally:
            with self._guard:
                self._run = None

    def _cycle(
        self, run: _Run, probe: _Statement, queries: tuple[_Statement, ...], max_rows: int
    ) -> _Cycle:
        try:
            state = sq.file_state(self.path)
        except OSError as exc:
            self.drop()
            return _Cycle(problem=sq.os_failure(exc))
        if self.pin is not None and self.pin.identity != state.identity:
            # Replaced under us: the kept connection would read the old, unlinked file forever.
            self.drop()
        try:
            conn = self.conn if self.conn is not None else self._open()
            self.read(conn, run, probe, 1)
        except sq.OpenProblemError as problem:
            found = (problem.kind, problem.message)
        except _TimeoutError:
            found = (ErrorKind.TIMEOUT, f"reading the schema took over {probe.timeout:g}s")
        except _StoppedError:
            found = (ErrorKind.OTHER, f"stopped: {run.why}")
        except sqlite3.Error as exc:
            found = sq.classify(exc, path=self.path, wal=self.wal, fallback=ErrorKind.OTHER)
        else:
            # One after another on the one connection: SQLite runs one statement at a time
            # per connection anyway.
            return _Cycle(state, reads=[self._query(conn, run, q, max_rows) for q in queries])
        # Reopening is cheap, and a fresh open re-reads the header (the file may have changed).
        self.drop()
        return _Cycle(state, problem=found)

    def _query(
        self, conn: sqlite3.Connection, run: _Run, query: _Statement, max_rows: int
    ) -> _Read | tuple[ErrorKind, str]:
        if run.why is not None:
            return ErrorKind.OTHER, f"not run: {run.why}"
        try:
            return self.read(conn, run, query, max_rows)
        except _TimeoutError:
            return ErrorKind.TIMEOUT, f"interrupted after {query.timeout:g}s"
        except _StoppedError:
            return ErrorKind.OTHER, f"stopped: {run.why}"
        except sqlite3.Error as exc:
            return sq.classify(exc, path=self.path, wal=self.wal, fallback=ErrorKind.SQL)

    def read(
        self, conn: sqlite3.Connection, run: _Run, statement: _Statement, max_rows: int
    ) -> _Read:
        """Run one statement under its deadline; raise _TimeoutError if it was stopped there,
        _StoppedError if its cycle was stopped (before it, or while it ran)."""
        busy_ms = int(statement.timeout * 1000 * _BUSY_SHARE)
        with self._guard:
            if run.why is not None:
                raise _StoppedError
            self.deadline = deadline = time.monotonic() + statement.timeout
        try:
            if busy_ms != self._busy_ms:  # the same for most statements: set when it changes
                conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
                self._busy_ms = busy_ms
            return _step_capped(conn, statement.sql, max_rows)
        except sqlite3.OperationalError as exc:
            if sq.is_interrupt(exc):
                if run.why is not None:
                    raise _StoppedError from exc
                if time.monotonic() >= deadline:
                    raise _TimeoutError from exc
            raise
        finally:
            with self._guard:
                self.deadline = math.inf

    def drop(self) -> None:
        conn, pin = self.conn, self.pin
        self.conn, self.pin = None, None
        try:
            if conn is not None:
                conn.close()
        finally:
            # Only after SQLite has closed: closing any descriptor of a file releases all of
            # this process's POSIX locks on it, including SQLite's.
            if pin is not None:
                pin.file.close()

    def _open(self) -> sqlite3.Connection:
        self.pin = sq.sniff(self.path)
        self.wal = self.pin.wal
        # isolation_level=None: Python's sqlite3 never issues an implicit BEGIN on our behalf.
        # check_same_thread=False: used on the collector's thread, interrupted from the loop.
        conn = sqlite3.connect(
            sq.readonly_uri(self.path), uri=True, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA query_only = 1")
            conn.set_authorizer(sq.deny_attach)
            conn.set_progress_handler(self._past_deadline, PROGRESS_STEPS)
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        self._busy_ms = None
        return conn

    def _past_deadline(self) -> bool:
        run = self._run
        return time.monotonic() >= self.deadline or (run is not None and run.why is not None)


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
        "db_query_ok",
    )

    def __init__(self, config: DbCollectorConfig) -> None:
        self.interval = config.interval
        self.jitter = config.jitter
        # the schema read, then each query in turn, each under its own deadline
        self.run_limit = config.timeout + sum(q.timeout or config.timeout for q in config.queries)
        self._config = config
        self._path = config.path
        self._probe = _Statement("", _PROBE_SQL, config.timeout)
        self._queries = tuple(
            _Statement(q.name, q.sql, q.timeout or config.timeout, q.record_value)
            for q in config.queries
        )
        self._shortest = min(s.timeout for s in (self._probe, *self._queries))
        self._conn = _Connection(config.path)
        self._thread: ThreadPoolExecutor | None = None  # made on first use
        self._runs: set[_Run] = set()  # the cycles in flight, which close() stops

    async def collect(self) -> Batch:
        ts, started = time.time(), time.perf_counter()
        samples: list[Sample] = []
        errors: list[Failure] = []
        run = _Run()
        self._runs.add(run)
        try:
            cycle = await self._cycle(run)
            _report(cycle, self._path, self._queries, samples, errors)
        except Exception as exc:  # noqa: BLE001 - a bug must become data, not kill the job
            errors.append(Failure(self._path, ErrorKind.INTERNAL, f"{type(exc).__name__}: {exc}"))
            with contextlib.suppress(Exception):  # already reported; start afresh next cycle
                await asyncio.get_running_loop().run_in_executor(self._executor(), self._conn.drop)
        finally:
            self._runs.discard(run)
        duration = time.perf_counter() - started
        return Batch(self.name, ts, duration, tuple(samples), tuple(errors))

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        # A cycle in flight stops after its running statement, interrupted now. The close
        # queues behind it on the thread; until it has gone through, a statement that began
        # just as it was stopped (before SQLite counted it as running) is interrupted again.
        for run in self._runs:
            self._conn.stop(run, "the collector was closed")
        loop = asyncio.get_running_loop()
        closing = loop.run_in_executor(thread, self._conn.drop)
        try:
            while not closing.done():
                self._conn.interrupt_due()
                await asyncio.wait([closing], timeout=WATCH_SECONDS)
            await closing
        finally:
            thread.shutdown(wait=False)

    async def _cycle(self, run: _Run) -> _Cycle:
        """One cycle in one hop to the collector's thread, watched from here: its statement
        is interrupted at its deadline, and when the cycle is cancelled."""
        loop = asyncio.get_running_loop()
        cycle = loop.run_in_executor(
            self._executor(),
            self._conn.cycle,
            run,
            self._probe,
            self._queries,
            self._config.max_rows,
        )
        watch = _Watch(loop, self._conn, self._shortest)
        try:
            return await cycle
        except asyncio.CancelledError:
            # The thread cannot be cancelled: the cycle is stopped, so that the next one does
            # not wait behind its remaining queries.
            self._conn.stop(run, "the cycle was cancelled")
            raise
        finally:
            watch.cancel()

    def _executor(self) -> ThreadPoolExecutor:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="fossamon-db")
        return self._thread


class _Watch:
    """From the loop, while a cycle runs: interrupts its statement once past its deadline.

    It looks at the running statement's deadline, or at the soonest one a statement starting
    now could have, and at least every WATCH_SECONDS; never sooner than _MIN_WAIT, so that it
    does not spin while an interrupted statement winds down. A timer, not a task: a cycle of
    the runbook's queries ends long before it fires, and it costs one timer set and cancelled.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, conn: _Connection, shortest: float) -> None:
        self._loop, self._conn, self._shortest = loop, conn, shortest
        self._timer = loop.call_later(self._delay(), self._look)

    def cancel(self) -> None:
        self._timer.cancel()

    def _delay(self) -> float:
        due = min(self._conn.deadline - time.monotonic(), self._shortest)
        return min(max(due, _MIN_WAIT), WATCH_SECONDS)

    def _look(self) -> None:
        self._conn.interrupt_due()
        self._timer = self._loop.call_later(self._delay(), self._look)


def _report(
    cycle: _Cycle,
    path: str,
    queries: tuple[_Statement, ...],
    samples: list[Sample],
    errors: list[Failure],
) -> None:
    """The cycle as samples and failures."""
    if cycle.state is not None:
        samples.append(Sample("db_file_bytes", float(cycle.state.size)))
        if cycle.state.wal_size is not None:
            samples.append(Sample("db_wal_bytes", float(cycle.state.wal_size)))
    samples.append(Sample("db_up", 0.0 if cycle.problem is not None else 1.0))
    if cycle.problem is not None:
        errors.append(Failure(path, *cycle.problem))
        return
    for query, read in zip(queries, cycle.reads, strict=True):
        labels = make_labels(query=query.name)
        if isinstance(read, tuple):
            errors.append(Failure(query.name, *read))
            samples.append(Sample("db_query_ok", 0.0, labels))
            continue
        samples.append(Sample("db_query_seconds", read.seconds, labels))
        samples.append(Sample("db_query_rows", float(read.rows), labels))
        samples.append(Sample("db_query_truncated", float(read.truncated), labels))
        ok = 1.0
        if query.record_value:
            value = _recorded_value(read.first)
            if isinstance(value, str):
                errors.append(Failure(query.name, ErrorKind.OTHER, value))
                ok = 0.0
            else:
                samples.append(Sample("db_query_value", value, labels))
        samples.append(Sample("db_query_ok", ok, labels))


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


def _step_capped(conn: sqlite3.Connection, sql: str, max_rows: int) -> _Read:
    """The statement, timed from its start until its rows are read.

    A result is never fetched whole. Memory is bounded by bytes, not rows: a chunk holds at
    most CHUNK_ROWS rows and about CHUNK_BYTES, sized by the rows seen so far, and starts with
    one row, so a result of megabyte BLOBs is read one row at a time.
    """
    started = time.perf_counter()
    # Closing the cursor ends the statement, which releases the shared lock a half-read
    # result would otherwise hold against the app's writers.
    with contextlib.closing(conn.execute(sql)) as cursor:
        first: Any = None
        rows = 0
        chunk_rows = 1
        truncated = False
        while rows < max_rows:
            chunk = cursor.fetchmany(min(chunk_rows, max_rows - rows))
            if not chunk:
                break
            if first is None:
                first = chunk[0]
            rows += len(chunk)
            size = max(1, *(_row_bytes(row) for row in chunk))
            chunk_rows = max(1, min(CHUNK_ROWS, CHUNK_BYTES // size))
            del chunk
        else:
            truncated = cursor.fetchone() is not None
    return _Read(time.perf_counter() - started, rows, first, truncated)


def _row_bytes(row: Any) -> int:
    """About what a row costs in memory: its strings and BLOBs, plus a little per value."""
    return sum(len(value) if isinstance(value, str | bytes) else 0 for value in row) + 16 * len(row)
