"""Build the demo's stand-in for FossaWork V2's SQLite database, quickly and atomically.

    create_demo_database(Path("demo.db"))            # 100k work orders, 20k dispensers
    ensure_demo_database(Path("demo.db"), seed=7)    # reuse if built with these settings

The database is built under a temporary name in the same directory and moved into place with
`os.replace`, so a reader (or a crash) never sees a half-seeded file at `path`.
"""

from __future__ import annotations

import os
import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fossamon.demo import _rows

if TYPE_CHECKING:
    from datetime import datetime

SCHEMA_VERSION = 1

# A single row, no primary key: the demo must not carry any index the app's tables lack.
_META_SCHEMA = """CREATE TABLE demo_meta (
    schema_version INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    work_orders INTEGER NOT NULL,
    dispensers INTEGER NOT NULL,
    customers INTEGER NOT NULL,
    wal INTEGER NOT NULL,
    reference_time TEXT NOT NULL
)"""


class NotADemoDatabaseError(Exception):
    """A file at the demo path that this module did not build; it is never overwritten."""


@dataclass(frozen=True, slots=True)
class DemoMeta:
    """What a demo database was built with, as recorded in its `demo_meta` table."""

    schema_version: int
    seed: int
    work_orders: int
    dispensers: int
    customers: int
    wal: bool
    reference_time: str


def create_demo_database(
    path: Path,
    *,
    work_orders: int = 100_000,
    dispensers: int = 20_000,
    customers: int = 2_000,
    seed: int = 42,
    now: datetime | None = None,
    wal: bool = False,
) -> None:
    """Build a fresh database at `path`, replacing whatever is there.

    `now` is the reference time the created dates are spread back from (about two years, with
    a few rows in its last hour); pass it for byte-for-byte reproducible data.
    """
    _check_sizes(work_orders, dispensers, customers)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Per process, so two processes seeding the same path cannot write into each other's file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _remove_with_sidecars(tmp)
    reference = _rows.reference_time(now)
    meta = DemoMeta(
        SCHEMA_VERSION, seed, work_orders, dispensers, customers, wal, reference.isoformat(" ")
    )
    try:
        _build(tmp, meta, reference)
        _fsync(tmp)
        # A leftover -wal or -journal of the old file would be replayed into the new one.
        _remove_sidecars(path)
        tmp.replace(path)
    except BaseException:
        _remove_with_sidecars(tmp)
        raise
    _fsync(path.parent)


def ensure_demo_database(
    path: Path,
    *,
    work_orders: int = 100_000,
    dispensers: int = 20_000,
    customers: int = 2_000,
    seed: int = 42,
    now: datetime | None = None,
    wal: bool = False,
) -> Path:
    """Return `path`, building it unless it already holds a demo database with these settings.

    Raises NotADemoDatabaseError rather than replace a file that is not a demo database (it may
    be the real application's).
    """
    path = Path(path)
    meta = read_demo_meta(path)
    wanted = (SCHEMA_VERSION, seed, work_orders, dispensers, customers, wal)
    if meta is not None and wanted == (
        meta.schema_version,
        meta.seed,
        meta.work_orders,
        meta.dispensers,
        meta.customers,
        meta.wal,
    ):
        return path
    create_demo_database(
        path,
        work_orders=work_orders,
        dispensers=dispensers,
        customers=customers,
        seed=seed,
        now=now,
        wal=wal,
    )
    return path


def read_demo_meta(path: Path) -> DemoMeta | None:
    """The settings a demo database was built with; None if there is no file (or it is empty)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = conn.execute(
                "SELECT schema_version, seed, work_orders, dispensers, customers, wal,"
                " reference_time FROM demo_meta"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise NotADemoDatabaseError(
            f"{path} exists but is not a fossamon demo database ({exc}); "
            "move it away or choose another path"
        ) from exc
    if row is None:
        raise NotADemoDatabaseError(f"{path}: demo_meta table is empty")
    return DemoMeta(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6])


def _check_sizes(work_orders: int, dispensers: int, customers: int) -> None:
    for name, value in (
        ("work_orders", work_orders),
        ("dispensers", dispensers),
        ("customers", customers),
    ):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if work_orders and not customers:
        raise ValueError("work_orders need at least one customer")
    if dispensers and not work_orders:
        raise ValueError("dispensers need at least one work order")


def _build(tmp: Path, meta: DemoMeta, reference: datetime) -> None:
    rng = random.Random(meta.seed)  # noqa: S311 - reproducible demo data is the point
    now = _rows.unix_seconds(reference)
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        # No journal and no syncs while building: the file is private until os.replace, and a
        # failed build is deleted, so nothing needs to survive a crash half-way.
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        for statement in (*_rows.SCHEMA, _META_SCHEMA):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO demo_meta VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                meta.schema_version,
                meta.seed,
                meta.work_orders,
                meta.dispensers,
                meta.customers,
                int(meta.wal),
                meta.reference_time,
            ),
        )
        customer_rows, chains = _rows.customer_rows(rng, meta.customers, now)
        conn.executemany(_rows.INSERT_CUSTOMER, customer_rows)
        ages = _rows.created_offsets(rng, meta.work_orders)
        conn.executemany(_rows.INSERT_WORK_ORDER, _rows.work_order_rows(rng, ages, chains, now))
        conn.executemany(
            _rows.INSERT_DISPENSER, _rows.dispenser_rows(rng, meta.dispensers, ages, now)
        )
        conn.execute("COMMIT")
        # The journal mode is stored in the file (WAL) or is the default (DELETE) for readers.
        conn.execute(f"PRAGMA journal_mode={'WAL' if meta.wal else 'DELETE'}")
    finally:
        conn.close()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_sidecars(path: Path) -> None:
    for suffix in ("-journal", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def _remove_with_sidecars(path: Path) -> None:
    path.unlink(missing_ok=True)
    _remove_sidecars(path)


def append_work_order(path: Path, rng: random.Random, *, now: datetime | None = None) -> int:
    """Insert one work order created at `now`, with one to four dispensers; return its id.

    For the target's live mode, so "last hour" queries see movement. Opens the file `mode=rw`:
    a missing database is an error here, never silently created empty.
    """
    reference = _rows.unix_seconds(_rows.reference_time(now))
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=rw", uri=True, timeout=5.0)
    conn.isolation_level = None
    try:
        conn.execute("BEGIN IMMEDIATE")
        order_id, customers, first_dispenser = conn.execute(
            "SELECT (SELECT COALESCE(MAX(id), 0) + 1 FROM work_orders),"
            " (SELECT COUNT(*) FROM customers),"
            " (SELECT COALESCE(MAX(id), 0) + 1 FROM dispensers)"
        ).fetchone()
        customer_id = 1 + int(rng.random() * max(customers, 1))
        named = conn.execute("SELECT name FROM customers WHERE id = ?", (customer_id,)).fetchone()
        # Customer names are "<chain> (<city>, <state>) #<id>"; sites are named by chain.
        chain = named[0].split(" (")[0] if named else "Independent"
        row = _rows.work_order_row(rng, order_id, 0, chain, customer_id, reference)
        conn.execute(_rows.INSERT_WORK_ORDER, row)
        for position in range(1, 2 + int(rng.random() * 4)):
            dispenser_id = first_dispenser + position - 1
            row = _rows.dispenser_row(rng, dispenser_id, order_id, position, reference)
            conn.execute(_rows.INSERT_DISPENSER, row)
        conn.execute("COMMIT")
    finally:
        conn.close()  # without a COMMIT this rolls back, so a failed append leaves no trace
    return int(order_id)
