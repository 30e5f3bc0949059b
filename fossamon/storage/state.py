"""The daemon's durable state: alert states, the delivery outbox, silences, the last evaluation.

One SQLite file, `state_dir/state.db`, in WAL mode with `synchronous=NORMAL` (a power cut may
lose the last commit, never corrupt the file). WAL lets `fossamon silence` (another process,
plain `sqlite3`) write while the daemon has the file open; the daemon sees such changes through
`PRAGMA data_version`.

The schema version is `PRAGMA user_version`: an older file is migrated at open, a newer one
(written by a later fossamon) is refused rather than misread. A file SQLite cannot read is
refused with a message saying what to do, or, with `recover=True`, moved aside to
`state.db.corrupt-<UTC time>` so the daemon starts with empty state instead of not at all.

The outbox (events accepted for a sink, not yet delivered) is capped at `OUTBOX_CAP` rows: a
sink that is down for days must not grow the file without bound. Each commit that goes over the
cap deletes the oldest rows and adds their number to `outbox_trimmed` (a running total, for a
counter metric). Delivered/dropped rows are deleted in batches, at most every
`FLUSH_INTERVAL` seconds, so a busy sink does not cost one fsync per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import aiosqlite
import structlog

from fossamon.errors import FossamonError
from fossamon.matchers import parse_matchers
from fossamon.silences import Silence, silence_from_config

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from fossamon.config import SilenceConfig

log = structlog.get_logger(__name__)

STATE_FILE = "state.db"
DIR_MODE = 0o700
FILE_MODE = 0o600
BUSY_TIMEOUT = 5.0
OUTBOX_CAP = 10_000
FLUSH_INTERVAL = 0.5

# MIGRATIONS[n] takes a file from schema version n to n + 1 (0 = a new, empty file).
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        (
            "CREATE TABLE alerts (fingerprint TEXT PRIMARY KEY, state TEXT NOT NULL,"
            " updated REAL NOT NULL)"
        ),
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value)",
        # attempts: how often the row was handed out again after a restart (pending_outbox)
        (
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, sink TEXT NOT NULL,"
            " event TEXT NOT NULL, created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0)"
        ),
        (
            "CREATE TABLE silences (id TEXT PRIMARY KEY, matchers TEXT NOT NULL,"
            " starts REAL NOT NULL, until REAL NOT NULL, comment TEXT NOT NULL,"
            " created_by TEXT NOT NULL, created_at REAL NOT NULL, expired_at REAL,"
            " source TEXT NOT NULL CHECK (source IN ('cli', 'config')))"
        ),
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_SILENCE_COLUMNS = (
    "id, matchers, starts, until, comment, created_by, created_at, expired_at, source"
)
# S608: composed of the constants above only; every value is a bound parameter
_SELECT_SILENCES = f"SELECT {_SILENCE_COLUMNS} FROM silences"  # noqa: S608
_INSERT_SILENCE = (
    f"INSERT OR IGNORE INTO silences ({_SILENCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
)
_ACTIVE_SILENCES = (
    f"{_SELECT_SILENCES} WHERE expired_at IS NULL AND starts <= ? AND until > ?"
    " ORDER BY created_at, id"
)
_EXPIRE_SILENCE = (
    "UPDATE silences SET expired_at = ? WHERE id = ? AND source = 'cli' AND expired_at IS NULL"
)
_UPSERT_ALERT = (
    "INSERT INTO alerts (fingerprint, state, updated) VALUES (?, ?, ?) ON CONFLICT (fingerprint)"
    " DO UPDATE SET state = excluded.state, updated = excluded.updated"
)


class StateStoreError(FossamonError):
    """The state file cannot be used; the message names the file and what to do."""


def state_path(state_dir: str) -> str:
    return str(Path(state_dir) / STATE_FILE)


# --- the file: create, check, migrate (sync: shared by the daemon and `fossamon silence`) ----


def connect_sync(
    path: str, *, recover: bool = False, create: bool = True, timeout: float = BUSY_TIMEOUT
) -> sqlite3.Connection:
    """An autocommit connection to a checked, migrated state file (created if missing).

    Raises StateStoreError; with `recover`, a corrupt file is moved aside and a fresh one
    created instead. With `create=False` a missing file raises FileNotFoundError."""
    if Path(path).is_dir():
        raise StateStoreError(f"{path} is a directory; the state file is {state_path(path)}")
    _create_file(path, create=create)
    try:
        return _checked(path, timeout)
    except sqlite3.DatabaseError as exc:
        if not _is_corruption(exc):
            raise StateStoreError(f"cannot use the state file {path}: {exc}") from None
        if not recover:
            raise StateStoreError(
                f"{path} is not a usable SQLite database ({exc}). Move it aside (with its -wal "
                "and -shm files) and start again: fossamon then starts with empty state (alerts "
                "that were firing fire again, silences added with `fossamon silence` are lost)"
            ) from None
        aside = _move_aside(path)
        log.warning(
            "the state file was corrupt: moved it aside, starting with empty state",
            path=path,
            moved_to=aside,
            error=str(exc),
        )
    _create_file(path, create=True)
    try:
        return _checked(path, timeout)
    except sqlite3.Error as exc:
        raise StateStoreError(f"cannot use the state file {path}: {exc}") from None


def _create_file(path: str, *, create: bool) -> None:
    """Directory 0700 and file 0600: alert labels and silence comments are nobody else's."""
    if Path(path).exists():
        return
    if not create:
        raise FileNotFoundError(path)
    try:
        Path(path).parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:  # another process made it first: fine, it is the same file
        return
    except OSError as exc:
        raise StateStoreError(f"cannot create the state file {path}: {exc.strerror}") from None
    try:
        # As root in a directory that belongs to the daemon's user (systemd's DynamicUser=, when
        # `fossamon silence` could not switch to that user): the file must be the daemon's, or
        # it could no longer open it. SQLite gives -wal/-shm the owner of this file by itself.
        owner = Path(path).parent.stat()
        if os.geteuid() == 0 and owner.st_uid != 0:
            os.fchown(fd, owner.st_uid, owner.st_gid)
    finally:
        os.close(fd)


