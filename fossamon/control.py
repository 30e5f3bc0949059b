"""The daemon's state file, and `fossamon reload`, which waits on it.

systemd 252 has no `Type=notify-reload`, and `ExecReload=/bin/kill -HUP $MAINPID` returns
before the daemon has reloaded, so `systemctl reload` could not report a rejected edit.
Instead the daemon keeps `state.json` in its runtime directory (rewritten atomically: a
reader never sees half a file) with its pid and two reload counters: `reload_requested`
(SIGHUPs received) and `reload_completed` (the highest request the last finished reload
covered), plus that reload's outcome. `fossamon reload` reads the counter, sends SIGHUP and
waits until a finished reload covers its request — a SIGHUP that arrives during a reload is
served by one more reload after it, so the answer always includes the latest edit.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"
POLL_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class DaemonState:
    pid: int
    started: float
    config: str | None
    generation: int
    reload_requested: int
    reload_completed: int
    last_reload_ok: bool | None
    last_reload_error: str | None


def write_state(directory: str | Path, state: DaemonState) -> None:
    """Atomically replace the state file (temp file + rename in the same directory)."""
    folder = Path(directory)
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    temporary = folder / f".{STATE_FILE}.{os.getpid()}"
    temporary.write_text(json.dumps(asdict(state), indent=1) + "\n", encoding="utf-8")
    temporary.replace(folder / STATE_FILE)


def read_state(directory: str | Path) -> DaemonState | None:
    try:
        raw: Any = json.loads((Path(directory) / STATE_FILE).read_text(encoding="utf-8"))
        return DaemonState(**raw)
    except (OSError, ValueError, TypeError):
        return None


def remove_state(directory: str | Path, pid: int) -> None:
    """At exit: remove the file, unless another daemon has written it since."""
    state = read_state(directory)
    if state is not None and state.pid == pid:
        (Path(directory) / STATE_FILE).unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    ok: bool
    message: str
    not_running: bool = False


def _refused(message: str) -> ReloadOutcome:
    return ReloadOutcome(ok=False, message=message)


def _absent(message: str) -> ReloadOutcome:
    return ReloadOutcome(ok=False, message=message, not_running=True)


def request_reload(directory: str | Path, timeout: float, pid: int | None = None) -> ReloadOutcome:
    """Send SIGHUP to the daemon and wait for the verdict of a reload that covers it."""
    before = read_state(directory)
    if before is None:
        return _absent(f"no running daemon: {Path(directory) / STATE_FILE} is missing")
    if pid is not None and pid != before.pid:
        return _absent(f"pid {pid} is not the daemon that wrote the state file ({before.pid})")
    try:
        os.kill(before.pid, signal.SIGHUP)
    except ProcessLookupError:
        return _absent(f"no running daemon: pid {before.pid} does not exist")
    except PermissionError:
        return _refused(f"not allowed to signal pid {before.pid} (run as root?)")
    return _wait_for_verdict(directory, before.pid, before.reload_requested + 1, timeout)


def _wait_for_verdict(
    directory: str | Path, pid: int, wanted: int, timeout: float
) -> ReloadOutcome:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        state = read_state(directory)
        if state is not None and state.pid == pid and state.reload_completed >= wanted:
            if state.last_reload_ok:
                return ReloadOutcome(ok=True, message=f"reloaded (generation {state.generation})")
            return _refused(f"reload rejected: {state.last_reload_error}")
        if not _alive(pid):
            return _absent(f"the daemon (pid {pid}) exited during the reload")
    return _refused(f"no answer from pid {pid} within {timeout:g}s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
