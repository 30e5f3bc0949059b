"""Index advice derived from the queries themselves, not from a fixed list.

Two advisors. The sqlite3 shell's `.expert` (Debian package `sqlite3`) is SQLite's own: given
a statement it prints the `CREATE INDEX`es that would help and the plan they would give. It
runs on the monitored file opened `-readonly` through a `mode=ro` URI, and reads only the
schema; the statement is handed to it only once Python has prepared it and found that it only
reads, and only output in `.expert`'s shape is taken as advice (expert_advice).
Without the shell, the plan advisor does the same kind of what-if search in Python:
for each full scan, automatic index or sort in the plan, it tries an index on each column the
query reads (in the in-memory schema copy) and keeps, one at a time, the index that makes the
plan cheapest, until none improves it.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import subprocess
import threading
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from fossamon.collectors import _sqlite_open as sq
from fossamon.collectors.db import _BUSY_SHARE
from fossamon.tools.db_plan import PlanCost, plan_cost, render_plan
from fossamon.tools.db_whatif import quote_identifier

if TYPE_CHECKING:
    from fossamon.tools.db_whatif import WhatIfSchema

EXPERT = "sqlite3 .expert"
PLAN = "plan"
_NO_NEW_INDEXES = "(no new indexes)"
# The shell needs no time of its own worth counting; this covers starting it on a slow disk.
_SHELL_START_SECONDS = 5.0
# `.expert`'s advice is a few lines; more than this is something else (a result being printed).
_OUTPUT_CAP = 256 * 1024
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
    """`.expert`'s recommendation for `sql`; raises AdviceError.

    The shell cannot run `.expert` under `-safe` ("Cannot run experimental commands such as
    "expert" in safe mode", 3.40), and where `.expert` cannot start (an application-defined
    collation or function in the schema, a busy database) it goes on to run the statement
    itself. So the statement is first prepared in Python, where it must be one statement that
    only reads (check_reads_only); the shell waits for locks (`.timeout`); and only output in
    `.expert`'s own shape, with nothing on stderr, is taken as advice.
    """
    if _SHELL_COMMAND_LINE.search(sql):
        raise AdviceError("a line of the statement starts with '.' or '#' (a shell command)")
    statement = sql.rstrip().rstrip(";")
    check_reads_only(path, statement, timeout)
    command = [
        shell,
        "-batch",  # no prompts, no history file
        "-bail",  # the exit status says whether .expert managed
        "-init",  # instead of ~/.sqliterc, which could turn on anything
        "/dev/null",
        "-readonly",
        "-cmd",  # the shell has no busy timeout of its own: a lock would fail .expert at once
        f".timeout {int(timeout * 1000 * _BUSY_SHARE)}",
        sq.readonly_uri(path),
    ]
    code, out, err = _run_capped(
        command, f".expert\n{statement};\n", timeout + _SHELL_START_SECONDS
    )
    if code is None:
        raise AdviceError(f".expert took over {timeout:g}s")
    if len(out) > _OUTPUT_CAP:
        raise AdviceError(f".expert printed over {_OUTPUT_CAP} bytes: not its advice")
    said = err.decode(errors="replace").strip()
    if code != 0 or said:
        said = said or out.decode(errors="replace").strip()[:200] or f"exit status {code}"
        raise AdviceError(f".expert failed: {said}")
    return _parse_expert(out.decode(errors="replace"))


def _run_capped(command: list[str], stdin: str, limit: float) -> tuple[int | None, bytes, bytes]:
    """Exit status (None: killed at `limit`), stdout and stderr, each read to at most one
    byte over _OUTPUT_CAP; the shell is killed once it prints more."""
    try:
        proc = subprocess.Popen(  # noqa: S603 - the shell's path is ours; the SQL goes on stdin
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as exc:
        raise AdviceError(f"cannot run {command[0]}: {exc.strerror or exc}") from exc
    read: dict[str, bytes] = {}

    def drain(name: str, stream: IO[bytes]) -> None:
        got = b""
        while len(got) <= _OUTPUT_CAP and (chunk := stream.read(65536)):
            got += chunk
        read[name] = got
        if len(got) > _OUTPUT_CAP:
            proc.kill()
        stream.close()

    readers = [
        threading.Thread(target=drain, args=(name, stream), daemon=True)
        for name, stream in (("out", proc.stdout), ("err", proc.stderr))
        if stream is not None
    ]
    for reader in readers:
        reader.start()
    assert proc.stdin is not None  # stdin=PIPE
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.write(stdin.encode())
        proc.stdin.close()
    code: int | None
    try:
        code = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    for reader in readers:
        reader.join(timeout=1.0)
    return code, read.get("out", b""), read.get("err", b"")


# Actions a statement may need to be handed to the shell: reading, nothing else.
_READ_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
# Functions the shell has and a read could still misuse (files, extensions).
_DENIED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})


# The first keyword, after any comments: a query, or nothing goes to the shell.
_READ_START = re.compile(
    r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*(?:SELECT|WITH|VALUES)\b", re.IGNORECASE | re.DOTALL
)


def check_reads_only(path: str, statement: str, timeout: float) -> None:
    """Prepare `statement` on `path` (read-only) with an authorizer that allows only reads;
    raises AdviceError unless it is one statement that only reads."""
    if not _READ_START.match(statement):
        # VACUUM (INTO) and PRAGMA ask the authorizer nothing when prepared
        raise AdviceError(
            "not handed to the sqlite3 shell: not a query (it must start with SELECT, WITH "
            "or VALUES)"
        )
    refused: list[str] = []

    def reads_only(action: int, arg1: str | None, arg2: str | None, *_: str | None) -> int:
        name = (arg2 or "").lower() if action == sqlite3.SQLITE_FUNCTION else ""
        if action not in _READ_ACTIONS or name in _DENIED_FUNCTIONS:
            refused.append(name or f"action {action} ({arg1 or ''})")
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    try:
        with contextlib.closing(
            sqlite3.connect(sq.readonly_uri(path), uri=True, isolation_level=None)
        ) as conn:
            conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000 * _BUSY_SHARE)}")
            conn.execute("PRAGMA query_only = 1")
            conn.set_authorizer(reads_only)
            # EXPLAIN prepares the statement (the authorizer sees all it would do) and lists
            # its instructions without running it; a second statement is refused by Python.
            with contextlib.closing(conn.execute(f"EXPLAIN {statement}")):
                pass
    except (sqlite3.Error, sqlite3.Warning) as exc:
        why = f" ({', '.join(refused)})" if refused else ""
        raise AdviceError(
            f"not handed to the sqlite3 shell: not one statement that only reads{why}: {exc}"
        ) from exc


# `.expert` prints the indexes (or "(no new indexes)"), a blank line, then the plan.
_EXPERT_INDEX = re.compile(r"^CREATE (UNIQUE )?INDEX \S+ ON \S", re.IGNORECASE)


def _parse_expert(output: str) -> Advice:
    """`.expert`'s output, accepted only in its own shape; raises AdviceError otherwise (the
    shell printed something else: the statement's rows, or a message)."""
    lines = [line.rstrip() for line in output.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if "" not in lines:
        raise AdviceError(f".expert's output is not its advice: {output.strip()[:200]!r}")
    split = lines.index("")
    head, plan = lines[:split], [line for line in lines[split + 1 :] if line]
    no_indexes = head == [_NO_NEW_INDEXES]
    if not plan or not head or not (no_indexes or all(_EXPERT_INDEX.match(x) for x in head)):
        raise AdviceError(f".expert's output is not its advice: {output.strip()[:200]!r}")
    return Advice(EXPERT, () if no_indexes else tuple(head), tuple(plan))


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
            if note is not None:  # both failed: say why for each
                return None, f"{note}, but {exc}"
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
