"""What `fossamon bench` prints: an aligned table for people, a JSON document for programs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fossamon.tables import aligned
from fossamon.tools.bench_stats import (
    Comparison,
    Summary,
    Verdict,
    compare,
    fails_gate,
    summarize,
)
from fossamon.units import format_duration

if TYPE_CHECKING:
    from pathlib import Path

    from fossamon.tools.bench_baseline import Baseline
    from fossamon.tools.bench_measure import ItemRun


@dataclass(frozen=True, slots=True)
class Row:
    """One item of the run, or one item only the baseline has (then `item` is None)."""

    key: str
    item: ItemRun | None
    summary: Summary | None
    comparison: Comparison | None


@dataclass(frozen=True, slots=True)
class BenchResult:
    host: str
    started: str
    repeat: int
    warmup: int
    rows: list[Row]
    baseline: Baseline | None
    fail_over: float | None
    saved: Path | None = None

    @property
    def gate_failures(self) -> list[Row]:
        if self.fail_over is None:
            return []
        limit = self.fail_over
        return [r for r in self.rows if r.comparison and fails_gate(r.comparison, limit)]

    @property
    def failed(self) -> list[Row]:
        """Items of this run with a round that failed."""
        return [r for r in self.rows if r.item is not None and r.item.failures]


def build_rows(items: list[ItemRun], baseline: Baseline | None, min_change: float) -> list[Row]:
    rows: list[Row] = []
    for item in items:
        summary = summarize(item.samples)
        comparison = None
        if baseline is not None:
            old = baseline.items.get(item.key)
            if old is None:
                comparison = Comparison(Verdict.NEW, None, summary)
            elif old.definition != item.definition:
                comparison = Comparison(Verdict.REDEFINED, summarize(old.samples), summary)
            else:
                comparison = compare(summarize(old.samples), summary, min_change)
        rows.append(Row(item.key, item, summary, comparison))
    if baseline is not None:
        timed = {item.key for item in items}
        rows += [
            Row(key, None, None, Comparison(Verdict.GONE, summarize(old.samples), None))
            for key, old in baseline.items.items()
            if key not in timed
        ]
    return rows


def _d(value: float | None) -> str:
    return "-" if value is None else format_duration(value)


def _pct(value: float | None, sign: str = "+") -> str:
    return "-" if value is None else f"{value:{sign}.1f}%"


def render_text(result: BenchResult) -> str:
    timed = [r for r in result.rows if r.item is not None]
    lines = [
        (
            f"fossamon bench on {result.host} at {result.started}: {result.repeat} rounds of "
            f"{len(timed)} item(s), one at a time ({result.warmup} warm-up round(s) discarded)"
        ),
        "",
    ]
    table: list[tuple[str, ...]] = [
        ("ITEM", "MEDIAN", "MIN", "MAX", "IQR", "STDEV", "TIMED", "FAILED")
    ]
    for row in timed:
        s = row.summary
        figures = (
            ("-",) * 5
            if s is None
            else tuple(_d(v) for v in (s.median, s.minimum, s.maximum, s.iqr, s.stdev))
        )
        failures = len(row.item.failures) if row.item else 0
        table.append((row.key, *figures, str(s.count if s else 0), str(failures)))
    lines += aligned(table)
    for row in timed:
        if row.item is not None and row.item.failures:
            lines.append(f"  {row.key}: {row.item.failures[-1]}")
    if result.baseline is not None:
        lines += ["", *_comparison_lines(result, result.baseline)]
    if result.saved is not None:
        lines += ["", f"baseline saved to {result.saved}"]
    return "\n".join(lines)


def _comparison_lines(result: BenchResult, baseline: Baseline) -> list[str]:
    lines = [
        (
            f"compared with the baseline of {baseline.created} on {baseline.host} "
            f"({baseline.repeat} rounds, {baseline.path}); noise = the two runs' IQRs "
            "added, at least --min-change of the baseline median"
        ),
    ]
    table: list[tuple[str, ...]] = [("ITEM", "BASELINE", "NOW", "CHANGE", "NOISE", "VERDICT")]
    counts: dict[Verdict, int] = {}
    for row in result.rows:
        c = row.comparison
        if c is None:
            continue
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
        table.append(
            (
                row.key,
                _d(None if c.baseline is None else c.baseline.median),
                _d(None if c.current is None else c.current.median),
                _pct(c.change_percent),
                "±" + _pct(c.noise_percent, "") if c.noise_percent is not None else "-",
                str(c.verdict),
            )
        )
    lines += aligned(table)
    lines.append(", ".join(f"{n} {v.lower()}" for v, n in sorted(counts.items())))
    if result.fail_over is not None:
        failing = result.gate_failures
        verdict = "FAIL" if failing else "pass"
        detail = ", ".join(f"{r.key} {_why(r)}" for r in failing)
        lines.append(
            f"--fail-over {result.fail_over:.10g}%: {verdict}" + (f" ({detail})" if detail else "")
        )
    return lines


def _why(row: Row) -> str:
    c = row.comparison
    if c is None or c.verdict is Verdict.FAILED:
        return "could not be timed"
    return _pct(c.change_percent)


def render_json(result: BenchResult) -> str:
    doc: dict[str, Any] = {
        "v": 1,
        "host": result.host,
        "started": result.started,
        "repeat": result.repeat,
        "warmup": result.warmup,
        "items": [
            {
                "key": row.key,
                "kind": row.item.kind,
                "name": row.item.name,
                "definition": row.item.definition,
                "summary": None if row.summary is None else row.summary.to_json(),
                "samples": row.item.samples,
                "failures": row.item.failures,
            }
            for row in result.rows
            if row.item is not None
        ],
        "baseline": None,
        "comparison": None,
        "gate": None,
        "saved_baseline": None if result.saved is None else str(result.saved),
    }
    if result.baseline is not None:
        b = result.baseline
        doc["baseline"] = {"path": str(b.path), "created": b.created, "host": b.host}
        doc["baseline"]["repeat"] = b.repeat
        doc["comparison"] = [
            {"key": row.key, **row.comparison.to_json()}
            for row in result.rows
            if row.comparison is not None
        ]
    if result.fail_over is not None:
        doc["gate"] = {
            "fail_over_percent": result.fail_over,
            "failed": [row.key for row in result.gate_failures],
        }
    return json.dumps(doc, indent=2, allow_nan=False)
