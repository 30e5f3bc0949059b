"""What a real `fossamon run` tells systemd, read off a real AF_UNIX datagram socket.

The same conversation is then proven against a real systemd in tests/e2e/.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import sys
import time

import pytest
from daemon_harness import make_big_db, start_daemon

from fossamon.control import read_state


def system_only(tmp_path, *, interval="500ms", extra=""):
    path = tmp_path / "config.toml"
    path.write_text(
        f'[daemon]\nlog_format = "plain"\nruntime_dir = "{tmp_path}/run"\n'
        f'state_dir = "{tmp_path}/state"\nshutdown_grace = "1s"\n'
        f'[output.metrics]\npath = "{tmp_path}/out/metrics.jsonl"\n'
        f'[output.alerts]\npath = "{tmp_path}/out/alerts.jsonl"\n'
        '[exporter]\nlisten = ""\n'
        f'[collectors.system]\ninterval = "{interval}"\n' + extra
    )
    return path


def shape(messages: list[str]) -> list[str]:
    """Each datagram as its keys (STATUS= text dropped), repeated STATUS-only ones folded."""
    out: list[str] = []
    for message in messages:
        keys = ",".join(line.split("=", 1)[0] for line in message.split("\n"))
        if keys == "STATUS" and out and out[-1] == "STATUS...":
            continue
        out.append("STATUS..." if keys == "STATUS" else keys)
    return out


async def until(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        await asyncio.sleep(0.05)
    pytest.fail(f"{what} not reached within {timeout}s")


async def fossamon_reload(config) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fossamon",
        "reload",
        "-c",
        str(config),
        "--timeout",
        "20s",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


class TestConversation:
    async def test_exact_sequence_for_start_cycles_reloads_and_stop(self, tmp_path, notify):
        config = system_only(tmp_path)
        daemon = await start_daemon(config, tmp_path, {"NOTIFY_SOCKET": str(notify.path)})
        await until(lambda: len(notify.drain()) >= 3, what="ready and two cycles")
        config.write_text(config.read_text().replace('"500ms"', '"400ms"'))
        rc, out = await fossamon_reload(config)
        assert (rc, out) == (0, "fossamon reload: reloaded (generation 2)\n")
        await until(lambda: len(notify.drain()) >= 6, what="cycles after the reload")
        config.write_text(config.read_text().replace("interval", "intervall"))
        rc, out = await fossamon_reload(config)
        assert rc == 1
        assert out.startswith("fossamon reload: reload rejected: 1 problem(s), first: ")
        assert 'collectors.system.intervall: unknown key (did you mean "interval"?)' in out
        await asyncio.sleep(0.6)
        rc, _ = await daemon.stop()
        assert rc == 0
        messages = notify.drain()
        assert shape(messages) == [
            "READY,STATUS",
            "STATUS...",
            "RELOADING,MONOTONIC_USEC",
            "READY,STATUS",
            "STATUS...",
            "RELOADING,MONOTONIC_USEC",
            "READY,STATUS",
            "STATUS...",
            "STOPPING,STATUS",
        ]
        ready = [m for m in messages if m.startswith("READY=1")]
        assert re.fullmatch(
            r"READY=1\nSTATUS=1/1 collectors ok · no alerts · last run system \d+ ms", ready[0]
        )
        assert "reload failed: 1 problem(s)" in ready[2]
        assert messages[-1] == "STOPPING=1\nSTATUS=stopping"
        monotonic = int(next(m for m in messages if m.startswith("RELOADING")).split("=")[-1])
        assert monotonic > 0
        # the state file is gone with the daemon
        assert read_state(tmp_path / "run") is None

    async def test_reload_without_a_daemon_exits_3(self, tmp_path):
        config = system_only(tmp_path)
        rc, out = await fossamon_reload(config)
        assert rc == 3
        assert "no running daemon" in out


async def first_ping(daemon, notify) -> float:
    """When the first WATCHDOG=1 arrived (the daemon is up): cadence is measured from here."""
    await daemon.wait_for(
        lambda: any(m == "WATCHDOG=1" for _, m in notify.timed), timeout=20, what="a first ping"
    )
    return next(t for t, m in notify.timed if m == "WATCHDOG=1")


class TestWatchdog:
    async def test_pings_every_half_period_while_healthy(self, tmp_path, notify):
        daemon = await start_daemon(
            system_only(tmp_path),
            tmp_path,
            {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"},
        )
        first = await first_ping(daemon, notify)  # start-up time is not what is measured
        await asyncio.sleep(3.2)
        await daemon.stop()
        pings = [t for t, m in notify.timed if m == "WATCHDOG=1" and first <= t <= first + 3.2]
        # a 1 s period: a ping every 0.5 s, so about 6 in 3.2 s
        assert 4 <= len(pings) <= 8, pings

    async def test_a_hung_target_does_not_starve_the_watchdog(self, tmp_path, notify):
        # A listener that accepts and never answers: every api run lasts its 4 s timeout,
        # longer than the 1 s interval and the 2 s watchdog period. The target is down; the
        # monitor is fine and must keep pinging (else systemd would kill it, over and over).
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        extra = (
            f'[collectors.api]\ninterval = "1s"\ntimeout = "4s"\nbase_url = "http://127.0.0.1:{port}"\n'
            '[[collectors.api.endpoints]]\nname = "hung"\npath = "/"\n'
        )
        try:
            daemon = await start_daemon(
                system_only(tmp_path, extra=extra),
                tmp_path,
                {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000"},
            )
            first = await first_ping(daemon, notify)
            await asyncio.sleep(9)
            await daemon.stop()
        finally:
            listener.close()
        stamps = [t for t, m in notify.timed if m == "WATCHDOG=1" and first <= t <= first + 9]
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert len(stamps) >= 8
        assert max(gaps) < 2.0, gaps
        assert b"unhealthy" not in daemon.stderr

    async def test_watchdog_pid_of_another_process_is_not_ours(self, tmp_path, notify):
        daemon = await start_daemon(
            system_only(tmp_path),
            tmp_path,
            {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"},
        )
        await asyncio.sleep(1.5)
        await daemon.stop()
        assert "WATCHDOG=1" not in notify.drain()


class TestStartup:
    async def test_a_slow_first_run_extends_the_start_timeout(self, tmp_path, notify):
        db = make_big_db(tmp_path / "big.db")
        # a first db run that takes 2.5 s (interrupted at its timeout), on a 10 s interval
        extra = (
            f'[collectors.db]\ninterval = "10s"\npath = "{db}"\ntimeout = "2500ms"\n'
            '[[collectors.db.queries]]\nname = "slow"\nsql = "SELECT count(*) FROM t a, t b, t c"\n'
        )
        daemon = await start_daemon(
            system_only(tmp_path, extra=extra), tmp_path, {"NOTIFY_SOCKET": str(notify.path)}
        )
        await until(
            lambda: any(m.startswith("READY=1") for m in notify.drain()), what="READY", timeout=15
        )
        await daemon.stop()
        messages = notify.messages
        ready = next(i for i, m in enumerate(messages) if m.startswith("READY=1"))
        extensions = [m for m in messages[:ready] if m.startswith("EXTEND_TIMEOUT_USEC=")]
        assert len(extensions) >= 1
        assert extensions[0] == "EXTEND_TIMEOUT_USEC=4000000"
        assert not any(m.startswith("EXTEND_TIMEOUT_USEC") for m in messages[ready:])

    async def test_no_ready_after_stopping_when_a_first_run_ends_in_the_grace(
        self, tmp_path, notify
    ):
        db = make_big_db(tmp_path / "big.db")
        extra = (
            f'[collectors.db]\ninterval = "10s"\npath = "{db}"\ntimeout = "1500ms"\n'
            '[[collectors.db.queries]]\nname = "slow"\nsql = "SELECT count(*) FROM t a, t b, t c"\n'
        )
        config = system_only(tmp_path, extra=extra)
        config.write_text(
            config.read_text().replace('shutdown_grace = "1s"', 'shutdown_grace = "3s"')
        )
        daemon = await start_daemon(config, tmp_path, {"NOTIFY_SOCKET": str(notify.path)})
        # the first STATUS comes from the system collector's first run: the scheduler is
        # going, and the db's first run (started with it) is under way; it ends at ~1.5 s
        await until(lambda: any(m.startswith("STATUS=") for m in notify.drain()), what="STATUS")
        rc, _ = await daemon.stop()
        assert rc == 0
        messages = notify.drain()
        stopping = next(i for i, m in enumerate(messages) if m.startswith("STOPPING=1"))
        assert not any(m.startswith(("READY=1", "STATUS=")) for m in messages[stopping + 1 :])
        assert b"cancelled_runs=0" in daemon.stderr  # it finished within the grace