def _checked(path: str, timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        # checked before anything is written: a file we refuse is left exactly as it was
        _check_integrity(conn)
        if _schema_version(conn, path) < SCHEMA_VERSION:
            _migrate(conn, path)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("the state file cannot use WAL mode", path=path, journal_mode=mode)
        conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def _check_integrity(conn: sqlite3.Connection) -> None:
    """A file that opens can still be damaged inside; find out now, not at the first write."""
    problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
    if problems != ["ok"]:
        raise sqlite3.DatabaseError(f"database disk image is malformed: {problems[0]}")


def _schema_version(conn: sqlite3.Connection, path: str) -> int:
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise StateStoreError(
            f"{path} was written by a newer fossamon (state schema {found}; this version knows "
            f"up to {SCHEMA_VERSION}): run the newer fossamon, or move the file aside to start "
            "with empty state"
        )
    return found


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        # read again under the write lock: another process may have migrated meanwhile
        version = _schema_version(conn, path)
        for steps in MIGRATIONS[version:]:
            for statement in steps:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if version:
        log.info("migrated the state file", path=path, old=version, new=SCHEMA_VERSION)


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    name: str = getattr(exc, "sqlite_errorname", "")
    text = str(exc).lower()
    return (
        name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT"))
        or "not a database" in text
        or "malformed" in text
    )


def _move_aside(path: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = f"{path}.corrupt-{stamp}"
    for n in range(1, 100):  # two recoveries within one second: keep both
        if not Path(aside).exists():
            break
        aside = f"{path}.corrupt-{stamp}.{n}"
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").replace(f"{aside}{suffix}")
    return aside


# --- silences as rows (sync helpers for `fossamon silence`, SQL shared with the store) ------


def _silence_row(silence: Silence) -> tuple[Any, ...]:
    return (
        silence.id,
        json.dumps(list(silence.matcher_texts)),
        silence.starts,
        silence.until,
        silence.comment,
        silence.created_by,
        silence.created_at,
        silence.expired_at,
        silence.source,
    )


def _silence(row: Sequence[Any]) -> Silence:
    """ValueError for a row that does not parse (hand-edited, or from a later version)."""
    sid, matchers, starts, until, comment, created_by, created_at, expired_at, source = row
    texts = tuple(str(text) for text in json.loads(matchers))
    if source not in {"cli", "config"}:
        raise ValueError(f"unknown source {source!r}")
    return Silence(
        str(sid),
        parse_matchers(texts),
        float(starts),
        float(until),
        str(comment),
        str(created_by),
        float(created_at),
        source,
        matcher_texts=texts,
        expired_at=None if expired_at is None else float(expired_at),
    )


def _silences(rows: Iterable[Sequence[Any]]) -> list[Silence]:
    found = []
    for row in rows:
        try:
            found.append(_silence(row))
        except (ValueError, TypeError) as exc:
            log.warning("ignoring an unreadable silence", id=row[0], error=str(exc))
    return found


def insert_silence(conn: sqlite3.Connection, silence: Silence) -> None:
    conn.execute(_INSERT_SILENCE, _silence_row(silence))


def select_silences(
    conn: sqlite3.Connection, *, include_expired: bool, now: float
) -> list[Silence]:
    where = "" if include_expired else " WHERE expired_at IS NULL AND until > ?"
    sql = f"{_SELECT_SILENCES}{where} ORDER BY created_at, id"
    return _silences(conn.execute(sql, () if include_expired else (now,)).fetchall())


def find_silence(conn: sqlite3.Connection, silence_id: str) -> Silence | None:
    rows = conn.execute(f"{_SELECT_SILENCES} WHERE id = ?", (silence_id,))
    found = _silences(rows.fetchall())
    return found[0] if found else None


def expire_silence(conn: sqlite3.Connection, silence_id: str, now: float) -> bool:
    """True if an unexpired CLI silence with that id was expired."""
    return conn.execute(_EXPIRE_SILENCE, (now, silence_id)).rowcount > 0


# --- the daemon's store ----------------------------------------------------------------------


class Store(Protocol):
    """What the daemon needs of a state store (StateStore on disk, MemoryStateStore in tests)."""

    outbox_trimmed: int

    async def close(self) -> None: ...
    async def load_alerts(self) -> dict[str, dict[str, Any]]: ...
    async def last_evaluation(self) -> float | None: ...
    async def commit(
        self,
        alerts: Mapping[str, dict[str, Any] | None],
        outbox: Sequence[tuple[str, dict[str, Any]]],
        now: float,
    ) -> list[int]: ...
    async def pending_outbox(self) -> list[tuple[int, str, dict[str, Any]]]: ...
    def delivered(self, ids: Sequence[int]) -> None: ...
    def dropped(self, ids: Sequence[int]) -> None: ...
    async def active_silences(self, now: float) -> list[Silence]: ...
    async def data_version(self) -> int: ...
    async def sync_config_silences(
        self, silences: Sequence[SilenceConfig], now: float | None = None
    ) -> tuple[int, int]: ...
    async def add_silence(self, silence: Silence) -> None: ...
    async def expire_silence(self, silence_id: str, now: float) -> bool: ...


class StateStore:
    """`state.db` through aiosqlite: every query runs on aiosqlite's thread, never the loop."""

    def __init__(self, db: aiosqlite.Connection, path: str) -> None:
        self.path = path
        self.outbox_trimmed = 0
        self._db = db
        # one writer at a time on our connection: a commit's statements must not interleave
        # with a flush's (they would share, and maybe roll back, one transaction)
        self._lock = asyncio.Lock()
        self._done: set[int] = set()  # delivered or dropped, deletion not yet written
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        self._trimming = False

    @classmethod
    async def open(cls, path: str, *, recover: bool = False) -> StateStore:
        """Open (creating dir 0700 and file 0600 if missing) `path`, normally
        `state_path(config.daemon.state_dir)`. Raises StateStoreError."""
        # Checked here, not in aiosqlite's connector: when that fails, aiosqlite leaves a
        # future behind that its thread later resolves on a loop that may be closed by then.
        conn = await asyncio.to_thread(connect_sync, path, recover=recover)
        db = aiosqlite.Connection(lambda: conn, iter_chunk_size=64)
        await db
        return cls(db, path)

    async def close(self) -> None:
        """Write the queued outbox deletions, then close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None and not self._flusher.done():
            # Let a flush in progress finish: cancelled between BEGIN and COMMIT it would
            # leave a transaction open, and the deletions below would fail with it.
            await asyncio.wait([self._flusher], timeout=FLUSH_INTERVAL + BUSY_TIMEOUT)
            if not self._flusher.done():
                self._flusher.cancel()
                await asyncio.wait([self._flusher])
                await self._rollback()
        await self._flush()
        await self._db.close()

    async def load_alerts(self) -> dict[str, dict[str, Any]]:
        states: dict[str, dict[str, Any]] = {}
        for fingerprint, state in await self._db.execute_fetchall(
            "SELECT fingerprint, state FROM alerts"
        ):
            try:
                states[str(fingerprint)] = json.loads(state)
            except ValueError as exc:
                log.warning("ignoring an unreadable alert state", key=fingerprint, error=str(exc))
        return states

    async def last_evaluation(self) -> float | None:
        rows = await self._db.execute_fetchall(
            "SELECT value FROM meta WHERE key = 'last_evaluation'"
        )
        for (value,) in rows:
            return float(value)
        return None

    async def commit(
        self,
        alerts: Mapping[str, dict[str, Any] | None],
        outbox: Sequence[tuple[str, dict[str, Any]]],
        now: float,
    ) -> list[int]:
        """In one transaction: upsert the given alert states (None deletes), add the outbox
        rows, set last_evaluation, write queued deletions and trim the outbox to its cap.
        Returns the new outbox ids, in the order given."""
        async with self._lock:
            done = set(self._done)
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                ids = await self._write(alerts, outbox, now, done)
                trimmed = await self._trim()
                await self._db.execute("COMMIT")
            except BaseException:
                await self._rollback()
                raise
        self._done -= done
        self._count_trimmed(trimmed)
        return ids

    async def _write(
        self,
        alerts: Mapping[str, dict[str, Any] | None],
        outbox: Sequence[tuple[str, dict[str, Any]]],
        now: float,
        done: set[int],
    ) -> list[int]:
        db = self._db
        upserts = [(key, _dumps(state), now) for key, state in alerts.items() if state is not None]
        await db.executemany(_UPSERT_ALERT, upserts)
        deletes = [(key,) for key, state in alerts.items() if state is None]
        await db.executemany("DELETE FROM alerts WHERE fingerprint = ?", deletes)
        ids = []
        for sink, event in outbox:
            row = await db.execute_insert(
                "INSERT INTO outbox (sink, event, created) VALUES (?, ?, ?)",
                (sink, _dumps(event), now),
            )
            assert row is not None  # an INSERT always has a rowid
            ids.append(int(row[0]))
        await db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_evaluation', ?)", (now,)
        )
        await db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in sorted(done)])
        return ids

    async def _trim(self) -> int:
        rows = list(await self._db.execute_fetchall("SELECT count(*) FROM outbox"))
        excess = int(rows[0][0]) - OUTBOX_CAP
        if excess <= 0:
            return 0
        await self._db.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
            (excess,),
        )
        return excess

    def _count_trimmed(self, trimmed: int) -> None:
        self.outbox_trimmed += trimmed
        if trimmed and not self._trimming:
            log.warning(
                "the outbox is full: dropping the oldest undelivered events",
                cap=OUTBOX_CAP,
                dropped=trimmed,
            )
        elif not trimmed and self._trimming:
            log.info("the outbox is below its cap again", dropped_total=self.outbox_trimmed)
        self._trimming = trimmed > 0

    async def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error, ValueError):
            await self._db.execute("ROLLBACK")

    async def pending_outbox(self) -> list[tuple[int, str, dict[str, Any]]]:
        """Undelivered outbox rows, oldest first (for re-submission after a restart)."""
        async with self._lock:
            rows = await self._db.execute_fetchall("SELECT id, sink, event FROM outbox ORDER BY id")
            await self._db.execute("UPDATE outbox SET attempts = attempts + 1")
        pending = []
        for row_id, sink, event in rows:
            if row_id in self._done:
                continue
            try:
                pending.append((int(row_id), str(sink), json.loads(event)))
            except ValueError as exc:
                log.warning("dropping an unreadable outbox row", id=row_id, error=str(exc))
                self.dropped([int(row_id)])
        return pending

    def delivered(self, ids: Sequence[int]) -> None:
        """Queue the rows' deletion (sync, for sink workers); written within FLUSH_INTERVAL."""
        self._done.update(i for i in ids if i > 0)  # 0: an event that was never persisted
        self._schedule_flush()

    def dropped(self, ids: Sequence[int]) -> None:
        """Same as delivered: a sink gave up on them, so a restart must not resend them."""
        self.delivered(ids)

    def _schedule_flush(self) -> None:
        if self._closed or not self._done:
            return
        if self._flusher is not None and not self._flusher.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on the loop: the next commit or close() writes them
            return
        self._flusher = loop.create_task(self._flush_later(), name="state-outbox-flush")

    async def _flush_later(self) -> None:
        await asyncio.sleep(FLUSH_INTERVAL)
        await self._flush()

    async def _flush(self) -> None:
        async with self._lock:
            ids = sorted(self._done)
            if not ids:
                return
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                await self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
                await self._db.execute("COMMIT")
            except (sqlite3.Error, ValueError) as exc:
                await self._rollback()
                # kept queued: the next commit writes them, or a later flush
                log.warning("could not remove sent events from the outbox", error=str(exc))
                return
        self._done.difference_update(ids)

    async def active_silences(self, now: float) -> list[Silence]:
        return _silences(await self._db.execute_fetchall(_ACTIVE_SILENCES, (now, now)))

    async def data_version(self) -> int:
        """Changes when ANOTHER connection (`fossamon silence`) commits to the file."""
        rows = list(await self._db.execute_fetchall("PRAGMA data_version"))
        return int(rows[0][0])

    async def sync_config_silences(
        self, silences: Sequence[SilenceConfig], now: float | None = None
    ) -> tuple[int, int]:
        """Make the source='config' silences those of the config; (added, removed).

        Ids are hashes of the silence's content, so an unchanged silence keeps its row (and
        its created_at) across reloads."""
        stamp = time.time() if now is None else now
        wanted = {s.id: s for s in (silence_from_config(c, stamp) for c in silences)}
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = await self._db.execute_fetchall(
                    "SELECT id FROM silences WHERE source = 'config'"
                )
                present = {str(row[0]) for row in rows}
                stale = [(sid,) for sid in sorted(present - wanted.keys())]
                await self._db.executemany("DELETE FROM silences WHERE id = ?", stale)
                new = [_silence_row(s) for sid, s in wanted.items() if sid not in present]
                await self._db.executemany(_INSERT_SILENCE, new)
                await self._db.execute("COMMIT")
            except BaseException:
                await self._rollback()
                raise
        return len(new), len(stale)

    async def add_silence(self, silence: Silence) -> None:
        async with self._lock:
            await self._db.execute(_INSERT_SILENCE, _silence_row(silence))

    async def expire_silence(self, silence_id: str, now: float) -> bool:
        async with self._lock:
            cursor = await self._db.execute(_EXPIRE_SILENCE, (now, silence_id))
            return cursor.rowcount > 0


def _dumps(value: dict[str, Any]) -> str:
    # NaN/Infinity are kept (Python's json reads them back): the state must round-trip
    return json.dumps(value, separators=(",", ":"))


class MemoryStateStore:
    """The same API with nothing on disk: for `fossamon once` and tests."""

    def __init__(self) -> None:
        self.outbox_trimmed = 0
        self._alerts: dict[str, str] = {}
        self._outbox: dict[int, tuple[str, str]] = {}
        self._silences: dict[str, Silence] = {}
        self._last_evaluation: float | None = None
        self._next_id = 1
        self._version = 0

    @classmethod
    async def open(cls, path: str = ":memory:", *, recover: bool = False) -> MemoryStateStore:  # noqa: ARG003 - the signature of StateStore.open
        return cls()

    async def close(self) -> None:
        return

    async def load_alerts(self) -> dict[str, dict[str, Any]]:
        return {key: json.loads(state) for key, state in self._alerts.items()}

    async def last_evaluation(self) -> float | None:
        return self._last_evaluation

    async def commit(
        self,
        alerts: Mapping[str, dict[str, Any] | None],
        outbox: Sequence[tuple[str, dict[str, Any]]],
        now: float,
    ) -> list[int]:
        # serialise first, so a value that cannot be stored fails before anything changes
        states = {key: None if s is None else _dumps(s) for key, s in alerts.items()}
        rows = [(sink, _dumps(event)) for sink, event in outbox]
        for key, state in states.items():
            if state is None:
                self._alerts.pop(key, None)
            else:
                self._alerts[key] = state
        ids = list(range(self._next_id, self._next_id + len(rows)))
        self._next_id += len(rows)
        self._outbox.update(zip(ids, rows, strict=True))
        self._last_evaluation = now
        excess = len(self._outbox) - OUTBOX_CAP
        for old in sorted(self._outbox)[: max(excess, 0)]:
            del self._outbox[old]
        self.outbox_trimmed += max(excess, 0)
        return ids

    async def pending_outbox(self) -> list[tuple[int, str, dict[str, Any]]]:
        return [(i, sink, json.loads(event)) for i, (sink, event) in sorted(self._outbox.items())]

    def delivered(self, ids: Sequence[int]) -> None:
        for i in ids:
            self._outbox.pop(i, None)

    def dropped(self, ids: Sequence[int]) -> None:
        self.delivered(ids)

    async def active_silences(self, now: float) -> list[Silence]:
        found = (s for s in self._silences.values() if s.active(now))
        return sorted(found, key=lambda s: (s.created_at, s.id))

    async def data_version(self) -> int:
        """Changes whenever the silences change (stands in for another process's write)."""
        return self._version

    async def sync_config_silences(
        self, silences: Sequence[SilenceConfig], now: float | None = None
    ) -> tuple[int, int]:
        stamp = time.time() if now is None else now
        wanted = {s.id: s for s in (silence_from_config(c, stamp) for c in silences)}
        present = {sid for sid, s in self._silences.items() if s.source == "config"}
        for sid in present - wanted.keys():
            del self._silences[sid]
        added = [s for sid, s in wanted.items() if sid not in present]
        for silence in added:
            self._silences[silence.id] = silence
        removed = len(present - wanted.keys())
        self._version += bool(added or removed)
        return len(added), removed

    async def add_silence(self, silence: Silence) -> None:
        self._silences.setdefault(silence.id, silence)
        self._version += 1

    async def expire_silence(self, silence_id: str, now: float) -> bool:
        found = self._silences.get(silence_id)
        if found is None or found.source != "cli" or found.expired_at is not None:
            return False
        self._silences[silence_id] = found.expired(now)
        self._version += 1
        return True
