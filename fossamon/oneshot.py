"""`fossamon once`: one run of every collector and every rule, printed instead of kept.

The same collectors and evaluator as the daemon; stdout is the only sink. `for` durations are
not waited out (there is only one cycle), so the verdict is "what would fire on this value".
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fossamon.collectors.base import build_collectors
from fossamon.collectors.system import SystemCollector
from fossamon.model import Batch, Severity, format_series, iso_ts
from fossamon.rules.evaluator import Evaluator
from fossamon.rules.windows import History
from fossamon.storage.jsonl import finite_json
from fossamon.tables import aligned
from fossamon.units import format_value

if TYPE_CHECKING:
    from fossamon.collectors.base import Collector
    from fossamon.config import Config
    from fossamon.model import Labels

# CPU % is a delta between two readings; over a shorter span it is mostly noise.
CPU_WINDOW = 0.25


@dataclass(frozen=True, slots=True)
class Verdict:
    rule: str
    metric: str
    labels: Labels
    severity: Severity
    value: float | None
    threshold: float | None


@dataclass(frozen=True, slots=True)
class OnceResult:
    host: str
    batches: list[Batch]
    verdicts: list[Verdict]
    wall: float

    @property
    def worst(self) -> Severity:
        return max((v.severity for v in self.verdicts), default=Severity.OK)


async def run_once(config: Config) -> OnceResult:
    started = time.perf_counter()
    collectors = build_collectors(config.collectors)
    try:
        batches = await _collect_all(collectors)
    finally:
        for collector in collectors:
            await collector.close()
    evaluator = Evaluator(config.rules, honor_for=False)
    history = History(evaluator.retention())
    for batch in batches:
        history.add_batch(batch)
    evaluator.evaluate(time.time(), history)
    metric_of = {rule.name: rule.config.metric for rule in evaluator.rules}
    verdicts = [
        Verdict(rule, metric_of[rule], labels, state.severity, state.value, state.threshold)
        for rule, labels, state in evaluator.firing()
    ]
    return OnceResult(config.host(), batches, verdicts, time.perf_counter() - started)


async def _collect_all(collectors: list[Collector]) -> list[Batch]:
    systems = [c for c in collectors if isinstance(c, SystemCollector)]
    others = [c for c in collectors if not isinstance(c, SystemCollector)]
    batches = list(await asyncio.gather(*(c.collect() for c in others)))
    if systems:
        # CPU % is a delta between two readings: take them around a quiet moment after the
        # other probes, so the figure is the host's load, not this command's own work.
        for system in systems:
            system.restart_cpu_window()
        await asyncio.sleep(CPU_WINDOW)
        batches[:0] = [await system.collect() for system in systems]
    return batches


def result_json(result: OnceResult) -> dict[str, Any]:
    return {
        "v": 1,
        "host": result.host,
        "wall_ms": round(result.wall * 1000, 3),
        "batches": [batch.to_json(result.host) for batch in result.batches],
        "alerts": [
            {
                "rule": v.rule,
                "metric": v.metric,
                "labels": dict(v.labels),
                "severity": v.severity.label,
                "value": v.value,
                "threshold": v.threshold,
            }
            for v in result.verdicts
        ],
        "worst": result.worst.label,
    }


def render_json(result: OnceResult) -> str:
    return json.dumps(finite_json(result_json(result)), indent=2, allow_nan=False)


def render_table(result: OnceResult) -> str:
    rows: list[tuple[str, ...]] = [("COLLECTOR", "SERIES", "VALUE")]
    for batch in result.batches:
        rows.extend(
            (batch.collector, format_series(s.name, s.labels), format_value(s.name, s.value))
            for s in batch.samples
        )
    lines = aligned(rows)
    errors: list[tuple[str, ...]] = [
        (batch.collector, e.target, str(e.kind), e.message)
        for batch in result.batches
        for e in batch.errors
    ]
    if errors:
        lines += ["", *aligned([("COLLECTOR", "TARGET", "ERROR", "MESSAGE"), *errors])]
    if result.verdicts:
        alert_rows: list[tuple[str, ...]] = [("SEVERITY", "RULE", "SERIES", "VALUE", "THRESHOLD")]
        alert_rows.extend(
            (
                v.severity.label.upper(),
                v.rule,
                format_series(v.metric, v.labels),
                "n/a" if v.value is None else format_value(v.metric, v.value),
                "" if v.threshold is None else format_value(v.metric, v.threshold),
            )
            for v in result.verdicts
        )
        lines += ["", *aligned(alert_rows)]
    else:
        lines += ["", "no rule is breached"]
    durations = ", ".join(f"{b.collector} {b.duration * 1000:.1f} ms" for b in result.batches)
    lines.append(f"{result.host} at {iso_ts(time.time())}: {durations}")
    return "\n".join(lines)
