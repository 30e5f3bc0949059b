"""Fault matrix, database rows: a real `fossamon run` watching a SQLite file that goes wrong
in every way the issue lists. Each row: the daemon stays up and keeps its cadence, the fault
shows as its error kind and fires its rule (db_down for the file, db_query_failing for a
query), it recovers when the fault ends, nothing is lost, and every file the test made or
changed is byte-identical afterwards to what the test left there: fossamon never writes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from daemon_harness import start_daemon
from faults_support import (
    INTERVAL,
    alert_events,
    assert_cadence_kept,
    assert_nothing_lost,
    errors_of,
    runs,
    without_root_bypass,
)
from support import daemon_head

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

ROWS = 3000  # a three-way join over them runs for minutes
SLOW = "SELECT count(*) FROM t a, t b, t c WHERE (SELECT flag FROM control) = 1"

RULES = """
[[rules]]
name = "db_down"
metric = "db_up"
direction = "below"
critical = 1
[[rules]]
name = "db_query_failing"
metric = "db_query_ok"
direction = "below"
critical = 1
"""


def build(path: Path, rows: int = ROWS, *, wal: bool = False) -> Path:
    """A small application database: t(x) with `rows` rows, control(flag) = 0."""
    path.unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        if wal:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?)", ((i,) for i in range(rows)))
        conn.execute("CREATE TABLE control (flag INTEGER)")
        conn.execute("INSERT INTO control VALUES (0)")
        conn.commit()
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Rig:
    folder: Path
    path: Path  # what the daemon watches
    left: dict[Path, str] = field(default_factory=dict)  # file -> its digest as we left it
    extra: dict[str, Any] = field(default_factory=dict)

    def leave(self, *paths: Path) -> None:
        """The test wrote these (as the application or an operator would): remember them."""
        for path in paths:
            self.left[path] = digest(path)

    def replace_with(self, make: Callable[[Path], object]) -> None:
        """Build a file beside the path and rename it over the path (a restore from backup)."""
        fresh = self.folder / f"fresh-{len(self.left)}.db"
        make(fresh)
        keep = self.folder / f"kept-{len(self.left)}.db"
        shutil.copyfile(fresh, keep)  # what the path now holds, for the byte check
        fresh.replace(self.path)
        self.leave(keep)
        self.left[self.path] = self.left[keep]

    def sql(self, *statements: str) -> None:
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            for statement in statements:
                conn.execute(statement)
            conn.commit()
        self.leave(self.path)


def garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database\n" * 200)


def first_half(path: Path) -> None:
    whole = build(path.with_suffix(".whole"), 20_000).read_bytes()
    path.write_bytes(whole[: len(whole) // 2])


@dataclass
class Row:
    kind: str
    rule: str
    labels: dict[str, str]
    setup: Callable[[Rig], None]  # before the start: what is at the path
    begin: Callable[[Rig], None] | None  # None: broken from the start
    end: Callable[[Rig], None]
    rows_after: int = ROWS  # count(*) of t once it recovered: which file the daemon reads


def good(rig: Rig) -> None:
    build(rig.path)
    rig.leave(rig.path)


def restore(rig: Rig) -> None:
    rig.replace_with(build)


def remove(rig: Rig) -> None:
    rig.path.unlink()
    rig.left.pop(rig.path)


def hold_exclusive(rig: Rig) -> None:
    conn = sqlite3.connect(rig.path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    rig.extra["writer"] = conn


def release(rig: Rig) -> None:
    conn = rig.extra.pop("writer")
    conn.execute("ROLLBACK")
    conn.close()


def wal_in_read_only_folder(rig: Rig) -> None:
    build(rig.path, wal=True)  # closed: no -wal or -shm left beside it
    assert not rig.path.with_name(rig.path.name + "-shm").exists()
    rig.leave(rig.path)
    rig.path.parent.chmod(0o555)


def writable_folder(rig: Rig) -> None:
    rig.path.parent.chmod(0o755)


FILE, SLOW_QUERY, COUNT_QUERY = {"": ""}, {"query": "slow"}, {"query": "rows"}
MATRIX: dict[str, Row] = {
    "missing file": Row("missing", "db_down", {}, lambda _: None, None, restore),
    "removed while running": Row("missing", "db_down", {}, good, remove, restore),
    "replaced while running": Row(
        "not_a_database",
        "db_down",
        {},
        good,
        lambda rig: rig.replace_with(garbage),
        lambda rig: rig.replace_with(lambda p: build(p, 1234)),
        rows_after=1234,
    ),
    "garbage file": Row(
        "not_a_database", "db_down", {}, lambda rig: garbage(rig.path), None, restore
    ),
    "truncated file": Row(
        "not_a_database", "db_down", {}, lambda rig: first_half(rig.path), None, restore
    ),
    "locked by BEGIN EXCLUSIVE": Row("locked", "db_down", {}, good, hold_exclusive, release),
    "table dropped": Row(
        "no_such_table",
        "db_query_failing",
        COUNT_QUERY,
        good,
        lambda rig: rig.sql("DROP TABLE t"),
        lambda rig: rig.sql(
            "CREATE TABLE t (x INTEGER)",
            f"WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS - 1})"
            " INSERT INTO t SELECT i FROM n",
        ),
    ),
    "a query that runs for minutes": Row(
        "timeout",
        "db_query_failing",
        SLOW_QUERY,
        good,
        lambda rig: rig.sql("UPDATE control SET flag = 1"),
        lambda rig: rig.sql("UPDATE control SET flag = 0"),
    ),
    "WAL whose -shm cannot be created": Row(
        "readonly_shm", "db_down", {}, wal_in_read_only_folder, None, writable_folder
    ),
}


def target_of(row: Row, rig: Rig) -> str:
    return row.labels.get("query") or str(rig.path)


@pytest.mark.parametrize("name", list(MATRIX))
async def test_db_fault(tmp_path, name, notify, need):
    row = MATRIX[name]
    prefix: list[str] = []
    if name == "WAL whose -shm cannot be created":
        need(os.geteuid() != 0 or shutil.which("setpriv") is not None, "setpriv (util-linux)")
        prefix = without_root_bypass()
    data = tmp_path / "data"
    data.mkdir()
    rig = Rig(tmp_path, data / "app.db")
    row.setup(rig)
    config = tmp_path / "config.toml"
    config.write_text(
        daemon_head(tmp_path)
        + f'[collectors.system]\ninterval = "{INTERVAL}s"\n'
        + f'[collectors.db]\ninterval = "{INTERVAL}s"\ntimeout = "300ms"\npath = "{rig.path}"\n'
        + '[[collectors.db.queries]]\nname = "rows"\nsql = "SELECT count(*) FROM t"\n'
        + "record_value = true\n"
        + f'[[collectors.db.queries]]\nname = "slow"\nsql = "{SLOW}"\n'
        + RULES
    )
    daemon = await start_daemon(config, tmp_path, {"NOTIFY_SOCKET": str(notify.path)}, prefix)
    try:
        await exercise(daemon, row, rig)
    finally:
        if "writer" in rig.extra:
            release(rig)
        rig.path.parent.chmod(0o755)


def query_value(line: dict[str, Any], query: str) -> float | None:
    return next(
        (
            s["value"]
            for s in line["samples"]
            if s["name"] == "db_query_value" and s["labels"].get("query") == query
        ),
        None,
    )


async def exercise(daemon, row: Row, rig: Rig) -> None:
    await daemon.wait_for(lambda: runs(daemon, "db"), what="the first db run")
    if row.begin is not None:
        row.begin(rig)
    target = target_of(row, rig)
    await daemon.wait_for(
        lambda: [line for line in runs(daemon, "db") if row.kind in errors_of(line, target)],
        timeout=20,
        what=f"a {row.kind} error for {target}",
    )
    await daemon.wait_for(
        lambda: "firing" in alert_events(daemon, row.rule, **row.labels),
        what=f"{row.rule} firing",
    )
    row.end(rig)
    await daemon.wait_for(
        lambda: "resolved" in alert_events(daemon, row.rule, **row.labels),
        timeout=20,
        what=f"{row.rule} resolved once the fault ended",
    )
    after = len(runs(daemon, "db"))
    await daemon.wait_for(lambda: len(runs(daemon, "db")) >= after + 3, what="3 runs more")
    for line in runs(daemon, "db")[-3:]:
        assert line.get("errors", []) == [], line
        assert query_value(line, "rows") == row.rows_after  # the file now at the path
    rc, took = await daemon.stop()
    assert rc == 0, daemon.stderr.decode()[-2000:]
    assert took < 5
    assert b"Traceback" not in daemon.stderr
    assert_cadence_kept(daemon, "system")
    assert_cadence_kept(daemon, "db")
    assert_nothing_lost(daemon)
    for path, expected in rig.left.items():  # fossamon wrote none of them
        assert digest(path) == expected, f"{path} changed"
