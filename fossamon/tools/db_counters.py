"""What a statement makes SQLite do: rows stepped in full scans, sorts, automatic-index rows.

SQLite counts these per statement (`sqlite3_stmt_status`), but Python's sqlite3 module keeps
its statement handles to itself. So the statement is run once more through the C library with
ctypes, on a connection of its own opened by the db collector's rules (`mode=ro`, `query_only`,
ATTACH refused) and only if SQLite says the statement cannot write. Rows are stepped and
counted, never read, and a progress handler ends the run at its deadline.

Where the library cannot be loaded (a Python with SQLite linked in statically), or is another
SQLite version than Python's sqlite3 module runs, the counts are unknown: `load_counter()`
raises CountersUnavailableError saying why.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sqlite3
import threading
import time
from dataclasses import dataclass

from fossamon.collectors import _sqlite_open as sq
from fossamon.collectors.db import _BUSY_SHARE

_OK, _ROW, _DONE, _INTERRUPT = 0, 100, 101, 9
_OPEN_READONLY, _OPEN_URI = 0x01, 0x40
_ATTACH, _DENY = 24, 1
# sqlite3_stmt_status() operations (sqlite3.h: SQLITE_STMTSTATUS_*)
_FULLSCAN_STEP, _SORT, _AUTOINDEX, _VM_STEP = 1, 2, 3, 4
_PROGRESS_INSTRUCTIONS = 10_000

_Authorizer = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
)
_Progress = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


class CountersUnavailableError(Exception):
    """SQLite's counters cannot be read here; the message says why."""


class CounterTimeoutError(Exception):
    """The counting run was interrupted at its deadline."""


@dataclass(frozen=True, slots=True)
class StatementCounters:
    rows: int
    """Rows the statement returned."""
    fullscan_steps: int
    """Rows stepped through in full table scans (an index search adds nothing here)."""
    sorts: int
    """Sort operations (an ORDER BY or GROUP BY that no index delivers in order)."""
    autoindex_rows: int
    """Rows inserted into automatic indexes: SQLite built an index per run for want of one."""
    vm_steps: int
    """Virtual-machine instructions: the statement's total work."""


def _deny_attach(_data: int | None, action: int, *_args: bytes | None) -> int:
    return _DENY if action == _ATTACH else _OK


