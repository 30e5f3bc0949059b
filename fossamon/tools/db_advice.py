"""Index advice derived from the queries themselves, not from a fixed list.

Two advisors. The sqlite3 shell's `.expert` (Debian package `sqlite3`) is SQLite's own: given
a statement it prints the `CREATE INDEX`es that would help and the plan they would give. It
runs on the monitored file opened `-readonly` through a `mode=ro` URI, and reads only the
schema. Without the shell, the plan advisor does the same kind of what-if search in Python:
for each full scan, automatic index or sort in the plan, it tries an index on each column the
query reads (in the in-memory schema copy) and keeps, one at a time, the index that makes the
plan cheapest, until none improves it.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fossamon.collectors import _sqlite_open as sq
from fossamon.tools.db_plan import PlanCost, plan_cost, render_plan
from fossamon.tools.db_whatif import quote_identifier

if TYPE_CHECKING:
    from fossamon.tools.db_whatif import WhatIfSchema

EXPERT = "sqlite3 .expert"
PLAN = "plan"
_NO_NEW_INDEXES = "(no new indexes)"
# The shell needs no time of its own worth counting; this covers starting it on a slow disk.
_SHELL_START_SECONDS = 5.0
# A line the shell would take as one of its dot-commands (`.shell`, `.output FILE`): never
# sent to it. Inside a statement such a line is SQL, but refusing it outright is simpler
# than proving where each statement ends.
_SHELL_COMMAND_LINE = re.compile(r"^\s*[.#]", re.MULTILINE)


class AdviceError(Exception):
    """An advisor could not judge a statement; the message says why."""


@dataclass(frozen=True, slots=True)
class Advice:
    source: str
    """EXPERT or PLAN."""
    indexes: tuple[str, ...]
    """CREATE INDEX statements, none when the plan needs no index."""
    plan_with_indexes: tuple[str, ...]
    """The plan those indexes would give, as text."""


def expert_advice(shell: str, path: str, sql: str, timeout: float) -> Advice:
    """`.expert`'s recommendation for `sql`; raises AdviceError."""
    if _SHELL_COMMAND_LINE.search(sql):
        raise AdviceError("a line of the statement starts with '.' or '#' (a shell command)")
    statement = sql.rstrip().rstrip(";")
    command = [
        shell,
        "-batch",  # no prompts, no history file
        "-bail",  # the exit status says whether .expert managed
        "-init",  # instead of ~/.sqliterc, which could turn on anything
        "/dev/null",
        "-readonly",
        sq.readonly_uri(path),
    ]
    try:
        done = subprocess.run(  # noqa: S603 - the shell's path is ours; the SQL goes on stdin
            command,
            input=f".expert\n{statement};\n",
            capture_output=True,
            text=True,
            timeout=timeout + _SHELL_START_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AdviceError(f".expert took over {timeout:g}s") from exc
    except OSError as exc:
        raise AdviceError(f"cannot run {shell}: {exc.strerror or exc}") from exc
    if done.returncode != 0:
        said = done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}"
        raise AdviceError(f".expert failed: {said}")
    return _parse_expert(done.stdout)


def _parse_expert(output: str) -> Advice:
    """`.expert` prints the indexes (or "(no new indexes)"), a blank line, then the plan."""
    indexes, plan = [], []
    for line in output.splitlines():
        stripped = line.strip()
        if stripped.upper().startswith("CREATE "):
            indexes.append(stripped)
        elif stripped and stripped != _NO_NEW_INDEXES:
            plan.append(line.rstrip())
    if not plan:
        raise AdviceError(f".expert printed no plan: {output.strip()!r}")
    return Advice(EXPERT, tuple(indexes), tuple(plan))


def plan_advice(whatif: WhatIfSchema, sql: str) -> Advice:
    """The plan advisor's recommendation for `sql`; raises AdviceError."""
    try:
        cost = plan_cost(whatif.plan(sql))
        candidates = whatif.columns_read(sql)
    except (sqlite3.Error, sqlite3.Warning) as exc:
        raise AdviceError(f"cannot plan the statement: {exc}") from exc
    chosen: list[_Index] = []
    # Each round adopts at least one column the query reads, so there are at most as many
    # rounds as columns.
    for _ in candidates:
        step = _best_step(whatif, sql, chosen, candidates, cost)
        if step is None:
            break
        chosen, cost = step
    # An index adopted early can lose its use to a later one (a sort it saved, now done by
    # another path): advise only what the final plan needs.
    for index in list(chosen):
        rest = [other for other in chosen if other != index]
        rest_cost = _cost(whatif, sql, rest)
        if rest_cost is not None and rest_cost <= cost:
            chosen = rest
    statements = [_statement(whatif, index, number) for number, index in enumerate(chosen)]
    return Advice(PLAN, tuple(statements), tuple(render_plan(whatif.plan(sql, statements))))


