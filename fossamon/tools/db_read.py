"""Reading the monitored database the way the db collector does, for the one-shot `db` tools.

The same opening rules (fossamon/collectors/_sqlite_open.py): the header is sniffed with a
plain read first (a 0-byte file or a stranger is named for what it is), SQLite opens the file
`mode=ro` (a wrong path is reported, never created), with `PRAGMA query_only` and an
authorizer that refuses ATTACH, which (like VACUUM INTO) creates files even on a read-only
connection, and every PRAGMA outside a read-only allow-list (`locking_mode=EXCLUSIVE` on a
read-only connection still keeps the application from writing). Not `immutable=1`: it
returned stale data while the application wrote (FACTS).

Results are stepped through row by row and counted, never fetched whole (so memory is bounded
by one row, not by a number of them), and every statement runs under a deadline: a progress
handler interrupts it there, and a timer too, for one instruction that does all the work
(COUNT(*)) and never reaches the handler. Waiting for another
connection's lock cannot be interrupted, so SQLite's busy timeout is a share of the deadline
and a blocked statement ends as "locked", not as a timeout that hides the cause.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fossamon.collectors import _sqlite_open as sq
from fossamon.collectors.db import _BUSY_SHARE, _PROBE_SQL
from fossamon.model import ErrorKind

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# SQLite calls the handler every this many virtual-machine instructions: about every 0.1 ms,
# often enough to stop on time and rare enough to cost nothing measurable.
_PROGRESS_INSTRUCTIONS = 10_000


# PRAGMAs a read may use: the schema's and the file's facts. Any other (locking_mode=EXCLUSIVE
# would keep the application from writing after the tool's first read) is refused.
_PRAGMAS_WITH_ARGUMENT = frozenset(
    {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "busy_timeout"}
)
_PRAGMAS_WITHOUT_ARGUMENT = frozenset(
    {"page_count", "page_size", "freelist_count", "journal_mode", "user_version"}
)
_refused_pragma: dict[int, str] = {}
"""Per open connection (by id): the last PRAGMA the authorizer refused, to name it."""


def _reads_only(action: int, arg1: str | None, arg2: str | None, *_rest: str | None) -> int:
    if action == sqlite3.SQLITE_PRAGMA:
        name = (arg1 or "").lower()
        allowed = name in _PRAGMAS_WITH_ARGUMENT or (
            name in _PRAGMAS_WITHOUT_ARGUMENT and arg2 is None
        )
        return sqlite3.SQLITE_OK if allowed else sqlite3.SQLITE_DENY
    return sq.deny_attach(action, arg1, arg2, *_rest)


def refused_pragma_message(exc: sqlite3.Error, pragma: str | None) -> str | None:
    """The operator's message for a PRAGMA the authorizer refused, if that is what `exc` is."""
    if pragma is None or "not authorized" not in str(exc):
        return None
    allowed = sorted(_PRAGMAS_WITH_ARGUMENT | _PRAGMAS_WITHOUT_ARGUMENT)
    return (
        f"PRAGMA {pragma} is refused: the db tools only read, and a PRAGMA can change how the "
        f"application's connections lock or write the file (allowed: {', '.join(allowed)}; "
        f"{', '.join(sorted(_PRAGMAS_WITHOUT_ARGUMENT))} only without an argument)"
    )


def as_tool_message(message: str) -> str:
    """The shared classifier's message, naming the db tools where it names the collector."""
    return message.replace("the collector only reads", "fossamon db analyze|optimize only read")


class PragmaRefusedError(sqlite3.DatabaseError):
    """A statement used a PRAGMA outside the read-only allow-list; the message names it."""