class StatementCounter:
    """Runs statements through libsqlite3 and reads their counters."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._lib = library
        pointer = ctypes.c_void_p
        signatures: dict[str, tuple[list[type], type | None]] = {
            "sqlite3_open_v2": (
                [ctypes.c_char_p, ctypes.POINTER(pointer), ctypes.c_int, ctypes.c_char_p],
                ctypes.c_int,
            ),
            "sqlite3_close_v2": ([pointer], ctypes.c_int),
            "sqlite3_errmsg": ([pointer], ctypes.c_char_p),
            "sqlite3_busy_timeout": ([pointer, ctypes.c_int], ctypes.c_int),
            "sqlite3_exec": ([pointer, ctypes.c_char_p, pointer, pointer, pointer], ctypes.c_int),
            "sqlite3_set_authorizer": ([pointer, _Authorizer, pointer], ctypes.c_int),
            "sqlite3_progress_handler": ([pointer, ctypes.c_int, _Progress, pointer], None),
            "sqlite3_prepare_v2": (
                [pointer, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(pointer), pointer],
                ctypes.c_int,
            ),
            "sqlite3_stmt_readonly": ([pointer], ctypes.c_int),
            "sqlite3_step": ([pointer], ctypes.c_int),
            "sqlite3_stmt_status": ([pointer, ctypes.c_int, ctypes.c_int], ctypes.c_int),
            "sqlite3_finalize": ([pointer], ctypes.c_int),
            "sqlite3_interrupt": ([pointer], None),
            "sqlite3_libversion": ([], ctypes.c_char_p),
        }
        for name, (argtypes, restype) in signatures.items():
            function = getattr(library, name)
            function.argtypes = argtypes
            function.restype = restype
        # Kept on the instance: SQLite holds the pointer, and ctypes frees a collected callback.
        self._authorizer = _Authorizer(_deny_attach)
        version = library.sqlite3_libversion()
        self.version = version.decode() if version else "?"

    def count(self, path: str, sql: str, limit: float) -> StatementCounters:
        """Run `sql` on `path` to its end; raises CountersUnavailableError or
        CounterTimeoutError."""
        lib = self._lib
        db = ctypes.c_void_p()
        uri = sq.readonly_uri(path).encode()
        try:
            if lib.sqlite3_open_v2(uri, ctypes.byref(db), _OPEN_READONLY | _OPEN_URI, None) != _OK:
                raise CountersUnavailableError(self._error(db))
            lib.sqlite3_busy_timeout(db, int(limit * 1000 * _BUSY_SHARE))
            if lib.sqlite3_exec(db, b"PRAGMA query_only = 1", None, None, None) != _OK:
                raise CountersUnavailableError(self._error(db))
            lib.sqlite3_set_authorizer(db, self._authorizer, None)
            deadline = time.monotonic() + limit
            progress = _Progress(lambda _data: int(time.monotonic() > deadline))
            lib.sqlite3_progress_handler(db, _PROGRESS_INSTRUCTIONS, progress, None)
            # One instruction doing all the work (COUNT(*)) never reaches the progress handler.
            timer = threading.Timer(limit, lib.sqlite3_interrupt, args=(db,))
            timer.daemon = True
            timer.start()
            try:
                return self._run(db, sql, limit)
            finally:
                timer.cancel()
                timer.join()  # never interrupt a handle being closed
        finally:
            # close_v2 accepts NULL (a failed open still allocates a handle to close)
            lib.sqlite3_close_v2(db)

    def _run(self, db: ctypes.c_void_p, sql: str, limit: float) -> StatementCounters:
        lib = self._lib
        stmt = ctypes.c_void_p()
        text = sql.encode()
        if lib.sqlite3_prepare_v2(db, text, len(text), ctypes.byref(stmt), None) != _OK:
            raise CountersUnavailableError(self._error(db))
        try:
            if not stmt.value:
                raise CountersUnavailableError("no statement (empty, or only a comment)")
            if not lib.sqlite3_stmt_readonly(stmt):
                raise CountersUnavailableError("the statement writes; only reads are run")
            rows = 0
            while (status := lib.sqlite3_step(stmt)) == _ROW:
                rows += 1
            if status == _INTERRUPT:
                raise CounterTimeoutError(f"interrupted after {limit:g}s")
            if status != _DONE:
                raise CountersUnavailableError(self._error(db))

            def read(operation: int) -> int:
                return int(lib.sqlite3_stmt_status(stmt, operation, 0))

            return StatementCounters(
                rows, read(_FULLSCAN_STEP), read(_SORT), read(_AUTOINDEX), read(_VM_STEP)
            )
        finally:
            lib.sqlite3_finalize(stmt)

    def _error(self, db: ctypes.c_void_p) -> str:
        message = self._lib.sqlite3_errmsg(db) if db.value else None
        return message.decode(errors="replace") if message else "SQLite gave no reason"


def load_counter() -> StatementCounter:
    """The counter on the system's libsqlite3: on Debian, the one Python's sqlite3 module
    links, so the counts are those of the SQLite that ran the timed runs."""
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        raise CountersUnavailableError("libsqlite3 not found (SQLite's counters are unknown)")
    try:
        counter = StatementCounter(ctypes.CDLL(name))
    except (OSError, AttributeError) as exc:
        raise CountersUnavailableError(f"cannot use {name}: {exc}") from exc
    check_version(name, counter.version, sqlite3.sqlite_version)
    return counter


def check_version(name: str, library: str, python: str) -> None:
    """Counts from another SQLite than the one that ran the timed runs could describe another
    plan: raises CountersUnavailableError on a mismatch."""
    if library != python:
        raise CountersUnavailableError(
            f"{name} is SQLite {library}, but Python's sqlite3 module runs SQLite {python}: "
            "its counts would not describe the timed runs, so they are skipped"
        )
