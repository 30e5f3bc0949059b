"""The figures of a load test, its verdict against the KPIs, the JSON report and the table.

Rates are the requests of the whole test over its wall time (the runbook's script averaged
per-scenario rates, overstating the real rate by 2x with two scenarios). Percentiles come
from the merged histogram of every response (any status); requests that got no response
have no latency and are counted as errors instead. A run in which every request failed
still has a report: its latencies are `null`, and its verdict fails.

Open model: requests that fell due but were never sent (every worker still busy when the
duration ended) count against success (`ok / (sent + unsent)`) and fail the verdict on their
own ("unsent" check): a target too slow to take the rate must not pass on the few requests
it did answer. They get no latency (none was measured; the requests sent after a stall carry
the queueing). A run stopped early (Ctrl-C) leaves its unsent requests out of both: the
operator, not the target, stopped them.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fossamon import __version__
from fossamon.redact import redact
from fossamon.tables import aligned
from fossamon.tools.loadtest_tally import Tally

if TYPE_CHECKING:
    from fossamon.tools.loadtest_histogram import Histogram
    from fossamon.tools.loadtest_plan import Kpi, Plan
    from fossamon.tools.loadtest_processes import RunResult

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    passed: bool
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "text": self.text}


def latency_ms(histogram: Histogram) -> dict[str, float | None]:
    def ms(micros: float | None) -> float | None:
        return None if micros is None else round(micros / 1000, 3)

    figures = {"min": ms(histogram.min if histogram.count else None), "mean": ms(histogram.mean())}
    figures |= {f"p{p}": ms(histogram.percentile(p)) for p in PERCENTILES}
    figures["max"] = ms(histogram.max if histogram.count else None)
    return figures


def summarize(tally: Tally, wall_seconds: float, unsent: int = 0) -> dict[str, Any]:
    """The figures of a tally; `unsent` (overall only) counts against success."""
    wall = max(wall_seconds, 1e-9)
    data = tally.to_json()
    latency = data.pop("latency")
    planned = tally.requests + unsent
    return {
        "requests": tally.requests,
        "ok": tally.ok,
        "responses": tally.responses,
        "errors": data["errors"],
        "error_messages": data["messages"],
        "statuses": data["statuses"],
        "bytes": tally.bytes,
        "rps": round(tally.requests / wall, 3),
        "ok_rps": round(tally.ok / wall, 3),
        "success_percent": (round(100 * tally.ok / planned, 4) if planned else None),
        "latency_ms": latency_ms(tally.latency),
        "latency_histogram_us": latency,
    }


def verdict(overall: dict[str, Any], kpi: Kpi) -> list[Check]:
    p95 = overall["latency_ms"]["p95"]
    limit_ms = kpi.max_p95 * 1000
    unsent = overall.get("unsent", 0)
    if p95 is None:
        p95_check = Check("p95", passed=False, text=f"p95 latency: no responses (< {limit_ms:g}ms)")
    else:
        text = f"p95 latency {p95:g}ms < {limit_ms:g}ms"
        responses, total = overall.get("responses"), overall.get("requests", 0) + unsent
        if responses is not None and responses < total:
            # failures without a response (and unsent requests) have no latency
            text += f" (covers the responses only: {responses:,} of {total:,} requests)"
        p95_check = Check("p95", p95 < limit_ms, text)
    rps = overall["rps"]
    success = overall["success_percent"]
    shown = "no requests" if success is None else f"{success:.2f}%"
    checks = [
        p95_check,
        Check("rps", rps >= kpi.min_rps, f"throughput {rps:,.1f} req/s >= {kpi.min_rps:g}"),
        Check(
            "success",
            success is not None and success >= kpi.min_success,
            f"success {shown} >= {kpi.min_success:g}%",
        ),
    ]
    if unsent:
        planned = overall.get("requests", 0) + unsent
        checks.append(
            Check("unsent", passed=False, text=f"{unsent:,} of {planned:,} planned requests unsent")
        )
    return checks


def build_report(plan: Plan, result: RunResult, started_at: str) -> dict[str, Any]:
    overall_tally = Tally()
    for tally in result.tallies:
        overall_tally.merge(tally)
    # stopped early (Ctrl-C): what was not sent is the operator's doing, not the target's
    unsent = 0 if result.stopped else result.unsent
    overall = summarize(overall_tally, result.wall_seconds, unsent)
    overall["unsent"] = unsent
    checks = verdict(overall, plan.kpi)
    endpoints = [
        {
            "name": ep.name,
            "method": ep.method,
            "url": redact(ep.url),
            "weight": ep.weight,
            **summarize(tally, result.wall_seconds),
        }
        for ep, tally in zip(plan.endpoints, result.tallies, strict=True)
    ]
    return {
        "tool": "fossamon loadtest",
        "version": __version__,
        "host": platform.node(),
        "started_at": started_at,
        "source": plan.source,
        "engine": plan.engine,
        "loop": result.loop,
        "model": "open" if plan.rate else "closed",
        "rate": plan.rate,
        "concurrency": result.workers,
        "processes": result.processes,
        "duration_seconds": plan.duration,
        "requests_planned": plan.requests,
        "wall_seconds": round(result.wall_seconds, 6),
        "stopped_early": result.stopped,
        "unsent": result.unsent,
        "client_cpu_seconds": round(result.cpu_seconds, 4),
        "client_cpu_seconds_per_1000": (
            round(result.cpu_seconds / overall_tally.requests * 1000, 5)
            if overall_tally.requests
            else None
        ),
        "overall": overall,
        "endpoints": endpoints,
        "kpi": {
            "max_p95_ms": plan.kpi.max_p95 * 1000,
            "min_rps": plan.kpi.min_rps,
            "min_success_percent": plan.kpi.min_success,
        },
        "verdict": {
            "passed": all(c.passed for c in checks),
            "checks": [c.to_json() for c in checks],
        },
    }


def render(report: dict[str, Any]) -> str:
    """The report for people: one row per endpoint and the total, then codes, errors, KPIs."""
    lines = [_headline(report), ""]
    header = ("endpoint", "requests", "ok", "errors", "req/s", "min", "p50", "p90", "p95")
    rows = [(*header, "p99", "max")]
    named = [(e["name"], e) for e in report["endpoints"]]
    for name, figures in [*named, ("all", report["overall"])]:
        latency = figures["latency_ms"]
        rows.append(
            (
                name,
                f"{figures['requests']:,}",
                f"{figures['ok']:,}",
                f"{sum(figures['errors'].values()):,}",
                f"{figures['rps']:,.1f}",
                *(_ms(latency[key]) for key in ("min", "p50", "p90", "p95", "p99", "max")),
            )
        )
    lines.extend(aligned(rows))
    overall = report["overall"]
    codes = ", ".join(f"{code} x {n:,}" for code, n in overall["statuses"].items())
    lines.append("")
    lines.append(f"status codes: {codes or 'none (no response at all)'}")
    for kind, n in overall["errors"].items():
        lines.append(f"errors: {kind} x {n:,} (first: {overall['error_messages'][kind]})")
    if report["stopped_early"]:
        lines.append("stopped early (interrupted): the figures cover what was sent")
        if report["unsent"]:
            lines.append(f"unsent: {report['unsent']:,} requests (stopped before they were sent)")
    elif report["unsent"] and report["model"] == "open":
        lines.append(
            f"unsent: {report['unsent']:,} requests fell due but every worker was still busy "
            "(the target did not keep up with --rate; raise --concurrency to send them); "
            "they count as failed: success and the verdict include them"
        )
    elif report["unsent"]:
        lines.append(f"unsent: {report['unsent']:,} requests; success and the verdict include them")
    lines.append("")
    lines.append("KPIs:")
    lines.extend(
        f"  {'PASS' if c['passed'] else 'FAIL'}  {c['text']}" for c in report["verdict"]["checks"]
    )
    lines.append(f"verdict: {'PASS' if report['verdict']['passed'] else 'FAIL'}")
    return "\n".join(lines)


def _headline(report: dict[str, Any]) -> str:
    model = (
        f"open model at {report['rate']:g} req/s (up to {report['concurrency']} in flight)"
        if report["model"] == "open"
        else f"concurrency {report['concurrency']}"
    )
    processes = report["processes"]
    return (
        f"fossamon loadtest: {len(report['endpoints'])} endpoint(s), {model}, "
        f"{processes} process{'es' if processes > 1 else ''}, {report['engine']} engine "
        f"({report['loop']}), {report['wall_seconds']:.2f}s wall, "
        f"{report['client_cpu_seconds']:.2f}s client CPU"
    )


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f}ms"
    if value < 1000:
        return f"{value:.1f}ms"
    return f"{value / 1000:.2f}s"
