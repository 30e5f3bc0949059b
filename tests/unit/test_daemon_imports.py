"""What the command line imports: the daemon's process stays lean (issue 8's 50 MB budget)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

from support import daemon_head, free_port

# Imports the daemon must not pay for (benchmarks/overhead.py measured each): rich and
# pygments come through structlog (3-5 MB), frozenlist's C++ extension maps libstdc++
# (1.1 MB), aiohttp's web framework was the exporter's before fossamon.web.protocol (1.3 MB).
KEPT_OUT = ("rich.", "pygments", "frozenlist._frozenlist", "aiohttp.web")
READY_WAIT = 30.0


def imported(importtime_stderr: str) -> set[str]:
    """Module names from `python -X importtime` lines (`import time: self | cum | name`)."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip())
    return names - {"package"}  # the header line's last column


def wait_ready(sock: socket.socket, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + READY_WAIT
    sock.settimeout(0.5)
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(TimeoutError):
            if "READY=1" in sock.recv(65536).decode().split("\n"):
                return True
    return False


def test_the_daemon_runs_without_the_imports_it_does_not_need(tmp_path, small_demo_db):
    """A real `fossamon run` with every collector and the exporter on, up to READY=1."""
    config = tmp_path / "config.toml"
    config.write_text(
        daemon_head(tmp_path, exporter=f"127.0.0.1:{free_port()}")
        + f"""
[collectors.system]
interval = "10s"
[collectors.api]
base_url = "http://127.0.0.1:{free_port()}"
timeout = "2s"
[[collectors.api.endpoints]]
name = "health"
path = "/api/health"
[collectors.db]
path = "{small_demo_db}"
[[collectors.db.queries]]
name = "count"
sql = "SELECT COUNT(*) FROM work_orders"
"""
    )
    notify = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify))
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "fossamon", "run", "-c", str(config)],
            stderr=subprocess.PIPE,
            env=dict(os.environ, NOTIFY_SOCKET=str(notify)),
        )
        try:
            ready = wait_ready(sock, proc)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
    text = stderr.decode(errors="replace")
    assert ready, text[-3000:]
    names = imported(text)
    assert "structlog" in names  # the parse found the imports at all
    assert "fossamon.web.protocol" in names  # and the exporter's
    assert not {n for n in names if n.startswith(KEPT_OUT)}


def test_rich_and_frozenlist_still_import_normally_afterwards():
    """Only structlog's own lookup of rich is refused, and the switch is not left set."""
    code = """
import os
from fossamon.cli import import_lean
import_lean()
import structlog.dev
assert structlog.dev.rich is None
import rich.console
import frozenlist
assert frozenlist.FrozenList.__module__ == "frozenlist", frozenlist.FrozenList.__module__
assert "FROZENLIST_NO_EXTENSIONS" not in os.environ
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if k != "FROZENLIST_NO_EXTENSIONS"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr
