"""Steps of the wall clock, as the daemon sees them.

History windows, alert timers (`for`, `keep_firing_for`, no data, `repeat_every`, flapping)
and the state store count in wall-clock seconds: the time that JSONL lines and alert events
carry, and that survives a restart. The wall clock can step (NTP correcting a clock that was
wrong at boot, `date -s`, a VM restored from a snapshot); CLOCK_BOOTTIME never does (it is
CLOCK_MONOTONIC plus the time suspended, so a resume is no step). Collector intervals run on
the monotonic clock already (scheduling.py).

`WallClock.sync()` compares the two: when the wall clock has moved by more than
STEP_THRESHOLD against the boot clock since the last look, that is a step, and the pipeline
moves every time it keeps by as much. So durations stay what they were: after a step back of
an hour, a window takes new readings (they would be older than its last one) and a
`for = "5m"` still fires after 5 minutes, not 65; after a step forwards, a window keeps its
readings and "no data" is not declared for a gap that never was. Each JSONL line keeps the
time its run read; an alert event carries times in today's terms (an episode that began
before a step shows its start moved by the step, so its duration stays true).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

# NTP slews (adjtime, frequency) move CLOCK_REALTIME and CLOCK_BOOTTIME alike; only a step
# makes them part. A leap second inserted by stepping is 1 s: caught.
STEP_THRESHOLD = 0.5
# A wall reading and the boot-clock readings around it must be this close, or the thread was
# descheduled in between and the pair would look like a step: read again (at most 3 times).
PAIRED_WITHIN = 0.005


def boot_clock() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class WallClock:
    """The wall clock, with the steps it took since the last `sync()`."""

    def __init__(
        self, wall: Callable[[], float] = time.time, steady: Callable[[], float] = boot_clock
    ) -> None:
        self._wall = wall
        self._steady = steady
        wall_now, steady_now = self._read()
        self._offset = wall_now - steady_now
        self._last_step: tuple[float, float] | None = None  # (steady when seen, step)

    def _read(self) -> tuple[float, float]:
        """(wall, steady) read as nearly together as the scheduler lets us."""
        for _ in range(3):
            before = self._steady()
            wall = self._wall()
            after = self._steady()
            if after - before <= PAIRED_WITHIN:
                break
        return wall, (before + after) / 2

    def sync(self) -> tuple[float, float]:
        """(how far the wall clock stepped since the last call, 0.0 if it did not; the wall
        clock's reading that goes with it)."""
        wall, steady = self._read()
        step = wall - steady - self._offset
        if abs(step) < STEP_THRESHOLD:
            return 0.0, wall
        self._offset = wall - steady
        self._last_step = (steady, step)
        return step, wall

    def current(self, ts: float, age: float) -> float:
        """`ts`, a wall-clock reading taken `age` seconds ago, in today's terms: a run that
        began before the last step was seen may have read the clock before the step, and
        then carries its time as it was: moved by the step when that puts it closer to now
        minus `age`."""
        if self._last_step is None:
            return ts
        seen, step = self._last_step
        if self._steady() - age > seen:
            return ts  # read after the step was seen
        expected = self._wall() - age
        return ts + step if abs(ts + step - expected) < abs(ts - expected) else ts
