"""Running a real `fossamon run` process in tests: config, notify socket, output files."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from support import daemon_head, demo_collectors


def daemon_config(tmp_path: Path, url: str, db: Path, **extra: str) -> Path:
    """A fast config: short intervals, every KPI rule, outputs in tmp_path."""
    text = (
        daemon_head(tmp_path, grace=extra.get("grace", "2s"))
        + demo_collectors(
            url,
            db,
            system_interval=extra.get("system_interval", "500ms"),
            api_timeout=extra.get("api_timeout", "1s"),
        )
        + f"""[[rules]]
name = "api_down"
metric = "api_up"
direction = "below"
critical = 1
[[rules]]
name = "db_down"
metric = "db_up"
direction = "below"
critical = 1
[[rules]]
name = "api_p95_latency"
metric = "api_response_seconds"
aggregate = "p95"
window = "1m"
warning = "500ms"
critical = "2s"
{extra.get("more", "")}
"""
    )
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


class NotifyListener:
    """A real datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []
        self.timed: list[tuple[float, str]] = []  # (arrival, message), for cadence checks
        self._watch()

    def _watch(self) -> None:
        """Record arrival times as datagrams come in (when a loop is running)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.add_reader(self.sock.fileno(), self.drain)
        self._loop = loop

    def drain(self) -> list[str]:
        while True:
            try:
                message = self.sock.recv(65536).decode("utf-8")
            except BlockingIOError:
                return self.messages
            self.messages.append(message)
            self.timed.append((time.monotonic(), message))

    def close(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self.sock.fileno())
        self.sock.close()


class Daemon:
    def __init__(self, proc: asyncio.subprocess.Process, tmp_path: Path) -> None:
        self.proc = proc
        self.metrics = tmp_path / "out" / "metrics.jsonl"
        self.alerts = tmp_path / "out" / "alerts.jsonl"
        self.stderr = b""
        self._stderr_read: asyncio.Task[bytes] | None = None

    def keep_reading_stderr(self) -> None:
        """Read the log as it comes (it is `stderr` after `stop()`). For a daemon that logs
        more than the pipe holds (64 KiB, and the reader's buffer): unread, it would block on
        its next log line."""
        assert self.proc.stderr is not None
        self._stderr_read = asyncio.get_running_loop().create_task(self.proc.stderr.read())

    def lines(self, path: Path | None = None) -> list[dict]:
        target = path or self.metrics
        if not target.exists():
            return []
        return [json.loads(line) for line in target.read_text().splitlines()]

    async def wait_for(self, predicate, timeout: float = 15.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            if self.proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        detail = ""
        if self.proc.returncode is not None and self.proc.stderr is not None:
            detail = (await (self._stderr_read or self.proc.stderr.read())).decode()[-2000:]
        pytest.fail(f"{what} not reached within {timeout}s; rc={self.proc.returncode} {detail}")

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> tuple[int, float]:
        began = time.monotonic()
        self.proc.send_signal(sig)
        assert self.proc.stderr is not None
        # read while waiting: the pipe's reader stops reading once its buffer is full, and
        # the exit is seen only at the pipe's end, so a chatty daemon would never seem to exit
        read = self._stderr_read or self.proc.stderr.read()
        self.stderr, _ = await asyncio.wait_for(asyncio.gather(read, self.proc.wait()), timeout)
        return self.proc.returncode or 0, time.monotonic() - began


STARTED: list[asyncio.subprocess.Process] = []  # killed after each test (conftest), pass or fail


async def start_daemon(
    config: Path,
    tmp_path: Path,
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> Daemon:
    """`fossamon run -c config`, with `env` added to ours; `prefix` runs it through another
    command first (setpriv, unshare)."""
    full_env = {k: v for k, v in os.environ.items() if k not in {"NOTIFY_SOCKET", "JOURNAL_STREAM"}}
    full_env.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        *prefix,
        sys.executable,
        "-m",
        "fossamon",
        "run",
        "-c",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=full_env,
    )
    STARTED.append(proc)
    return Daemon(proc, tmp_path)


def collectors_seen(lines: list[dict]) -> set[str]:
    return {line["collector"] for line in lines}


def make_big_db(path: Path) -> Path:
    """3,000 rows: a three-way cross join over them runs for minutes (until interrupted)."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?)", ((i,) for i in range(3000)))
    conn.close()
    return path
