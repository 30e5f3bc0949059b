"""The backup `db optimize` takes before it changes anything, and the disk space it needs.

The copy is made with SQLite's online backup API from a read-only connection, so it is a
consistent snapshot even while the application runs; `db optimize` holds the write lock
meanwhile, so the snapshot is exactly the database its changes start from. The copy is then
opened on its own and must pass `PRAGMA integrity_check`. The copy of a WAL database is in WAL
mode too: the empty `-wal` and the `-shm` that checking it leaves are removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from fossamon.collectors import _sqlite_open as sq
from fossamon.units import format_bytes

if TYPE_CHECKING:
    from collections.abc import Sequence

_NAME_ATTEMPTS = 100
_INTEGRITY_LINES_SHOWN = 5


class BackupError(Exception):
    """The backup could not be made or did not verify; nothing was changed."""


@dataclass(frozen=True, slots=True)
class SpaceNeed:
    purpose: str
    directory: str
    bytes: int
    device: int
    free: int


def measure_need(purpose: str, directory: str | Path, size: int) -> SpaceNeed:
    usage = shutil.disk_usage(directory)
    return SpaceNeed(purpose, str(directory), size, Path(directory).stat().st_dev, usage.free)


def shortfalls(needs: Sequence[SpaceNeed]) -> list[str]:
    """One message per file system that lacks the space its needs add up to."""
    by_device: dict[int, list[SpaceNeed]] = {}
    for need in needs:
        by_device.setdefault(need.device, []).append(need)
    problems = []
    for group in by_device.values():
        total = sum(need.bytes for need in group)
        free = group[0].free
        if total > free:
            parts = ", ".join(
                f"{need.purpose} {format_bytes(need.bytes)} in {need.directory}" for need in group
            )
            problems.append(
                f"needs {format_bytes(total)} free ({parts}) on one file system; "
                f"{format_bytes(free)} free there"
            )
    return problems


def sqlite_temp_dir() -> str:
    """Where SQLite puts VACUUM's temporary copy: its unix VFS takes the first usable of these."""
    # SQLite's own list (os_unix.c, unixTempFileDir): directories it may write to, not ours
    fixed = ("/var/tmp", "/usr/tmp", "/tmp", ".")  # noqa: S108
    for candidate in (os.environ.get("SQLITE_TMPDIR"), os.environ.get("TMPDIR"), *fixed):
        if candidate and Path(candidate).is_dir() and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return "."


def backup_name(database: Path, now: datetime) -> str:
    return f"{database.name}.backup-{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}"


def take_backup(database: str, directory: Path, busy_timeout: float) -> Path:
    """Copy `database` into a new file in `directory` and verify it; raises BackupError."""
    mode = stat.S_IMODE(Path(database).stat().st_mode) & 0o666
    target = _reserve(directory, backup_name(Path(database), datetime.now(UTC)), mode)
    try:
        _copy(database, target, busy_timeout)
        _verify(target)
    except BaseException:
        for suffix in ("", "-journal", "-wal", "-shm"):
            target.with_name(f"{target.name}{suffix}").unlink(missing_ok=True)
        raise
    _remove_read_marks(target)
    return target


def _remove_read_marks(target: Path) -> None:
    """The copy of a WAL database is a WAL database: verifying it read-only left an empty
    `-wal` and a `-shm` (SQLite's read marks) next to it. Neither holds data; the backup is
    the one file. A `-wal` that is not empty is left alone (it would hold data)."""
    wal = target.with_name(f"{target.name}-wal")
    with contextlib.suppress(FileNotFoundError):
        if wal.stat().st_size != 0:
            return
        wal.unlink()
    target.with_name(f"{target.name}-shm").unlink(missing_ok=True)


def _reserve(directory: Path, name: str, mode: int) -> Path:
    """Create the backup file exclusively (never over another), no more readable than the
    database it copies."""
    for attempt in range(_NAME_ATTEMPTS):
        target = directory / (name if attempt == 0 else f"{name}-{attempt}")
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except FileExistsError:
            continue
        except OSError as exc:
            raise BackupError(f"cannot create a backup in {directory}: {exc.strerror}") from exc
        os.close(fd)
        return target
    raise BackupError(f"{directory} has {_NAME_ATTEMPTS} backups named {name}* already")


def _copy(database: str, target: Path, busy_timeout: float) -> None:
    deadline = time.monotonic() + busy_timeout

    def give_up_when_stuck(status: int, _remaining: int, _total: int) -> None:
        # Python's backup() retries a busy or locked step forever; this bounds it.
        busy = status in {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
        if busy and time.monotonic() > deadline:
            raise BackupError(f"the database stayed locked for {busy_timeout:g}s")

    # isolation_level=None: no implicit BEGIN; the backup API takes its own read transaction.
    with (
        contextlib.closing(
            sqlite3.connect(sq.readonly_uri(database), uri=True, isolation_level=None)
        ) as source,
        contextlib.closing(sqlite3.connect(target, isolation_level=None)) as copy,
    ):
        source.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        try:
            # pages=-1: in one step, so the copy is one snapshot, not pages of several moments
            source.backup(copy, pages=-1, progress=give_up_when_stuck)
        except sqlite3.Error as exc:
            raise BackupError(f"the backup failed: {exc}") from exc


def _unverifiable(exc: sqlite3.Error) -> str:
    collation = re.search(r"no such collation sequence: (\S+)", str(exc))
    if collation is None:
        return f"the backup cannot be checked: {exc}"
    return (
        f"the backup cannot be checked: the schema uses the collation {collation[1]}, which "
        "only the application defines, so PRAGMA integrity_check (and REINDEX) cannot run "
        "outside it"
    )


def _verify(target: Path) -> None:
    with contextlib.closing(
        sqlite3.connect(sq.readonly_uri(str(target)), uri=True, isolation_level=None)
    ) as copy:
        try:
            # A damaged file yields a line per problem: show the first few, not millions.
            cursor = copy.execute("PRAGMA integrity_check")
            verdict = [str(row[0]) for row in cursor.fetchmany(_INTEGRITY_LINES_SHOWN)]
        except sqlite3.Error as exc:
            raise BackupError(_unverifiable(exc)) from exc
    if verdict != ["ok"]:
        raise BackupError(
            "the backup failed PRAGMA integrity_check, so the database itself may be damaged: "
            + "; ".join(verdict)
        )
