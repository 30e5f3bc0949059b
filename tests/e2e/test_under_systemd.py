"""fossamon under a real systemd: installed with `make install`, driven with systemctl.

One container per module (booting takes a few seconds). Each test leaves the service running
on the good config, so the next one starts from a known state. The figures operators care
about (status line, exposure, freeze-to-restart time) are written to artifacts/e2e-systemd.txt.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
from nspawn import Container, available
from support import free_port

from fossamon.demo.seed import create_demo_database

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
METRICS = "/var/log/fossamon/performance-metrics.jsonl"
UNIT = "fossamon.service"
# Short watchdog and restart delay for the test only (the shipped unit says 30 s and 5 s).
WATCHDOG_SEC, RESTART_SEC = 6, 1
TEST_DROPIN = f"[Service]\nWatchdogSec={WATCHDOG_SEC}s\nRestartSec={RESTART_SEC}s\n"


# The exporter on a port of its own (the container shares the host's network).
EXPORTER = f"127.0.0.1:{free_port()}"


def config_text(target: str, *, system_interval: str = "2s", extra: str = "") -> str:
    return f"""
[exporter]
listen = "{EXPORTER}"
[daemon]
log_level = "info"
runtime_dir = "${{RUNTIME_DIRECTORY:-/run/fossamon}}"
shutdown_grace = "2s"
[output.metrics]
path = "{METRICS}"
[output.alerts]
path = "/var/log/fossamon/performance-alerts.jsonl"
[collectors.system]
interval = "{system_interval}"
[collectors.api]
interval = "1s"
timeout = "2s"
base_url = "{target}"
[[collectors.api.endpoints]]
name = "health"
path = "/api/health"
[[collectors.api.endpoints]]
name = "work_orders"
path = "/api/work-orders?limit=10"
[collectors.db]
interval = "2s"
path = "/srv/fossawork/fossawork_v2.db"
[[collectors.db.queries]]
name = "work_orders_count"
sql = "SELECT COUNT(*) FROM work_orders"
record_value = true
[[rules]]
name = "api_down"
metric = "api_up"
direction = "below"
critical = 1
[[rules]]
# matches no configured endpoint: `fossamon run` warns about it at start (the provoked warning)
name = "typo_in_label"
metric = "api_up"
labels = {{ endpoint = "helth" }}
direction = "below"
critical = 1
{extra}
"""


def record(line: str, *, fresh: bool = False) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with (ARTIFACTS / "e2e-systemd.txt").open("w" if fresh else "a", encoding="utf-8") as out:
        out.write(line.rstrip() + "\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory, need):
    ok, missing = available()
    need(ok, missing)
    base = tmp_path_factory.mktemp("e2e")
    base.chmod(0o755)
    wheels, src, data, etc = (base / name for name in ("wheels", "src", "data", "etc"))
    record(f"end-to-end run of {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}", fresh=True)
    # Every wheel fossamon needs, built by the Python the container's venv will use (Debian's),
    # so `make install` in the container needs no network.
    builder = base / "builder"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(builder)], check=True, timeout=120)
    subprocess.run(
        [builder / "bin" / "pip", "wheel", "--quiet", "-w", str(wheels), str(REPO)],
        check=True,
        timeout=600,
    )
    files = subprocess.run(
        # what a clone would hold, plus files not committed yet (a developer's run)
        [
            "git",
            "-c",
            "safe.directory=*",
            "-C",
            str(REPO),
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        target = src / name.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name.decode()).is_file():
            shutil.copy2(REPO / name.decode(), target)
    for folder in (data, etc):
        folder.mkdir(mode=0o755)
        folder.chmod(0o755)
    database = data / "fossawork_v2.db"
    create_demo_database(database, work_orders=3000, dispensers=600, customers=100)
    database.chmod(0o644)
    port = free_port()
    target = subprocess.Popen(
        [sys.executable, "-m", "fossamon.demo", "--db", str(database), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/health", timeout=2):
                break
        except OSError:
            if time.monotonic() > deadline:
                target.kill()
                pytest.fail("the stand-in target did not come up")
            time.sleep(0.2)
    container = Container(
        binds=[
            (src, "/src", False),
            (wheels, "/wheels", True),
            (data, "/srv/fossawork", True),
            (etc, "/etc/fossamon", False),
        ]
    )
    try:
        container.boot(base / "nspawn.log")
        container.run(
            "make",
            "-C",
            "/src",
            "install",
            "INSTALL_FROM=fossamon",
            "PIP_OPTIONS=--no-index --find-links=/wheels",
            timeout=300,
        )
        good = config_text(url)
        (etc / "config.toml").write_text(good)
        container.run("mkdir", "-p", f"/etc/systemd/system/{UNIT}.d")
        container.run("tee", f"/etc/systemd/system/{UNIT}.d/test.conf", stdin=TEST_DROPIN)
        container.run("systemctl", "daemon-reload")
        yield World(container, etc / "config.toml", url, good)
    finally:
        container.shutdown()
        target.kill()
        target.wait(timeout=10)


def _get(url: str) -> tuple[int, str] | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except OSError:
        return None


class World:
    def __init__(self, container: Container, config: Path, url: str, good: str) -> None:
        self.container = container
        self.config = config
        self.url = url
        self.good = good

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.container.run("systemctl", *args, check=check)

    def main_pid(self) -> int:
        return int(self.container.show(UNIT, "MainPID")["MainPID"])

    def lines(self) -> list[dict]:
        text = self.container.run("cat", METRICS, check=False).stdout
        # only whole lines: the daemon may be writing the next one right now
        return [json.loads(line) for line in text.split("\n")[:-1]]

    def journal(self, priority: str | None = None) -> str:
        """The unit's journal, message text only; `priority`: that level and worse."""
        level = ["-p", priority] if priority else []
        return self.container.run(
            "journalctl", "-u", UNIT, *level, "--no-pager", "-o", "cat"
        ).stdout

    def state(self) -> dict:
        return json.loads(self.container.run("cat", "/run/fossamon/state.json").stdout)

    def ensure_running_good(self) -> None:
        if self.config.read_text() != self.good:
            self.config.write_text(self.good)
        state = self.container.show(UNIT, "ActiveState")["ActiveState"]
        if state != "active":
            self.systemctl("reset-failed", UNIT, check=False)
            self.systemctl("start", UNIT)
        else:
            self.systemctl("reload", UNIT)

    def wait(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            time.sleep(0.2)
        pytest.fail(f"{what} not reached within {timeout}s")


def open_files_limit(world: World, pid: int) -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE of `pid` in the container."""
    limits = world.container.run("cat", f"/proc/{pid}/limits").stdout
    row = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    soft, hard = row.split()[3:5]
    return int(soft), int(hard)


def cadence(lines: list[dict], collector: str, last: int = 4) -> float:
    stamps = [
        datetime.fromisoformat(line["ts"]).timestamp()
        for line in lines
        if line["collector"] == collector
    ][-last:]
    return statistics.median(b - a for a, b in itertools.pairwise(stamps))


class TestTheUnit:
    def test_unit_verifies_and_is_hardened(self, world):
        verify = world.container.run(
            "systemd-analyze", "verify", f"/etc/systemd/system/{UNIT}", check=False
        )
        assert verify.returncode == 0, verify.stderr
        assert verify.stderr.strip() == ""
        security = subprocess.run(
            ["systemd-analyze", "security", "--offline=yes", str(REPO / "systemd" / UNIT)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
        assert match, security.stdout[-2000:]
        record(f"exposure: {match.group(0)}")
        assert float(match.group(1)) <= 1.5
        shipped = (REPO / "systemd" / UNIT).read_text()
        assert "WatchdogSec=30s" in shipped
        assert "RestartPreventExitStatus=78" in shipped


class TestStart:
    def test_start_is_active_running_with_a_status_line(self, world):
        world.ensure_running_good()
        status = world.wait(
            lambda: (
                (out := world.systemctl("status", UNIT, "--no-pager", check=False).stdout)
                and "collectors ok" in out
                and out
            ),
            timeout=20,
            what="a Status: line",
        )
        record("systemctl status:\n" + "\n".join(status.splitlines()[:12]))
        assert re.search(r"Active: active \(running\)", status)
        assert re.search(r'Status: "3/3 collectors ok · ', status)
        lines = world.wait(world.lines, timeout=10, what="metrics lines")
        system = next(line for line in lines if line["collector"] == "system")
        names = {s["name"] for s in system["samples"]}
        # psutil sees what it must under the hardening: /proc/meminfo, processes, disks
        assert {"system_memory_percent", "system_processes", "system_disk_percent"} <= names
        assert system["errors"] == []
        processes = next(s for s in system["samples"] if s["name"] == "system_processes")
        assert processes["value"] > 3
        db = world.wait(
            lambda: [x for x in world.lines() if x["collector"] == "db"], 10, "a db run"
        )[-1]
        assert {s["name"]: s["value"] for s in db["samples"]}["db_up"] == 1
        api = [x for x in world.lines() if x["collector"] == "api"][-1]
        assert api["errors"] == []

    def test_fossamon_status_and_healthz_under_the_hardening(self, world):
        world.ensure_running_good()
        health = world.wait(lambda: _get(f"http://{EXPORTER}/healthz"), timeout=20, what="/healthz")
        assert health == (200, "ok\n")

        def every_collector_ok() -> subprocess.CompletedProcess[str] | None:
            run = world.container.run("/opt/fossamon/venv/bin/fossamon", "status", check=False)
            ok = run.returncode == 0 and re.search(r"^api\s+ok", run.stdout, re.MULTILINE)
            return run if ok else None

        done = world.wait(every_collector_ok, timeout=20, what="fossamon status, api ok")
        record("fossamon status (inside the container):\n" + done.stdout)
        assert re.search(r"^db\s+ok", done.stdout, re.MULTILINE)
        assert ": healthy" in done.stdout

    def test_journal_priorities_filter_warnings(self, world):
        world.ensure_running_good()
        out = world.journal("warning")
        assert "config: probably not what was meant" in out
        assert "'helth' matches nothing configured" in out
        everything = world.journal()
        assert "fossamon started" in everything  # an info line exists …
        assert "fossamon started" not in out  # … and -p warning leaves it out
        assert "ready: every collector has run once" not in out


class TestReload:
    def test_reload_applies_an_edit_without_a_restart(self, world):
        world.ensure_running_good()
        pid = world.main_pid()
        world.wait(lambda: len([x for x in world.lines() if x["collector"] == "system"]) >= 5,
                   30, "system runs")  # fmt: skip
        before = cadence(world.lines(), "system")
        generation = world.state()["generation"]
        world.config.write_text(config_text(world.url, system_interval="500ms"))
        world.systemctl("reload", UNIT)
        # `systemctl reload` returned after the daemon applied it, not merely after a SIGHUP
        assert world.state()["generation"] == generation + 1
        count = len(world.lines())
        world.wait(lambda: len(world.lines()) > count + 12, 20, "runs after the reload")
        after = cadence(world.lines(), "system")
        assert world.main_pid() == pid
        assert 1.7 < before < 2.3
        assert 0.35 < after < 0.65
        world.config.write_text(world.good)
        world.systemctl("reload", UNIT)

    def test_a_reload_that_needs_more_open_files_raises_the_limit_under_the_unit(self, world):
        """systemd gives a service a soft open-files limit of 1024; 400 endpoints at
        `max_concurrency = 400` may hold 1,056 open: the daemon raises its own soft limit,
        through the unit's seccomp filter (setrlimit is `prlimit64`, not in @resources)."""
        world.ensure_running_good()
        pid = world.main_pid()
        soft, hard = open_files_limit(world, pid)
        needed = 256 + 2 * 400
        assert soft == 1024  # systemd's default soft limit, untouched so far
        assert hard >= needed  # 524288 by default; here, what the container was given
        endpoints = "".join(
            f'[[collectors.api.endpoints]]\nname = "many_{n}"\npath = "/api/health"\n'
            for n in range(400)
        )
        crowded = config_text(world.url, extra=endpoints).replace(
            "base_url =", "max_concurrency = 400\nbase_url =", 1
        )
        world.config.write_text(crowded)
        world.systemctl("reload", UNIT)
        assert world.main_pid() == pid
        assert open_files_limit(world, pid) == (needed, hard)
        assert "open-files limit raised" in world.journal()
        assert "open-files limit below" not in world.journal()
        record(f"open files after the crowded reload: {open_files_limit(world, pid)}")
        world.config.write_text(world.good)
        world.systemctl("reload", UNIT)

    def test_a_broken_edit_fails_the_reload_and_keeps_the_old_config(self, world):
        world.ensure_running_good()
        pid = world.main_pid()
        world.config.write_text(
            world.good.replace("[collectors.system]\ninterval", "[collectors.system]\nintervall")
        )
        generation = world.state()["generation"]
        reload = world.systemctl("reload", UNIT, check=False)
        assert reload.returncode != 0
        assert world.state()["generation"] == generation
        assert world.container.show(UNIT, "ActiveState")["ActiveState"] == "active"
        assert world.main_pid() == pid
        status = world.systemctl("status", UNIT, "--no-pager", check=False).stdout
        assert "reload failed: 1 problem(s)" in status
        journal = world.journal()
        assert "intervall: unknown key" in journal
        errors = world.journal("err")
        assert "fossamon reload: reload rejected: 1 problem(s)" in errors
        count = len(world.lines())
        world.wait(lambda: len(world.lines()) > count + 3, 15, "collection continues")
        world.config.write_text(world.good)
        world.systemctl("reload", UNIT)

    def test_the_path_unit_reloads_after_an_edit(self, world):
        world.ensure_running_good()
        world.systemctl("enable", "--now", "fossamon-reload.path")
        generation = world.state()["generation"]
        world.config.write_text(world.good + "\n# an edit\n")
        world.wait(
            lambda: world.state()["generation"] > generation,
            20,
            "a reload triggered by the .path unit",
        )
        world.systemctl("disable", "--now", "fossamon-reload.path")
        world.config.write_text(world.good)
        world.systemctl("reload", UNIT)


class TestWatchdog:
    def test_a_frozen_daemon_is_killed_and_restarted(self, world):
        world.ensure_running_good()
        pid = world.main_pid()
        frozen_at = time.monotonic()
        world.container.run("kill", "-STOP", str(pid))
        new_pid = world.wait(
            lambda: (p := world.main_pid()) not in {0, pid} and p,
            WATCHDOG_SEC + RESTART_SEC + 10,
            "a restart with a new MainPID",
        )
        took = time.monotonic() - frozen_at
        record(
            f"freeze to restart: {took:.1f} s (WatchdogSec={WATCHDOG_SEC}s, "
            f"RestartSec={RESTART_SEC}s)"
        )
        journal = world.journal()
        assert "Watchdog timeout" in journal
        # faulthandler put the Python stack of the frozen loop into the journal, at err
        errors = world.journal("err")
        assert "Fatal Python error: Aborted" in errors
        assert "Current thread" in errors or "Thread 0x" in errors
        assert new_pid != pid
        world.wait(
            lambda: world.container.show(UNIT, "ActiveState")["ActiveState"] == "active",
            20,
            "active again",
        )


class TestStop:
    def test_stop_is_clean_and_the_last_line_is_complete(self, world):
        world.ensure_running_good()
        world.wait(lambda: len(world.lines()) > 3, 15, "some lines")
        began = time.monotonic()
        world.systemctl("stop", UNIT)
        took = time.monotonic() - began
        props = world.container.show(UNIT, "Result", "ExecMainStatus", "ActiveState")
        assert props == {"Result": "success", "ExecMainStatus": "0", "ActiveState": "inactive"}
        raw = world.container.run("cat", METRICS).stdout
        assert raw.endswith("\n")
        json.loads(raw.splitlines()[-1])
        record(f"systemctl stop: {took:.2f} s")
        assert took < 5

    def test_a_bad_config_at_start_fails_with_78_and_no_restart_loop(self, world):
        world.systemctl("stop", UNIT, check=False)
        world.systemctl("reset-failed", UNIT, check=False)
        world.config.write_text(
            world.good.replace("[collectors.api]\ninterval", "[collectors.api]\nintervl")
        )
        start = world.systemctl("start", UNIT, check=False)
        assert start.returncode != 0
        time.sleep(3)  # RestartSec=1s: a restart loop would have begun by now
        props = world.container.show(UNIT, "ActiveState", "Result", "ExecMainStatus", "NRestarts")
        assert props == {
            "ActiveState": "failed",
            "Result": "exit-code",
            "ExecMainStatus": "78",
            "NRestarts": "0",
        }
        errors = world.journal("err")
        assert 'collectors.api.intervl: unknown key (did you mean "interval"?)' in errors
        world.config.write_text(world.good)
        world.systemctl("reset-failed", UNIT)
        world.systemctl("start", UNIT)
