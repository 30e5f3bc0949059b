"""What `db optimize` prints: its plan, each step as it is done, before/after timings.

Lines for people as the work goes (a VACUUM of a large file takes a while); with `--json`,
one document at the end, whatever the outcome.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

from fossamon.tables import aligned
from fossamon.tools.db_render import timing_json
from fossamon.tools.db_whatif import quote_identifier
from fossamon.units import format_bytes, format_duration

if TYPE_CHECKING:
    from fossamon.tools.db_optimize import OptimizePlan
    from fossamon.tools.db_timing import QueryTiming

_COMMAND = "fossamon db optimize"


class OptimizeOutput:
    def __init__(self, *, as_json: bool) -> None:
        self._json = as_json
        self._document: dict[str, Any] = {"outcome": None, "message": None, "steps": []}
        self._timings: dict[str, list[QueryTiming]] = {}
        self.backup: str | None = None
        self.committed: list[str] | None = None
        """The names of the indexes created, once COMMIT succeeded; None while nothing is."""

    def plan(self, plan: OptimizePlan, *, dry_run: bool) -> None:
        self._document["database"] = plan.path
        self._document["dry_run"] = dry_run
        self._document["plan"] = {
            "backup_dir": str(plan.backup_dir),
            "indexes": [
                {
                    "sql": index.statement,
                    "table": index.key.table,
                    "columns": list(index.key.columns),
                    "reason": index.reason,
                }
                for index in plan.indexes
            ],
            "vacuum": plan.vacuum,
            "busy_timeout_seconds": plan.busy_timeout,
            "notes": list(plan.notes),
            "space": [
                {"purpose": n.purpose, "directory": n.directory, "bytes": n.bytes, "free": n.free}
                for n in plan.space
            ],
        }
        if self._json:
            return
        heading = "dry run, nothing will change" if dry_run else "plan"
        print(f"{_COMMAND}: {plan.path} ({format_bytes(plan.database_bytes)}), {heading}:")
        steps = [
            "time the configured queries (read-only)",
            f"take the write lock (waiting at most {format_duration(plan.busy_timeout)})",
            (
                f"back up into {plan.backup_dir} (SQLite's online backup), "
                "then PRAGMA integrity_check of the copy"
            ),
            "REINDEX",
            *(f"{index.statement}  -- {index.reason}" for index in plan.indexes),
            "ANALYZE",
            "COMMIT",
            *(["VACUUM"] if plan.vacuum else []),
            "time the configured queries again",
        ]
        print("\n".join(f"  {number}. {step}" for number, step in enumerate(steps, 1)))
        if not plan.indexes:
            print("  (no index to create: --apply or --advised name them)")
        for note in plan.notes:
            print(f"  note: {note}")
        for need in plan.space:
            print(
                f"  disk: {need.purpose} needs up to {format_bytes(need.bytes)} in "
                f"{need.directory} ({format_bytes(need.free)} free)"
            )

    def step(self, statement: str, started: float) -> None:
        seconds = time.perf_counter() - started
        self._document["steps"].append({"statement": statement, "seconds": seconds})
        if not self._json:
            print(f"  done: {statement} ({format_duration(seconds)})", flush=True)

    def timings(self, label: str, timings: list[QueryTiming]) -> None:
        self._timings[label] = timings
        self._document[label] = [timing_json(timing) for timing in timings]

    def refused(self, message: str) -> int:
        return self._end("refused", message, 1)

    def failed(self, message: str) -> int:
        return self._end("failed", message, 1)

    def finish(self, code: int) -> int:
        dry_run = self._document.get("dry_run", False)
        return self._end("dry run" if dry_run else "done", None, code)

    def _end(self, outcome: str, message: str | None, code: int) -> int:
        self._document["outcome"] = outcome
        self._document["message"] = message
        self._document["backup"] = self.backup
        self._document["created_indexes"] = self.committed
        if message is not None:
            print(f"{_COMMAND}: {outcome}: {message}", file=sys.stderr)
        if self._json:
            print(json.dumps(self._document, indent=2))
        elif outcome == "dry run":
            print("dry run: nothing was changed")
        elif outcome == "done":
            print(*self._comparison(), sep="\n")
        if self.backup and not self._json:
            print(*self._undo(), sep="\n")
        return code

    def _undo(self) -> list[str]:
        """How to take the changes back, if any were committed; the backup only as a last
        resort, since restoring it loses what the application wrote after it was taken."""
        lines = [f"backup: {self.backup}"]
        if self.committed is None:
            return [*lines, "nothing was committed: there is nothing to undo"]
        if self.committed:
            drops = " ".join(f"DROP INDEX {quote_identifier(name)};" for name in self.committed)
            lines.append(f"to undo: {drops}")
            lines.append(
                "  (the statistics ANALYZE wrote to sqlite_stat1 stay; REINDEX and VACUUM "
                "change no data)"
            )
        else:
            lines.append(
                "to undo: no index was created; REINDEX, ANALYZE and VACUUM change no data"
            )
        lines.append(
            "last resort only: restoring the backup (stop the application, copy it over "
            f"{self._document['database']}, delete the -wal and -shm files next to it) "
            "LOSES every write the application made since the backup was taken"
        )
        return lines

    def _comparison(self) -> list[str]:
        before, after = self._timings.get("before", []), self._timings.get("after", [])
        if not before:
            return ["no queries configured to time"]
        rows: list[tuple[str, ...]] = [
            ("query", "before", "after", "change", "scanned before", "after")
        ]
        for old, new in zip(before, after, strict=True):
            rows.append(
                (
                    old.name,
                    _median(old),
                    _median(new),
                    _change(old.median, new.median),
                    str(old.counters.fullscan_steps) if old.counters else "?",
                    str(new.counters.fullscan_steps) if new.counters else "?",
                )
            )
        return ["", *aligned(rows)]


def _median(timing: QueryTiming) -> str:
    if timing.median is None:
        return f"failed ({timing.error})"
    return format_duration(timing.median)


def _change(before: float | None, after: float | None) -> str:
    if before is None or after is None or before <= 0 or after <= 0:
        return "-"
    if after <= before:
        return f"{before / after:.1f}x faster"
    return f"{after / before:.1f}x slower"
