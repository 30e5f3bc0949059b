"""The daemon object in this process: reload edge cases that need a hand on its insides."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time

import pytest

from fossamon import daemon as daemon_module
from fossamon.config import load_config
from fossamon.daemon import Daemon
from fossamon.systemd import Notifier


def write_config(path, tmp_path, *, interval="500ms", per_cpu=False, metrics="m.jsonl", rules=""):
    path.write_text(
        f'[daemon]\nruntime_dir = "{tmp_path}/run"\nstate_dir = "{tmp_path}/state"\n'
        'shutdown_grace = "1s"\n'
        f'[output.metrics]\npath = "{tmp_path}/{metrics}"\n'
        f'[output.alerts]\npath = "{tmp_path}/a.jsonl"\n'
        '[exporter]\nlisten = ""\n'
        f'[collectors.system]\ninterval = "{interval}"\nper_cpu = {str(per_cpu).lower()}\n' + rules
    )
    return path


async def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.05)


@pytest.fixture
async def running(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    started: list[tuple[Daemon, asyncio.Task[int]]] = []

    async def start(config_path):
        daemon = Daemon(load_config(config_path), str(config_path), notifier=Notifier())
        task = asyncio.create_task(daemon.run())
        started.append((daemon, task))
        await wait_for(lambda: daemon.ready, what="ready")
        return daemon

    yield start
    for daemon, task in started:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 10) == 0


class TestReloadIsAllOrNothing:
    async def test_a_collector_that_cannot_be_built_leaves_everything_as_it_was(
        self, tmp_path, running, monkeypatch
    ):
        config = write_config(tmp_path / "c.toml", tmp_path)
        daemon = await running(config)
        before = daemon.config
        write_config(config, tmp_path, interval="2s", metrics="other.jsonl")

        def broken(name):
            def build(section):
                raise UnicodeEncodeError("utf-8", "x", 0, 1, "surrogates not allowed")

            return build

        monkeypatch.setattr(daemon_module, "collector_class", broken)
        assert await daemon.reload() is False
        assert daemon.config is before
        assert daemon.metrics_out.path == tmp_path / "m.jsonl"
        assert daemon.scheduler.stats["system"].interval == 0.5
        assert daemon.last_reload_error is not None
        assert daemon.last_reload_error.startswith("UnicodeEncodeError")
        assert "reload failed" in daemon.status_line()
        monkeypatch.undo()
        assert await daemon.reload() is True
        assert daemon.scheduler.stats["system"].interval == 2.0
        assert daemon.metrics_out.path == tmp_path / "other.jsonl"

    async def test_turning_per_cpu_off_resolves_per_core_alerts(self, tmp_path, running):
        rules = (
            '[[rules]]\nname = "core_busy"\nmetric = "system_cpu_core_percent"\n'
            "warning = -1\n"  # every reading breaches: each core fires
        )
        config = write_config(tmp_path / "c.toml", tmp_path, per_cpu=True, rules=rules)
        daemon = await running(config)
        await wait_for(daemon.evaluator.firing, what="per-core alerts")
        write_config(config, tmp_path, per_cpu=False, rules=rules)
        assert await daemon.reload() is True
        assert daemon.evaluator.firing() == []
        await daemon.alerts_out.flush()
        events = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
        resolved = [e for e in events if e["event"] == "resolved"]
        assert resolved
        assert all(e["summary"].endswith("(no longer collected)") for e in resolved)
        assert "no alerts" in daemon.status_line()


class TestRunnerExit:
    def test_a_thread_stuck_in_the_kernel_cannot_hold_the_exit(self):
        script = textwrap.dedent(
            """
            import asyncio, time
            from fossamon.runner import run_bounded

            async def main():
                stuck = asyncio.create_task(asyncio.to_thread(time.sleep, 30))
                await asyncio.sleep(0.1)
                stuck.cancel()
                return 0

            run_bounded(main())
            """
        )
        began = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, timeout=60, check=False
        )
        assert done.returncode == 0
        assert time.monotonic() - began < 5
        assert b"worker threads still blocked after the stop" in done.stdout + done.stderr


class RecordingNotifier(Notifier):
    """The real Notifier's logic with the datagrams kept instead of sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[float, str]] = []

    def notify(self, state: str) -> bool:
        self.sent.append((time.monotonic(), state))
        return True


class TestWatchdogPolicy:
    async def test_a_wedged_collector_stops_the_pings_and_says_why(self, tmp_path, monkeypatch):
        from structlog.testing import capture_logs

        from fossamon.testing import ScriptedCollector

        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
        monkeypatch.setenv("WATCHDOG_USEC", "1000000")
        # a run that outlives its own limit by far: wedged, not just slow
        wedged = ScriptedCollector("wedged", [[]], interval=0.2, delay=60, run_limit=0.1)
        monkeypatch.setattr(daemon_module, "build_collectors", lambda _: [wedged])
        config = write_config(tmp_path / "c.toml", tmp_path)
        notifier = RecordingNotifier()
        daemon = Daemon(load_config(config), str(config), notifier=notifier)
        with capture_logs() as logs:
            task = asyncio.create_task(daemon.run())
            await asyncio.sleep(3.0)
            daemon.request_stop()
            assert await asyncio.wait_for(task, 10) == 0
        pings = [t for t, m in notifier.sent if m == "WATCHDOG=1"]
        # healthy for max(2 x 0.2, 1, 0.2 + 0.1 + 1) = 1.3 s, then silent
        assert 1 <= len(pings) <= 3
        assert pings[-1] - pings[0] < 1.5
        (unhealthy,) = [e for e in logs if e["event"] == "unhealthy; not pinging the watchdog"]
        assert unhealthy["reasons"].startswith("wedged: no run finished for ")
        assert not daemon.health.ok
        statuses = [m for _, m in notifier.sent if m.startswith("STATUS=")]
        assert statuses == [] or "unhealthy" in statuses[-1]
        # the start-up (never READY: the collector never ran) is extended only while healthy
        extensions = [t for t, m in notifier.sent if m.startswith("EXTEND_TIMEOUT_USEC")]
        assert extensions
        assert max(extensions) - notifier.sent[0][0] < 1.6
