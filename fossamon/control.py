"""The daemon's state file, and `fossamon reload`, which waits on it.

systemd 252 has no `Type=notify-reload`, and `ExecReload=/bin/kill -HUP $MAINPID` returns
before the daemon has reloaded, so `systemctl reload` could not report a rejected edit.
Instead the daemon keeps `state.json` in its runtime directory (rewritten atomically: a
reader never sees half a file) with its pid, its process start time (so a stale file cannot
make us signal an unrelated process that reused the pid), two reload counters —
`reload_requested` (SIGHUPs received) and `reload_completed` (the highest request the last
finished reload covered) — that reload's outcome, and a fingerprint of the config bytes it
loaded. `fossamon reload` reads the counter, sends SIGHUP and waits until a finished reload
covers its request; if the file on disk no longer matches what was loaded (an edit landed
during the reload, which a `.path` unit coalesces into the running job), it asks again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fossamon.config import config_digest

STATE_FILE = "state.json"
POLL_SECONDS = 0.05
# An edit that keeps landing during reloads (a deploy writing file after file) gets this
# many more tries before we report what the daemon last loaded.
EXTRA_ROUNDS = 3


@dataclass(frozen=True, slots=True)
class DaemonState:
    pid: int
    start_ticks: int | None  # /proc/<pid>/stat field 22: tells a reused pid apart
    started: float
    config: str | None
    config_digest: str | None  # of the bytes the last start or reload attempt read
    generation: int
    reload_requested: int
    reload_completed: int
    last_reload_ok: bool | None
    last_reload_error: str | None
    exporter: str = ""  # host:port the exporter listens on ("" = off): `fossamon status`


class StateUnreadableError(Exception):
    """The state file exists but cannot be read (permissions): say so, not "not running"."""


def process_start_ticks(pid: int | str = "self") -> int | None:
    """When the process started, in clock ticks since boot; None where /proc cannot tell."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        # the command name (field 2) may contain spaces and parentheses: split after its ")"
        return int(raw[raw.rindex(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def write_state(directory: str | Path, state: DaemonState) -> None:
    """Atomically replace the state file (temp file + rename in the same directory)."""
    folder = Path(directory)
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    temporary = folder / f".{STATE_FILE}.{os.getpid()}"
    temporary.write_text(json.dumps(asdict(state), indent=1) + "\n", encoding="utf-8")
    temporary.replace(folder / STATE_FILE)


def read_state(directory: str | Path) -> DaemonState | None:
    """The state, or None when there is none (or it is not ours to understand)."""
    path = Path(directory) / STATE_FILE
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
        return DaemonState(**raw)
    except PermissionError as exc:
        raise StateUnreadableError(f"cannot read {path}: {exc.strerror}") from None
    except (OSError, ValueError, TypeError):
        return None


def remove_state(directory: str | Path, pid: int) -> None:
    """At exit: remove the file, unless another daemon has written it since."""
    with contextlib.suppress(StateUnreadableError, OSError):
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


def request_reload(
    directory: str | Path, timeout: float, pid: int | None = None, config: str | None = None
) -> ReloadOutcome:
    """Send SIGHUP to the daemon and wait for the verdict of a reload that covers it.

    `config`: the file the operator edited; while it differs from what the daemon loaded
    (an edit landed mid-reload), ask again, a few times at most.
    """
    deadline = time.monotonic() + timeout
    outcome = _absent("no reload was attempted")
    for _ in range(1 + EXTRA_ROUNDS):
        try:
            outcome, loaded = _one_round(directory, deadline, pid)
        except StateUnreadableError as exc:
            return _refused(str(exc))
        if outcome.not_running or config is None or loaded is None:
            return outcome
        if _digest_of(config) == loaded:
            return outcome
    return outcome


def _digest_of(path: str) -> str | None:
    try:
        return config_digest(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def _one_round(
    directory: str | Path, deadline: float, pid: int | None
) -> tuple[ReloadOutcome, str | None]:
    before = read_state(directory)
    if before is None:
        return _absent(f"no running daemon: {Path(directory) / STATE_FILE} is missing"), None
    if pid is not None and pid != before.pid:
        return _absent(
            f"pid {pid} is not the daemon that wrote the state file ({before.pid})"
        ), None
    if before.start_ticks is not None and process_start_ticks(before.pid) != before.start_ticks:
        # the daemon died without removing its file, and the pid may belong to anything now
        return _absent(f"no running daemon: pid {before.pid} is not the one that started"), None
    try:
        os.kill(before.pid, signal.SIGHUP)
    except ProcessLookupError:
        return _absent(f"no running daemon: pid {before.pid} does not exist"), None
    except PermissionError:
        return _refused(f"not allowed to signal pid {before.pid} (run as root?)"), None
    return _wait_for_verdict(directory, before.pid, before.reload_requested + 1, deadline)


def _wait_for_verdict(
    directory: str | Path, pid: int, wanted: int, deadline: float
) -> tuple[ReloadOutcome, str | None]:
    while time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        state = read_state(directory)
        if state is not None and state.pid == pid and state.reload_completed >= wanted:
            if state.last_reload_ok:
                message = f"reloaded (generation {state.generation})"
                return ReloadOutcome(ok=True, message=message), state.config_digest
            return _refused(f"reload rejected: {state.last_reload_error}"), state.config_digest
        if not process_alive(pid):
            return _absent(f"the daemon (pid {pid}) exited during the reload"), None
    return _refused(f"no answer from pid {pid} in time"), None


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0), ours to signal or not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists; it is not ours to signal
    return True
