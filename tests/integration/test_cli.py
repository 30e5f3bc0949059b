"""The command line as operators use it: real processes, real target, real files."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fossamon.demo.target import DemoTarget

REPO = Path(__file__).resolve().parents[2]


async def fossamon(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"NOTIFY_SOCKET", "FOSSAMON_CONFIG"}}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fossamon",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def once_config(tmp_path: Path, url: str, db: Path) -> Path:
    """The shipped config.toml, pointed at the stand-in (as an operator would edit it)."""
    text = (REPO / "config.toml").read_text()
    text = text.replace('base_url = "http://localhost:8000"', f'base_url = "{url}"')
    text = text.replace('path = "/backend/fossawork_v2.db"', f'path = "{db}"')
    text = text.replace("/var/log/fossamon", str(tmp_path / "log"))
    text = text.replace("/var/lib/fossamon", str(tmp_path / "state"))
    # CI machines can be busy: the host rules are not what these tests are about
    text = re.sub(r'\[\[rules\]\]\nname = "(cpu_high|memory_high|disk_full)"[^\[]*', "", text)
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


@pytest.fixture
async def target(small_demo_db):
    async with DemoTarget(small_demo_db) as running:
        yield running


class TestOnce:
    async def test_json_has_system_api_and_db_samples(self, tmp_path, target, small_demo_db):
        config = once_config(tmp_path, target.url, small_demo_db)
        began = time.perf_counter()
        rc, out, err = await fossamon("once", "-c", str(config), "--json")
        wall = time.perf_counter() - began
        assert rc == 0, err
        doc = json.loads(out)
        by_collector = {batch["collector"]: batch for batch in doc["batches"]}
        assert set(by_collector) == {"system", "api", "db"}
        names = {
            collector: {s["name"] for s in batch["samples"]}
            for collector, batch in by_collector.items()
        }
        assert {"system_cpu_percent", "system_memory_percent", "system_disk_percent"} <= names[
            "system"
        ]
        assert {"api_up", "api_response_seconds", "api_status_code"} <= names["api"]
        assert {"db_up", "db_query_seconds", "db_query_value"} <= names["db"]
        api_up = {
            s["labels"]["endpoint"]: s["value"]
            for s in by_collector["api"]["samples"]
            if s["name"] == "api_up"
        }
        assert api_up == {"health": 1, "auth_validate": 1, "work_orders": 1, "dispensers": 1}
        assert by_collector["api"]["errors"] == []
        assert by_collector["db"]["errors"] == []
        assert doc["alerts"] == []
        assert doc["worst"] == "ok"
        assert wall < 15

    async def test_table_and_exit_1_when_a_rule_is_critical(self, tmp_path, target, small_demo_db):
        target.faults.set("/api/dispensers", status=500)
        config = once_config(tmp_path, target.url, small_demo_db)
        rc, out, _ = await fossamon("once", "-c", str(config))
        assert rc == 1
        assert re.search(r"^COLLECTOR\s+SERIES\s+VALUE$", out, re.MULTILINE)
        assert re.search(r'^api\s+api_up\{endpoint="health"\}\s+1$', out, re.MULTILINE)
        failure = r"^api\s+dispensers\s+status\s+status 500, expected 2xx$"
        assert re.search(failure, out, re.MULTILINE)
        assert re.search(
            r'^CRITICAL\s+api_down\s+api_up\{endpoint="dispensers"\}\s+0\s+1$', out, re.MULTILINE
        )

    async def test_missing_database_is_critical_and_not_created(self, tmp_path, target):
        missing = tmp_path / "gone.db"
        config = once_config(tmp_path, target.url, missing)
        rc, out, _ = await fossamon("once", "-c", str(config), "--json")
        assert rc == 1
        doc = json.loads(out)
        assert {(a["rule"], a["severity"]) for a in doc["alerts"]} == {("db_down", "critical")}
        db = next(b for b in doc["batches"] if b["collector"] == "db")
        assert db["errors"][0]["kind"] == "missing"
        assert not missing.exists()

    async def test_bad_config_exits_78(self, tmp_path):
        config = tmp_path / "c.toml"
        config.write_text("[rules]\n")
        rc, out, err = await fossamon("once", "-c", str(config))
        assert rc == 78
        assert out == ""
        assert "c.toml: rules: expected a list ([ … ]), got {}" in err


class TestCheck:
    async def test_shipped_config_summary(self):
        rc, out, err = await fossamon("check", "-c", str(REPO / "config.toml"))
        assert rc == 0, err
        assert out.startswith(f"{REPO / 'config.toml'}: valid\n")
        assert "  api     every 15s: 4 endpoint(s), timeout 10s" in out
        assert (
            "    auth_validate: POST http://localhost:8000/api/auth/validate (expect 200, 401)"
            in out
        )
        assert (
            "  api_p95_latency: api_response_seconds p95 over 5m above warning 500ms / critical 2s"
            in out
        )
        assert "rules (8):" in out
        assert "sinks (1):\n  log (log) → the daemon's log (journal); warning and worse" in out

    async def test_warnings_for_what_is_probably_not_meant(self, tmp_path):
        blocker = tmp_path / "blocker"
        blocker.write_text("")
        config = tmp_path / "c.toml"
        config.write_text(
            f'[output.metrics]\npath = "{blocker}/m.jsonl"\n'
            f'[collectors.db]\npath = "{tmp_path}/none.db"\n'
            '[[collectors.db.queries]]\nname = "count"\nsql = "SELECT 1"\n'
            '[[rules]]\nname = "down"\nmetric = "api_up"\ndirection = "below"\ncritical = 1\n'
            '[[rules]]\nname = "slow"\nmetric = "db_query_seconds"\nwarning = "1s"\n'
            'labels = { query = "cuont", endpiont = "x" }\n'
        )
        rc, out, _ = await fossamon("check", "-c", str(config))
        assert rc == 0
        warnings = out[out.index("warnings (") :].splitlines()[1:]
        assert warnings == [
            f"  collectors.db.path: {tmp_path}/none.db does not exist (db_up will be 0)",
            (
                f"  output.metrics.path: {blocker} is not a directory, so {blocker}/m.jsonl "
                "cannot be created"
            ),
            (
                "  rules[0].metric: no enabled collector produces 'api_up', "
                "so this rule can never fire"
            ),
            "  rules[1].labels.query: 'cuont' matches nothing configured (count)",
            (
                "  rules[1].labels.endpiont: no metric has this label "
                "(cpu, direction, endpoint, mount, query)"
            ),
        ]

    async def test_rule_on_an_unknown_metric_is_an_error_with_a_suggestion(self, tmp_path):
        config = tmp_path / "c.toml"
        config.write_text('[[rules]]\nname = "typo"\nmetric = "api_respnse_seconds"\nwarning = 1\n')
        rc, _, err = await fossamon("check", "-c", str(config))
        assert rc == 78
        assert (
            "rules[0].metric: no collector produces 'api_respnse_seconds' "
            '(did you mean "api_response_seconds"?)'
        ) in err

    async def test_misspelt_key_exits_78_naming_file_and_key(self, tmp_path):
        config = tmp_path / "c.toml"
        text = (REPO / "config.toml").read_text().replace("max_redirects = 10", "max_redirect = 10")
        config.write_text(text)
        rc, out, err = await fossamon("check", "-c", str(config))
        assert rc == 78
        assert out == ""
        assert (
            f'{config}: collectors.api.max_redirect: unknown key (did you mean "max_redirects"?)'
            in err
        )

    async def test_config_from_environment(self, tmp_path, monkeypatch):
        config = tmp_path / "c.toml"
        config.write_text("")
        monkeypatch.setenv("FOSSAMON_CONFIG", str(config))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fossamon", "check", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0
        assert out.decode().startswith(f"{config}: valid")

    async def test_a_closed_pipe_is_not_a_traceback(self):
        # `fossamon check | head -1`: the reader leaves after the first line
        read_end, write_end = os.pipe()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fossamon",
            "check",
            "-c",
            str(REPO / "config.toml"),
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
        )
        os.close(write_end)
        os.close(read_end)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode in {0, 141}
        assert b"Traceback" not in err

    async def test_version(self):
        rc, out, _ = await fossamon("--version")
        assert rc == 0
        assert re.fullmatch(r"fossamon \d+\.\d+\.\d+\n", out)


class TestDemo:
    async def test_ordinary_mistakes_are_one_line_not_a_traceback(self, tmp_path):
        not_a_dir = tmp_path / "file"
        not_a_dir.write_text("")
        rc, _, err = await fossamon("demo", "--dir", str(not_a_dir))
        assert rc == 1
        assert err.startswith("fossamon demo: ")
        assert "Traceback" not in err

    async def test_a_database_that_is_not_the_demo_one_is_never_overwritten(self, tmp_path):
        foreign = tmp_path / "fossawork_v2.db"
        foreign.write_bytes(b"precious data")
        rc, _, err = await fossamon("demo", "--dir", str(tmp_path))
        assert rc == 1
        assert "Traceback" not in err
        assert foreign.read_bytes() == b"precious data"

    @pytest.mark.slow
    async def test_demo_shows_every_collector_within_15_seconds(self, tmp_path):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fossamon",
            "demo",
            "--dir",
            str(tmp_path),
            "--duration",
            "30",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        seen: set[str] = set()
        began = time.monotonic()
        first_line_at: dict[str, float] = {}
        page = ""
        try:
            while seen != {"system", "api", "db"} and time.monotonic() - began < 30:
                line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
                if found := re.match(r"^status:\s+(http://127\.0\.0\.1:\d+/)", line):
                    page = found.group(1)
                match = re.match(r"^\d\d:\d\d:\d\d (system|api|db)\s", line)
                if match:
                    seen.add(match.group(1))
                    first_line_at.setdefault(match.group(1), time.monotonic() - began)
            # the printed status page answers (the demo runs the exporter on loopback)
            assert page, "the demo did not print its status page address"
            health = await asyncio.to_thread(urllib.request.urlopen, page + "healthz", timeout=5)
            assert health.status == 200
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 10)
        assert seen == {"system", "api", "db"}
        # seeding 100k rows happens first; metrics must still be on screen within 15 s
        assert max(first_line_at.values()) < 15, first_line_at
        metrics = tmp_path / "performance-metrics.jsonl"
        assert all(json.loads(line)["v"] == 1 for line in metrics.read_text().splitlines())
