"""Is the daemon healthy? One policy for the systemd watchdog (and, later, /healthz).

Healthy means: the event loop is responsive (a timer due now fires now, not seconds late),
and every enabled collector has finished a run — successful or not — within
max(2 x its interval, the watchdog period). A target that is down is a measurement, not
ill health; a collector that stopped finishing runs (wedged, or starved) is ill health.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fossamon.units import format_duration

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fossamon.scheduling import RunStats


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    reasons: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "healthy" if self.ok else "; ".join(self.reasons)


def assess(
    stats: Mapping[str, RunStats],
    now: float,
    loop_lag: float,
    *,
    period: float,
    lag_limit: float,
) -> Health:
    """`now` is time.monotonic(); `period` the watchdog period (or the check cadence)."""
    reasons: list[str] = []
    if loop_lag > lag_limit:
        reasons.append(f"event loop lagging {format_duration(loop_lag)}")
    for name, run in sorted(stats.items()):
        allowed = max(2 * run.interval, period)
        since = run.last_end if run.last_end is not None else run.added_at
        quiet = now - since
        if quiet > allowed:
            reasons.append(
                f"{name}: no run finished for {format_duration(quiet)} "
                f"(allowed {format_duration(allowed)})"
            )
    return Health(not reasons, tuple(reasons))
