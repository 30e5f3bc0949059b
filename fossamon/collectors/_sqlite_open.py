"""Opening a monitored SQLite file without ever changing it, and naming why that failed.

Private helpers of the db collector: sniff the header with a plain read, build the read-only
URI, and turn an `OSError` or `sqlite3.Error` into an `ErrorKind` plus a message an operator
can act on.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from fossamon.model import ErrorKind

MAGIC = b"SQLite format 3\x00"
HEADER_BYTES = 100
# Header bytes 18/19 are the write/read format versions: 1 = rollback journal, 2 = WAL.
_WAL_FORMAT = 2


class OpenProblemError(Exception):
    """Why the file cannot be read as a database. Turned into a Failure, never escapes."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class Sniffed:
    file: BinaryIO
    """Still open: the caller keeps it to pin the inode (see DbCollector)."""
    identity: tuple[int, int]
    wal: bool


@dataclass(frozen=True, slots=True)
class FileState:
    size: int
    wal_size: int | None
    identity: tuple[int, int]


def readonly_uri(path: str) -> str:
    """`mode=ro`: SQLite never creates the file (a plain connect() on a wrong path would)."""
    return f"file:{quote(str(Path(path).absolute()))}?mode=ro"


def file_state(path: str) -> FileState:
    """The file's size and identity, and the -wal file's size; raises OSError."""
    # os.stat rather than Path.stat: every cycle calls this, and building Path objects cost
    # more than the two system calls (0.1 ms a cycle, benchmarks/cycle.py)
    st = os.stat(path)  # noqa: PTH116
    try:
        wal_size: int | None = os.stat(f"{path}-wal").st_size  # noqa: PTH116
    except OSError:  # a -wal file exists only in WAL mode, and not always then
        wal_size = None
    return FileState(st.st_size, wal_size, (st.st_dev, st.st_ino))


def os_failure(exc: OSError) -> tuple[ErrorKind, str]:
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return (
            ErrorKind.MISSING,
            "no such file (fossamon never creates it: check collectors.db.path)",
        )
    if isinstance(exc, PermissionError):
        return ErrorKind.PERMISSION, (
            f"cannot read the file: {exc.strerror}; the fossamon user needs read permission on it "
            "and search (x) permission on every directory above it"
        )
    return ErrorKind.OTHER, f"cannot read the file: {exc.strerror or exc}"


def sniff(path: str) -> Sniffed:
    """Open the file read-only and check its header before SQLite sees it."""
    try:
        # O_NONBLOCK: a FIFO at the path must not block the collector (no effect on a file).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise OpenProblemError(*os_failure(exc)) from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # checked before fdopen, which refuses a directory
        os.close(fd)
        raise OpenProblemError(ErrorKind.NOT_A_DATABASE, "not a regular file")
    file = os.fdopen(fd, "rb")
    try:
        return Sniffed(file, (st.st_dev, st.st_ino), wal=_check(file.read(HEADER_BYTES)))
    except BaseException:
        file.close()
        raise


def _check(head: bytes) -> bool:
    """True for a WAL database; raises for anything that is not a database."""
    if not head:
        # SQLite would open it as a new, empty database, and every query would fail with "no
        # such table". A 0-byte file at the path is what a plain connect() to a wrong path
        # leaves behind, so it is named for what it is.
        raise OpenProblemError(
            ErrorKind.NOT_A_DATABASE,
            "empty file (0 bytes): not a database, although SQLite would open it as a new one",
        )
    if not head.startswith(MAGIC):
        raise OpenProblemError(
            ErrorKind.NOT_A_DATABASE, "file is not a database (no SQLite header)"
        )
    if len(head) < HEADER_BYTES:
        raise OpenProblemError(
            ErrorKind.NOT_A_DATABASE,
            f"file is not a database (truncated: {len(head)} bytes, a header alone is 100)",
        )
    return _WAL_FORMAT in (head[18], head[19])


def deny_attach(action: int, *_args: str | None) -> int:
    """SQLite authorizer. ATTACH (and VACUUM INTO, which attaches) creates files even on a
    read-only, query_only connection; configured SQL must only read the monitored file."""
    return sqlite3.SQLITE_DENY if action == sqlite3.SQLITE_ATTACH else sqlite3.SQLITE_OK


def is_interrupt(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "") == "SQLITE_INTERRUPT" or str(exc) == "interrupted"


def classify(  # noqa: PLR0911 - one return per kind reads as the table it is
    exc: sqlite3.Error, *, path: str, wal: bool, fallback: ErrorKind
) -> tuple[ErrorKind, str]:
    """An ErrorKind and message for a failed open, probe or query (`fallback` if none fits)."""
    text = str(exc)
    name: str = getattr(exc, "sqlite_errorname", "")
    lowered = text.lower()
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in lowered:
        return ErrorKind.LOCKED, f"{text} (a writer held its lock past the busy timeout)"
    if "no such table" in lowered:
        return ErrorKind.NO_SUCH_TABLE, text
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or "not a database" in lowered:
        return ErrorKind.NOT_A_DATABASE, text
    if wal and _cannot_share_memory(name, lowered) and _shm_unavailable(path):
        return ErrorKind.READONLY_SHM, readonly_shm_message(path, text)
    if name == "SQLITE_READONLY_ROLLBACK":
        return ErrorKind.OTHER, (
            f"{text}: a hot journal needs rolling back, which a read-only reader cannot do; it "
            "clears when the application opens the database again"
        )
    if name == "SQLITE_AUTH":
        return fallback, f"{text}: ATTACH and VACUUM INTO are refused, the collector only reads"
    return fallback, text


def _cannot_share_memory(name: str, lowered: str) -> bool:
    return name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY")) or (
        "unable to open database file" in lowered or "readonly database" in lowered
    )


def _shm_unavailable(path: str) -> bool:
    # SQLite puts -shm next to the file a symlink points to, so look there.
    real = Path(path).resolve()
    return not Path(f"{real}-shm").exists() and not os.access(real.parent, os.W_OK)


def readonly_shm_message(path: str, sqlite_text: str) -> str:
    path = str(Path(path).resolve())
    directory = Path(path).parent
    return (
        f"{path} is in WAL mode: a read-only reader needs {path}-shm to exist or the directory "
        f"{directory} to be writable by the fossamon user, and neither is the case (the "
        "application is stopped or closed the database cleanly). Fix: give fossamon write "
        f"access to {directory} (with systemd: ReadWritePaths={directory}), or keep the "
        f"application running so {path}-shm exists. SQLite said: {sqlite_text}"
    )
