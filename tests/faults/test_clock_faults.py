"""Fault matrix, process row "wall clock stepped forwards and backwards": a real `fossamon run`
whose wall clock (CLOCK_REALTIME, through an LD_PRELOAD shim: wallclock_shift.c) steps an
hour forwards, then two hours back while an alert is pending, then an hour forwards while it
fires; the machine's clock is never touched, and CLOCK_MONOTONIC never moves.

Asserted: the collectors keep their cadence (intervals are monotonic); every JSONL line's
time is the wall clock's at the run, so the steps show in the file as what they were and
nothing else moves; the `for` of a rule pending across the step back still holds for its 3
seconds (neither at once nor two hours later); a step forwards declares no "no data"; the
window takes new readings after a step back (the alert resolves when the fault ends); each
step is logged once; nothing is lost."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from daemon_harness import start_daemon
from faults_support import INTERVAL, alert_events, assert_nothing_lost, errors_of, runs, ts
from support import daemon_head

from fossamon.demo.target import DemoTarget

FOR = 3.0  # the api_down rule's `for`
HOUR = 3600.0
SHIM_SOURCE = Path(__file__).with_name("wallclock_shift.c")


@pytest.fixture(scope="session")
def wallclock_shim(tmp_path_factory: pytest.TempPathFactory, need) -> Path:
    need(shutil.which("gcc") is not None, "gcc (builds the wall-clock shim)")
    shim = tmp_path_factory.mktemp("shim") / "wallclock_shift.so"
    flags = ["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror"]
    subprocess.run(
        ["gcc", *flags, "-o", str(shim), str(SHIM_SOURCE), "-ldl"], check=True, timeout=60
    )
    return shim


@pytest.fixture
async def target(small_demo_db):
    async with DemoTarget(small_demo_db) as running:
        yield running


def config_text(tmp_path: Path, url: str) -> str:
    return (
        daemon_head(tmp_path)
        + f'[collectors.system]\ninterval = "{INTERVAL}s"\n'
        + f'[collectors.api]\ninterval = "{INTERVAL}s"\ntimeout = "0.4s"\nbase_url = "{url}"\n'
        + '[[collectors.api.endpoints]]\nname = "healthy"\npath = "/api/health"\n'
        + '[[collectors.api.endpoints]]\nname = "broken"\npath = "/api/dispensers?limit=5"\n'
        + f'[[rules]]\nname = "api_down"\nmetric = "api_up"\ndirection = "below"\n'
        f'critical = 1\nfor = "{FOR}s"\n'
        # a rule on the host's series, whose data a step forwards must not call missing
         + '[[rules]]\nname = "cpu_hot"\nmetric = "system_cpu_percent"\nwarning = 101\n'
    )


class Shift:
    """The shim's file: how far the daemon's wall clock is from the machine's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.set(0.0)

    def set(self, seconds: float) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{seconds}\n")
        tmp.replace(self.path)  # the shim never reads half a number


async def test_wall_clock_steps(tmp_path, target, notify, wallclock_shim):
    shift = Shift(tmp_path / "shift")
    config = tmp_path / "config.toml"
    config.write_text(config_text(tmp_path, target.url))
    daemon = await start_daemon(
        config,
        tmp_path,
        {
            "NOTIFY_SOCKET": str(notify.path),
            "LD_PRELOAD": str(wallclock_shim),
            "WALLCLOCK_SHIFT_FILE": str(shift.path),
        },
    )

    async def next_runs(count: int) -> None:
        seen = len(runs(daemon, "api"))
        await daemon.wait_for(
            lambda: len(runs(daemon, "api")) >= seen + count, what=f"{count} api runs more"
        )

    began = time.monotonic()
    await next_runs(3)
    shift.set(HOUR)  # step A: an hour forwards
    await next_runs(6)
    assert daemon.lines(daemon.alerts) == []  # no "no data", nothing fired by the step
    target.faults.set("/api/dispensers", status=500, error_rate=1)
    failing = await daemon.wait_for(
        lambda: [line for line in runs(daemon, "api") if "status" in errors_of(line, "broken")],
        what="the broken endpoint failing",
    )
    fault_seen = time.monotonic()
    assert ts(failing[0]) > time.time() + HOUR - 5  # honest: the shifted clock's time
    shift.set(-HOUR)  # step B: two hours back, while api_down is pending
    await daemon.wait_for(
        lambda: "firing" in alert_events(daemon, "api_down", endpoint="broken"),
        timeout=FOR + 10,
        what="api_down firing after its `for`",
    )
    fired_after = time.monotonic() - fault_seen
    # `for` held across the step: not at once, not two hours later
    assert FOR - 2 * INTERVAL <= fired_after <= FOR + 4 * INTERVAL, fired_after
    shift.set(0.0)  # step C: an hour forwards, while it fires
    await next_runs(6)
    assert alert_events(daemon, "api_down", endpoint="broken") == ["firing"]
    target.faults.clear()
    await daemon.wait_for(
        lambda: "resolved" in alert_events(daemon, "api_down", endpoint="broken"),
        what="api_down resolved once the fault ended",
    )
    await next_runs(3)
    elapsed = time.monotonic() - began
    rc, took = await daemon.stop()
    log = daemon.stderr.decode()
    assert (rc, "Traceback" in log) == (0, False), log[-2000:]
    assert took < 5

    # the steps, as logged: once each
    steps = [line for line in log.splitlines() if "the wall clock stepped" in line]
    assert len(steps) == 3, steps
    for line, step in zip(steps, ("+3600", "-7200", "+3600"), strict=True):
        assert f"step={step}." in line, line

    # every alert event: exactly the broken endpoint's firing and resolved
    assert [(a["rule"], a["labels"], a["event"]) for a in daemon.lines(daemon.alerts)] == [
        ("api_down", {"endpoint": "broken"}, "firing"),
        ("api_down", {"endpoint": "broken"}, "resolved"),
    ]

    # cadence and honest times: within a stretch between two steps, runs an interval apart;
    # across a step, the time moves by the step (and an interval), nothing else does
    for collector in ("system", "api"):
        lines = runs(daemon, collector)
        assert len(lines) >= 0.8 * elapsed / INTERVAL, (collector, len(lines), elapsed)
        gaps = [ts(b) - ts(a) for a, b in itertools.pairwise(lines)]
        jumps = [gap for gap in gaps if abs(gap) > HOUR / 2]
        assert len(jumps) == 3, (collector, jumps)
        for jump, step in zip(jumps, (HOUR, -2 * HOUR, HOUR), strict=True):
            assert abs(jump - step) <= 3 * INTERVAL, (collector, jump, step)
        steady = [gap for gap in gaps if abs(gap) <= HOUR / 2]
        assert max(steady) <= 3 * INTERVAL, (collector, max(steady))
        assert min(steady) > 0, (collector, min(steady))
    for line in runs(daemon, "api"):
        assert errors_of(line, "healthy") == [], line
    assert_nothing_lost(daemon)