def _best_step(
    whatif: WhatIfSchema,
    sql: str,
    chosen: list[_Index],
    candidates: list[tuple[str, str]],
    cost: PlanCost,
) -> tuple[list[_Index], PlanCost] | None:
    """The cheapest index set one step from `chosen`, if it is cheaper than `cost`."""
    best: tuple[list[_Index], PlanCost] | None = None
    # Some plans need two indexes at once (a join's outer table filtered, its inner table
    # looked up: either alone leaves a full scan), so pairs are tried when no single does.
    for pairs, columns in ((False, candidates), (True, candidates[:_MAX_PAIRED])):
        for trial in _trials(chosen, columns, pairs=pairs):
            trial_cost = _cost(whatif, sql, trial)
            if trial_cost is not None and trial_cost < (cost if best is None else best[1]):
                best = (trial, trial_cost)
        if best is not None:
            return best
    return None


# Pairs grow with the square of the columns read: `SELECT *` of two wide tables stays at
# a few hundred plans, a few milliseconds each on the empty copy.
_MAX_PAIRED = 30


@dataclass(frozen=True, slots=True)
class _Index:
    table: str
    columns: tuple[str, ...]


def _trials(
    chosen: list[_Index], candidates: list[tuple[str, str]], *, pairs: bool
) -> list[list[_Index]]:
    """The index sets one step away from `chosen`: one more single-column index, or a chosen
    index with one more column (an ORDER BY after the filter); with `pairs`, two more."""
    singles = [_Index(t, (c,)) for t, c in candidates if _Index(t, (c,)) not in chosen]
    if pairs:
        return [[*chosen, a, b] for i, a in enumerate(singles) for b in singles[i + 1 :]]
    trials = [[*chosen, single] for single in singles]
    for position, index in enumerate(chosen):
        for table, column in candidates:
            if table == index.table and column not in index.columns:
                wider = _Index(table, (*index.columns, column))
                trials.append([*chosen[:position], wider, *chosen[position + 1 :]])
    return trials


def _cost(whatif: WhatIfSchema, sql: str, indexes: list[_Index]) -> PlanCost | None:
    statements = [_statement(whatif, index, number) for number, index in enumerate(indexes)]
    try:
        return plan_cost(whatif.plan(sql, statements))
    except sqlite3.Error:  # an index SQLite refuses (on a view's column) is no candidate
        return None


def _statement(whatif: WhatIfSchema, index: _Index, number: int) -> str:
    """A CREATE INDEX named after its table and columns, like `.expert`'s; `number` keeps
    two names of one set apart where the names are cut short."""
    base = re.sub(r"\W", "_", f"{index.table}_idx_{'_'.join(index.columns)}")[:60]
    name = base
    for suffix in range(number + 2, number + 100):
        if not whatif.has_object(name):
            break
        name = f"{base}_{suffix}"
    columns = ", ".join(quote_identifier(column) for column in index.columns)
    return f"CREATE INDEX {quote_identifier(name)} ON {quote_identifier(index.table)}({columns});"


@dataclass(frozen=True, slots=True)
class Advisor:
    shell: str | None
    """The sqlite3 shell for `.expert`; None: the plan advisor."""

    def describe(self) -> str:
        return (
            f"{EXPERT} ({self.shell})" if self.shell else "plan advisor (what-if plans in Python)"
        )

    def advise(
        self, whatif: WhatIfSchema, path: str, sql: str, timeout: float
    ) -> tuple[Advice | None, str | None]:
        """The advice for `sql`, and a note when it is missing or from the fallback."""
        note = None
        if self.shell is not None:
            try:
                return expert_advice(self.shell, path, sql, timeout), None
            except AdviceError as exc:
                note = f"{exc}; the plan advisor answered instead"
        try:
            return plan_advice(whatif, sql), note
        except AdviceError as exc:
            return None, str(exc)


def choose_advisor(wanted: str) -> Advisor:
    """ "auto": `.expert` where the sqlite3 shell is installed; raises AdviceError when
    "expert" is wanted and there is no shell."""
    shell = shutil.which("sqlite3") if wanted in {"auto", "expert"} else None
    if wanted == "expert" and shell is None:
        raise AdviceError(
            "the sqlite3 shell is not installed (Debian: apt-get install sqlite3); "
            "--advisor plan works without it"
        )
    return Advisor(shell)
