"""Steps of the wall clock, as the daemon sees them.

History windows, alert timers (`for`, `keep_firing_for`, no data, `repeat_every`, flapping)
and the state store count in wall-clock seconds: the time that JSONL lines and alert events
carry, and that survives a restart. The wall clock can step (NTP correcting a clock that was
wrong at boot, `date -s`, a VM restored from a snapshot); the monotonic clock never does.
Collector intervals run on the monotonic clock already (scheduling.py).

`WallClock.step()` compares the two: when the wall clock has moved by more than
STEP_THRESHOLD against the monotonic clock since the last look, that is a step, and the
pipeline moves every time it keeps by as much. So durations stay what they were: after a step
back of an hour, a window takes new readings (they would be older than its last one) and a
`for = "5m"` still fires after 5 minutes, not 65; after a step forward, a window keeps its
readings and "no data" is not declared for a gap that never was. Timestamps written out stay
honest: each is the wall clock's reading when it was taken.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

# NTP slews (adjtime, frequency) move CLOCK_REALTIME and CLOCK_MONOTONIC alike; only a step
# makes them part. A leap second inserted by stepping is 1 s: caught.
STEP_THRESHOLD = 0.5


class WallClock:
    """The wall clock, with the steps it took since the last `step()`."""

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._offset = wall() - monotonic()
        self._last_step: tuple[float, float] | None = None  # (monotonic when seen, step)

    def now(self) -> float:
        return self._wall()

    def step(self) -> float:
        """How far the wall clock stepped since the last call (0.0: it did not)."""
        mono = self._monotonic()
        offset = self._wall() - mono
        step = offset - self._offset
        if abs(step) < STEP_THRESHOLD:
            return 0.0
        self._offset = offset
        self._last_step = (mono, step)
        return step

    def current(self, ts: float, age: float) -> float:
        """`ts`, a wall-clock reading taken `age` seconds ago, in today's terms: a run that
        began before the last step was seen may have read the clock before the step, and
        then carries its time as it was: moved by the step when that puts it closer to now
        minus `age`."""
        if self._last_step is None:
            return ts
        seen, step = self._last_step
        if self._monotonic() - age > seen:
            return ts  # read after the step was seen
        expected = self._wall() - age
        return ts + step if abs(ts + step - expected) < abs(ts - expected) else ts