class DatabaseProblemError(Exception):
    """The file cannot be read as a database; the message says why, for an operator."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class QueryTimeoutError(Exception):
    """The statement was interrupted at its deadline."""


@dataclass(frozen=True, slots=True)
class CountedRun:
    seconds: float
    rows: int


@dataclass(frozen=True, slots=True)
class ReadOnlyDatabase:
    conn: sqlite3.Connection
    path: str
    wal: bool

    def describe(self, exc: sqlite3.Error) -> tuple[ErrorKind, str]:
        """The collector's kinds ("locked", "readonly_shm", …) for a failure, with messages
        that name the tool."""
        kind, message = sq.classify(exc, path=self.path, wal=self.wal, fallback=ErrorKind.SQL)
        return kind, as_tool_message(message)


@contextlib.contextmanager
def open_readonly(path: str, timeout: float) -> Iterator[ReadOnlyDatabase]:
    """A read-only connection to `path`, probed within `timeout`; raises DatabaseProblemError."""
    try:
        sniffed = sq.sniff(path)
    except sq.OpenProblemError as problem:
        raise DatabaseProblemError(problem.kind, problem.message) from problem
    # Closed before SQLite opens the file: closing any descriptor of a file releases all of
    # this process's POSIX locks on it, so it must not outlive the check into SQLite's use.
    sniffed.file.close()

    def as_problem(exc: sqlite3.Error) -> DatabaseProblemError:
        kind, message = sq.classify(exc, path=path, wal=sniffed.wal, fallback=ErrorKind.OTHER)
        return DatabaseProblemError(kind, as_tool_message(message))

    try:
        # isolation_level=None: Python's sqlite3 never issues an implicit BEGIN on our behalf.
        conn = sqlite3.connect(sq.readonly_uri(path), uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise as_problem(exc) from exc
    try:
        try:
            conn.execute("PRAGMA query_only = 1")
            conn.set_authorizer(_authorizer_for(conn))
            run_counted(conn, _PROBE_SQL, timeout)
        except sqlite3.Error as exc:
            raise as_problem(exc) from exc
        except QueryTimeoutError as exc:
            message = f"reading the schema took over {timeout:g}s"
            raise DatabaseProblemError(ErrorKind.TIMEOUT, message) from exc
        yield ReadOnlyDatabase(conn, path, sniffed.wal)
    finally:
        _refused_pragma.pop(id(conn), None)
        conn.close()


def _authorizer_for(conn: sqlite3.Connection) -> Callable[..., int]:
    key = id(conn)

    def authorize(action: int, arg1: str | None, arg2: str | None, *rest: str | None) -> int:
        verdict = _reads_only(action, arg1, arg2, *rest)
        if verdict != sqlite3.SQLITE_OK and action == sqlite3.SQLITE_PRAGMA:
            _refused_pragma[key] = f"{arg1}" + ("" if arg2 is None else f" = {arg2}")
        return verdict

    return authorize


@contextlib.contextmanager
def deadline(conn: sqlite3.Connection, limit: float) -> Iterator[None]:
    """Statements stepped inside are interrupted `limit` seconds from now, which raises
    QueryTimeoutError; a lock is waited for at most a share of it."""
    ends = time.monotonic() + limit
    conn.execute(f"PRAGMA busy_timeout = {int(limit * 1000 * _BUSY_SHARE)}")

    def past_deadline() -> int:
        return int(time.monotonic() > ends)  # non-zero: SQLite interrupts the statement

    conn.set_progress_handler(past_deadline, _PROGRESS_INSTRUCTIONS)
    # The progress handler runs between instructions: one instruction that does all the work
    # (COUNT(*) of a table, an aggregate over dbstat) never reaches it. A timer interrupts
    # that from outside, as the collector does.
    timer = threading.Timer(limit, conn.interrupt)
    timer.daemon = True
    timer.start()
    try:
        yield
    except sqlite3.OperationalError as exc:
        if sq.is_interrupt(exc):
            raise QueryTimeoutError(f"interrupted after {limit:g}s") from exc
        raise
    except sqlite3.DatabaseError as exc:
        message = refused_pragma_message(exc, _refused_pragma.pop(id(conn), None))
        if message is not None:
            raise PragmaRefusedError(message) from exc
        raise
    finally:
        timer.cancel()
        timer.join()
        conn.set_progress_handler(None, 0)


def run_counted(conn: sqlite3.Connection, sql: str, limit: float) -> CountedRun:
    """Run one statement to its end under a deadline, counting the rows it returns.

    Raises QueryTimeoutError when interrupted at the deadline, sqlite3.Error otherwise.
    """
    with deadline(conn, limit):
        started = time.perf_counter()
        rows = 0
        # Closing the cursor (leaving the block) ends the statement, which releases the shared
        # lock a half-read result would otherwise hold against the application's writers.
        # Row by row: Python's sqlite3 steps the statement once per row, so at most one row
        # (a BLOB of any size) is held at a time, never a chunk of them.
        with contextlib.closing(conn.execute(sql)) as cursor:
            for _row in cursor:
                rows += 1
        return CountedRun(time.perf_counter() - started, rows)
