"""The exec sink running a real command (a small Python script via sys.executable)."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sinks_support import RecordingOutbox, event
from structlog.testing import capture_logs

from fossamon.config import ExecSinkConfig, validate_section
from fossamon.model import EventKind, Severity
from fossamon.sinks import build_sink_workers
from fossamon.sinks.base import Delivery

HOOK = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    out, mode = sys.argv[1], sys.argv[2]
    record = {
        "stdin": sys.stdin.read(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("FOSSAMON_", "EXTRA_"))},
        "pgid": os.getpgid(0),
        "pid": os.getpid(),
    }
    with open(out, "a") as f:
        f.write(json.dumps(record) + "\\n")
    runs = sum(1 for _ in open(out))
    if mode == "fail" or (mode.startswith("fail") and runs <= int(mode[4:])):
        print("starting", file=sys.stderr)
        print("boom: the pager is on fire", file=sys.stderr)
        sys.exit(3)
    if mode == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open(out + ".pids", "w") as f:
            f.write(f"{os.getpid()} {child.pid}")
        time.sleep(60)
    """
)


@pytest.fixture
def hook(tmp_path):
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    out = tmp_path / "runs.jsonl"

    def command(mode="ok"):
        return [sys.executable, str(script), str(out), mode]

    command.out = out
    command.runs = lambda: [json.loads(x) for x in out.read_text().splitlines()]
    return command


@pytest.fixture
async def start():
    started = []

    def make(command, outbox=None, **settings):
        base = {"type": "exec", "name": "pager", "command": command, "timeout": "5s"}
        base |= {"backoff": "20ms", "backoff_max": "50ms"}
        config = validate_section(ExecSinkConfig, {**base, **settings})
        [worker] = build_sink_workers([config], "web1", outbox or RecordingOutbox())
        worker.start()
        started.append(worker)
        return worker

    yield make
    for worker in started:
        await worker.stop(0.5)


