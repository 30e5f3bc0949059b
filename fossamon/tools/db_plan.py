"""`EXPLAIN QUERY PLAN`: read as a tree, printed as text, and weighed for index advice.

SQLite (3.40) words each step as `SCAN t` (every row of t), `SCAN t USING [COVERING] INDEX i`
(every entry of an index), `SEARCH t USING …` (a lookup), `… AUTOMATIC … INDEX` (an index built
for this one run, for want of a real one) and `USE TEMP B-TREE FOR ORDER BY` (a sort).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Sequence

_SCAN = re.compile(r"SCAN (?P<name>\S+)(?P<index> USING (?:COVERING )?INDEX .*)?")
# Scans that no index can help: a constant row, a subquery's materialised result.
_NOT_A_TABLE = ("CONSTANT ROW", "(subquery")


@dataclass(frozen=True, slots=True)
class PlanStep:
    depth: int
    detail: str


@dataclass(frozen=True, slots=True, order=True)
class PlanCost:
    """How much avoidable work a plan does, worst kind first: compared as a tuple, a plan
    with fewer full table scans is better whatever else it does, and so on."""

    full_scans: int
    automatic_indexes: int
    """An index built for one run: a full scan and a sort, every time."""
    index_scans: int
    """Every entry of an index: cheaper than the table, still all of it."""
    temp_btrees: int
    """A sort of what was found: costs with what the filter left, not with the table."""


def query_plan(conn: sqlite3.Connection, sql: str) -> list[PlanStep]:
    """The plan of `sql` (prepared, not run); raises sqlite3.Error for a bad statement."""
    depth: dict[int, int] = {}
    steps: list[PlanStep] = []
    # A plan is a handful of rows (one per loop, subquery or sort), whatever the data.
    for node, parent, _unused, detail in conn.execute(f"EXPLAIN QUERY PLAN {sql}"):
        depth[node] = depth[parent] + 1 if parent in depth else 0
        steps.append(PlanStep(depth[node], detail))
    return steps


def render_plan(steps: Sequence[PlanStep]) -> list[str]:
    return [f"{'  ' * step.depth}{step.detail}" for step in steps]


def full_scans(steps: Sequence[PlanStep]) -> list[str]:
    """The tables (or aliases, as the query names them) read row by row, without an index."""
    found = []
    for step in steps:
        match = _SCAN.fullmatch(step.detail)
        if match and not match["index"] and not match["name"].startswith(_NOT_A_TABLE):
            found.append(match["name"])
    return found


def plan_cost(steps: Sequence[PlanStep]) -> PlanCost:
    index_scans = 0
    for step in steps:
        match = _SCAN.fullmatch(step.detail)
        index_scans += bool(match and match["index"])
    return PlanCost(
        full_scans=len(full_scans(steps)),
        automatic_indexes=sum(" AUTOMATIC " in step.detail for step in steps),
        index_scans=index_scans,
        temp_btrees=sum(step.detail.startswith("USE TEMP B-TREE") for step in steps),
    )
