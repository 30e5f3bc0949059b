from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from fossamon.control import (
    DaemonState,
    StateUnreadableError,
    process_start_ticks,
    read_state,
    remove_state,
    request_reload,
    write_state,
)


def state(pid: int, ticks: int | None, **changes) -> DaemonState:
    values = {
        "pid": pid,
        "start_ticks": ticks,
        "started": time.time(),
        "config": None,
        "config_digest": None,
        "generation": 1,
        "reload_requested": 0,
        "reload_completed": 0,
        "last_reload_ok": None,
        "last_reload_error": None,
    }
    values.update(changes)
    return DaemonState(**values)


class TestStateFile:
    def test_round_trip_and_atomic_replace(self, tmp_path):
        write_state(tmp_path, state(123, 456))
        second = state(123, 456, generation=2)
        write_state(tmp_path, second)
        assert read_state(tmp_path) == second
        assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]

    def test_remove_only_our_own(self, tmp_path):
        write_state(tmp_path, state(123, None))
        remove_state(tmp_path, 999)
        assert read_state(tmp_path) is not None
        remove_state(tmp_path, 123)
        assert read_state(tmp_path) is None

    def test_garbage_is_no_state(self, tmp_path):
        (tmp_path / "state.json").write_text("{not json")
        assert read_state(tmp_path) is None

    def test_unreadable_is_said_not_hidden(self, tmp_path, monkeypatch):
        write_state(tmp_path, state(1, None))

        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr("pathlib.Path.read_text", denied)
        with pytest.raises(StateUnreadableError, match="Permission denied"):
            read_state(tmp_path)


class TestRequestReload:
    def test_no_state_file_means_not_running(self, tmp_path):
        outcome = request_reload(tmp_path, timeout=1)
        assert outcome.not_running
        assert "is missing" in outcome.message

    def test_a_reused_pid_is_never_signalled(self, tmp_path):
        # a live process that is not the daemon that wrote the file (its start time differs)
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            ticks = process_start_ticks(sleeper.pid)
            assert ticks is not None
            write_state(tmp_path, state(sleeper.pid, ticks - 1))
            outcome = request_reload(tmp_path, timeout=1)
            assert outcome.not_running
            assert "is not the one that started" in outcome.message
            assert sleeper.poll() is None  # SIGHUP would have killed it
        finally:
            sleeper.kill()
            sleeper.wait()

    def test_the_pid_must_match_what_systemd_says(self, tmp_path):
        write_state(tmp_path, state(os.getpid(), process_start_ticks()))
        outcome = request_reload(tmp_path, timeout=1, pid=os.getpid() + 1)
        assert outcome.not_running
        assert "is not the daemon that wrote the state file" in outcome.message

    def test_own_start_ticks(self):
        assert process_start_ticks() == process_start_ticks(os.getpid())
        assert process_start_ticks(2**22 + 12345) is None