async def until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def alive(pid):
    """Running (a zombie waiting for a reaper is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class TestExec:
    async def test_event_arrives_in_env_and_as_json_on_stdin(self, hook, start, monkeypatch):
        monkeypatch.setenv("FOSSAMON_LABEL_STALE", "from the daemon's own environment")
        outbox = RecordingOutbox()
        worker = start(hook(), outbox, env={"EXTRA_QUEUE": "ops"})
        e = event(
            EventKind.ESCALATED,
            Severity.CRITICAL,
            previous=Severity.WARNING,
            labels={"endpoint": "health", "db.path": "/srv/app.db"},
            since=1_800_000_000.0 - 60,
        )
        worker.submit(Delivery(6, e, "web1"))
        await until(lambda: outbox.delivered_ids == [6])
        [run] = hook.runs()
        assert json.loads(run["stdin"]) == e.to_json("web1")
        assert run["env"] == {
            "EXTRA_QUEUE": "ops",
            "FOSSAMON_EVENT": "escalated",
            "FOSSAMON_RULE": "api_latency",
            "FOSSAMON_SEVERITY": "critical",
            "FOSSAMON_PREVIOUS_SEVERITY": "warning",
            "FOSSAMON_VALUE": "1.5",
            "FOSSAMON_THRESHOLD": "1.0",
            "FOSSAMON_SUMMARY": "p95 latency 1.5s above 1s",
            "FOSSAMON_FINGERPRINT": e.key,
            "FOSSAMON_SINCE": "2027-01-15T07:59:00.000Z",
            "FOSSAMON_TS": "2027-01-15T08:00:00.000Z",
            "FOSSAMON_HOST": "web1",
            "FOSSAMON_LABELS": json.dumps({"db.path": "/srv/app.db", "endpoint": "health"}),
            "FOSSAMON_LABEL_DB_PATH": "/srv/app.db",
            "FOSSAMON_LABEL_ENDPOINT": "health",
        }

    async def test_shell_metacharacters_in_labels_are_inert_data(self, hook, start, tmp_path):
        marker = tmp_path / "injected"
        nasty = {
            "a": '"; rm -rf /"',
            "b": f"; touch {marker}",
            "c": f"$(touch {marker})",
            "d": f"`touch {marker}`",
            "e": f"' && touch {marker} && '",
        }
        outbox = RecordingOutbox()
        worker = start(hook(), outbox)
        e = event(labels=nasty, summary=f"$(touch {marker})")
        worker.submit(Delivery(1, e, "web1"))
        await until(lambda: outbox.delivered_ids == [1])
        [run] = hook.runs()
        assert {k: run["env"][f"FOSSAMON_LABEL_{k.upper()}"] for k in nasty} == nasty
        assert json.loads(run["stdin"])["labels"] == nasty
        assert run["env"]["FOSSAMON_SUMMARY"] == f"$(touch {marker})"
        assert not marker.exists()

    async def test_timeout_kills_the_whole_process_group(self, hook, start):
        worker = start(hook("hang"), timeout="1s", retries=0)
        pids_file = Path(f"{hook.out}.pids")
        with capture_logs() as logs:
            started = time.monotonic()
            worker.submit(Delivery(1, event(), "web1"))
            await until(lambda: pids_file.exists() and len(pids_file.read_text().split()) == 2)
            await until(lambda: worker.stats.failed == 1)
        assert time.monotonic() - started < 2.5
        [error] = [e for e in logs if e["log_level"] == "error"]
        assert error["error"] == "no answer within 1s"
        pids = [int(p) for p in pids_file.read_text().split()]
        [run] = hook.runs()
        assert run["pgid"] == run["pid"]  # its own group, so the kill reached the grandchild
        await until(lambda: not any(alive(pid) for pid in pids), timeout=2.0)

    async def test_nonzero_exit_is_retried(self, hook, start):
        outbox = RecordingOutbox()
        worker = start(hook("fail2"), outbox, retries=3)
        with capture_logs() as logs:
            worker.submit(Delivery(2, event(), "web1"))
            await until(lambda: outbox.delivered_ids == [2])
        assert len(hook.runs()) == 3
        assert worker.stats.retried == 2
        warning = next(e for e in logs if e["event"] == "delivery failed; will retry")
        assert warning["error"] == (
            f"{sys.executable} failed (exit status 3): starting | boom: the pager is on fire"
        )

    async def test_failing_for_good_logs_the_stderr_tail(self, hook, start):
        worker = start(hook("fail"), retries=1)
        with capture_logs() as logs:
            worker.submit(Delivery(2, event(), "web1"))
            await until(lambda: worker.stats.failed == 1)
        [error] = [e for e in logs if e["log_level"] == "error"]
        assert error["error"].endswith("(exit status 3): starting | boom: the pager is on fire")
        assert error["sink"] == "pager"

    async def test_a_missing_command_is_a_failure(self, start, tmp_path):
        worker = start([str(tmp_path / "no-such-command")], retries=0)
        with capture_logs() as logs:
            worker.submit(Delivery(1, event(), "web1"))
            await until(lambda: worker.stats.failed == 1)
        [error] = [e for e in logs if e["log_level"] == "error"]
        assert error["error"] == f"cannot run {tmp_path}/no-such-command: No such file or directory"

    async def test_stop_kills_a_running_command_within_grace(self, hook, start):
        worker = start(hook("hang"), timeout="1h")
        worker.submit(Delivery(1, event(), "web1"))
        pids_file = Path(f"{hook.out}.pids")
        await until(pids_file.exists)
        await until(lambda: len(pids_file.read_text().split()) == 2)
        pids = [int(p) for p in pids_file.read_text().split()]
        started = time.monotonic()
        await worker.stop(0.2)
        assert time.monotonic() - started < 0.7
        await until(lambda: not any(alive(pid) for pid in pids), timeout=2.0)
        assert Path(hook.out).exists()
