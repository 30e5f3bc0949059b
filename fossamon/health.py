"""Is the daemon healthy? One policy for the systemd watchdog (and, later, /healthz).

Healthy means: the event loop is responsive (a timer due now fires now, not seconds late),
and every enabled collector has finished a run — successful or not — within
max(2 x its interval, the watchdog period, interval + jitter + its run limit + 1 s).

The last term is ours (the issue asked for the first two): a run may legitimately last as
long as its timeouts (an api timeout of 40 s on a 15 s interval while the target hangs), and
the overlapping runs are skipped; without it, a hung *target* would get the *monitor* killed
by the watchdog, again after every restart. A target that is down is a measurement, not ill
health; a collector whose runs stopped finishing within their own limits (wedged, starved)
is ill health.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fossamon.units import format_duration

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fossamon.scheduling import RunStats


RUN_SLACK = 1.0


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
        allowed = max(
            2 * run.interval, period, run.interval + run.jitter + run.run_limit + RUN_SLACK
        )
        since = run.last_end if run.last_end is not None else run.added_at
        quiet = now - since
        if quiet > allowed:
            reasons.append(
                f"{name}: no run finished for {format_duration(quiet)} "
                f"(allowed {format_duration(allowed)})"
            )
    return Health(not reasons, tuple(reasons))
