"""A real `fossamon run` process against the real stand-in target, driven by real signals."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
from pathlib import Path

import pytest
from daemon_harness import collectors_seen, daemon_config, make_big_db, start_daemon

from fossamon.demo.target import DemoTarget


@pytest.fixture
async def target(small_demo_db):
    async with DemoTarget(small_demo_db) as running:
        yield running


class TestRun:
    async def test_runs_end_to_end_and_stops_cleanly_on_sigterm(
        self, tmp_path, target, small_demo_db, notify
    ):
        digest_before = hashlib.sha256(small_demo_db.read_bytes()).hexdigest()
        mtime_before = small_demo_db.stat().st_mtime_ns
        config = daemon_config(tmp_path, target.url, small_demo_db)
        daemon = await start_daemon(config, tmp_path, {"NOTIFY_SOCKET": str(notify.path)})
        await daemon.wait_for(
            lambda: (
                len(daemon.lines()) >= 9
                and collectors_seen(daemon.lines()) == {"system", "api", "db"}
            ),
            what="three runs of each collector",
        )
        ready = await daemon.wait_for(
            lambda: [m for m in notify.drain() if m.startswith("READY=1")], what="READY=1"
        )
        assert "STATUS=3/3 collectors ok" in ready[0]
        rc, took = await daemon.stop()
        assert rc == 0, daemon.stderr.decode()[-2000:]
        assert took < 5.0
        assert any(m.startswith("STOPPING=1") for m in notify.drain())
        lines = daemon.lines()  # every line parses (json.loads above would raise)
        api = next(line for line in lines if line["collector"] == "api")
        names = {(s["name"], s["labels"].get("endpoint")) for s in api["samples"]}
        assert ("api_up", "health") in names
        assert ("api_response_seconds", "work_orders") in names
        db = next(line for line in lines if line["collector"] == "db")
        value = next(s for s in db["samples"] if s["name"] == "db_query_value")
        assert value["value"] == 5000
        assert all(line["v"] == 1 and line["host"] for line in lines)
        assert target.stats["/api/health"] >= 3
        # the monitored database is untouched: same bytes, same mtime, no journal left behind
        assert hashlib.sha256(small_demo_db.read_bytes()).hexdigest() == digest_before
        assert small_demo_db.stat().st_mtime_ns == mtime_before
        assert not Path(f"{small_demo_db}-journal").exists()
        assert b"stopped" in daemon.stderr

    async def test_sigterm_with_a_hanging_probe_stops_within_the_grace(
        self, tmp_path, target, small_demo_db
    ):
        target.faults.set("/api/work-orders", hang=True)
        config = daemon_config(tmp_path, target.url, small_demo_db, api_timeout="30s", grace="1s")
        daemon = await start_daemon(config, tmp_path)
        await daemon.wait_for(lambda: "db" in collectors_seen(daemon.lines()), what="a db run")
        await asyncio.sleep(0.3)  # the api run is now waiting on the hanging endpoint
        rc, took = await daemon.stop()
        assert rc == 0
        assert took < 4.0
        assert b"cancelled_runs=1" in daemon.stderr
        for line in daemon.lines():
            assert line["v"] == 1

    async def test_sigint_stops_too(self, tmp_path, target, small_demo_db):
        daemon = await start_daemon(daemon_config(tmp_path, target.url, small_demo_db), tmp_path)
        await daemon.wait_for(daemon.lines, what="a first line")
        rc, _ = await daemon.stop(signal.SIGINT)
        assert rc == 0


class TestAlerts:
    async def test_endpoint_down_and_back_is_critical_then_resolved(
        self, tmp_path, target, small_demo_db
    ):
        daemon = await start_daemon(daemon_config(tmp_path, target.url, small_demo_db), tmp_path)
        await daemon.wait_for(lambda: "api" in collectors_seen(daemon.lines()), what="an api run")
        target.faults.set("/api/work-orders", status=503)
        firing = await daemon.wait_for(
            lambda: [a for a in daemon.lines(daemon.alerts) if a["event"] == "firing"],
            what="a firing alert",
        )
        target.faults.clear()
        resolved = await daemon.wait_for(
            lambda: [a for a in daemon.lines(daemon.alerts) if a["event"] == "resolved"],
            what="a resolved alert",
        )
        rc, _ = await daemon.stop()
        assert rc == 0
        alert = firing[0]
        assert (alert["rule"], alert["severity"], alert["labels"]) == (
            "api_down",
            "critical",
            {"endpoint": "work_orders"},
        )
        assert alert["value"] == 0
        assert resolved[0]["fingerprint"] == alert["fingerprint"]
        error_kinds = {
            e["kind"]
            for line in daemon.lines()
            if line["collector"] == "api"
            for e in line["errors"]
        }
        assert "status" in error_kinds
        assert b"alert=firing" in daemon.stderr
        assert b"rule=api_down" in daemon.stderr

    async def test_missing_database_is_critical_and_never_created(self, tmp_path, target):
        missing = tmp_path / "nope" / "fossawork_v2.db"
        daemon = await start_daemon(daemon_config(tmp_path, target.url, missing), tmp_path)
        alerts = await daemon.wait_for(
            lambda: [a for a in daemon.lines(daemon.alerts) if a["rule"] == "db_down"],
            what="db_down",
        )
        await daemon.stop()
        assert alerts[0]["severity"] == "critical"
        assert not missing.exists()
        assert not missing.parent.exists()


class TestReloadAndReopen:
    async def test_sighup_applies_a_good_config_and_keeps_running_on_a_bad_one(
        self, tmp_path, target, small_demo_db, notify
    ):
        config = daemon_config(tmp_path, target.url, small_demo_db)
        daemon = await start_daemon(config, tmp_path, {"NOTIFY_SOCKET": str(notify.path)})
        await daemon.wait_for(lambda: len(collectors_seen(daemon.lines())) == 3, what="all runs")
        good = config.read_text().replace('interval = "500ms"\npath', 'interval = "200ms"\npath')
        config.write_text(good)
        daemon.proc.send_signal(signal.SIGHUP)
        await daemon.wait_for(
            lambda: (
                sum(m.startswith("RELOADING=1") for m in notify.drain()) >= 1
                and any(m.startswith("READY=1") for m in notify.messages[-3:])
            ),
            what="RELOADING=1 then READY=1",
        )
        config.write_text(
            good.replace("[collectors.system]\ninterval", "[collectors.system]\nintervall")
        )
        daemon.proc.send_signal(signal.SIGHUP)
        await daemon.wait_for(
            lambda: any("reload failed" in m for m in notify.drain()), what="reload failed status"
        )
        count = len(daemon.lines())
        await daemon.wait_for(lambda: len(daemon.lines()) > count + 3, what="more runs after")
        rc, _ = await daemon.stop()
        assert rc == 0
        log = daemon.stderr.decode()
        assert "reloaded" in log
        assert "reload rejected" in log
        assert "intervall" in log

    async def test_sigusr1_reopens_the_output_files(self, tmp_path, target, small_demo_db):
        daemon = await start_daemon(daemon_config(tmp_path, target.url, small_demo_db), tmp_path)
        await daemon.wait_for(daemon.lines, what="a first line")
        rotated = daemon.metrics.with_name("metrics.jsonl.1")
        daemon.metrics.rename(rotated)
        daemon.proc.send_signal(signal.SIGUSR1)
        await daemon.wait_for(lambda: daemon.metrics.exists() and daemon.lines(), what="new file")
        await daemon.stop()
        old = [json.loads(x) for x in rotated.read_text().splitlines()]
        new = daemon.lines()
        assert old
        assert new
        # nothing written twice across the reopen (a run is identified by collector + start)
        runs = [(line["collector"], line["ts"]) for line in old + new]
        assert len(runs) == len(set(runs))


class TestBadConfig:
    async def test_misspelt_key_exits_78_naming_it(self, tmp_path):
        config = tmp_path / "config.toml"
        config.write_text('[collectors.system]\nintervall = "10s"\n')
        daemon = await start_daemon(config, tmp_path)
        await asyncio.wait_for(daemon.proc.wait(), 30)
        assert daemon.proc.returncode == 78
        assert daemon.proc.stderr is not None
        err = (await daemon.proc.stderr.read()).decode()
        assert 'collectors.system.intervall: unknown key (did you mean "interval"?)' in err

    async def test_unwritable_output_exits_73(self, tmp_path):
        blocker = tmp_path / "file"
        blocker.write_text("")
        config = tmp_path / "config.toml"
        config.write_text(f'[output.metrics]\npath = "{blocker}/m.jsonl"\n')
        daemon = await start_daemon(config, tmp_path)
        await asyncio.wait_for(daemon.proc.wait(), 30)
        assert daemon.proc.returncode == 73
        assert daemon.proc.stderr is not None
        assert b"cannot start" in await daemon.proc.stderr.read()


class TestStopIsBounded:
    async def test_sigterm_while_a_db_query_outlives_the_grace(self, tmp_path):
        db = make_big_db(tmp_path / "big.db")
        config = tmp_path / "config.toml"
        config.write_text(
            f'[daemon]\nlog_format = "plain"\nshutdown_grace = "1s"\n'
            f'runtime_dir = "{tmp_path}/run"\nstate_dir = "{tmp_path}/state"\n'
            f'[output.metrics]\npath = "{tmp_path}/out/metrics.jsonl"\n'
            f'[output.alerts]\npath = "{tmp_path}/out/alerts.jsonl"\n'
            '[exporter]\nlisten = ""\n'
            "[collectors.system]\nenabled = false\n"
            f'[collectors.db]\npath = "{db}"\ntimeout = "60s"\n'
            '[[collectors.db.queries]]\nname = "forever"\n'
            'sql = "SELECT count(*) FROM t a, t b, t c"\n'
        )
        daemon = await start_daemon(config, tmp_path)
        # the run starts with the daemon (no start-up time in the measure), then 1.5 s in
        await daemon.wait_for((tmp_path / "run" / "state.json").exists, what="the start")
        await asyncio.sleep(1.5)  # the query is now deep into 27 billion rows
        rc, took = await daemon.stop()
        assert rc == 0, daemon.stderr.decode()[-2000:]
        assert took < 4.0
        assert b"cancelled_runs=1" in daemon.stderr


class TestSignalsAtOddMoments:
    async def test_sighup_during_shutdown_is_ignored(self, tmp_path, target, small_demo_db, notify):
        target.faults.set("/api/work-orders", hang=True)
        config = daemon_config(tmp_path, target.url, small_demo_db, api_timeout="30s", grace="1s")
        daemon = await start_daemon(config, tmp_path, {"NOTIFY_SOCKET": str(notify.path)})
        await daemon.wait_for(lambda: "db" in collectors_seen(daemon.lines()), what="a db run")
        daemon.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        rc, _ = await daemon.stop(signal.SIGHUP)
        assert rc == 0
        assert b"reload ignored: stopping" in daemon.stderr
        assert b"reloaded" not in daemon.stderr
        messages = notify.drain()
        stopping = next(i for i, m in enumerate(messages) if m.startswith("STOPPING=1"))
        assert not any(m.startswith("READY=1") for m in messages[stopping:])

    async def test_reload_before_the_first_cycle_does_not_claim_ready(
        self, tmp_path, target, small_demo_db, notify
    ):
        target.faults.set("/api/work-orders", hang=True)
        config = daemon_config(tmp_path, target.url, small_demo_db, api_timeout="30s", grace="1s")
        daemon = await start_daemon(config, tmp_path, {"NOTIFY_SOCKET": str(notify.path)})
        await daemon.wait_for(lambda: "db" in collectors_seen(daemon.lines()), what="a db run")
        daemon.proc.send_signal(signal.SIGHUP)
        await daemon.wait_for(
            lambda: any(m.startswith("RELOADING=1") for m in notify.drain()), what="RELOADING=1"
        )
        await asyncio.sleep(0.5)
        await daemon.stop()
        messages = notify.drain()
        assert not any(m.startswith("READY=1") for m in messages)
        status = [m for m in messages if m.startswith("STATUS=")]
        assert any("(starting: api)" in m for m in status)


class TestReloadEdgeCases:
    async def test_an_unusable_output_path_rejects_the_whole_reload(
        self, tmp_path, target, small_demo_db, notify
    ):
        config = daemon_config(tmp_path, target.url, small_demo_db)
        daemon = await start_daemon(config, tmp_path, {"NOTIFY_SOCKET": str(notify.path)})
        await daemon.wait_for(lambda: len(collectors_seen(daemon.lines())) == 3, what="all runs")
        blocker = tmp_path / "blocker"
        blocker.write_text("")
        edited = config.read_text().replace(
            f'path = "{tmp_path}/out/metrics.jsonl"', f'path = "{blocker}/metrics.jsonl"'
        )
        config.write_text(edited.replace('interval = "500ms"\npath', 'interval = "5s"\npath'))
        daemon.proc.send_signal(signal.SIGHUP)
        await daemon.wait_for(
            lambda: any("reload failed" in m for m in notify.drain()), what="reload failed"
        )

        def db_runs() -> int:
            return sum(line["collector"] == "db" for line in daemon.lines())

        # lines keep coming to the old file, and the db interval edit made in the same file
        # was not half-applied: still a run every 500 ms, not every 5 s
        before = db_runs()
        await daemon.wait_for(lambda: db_runs() >= before + 3, timeout=4, what="db runs go on")
        await daemon.stop()
        messages = notify.messages
        reloading = next(i for i, m in enumerate(messages) if m.startswith("RELOADING=1"))
        assert messages[reloading + 1].startswith("READY=1\nSTATUS=")
        assert "reload failed" in messages[reloading + 1]
        rejected = next(x for x in daemon.stderr.splitlines() if b"reload rejected" in x)
        assert b"the running config stays" in rejected
        assert f"{blocker}/metrics.jsonl".encode() in rejected  # the log names the path

    async def test_removing_an_endpoint_resolves_its_alert(
        self, tmp_path, target, small_demo_db, notify
    ):
        more = '[[collectors.api.endpoints]]\nname = "gone"\npath = "/api/nope"\n'
        config = daemon_config(tmp_path, target.url, small_demo_db)
        text = config.read_text().replace("[collectors.db]", more + "[collectors.db]")
        config.write_text(text)
        daemon = await start_daemon(config, tmp_path, {"NOTIFY_SOCKET": str(notify.path)})
        await daemon.wait_for(
            lambda: [
                a for a in daemon.lines(daemon.alerts) if a["labels"].get("endpoint") == "gone"
            ],
            what="api_down for the 404 endpoint",
        )
        config.write_text(text.replace(more, ""))
        daemon.proc.send_signal(signal.SIGHUP)
        resolved = await daemon.wait_for(
            lambda: [a for a in daemon.lines(daemon.alerts) if a["event"] == "resolved"],
            what="resolved",
        )
        await daemon.wait_for(
            lambda: any("no alerts" in m for m in notify.drain()[-2:]), what="STATUS no alerts"
        )
        await daemon.stop()
        assert resolved[0]["labels"] == {"endpoint": "gone"}
        assert resolved[0]["summary"].endswith("(no longer collected)")

    async def test_a_sighup_during_a_reload_runs_another(self, tmp_path, target, small_demo_db):
        target.faults.set("/api/work-orders", latency=1.5)
        config = daemon_config(tmp_path, target.url, small_demo_db, api_timeout="5s", grace="5s")
        daemon = await start_daemon(config, tmp_path)
        await daemon.wait_for(lambda: "db" in collectors_seen(daemon.lines()), what="a db run")
        # change the api collector: the reload waits for its slow run in flight
        config.write_text(config.read_text().replace('timeout = "5s"', 'timeout = "4s"'))
        daemon.proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.3)
        config.write_text(config.read_text().replace('timeout = "4s"', 'timeout = "3s"'))
        daemon.proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(4)
        await daemon.stop()
        log = daemon.stderr.decode()
        assert "reload requested during a reload" in log
        assert "generation=3" in log
