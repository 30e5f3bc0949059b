"""The exporter inside a real (in-process) daemon: /healthz, /status, auth, rebinding."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import subprocess
import sys
import time

import aiohttp
import pytest
from support import daemon_head, free_port

from fossamon import daemon as daemon_module
from fossamon.config import load_config
from fossamon.daemon import Daemon
from fossamon.errors import EX_UNAVAILABLE
from fossamon.model import Sample, make_labels
from fossamon.testing import ScriptedCollector

TOKEN = "s3cret-exporter-token-7781"


def config_text(tmp_path, port, *, exporter_extra="", rules="", more=""):
    head = daemon_head(tmp_path, exporter=f"127.0.0.1:{port}")
    return head + exporter_extra + '\n[collectors.system]\ninterval = "10s"\n' + rules + more


def cpu(value):
    return [Sample("system_cpu_percent", value), Sample("api_up", 1.0, make_labels(endpoint="x"))]


async def get(url, headers=None):
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url, headers=headers or {}) as response,
    ):
        return response.status, await response.text(), response.headers


async def wait_until(predicate, what, limit=10.0):
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def running(monkeypatch):
    started: list[tuple[Daemon, asyncio.Task[int]]] = []

    async def start(tmp_path, text, collectors):
        monkeypatch.setattr(daemon_module, "build_collectors", lambda _: list(collectors))
        path = tmp_path / "c.toml"
        path.write_text(text)
        daemon = Daemon(load_config(path), str(path))
        task = asyncio.create_task(daemon.run())
        started.append((daemon, task))
        off = not daemon.config.exporter.listen
        await wait_until(
            lambda: (
                (daemon.web is not None and daemon.web.address)
                or task.done()
                or (off and daemon.scheduler.collectors)
            ),
            "the exporter",
        )
        return daemon, task

    yield start
    for daemon, task in started:
        daemon.request_stop()
        try:
            await asyncio.wait_for(task, 10)
        except Exception:  # the test's own failure is what matters
            task.cancel()


class TestHealthz:
    async def test_200_while_healthy_then_503_with_the_reason_when_a_collector_wedges(
        self, tmp_path, running, monkeypatch
    ):
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
        monkeypatch.setenv("WATCHDOG_USEC", "1000000")
        port = free_port()
        # Runs that outlive their own limit by far: wedged after max(2 x 0.2, 1, 1.3) s.
        wedged = ScriptedCollector("wedged", [[]], interval=0.2, delay=60, run_limit=0.1)
        await running(tmp_path, config_text(tmp_path, port), [wedged])
        status, body, _ = await get(f"http://127.0.0.1:{port}/healthz")
        assert (status, body) == (200, "ok\n")
        deadline = time.monotonic() + 6
        while True:
            status, body, _ = await get(f"http://127.0.0.1:{port}/healthz")
            if status != 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert status == 503
        assert body.startswith("unhealthy: ")
        # (a loaded machine may add "event loop lagging …" before it)
        assert "wedged: no run finished for " in body


class TestStatus:
    async def test_the_document_has_runs_alerts_trends_and_no_secret(self, tmp_path, running):
        port = free_port()
        rules = '[[rules]]\nname = "cpu_seen"\nmetric = "system_cpu_percent"\nwarning = -1\n'
        sink = (
            '[[sinks]]\ntype = "webhook"\nname = "hook"\n'
            f'url = "http://127.0.0.1:9/hook?token={TOKEN}"\n'
        )
        steady = ScriptedCollector("probe", [cpu(10.0), cpu(20.0), cpu(30.0)], interval=0.2)
        daemon, _ = await running(
            tmp_path, config_text(tmp_path, port, rules=rules + sink), [steady]
        )
        await wait_until(lambda: steady.calls >= 12, "a dozen cycles")
        status, body, headers = await get(f"http://127.0.0.1:{port}/status")
        assert status == 200
        assert headers["Content-Type"].startswith("application/json")
        assert TOKEN not in body
        doc = json.loads(body)
        assert doc["v"] == 1
        assert doc["generation"] == 1
        assert doc["health"] == {"ok": True, "reasons": []}
        probe = doc["collectors"]["probe"]
        assert probe["runs"] >= 12
        assert probe["ok"] is True
        assert probe["last_run"].endswith("Z")
        (alert,) = doc["alerts"]
        assert (alert["rule"], alert["severity"]) == ("cpu_seen", "warning")
        (trend,) = [t for t in doc["trends"] if t["metric"] == "system_cpu_percent"]
        assert trend["last_10"]["count"] == 10
        assert trend["last_10"]["max"] == 30.0
        assert trend["last_hour"]["count"] >= 12
        assert {s["name"] for s in doc["latest"]["probe"]["samples"]} == {
            "system_cpu_percent",
            "api_up",
        }
        assert doc["sinks"]["hook"]["queued"] >= 0
        assert daemon.web is not None
        assert daemon.web.scrapes == 0


class TestAuth:
    async def test_bearer_token_guards_every_path(self, tmp_path, running):
        port = free_port()
        extra = f'bearer_token = "{TOKEN}"\n'
        await running(tmp_path, config_text(tmp_path, port, exporter_extra=extra), [])
        for path in ("/metrics", "/healthz", "/status", "/"):
            status, _, headers = await get(f"http://127.0.0.1:{port}{path}")
            assert status == 401, path
            assert headers["WWW-Authenticate"] == "Bearer"
            wrong = {"Authorization": f"Bearer {TOKEN}x"}
            assert (await get(f"http://127.0.0.1:{port}{path}", wrong))[0] == 401
            right = {"Authorization": f"Bearer {TOKEN}"}
            assert (await get(f"http://127.0.0.1:{port}{path}", right))[0] == 200, path

    async def test_basic_auth(self, tmp_path, running):
        port = free_port()
        extra = f'basic_auth_user = "prom"\nbasic_auth_password = "{TOKEN}"\n'
        await running(tmp_path, config_text(tmp_path, port, exporter_extra=extra), [])
        status, _, headers = await get(f"http://127.0.0.1:{port}/status")
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Basic")
        good = base64.b64encode(f"prom:{TOKEN}".encode()).decode()
        assert (await get(f"http://127.0.0.1:{port}/status", {"Authorization": f"Basic {good}"}))[
            0
        ] == 200


class TestAuthAcrossReloads:
    async def test_credentials_apply_after_the_listener_moved(self, tmp_path, running):
        first, second = free_port(), free_port()
        daemon, _ = await running(tmp_path, config_text(tmp_path, first), [])
        (tmp_path / "c.toml").write_text(config_text(tmp_path, second))
        assert await daemon.reload()
        guarded = config_text(tmp_path, second, exporter_extra=f'bearer_token = "{TOKEN}"\n')
        (tmp_path / "c.toml").write_text(guarded)
        assert await daemon.reload()
        url = f"http://127.0.0.1:{second}/status"
        assert (await get(url))[0] == 401
        assert (await get(url, {"Authorization": f"Bearer {TOKEN}"}))[0] == 200
        rotated = guarded.replace(TOKEN, TOKEN + "-next")
        (tmp_path / "c.toml").write_text(rotated)
        assert await daemon.reload()
        assert (await get(url, {"Authorization": f"Bearer {TOKEN}"}))[0] == 401
        assert (await get(url, {"Authorization": f"Bearer {TOKEN}-next"}))[0] == 200
        assert daemon.web is not None
        assert daemon.web.scrapes == 0

    async def test_an_odd_header_is_a_401_and_the_scheme_is_case_insensitive(
        self, tmp_path, running
    ):
        port = free_port()
        extra = f'bearer_token = "{TOKEN}"\n'
        await running(tmp_path, config_text(tmp_path, port, exporter_extra=extra), [])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        assert status_line.startswith(b"HTTP/1.1 401"), status_line
        lower = {"Authorization": f"bearer {TOKEN}"}
        assert (await get(f"http://127.0.0.1:{port}/status", lower))[0] == 200


class TestListening:
    async def test_a_taken_port_stops_the_start_with_a_clear_error(self, tmp_path, monkeypatch):
        monkeypatch.setattr(daemon_module, "build_collectors", lambda _: [])
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            path = tmp_path / "c.toml"
            path.write_text(config_text(tmp_path, port))
            daemon = Daemon(load_config(path), str(path))
            assert await asyncio.wait_for(daemon.run(), 10) == EX_UNAVAILABLE

    async def test_a_reload_turns_it_on_and_off(self, tmp_path, running):
        port = free_port()
        off = config_text(tmp_path, 0).replace('listen = "127.0.0.1:0"', 'listen = ""')
        probe = ScriptedCollector("probe", [cpu(1.0)], interval=0.5)
        daemon, _ = await running(tmp_path, off, [probe])
        assert daemon.web is None
        (tmp_path / "c.toml").write_text(config_text(tmp_path, port))
        assert await daemon.reload()
        assert (await get(f"http://127.0.0.1:{port}/healthz"))[0] == 200
        (tmp_path / "c.toml").write_text(off)
        assert await daemon.reload()
        with pytest.raises(aiohttp.ClientConnectionError):
            await get(f"http://127.0.0.1:{port}/healthz")

    async def test_the_same_port_on_another_address_of_this_host(self, tmp_path, running):
        port = free_port()
        daemon, _ = await running(tmp_path, config_text(tmp_path, port), [])
        # "localhost" binds 127.0.0.1 (and ::1) too: Linux refuses it while the old socket
        # listens, so the old one must go first
        moved = config_text(tmp_path, port).replace(
            f'listen = "127.0.0.1:{port}"', f'listen = "localhost:{port}"'
        )
        (tmp_path / "c.toml").write_text(moved)
        assert await daemon.reload(), daemon.last_reload_error
        assert daemon.config.exporter.listen == f"localhost:{port}"
        assert (await get(f"http://127.0.0.1:{port}/healthz"))[0] == 200

    async def test_a_reload_moves_the_listener_or_keeps_the_old_one(self, tmp_path, running):
        first, second = free_port(), free_port()
        daemon, _ = await running(tmp_path, config_text(tmp_path, first), [])
        (tmp_path / "c.toml").write_text(config_text(tmp_path, second))
        assert await daemon.reload()
        assert (await get(f"http://127.0.0.1:{second}/healthz"))[0] == 200
        with pytest.raises(aiohttp.ClientConnectionError):
            await get(f"http://127.0.0.1:{first}/healthz")
        with socket.socket() as holder:  # a reload onto a taken port is refused whole
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            taken = holder.getsockname()[1]
            (tmp_path / "c.toml").write_text(config_text(tmp_path, taken))
            assert not await daemon.reload()
            assert "cannot listen on" in (daemon.last_reload_error or "")
            assert (await get(f"http://127.0.0.1:{second}/healthz"))[0] == 200
            assert daemon.config.exporter.port == second


def fossamon_status(config, *extra):
    return subprocess.run(
        [sys.executable, "-m", "fossamon", "status", "-c", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "RUNTIME_DIRECTORY"},
    )


class TestStatusCommand:
    async def test_prints_collectors_alerts_and_trends_of_the_running_daemon(
        self, tmp_path, running
    ):
        port = free_port()
        rules = '[[rules]]\nname = "cpu_seen"\nmetric = "system_cpu_percent"\nwarning = -1\n'
        probe = ScriptedCollector("probe", [cpu(10.0), cpu(20.0)], interval=0.2)
        await running(tmp_path, config_text(tmp_path, port, rules=rules), [probe])
        await wait_until(lambda: probe.calls >= 4, "a few cycles")
        done = await asyncio.to_thread(fossamon_status, tmp_path / "c.toml")
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert re.match(r"fossamon \S+ on \S+: (healthy|UNHEALTHY)", out), out  # load may lag
        assert re.search(r"^probe\s+ok\s+\S+ ago", out, re.MULTILINE), out
        assert re.search(r"^warning\s+cpu_seen\s+-\s+", out, re.MULTILINE), out
        assert re.search(r"^system_cpu_percent\s+last 10 \(\d+\)", out, re.MULTILINE), out
        as_json = await asyncio.to_thread(fossamon_status, tmp_path / "c.toml", "--json")
        assert json.loads(as_json.stdout)["collectors"]["probe"]["runs"] >= 4

    async def test_with_the_exporter_off_it_reads_the_state_store(self, tmp_path, running):
        rules = '[[rules]]\nname = "cpu_seen"\nmetric = "system_cpu_percent"\nwarning = -1\n'
        probe = ScriptedCollector("probe", [cpu(10.0)], interval=0.2)
        text = config_text(tmp_path, 0, rules=rules).replace(
            'listen = "127.0.0.1:0"', 'listen = ""'
        )
        daemon, task = await running(tmp_path, text, [probe])
        await wait_until(daemon.evaluator.firing, "the alert")
        await asyncio.sleep(1.5)  # the state store saves alert states within a second
        done = await asyncio.to_thread(fossamon_status, tmp_path / "c.toml")
        assert done.returncode == 0, done.stderr
        assert "from the state store" in done.stdout
        assert re.search(r"^warning\s+cpu_seen", done.stdout, re.MULTILINE), done.stdout
        assert not task.done()

    async def test_a_token_this_shell_lacks_falls_back_to_the_state_store(
        self, tmp_path, running, monkeypatch
    ):
        port = free_port()
        monkeypatch.setenv("FOSSAMON_TEST_EXPORTER_TOKEN", TOKEN)
        extra = 'bearer_token = "${FOSSAMON_TEST_EXPORTER_TOKEN}"\n'
        rules = '[[rules]]\nname = "cpu_seen"\nmetric = "system_cpu_percent"\nwarning = -1\n'
        runtime = f'runtime_dir = "{tmp_path}/elsewhere"\n'
        text = config_text(tmp_path, port, exporter_extra=extra, rules=rules)
        text = text.replace(f'runtime_dir = "{tmp_path}/run"\n', runtime)
        probe = ScriptedCollector("probe", [cpu(10.0)], interval=0.2)
        daemon, _ = await running(tmp_path, text, [probe])
        await wait_until(daemon.evaluator.firing, "the alert")
        await asyncio.sleep(1.5)  # the state store saves alert states within a second
        monkeypatch.delenv("FOSSAMON_TEST_EXPORTER_TOKEN")  # an operator's shell
        done = await asyncio.to_thread(fossamon_status, tmp_path / "c.toml")
        assert done.returncode == 0, done.stderr
        assert "FOSSAMON_TEST_EXPORTER_TOKEN is not set" in done.stderr
        assert "wants the exporter's credential" in done.stderr
        assert "health unknown" in done.stdout
        assert re.search(r"^warning\s+cpu_seen", done.stdout, re.MULTILINE), done.stdout

    def test_a_dead_pid_is_not_running_even_without_a_start_time(self, tmp_path):
        config = tmp_path / "c.toml"
        config.write_text(config_text(tmp_path, free_port()))
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        (tmp_path / "run").mkdir()
        state = {
            "pid": int(dead.stdout),
            "start_ticks": None,
            "started": time.time(),
            "config": str(config),
            "config_digest": None,
            "generation": 1,
            "reload_requested": 0,
            "reload_completed": 0,
            "last_reload_ok": None,
            "last_reload_error": None,
            "exporter": "127.0.0.1:9",
        }
        (tmp_path / "run" / "state.json").write_text(json.dumps(state))
        done = fossamon_status(config)
        assert done.returncode == 3, done.stderr
        assert "which is not running any more" in done.stderr

    def test_exit_3_when_nothing_runs_and_says_where_it_looked(self, tmp_path):
        config = tmp_path / "c.toml"
        config.write_text(config_text(tmp_path, free_port()))
        done = fossamon_status(config)
        assert done.returncode == 3
        assert f"no state file at {tmp_path}/run/state.json" in done.stderr
