"""The daemon's process-level helpers: the shared tick grid, one malloc arena."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from fossamon.daemon import next_tick


class TestNextTick:
    @pytest.mark.parametrize(
        ("now", "tick", "expected"),
        [
            (100.25, 1.0, 101.0),
            (100.0, 1.0, 101.0),  # on a grid point: the next one, never the same instant
            (100.999999, 1.0, 101.0),
            (100.6, 0.5, 101.0),  # a watchdog's half-period tick shares the whole seconds
            (100.4, 0.5, 100.5),
        ],
    )
    def test_the_first_grid_point_after_now(self, now, tick, expected):
        assert next_tick(now, tick) == pytest.approx(expected)

    def test_two_loops_on_the_grid_wake_at_the_same_instants(self):
        """The heartbeat and the alert tick start at different moments and still meet."""
        beat, alerts = next_tick(1000.1, 1.0), next_tick(1000.73, 1.0)
        assert beat == alerts
        assert next_tick(beat, 1.0) == next_tick(alerts, 1.0) == beat + 1.0


def test_one_malloc_arena_is_accepted_by_glibc(need):
    need(platform.libc_ver()[0] == "glibc", "glibc (mallopt is glibc's)")
    code = "from fossamon.daemon import limit_malloc_arenas; print(limit_malloc_arenas())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.stdout.strip() == "True", done.stderr
