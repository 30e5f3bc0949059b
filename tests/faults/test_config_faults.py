"""Fault matrix, config rows: every bad config is refused whole, with one clear message that
names the file and the key, at start (exit 78, EX_CONFIG) and at reload (the running config
stays and keeps its cadence)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from typing import TYPE_CHECKING

import pytest
from daemon_harness import Daemon, start_daemon
from faults_support import without_root_bypass
from support import daemon_head

if TYPE_CHECKING:
    from pathlib import Path

EX_CONFIG = 78
INTERVAL = 0.2  # the good config's system interval: the cadence a reload must not disturb

# name: (the bad text, what the one message must say)
BAD = {
    "invalid TOML": ("[daemon\n", "invalid TOML: Expected ']'"),
    "unknown key": (
        '[collectors.system]\nintervall = "1s"\n',
        'collectors.system.intervall: unknown key (did you mean "interval"?)',
    ),
    "wrong type": (
        "[collectors.system]\ninterval = true\n",
        "collectors.system.interval: expected a duration",
    ),
    "negative interval": (
        '[collectors.system]\ninterval = "-5s"\n',
        "collectors.system.interval: must not be negative, got '-5s'",
    ),
    "unset variable": (
        '[daemon]\nhostname = "${FOSSAMON_FAULTS_NEVER_SET}"\n',
        "daemon.hostname: environment variable FOSSAMON_FAULTS_NEVER_SET is not set",
    ),
    "exporter beyond loopback without auth": (
        '[exporter]\nlisten = "0.0.0.0:9"\n',
        'exporter: listen = "0.0.0.0:9" is reachable from other hosts and has no bearer_token',
    ),
    "unreadable file": ("", "config.toml: permission denied"),
}


def good_config(tmp_path: Path) -> str:
    return daemon_head(tmp_path) + f'[collectors.system]\ninterval = "{INTERVAL}s"\n'


def write_bad(config: Path, name: str) -> None:
    """The bad text alone: a valid file with it added would be the same problem, but a TOML
    error or a second [daemon] table would hide it behind another one."""
    text, _ = BAD[name]
    if name == "unreadable file":
        config.chmod(0)
        return
    config.write_text(text)


async def start(config: Path, tmp_path: Path, env: dict[str, str] | None = None) -> Daemon:
    return await start_daemon(config, tmp_path, env, without_root_bypass())


def error_lines(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode().splitlines() if "[error" in line]


@pytest.fixture
def setpriv(need):
    need(os.geteuid() != 0 or shutil.which("setpriv") is not None, "setpriv (util-linux)")


@pytest.mark.parametrize("name", list(BAD))
async def test_at_start_exit_78_with_one_clear_message(tmp_path, name, setpriv):
    config = tmp_path / "config.toml"
    config.write_text(good_config(tmp_path))
    write_bad(config, name)
    daemon = await start(config, tmp_path)
    await asyncio.wait_for(daemon.proc.wait(), 30)
    assert daemon.proc.stderr is not None
    stderr = await daemon.proc.stderr.read()
    assert daemon.proc.returncode == EX_CONFIG, stderr.decode()[-2000:]
    assert b"Traceback" not in stderr
    # the summary line, then the one problem, naming the file (and the key)
    errors = error_lines(stderr)
    assert len(errors) == 2, errors
    assert "invalid configuration; not starting" in errors[0]
    assert str(config) in errors[1] or "config.toml" in errors[1]
    assert BAD[name][1] in errors[1]
    assert not (tmp_path / "out" / "metrics.jsonl").exists()  # nothing ran


@pytest.mark.parametrize("name", list(BAD))
async def test_at_reload_the_running_config_stays_and_keeps_its_cadence(
    tmp_path, name, notify, setpriv
):
    config = tmp_path / "config.toml"
    config.write_text(good_config(tmp_path))
    daemon = await start(config, tmp_path, {"NOTIFY_SOCKET": str(notify.path)})
    await daemon.wait_for(lambda: len(daemon.lines()) >= 2, what="the first system runs")
    write_bad(config, name)
    daemon.proc.send_signal(signal.SIGHUP)
    await daemon.wait_for(
        lambda: any("reload failed" in m for m in notify.drain()), what="reload failed"
    )
    # the old config goes on: system runs every INTERVAL, not stopped, not re-timed
    before = len(daemon.lines())
    began = asyncio.get_running_loop().time()
    await daemon.wait_for(lambda: len(daemon.lines()) >= before + 5, timeout=5, what="runs")
    took = asyncio.get_running_loop().time() - began
    assert took < 5 * INTERVAL * 3, f"5 runs took {took:.2f} s at a {INTERVAL} s interval"
    rc, _ = await daemon.stop()
    assert rc == 0, daemon.stderr.decode()[-2000:]
    assert b"Traceback" not in daemon.stderr
    rejected = [line for line in error_lines(daemon.stderr) if "reload rejected" in line]
    assert len(rejected) == 1, error_lines(daemon.stderr)
    assert "the running config stays" in rejected[0]
    assert BAD[name][1] in rejected[0]
    status = [m for m in notify.messages if m.startswith("READY=1\nSTATUS=")]
    assert any("reload failed" in m for m in status)
