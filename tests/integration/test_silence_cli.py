"""`fossamon silence add|list|expire` against a real state file, alone and next to an open
StateStore (the daemon's), and run as root against a state directory owned by another user."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fossamon.silences import add_silence_parser, run_silence_command
from fossamon.storage.state import SCHEMA_VERSION, StateStore

CONFIG = """
[daemon]
state_dir = "{state_dir}"

[[silences]]
matchers = ['rule="planned"']
until = 2099-01-01T00:00:00Z
comment = "planned maintenance"
"""

# The two lines cli.py needs, in a process of its own (a privilege switch cannot be undone).
MAIN = """
import argparse, sys
from fossamon.silences import add_silence_parser, run_silence_command
parser = argparse.ArgumentParser(prog="fossamon")
add_silence_parser(parser.add_subparsers(dest="command", required=True))
sys.exit(run_silence_command(parser.parse_args()))
"""


def parse(argv):
    parser = argparse.ArgumentParser(prog="fossamon")
    add_silence_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(state_dir=tmp_path / "state"))
    return path


@pytest.fixture
def silence(capsys, config):
    """Run `fossamon silence ARGS -c config` in this process; (exit code, stdout, stderr)."""

    def run(*args, config_path=config):
        code = run_silence_command(parse(["silence", *args, "-c", str(config_path)]))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def listed(silence, *flags):
    code, out, err = silence("list", "--json", *flags)
    assert (code, err) == (0, "")
    return {entry["id"]: entry for entry in json.loads(out)}


class TestRoundTrip:
    def test_add_list_expire(self, silence):
        code, out, err = silence(
            "add",
            'endpoint=~"api|web"',
            "rule=latency_high",
            "--for",
            "2h",
            "--comment",
            "deploy",
            "--author",
            "alice",
        )
        assert (code, err) == (0, "")
        sid = out.strip()
        assert len(sid) == 12
        entries = listed(silence)
        assert entries[sid]["matchers"] == ['endpoint=~"api|web"', 'rule="latency_high"']
        assert entries[sid]["state"] == "active"
        assert (entries[sid]["source"], entries[sid]["created_by"]) == ("cli", "alice")
        ends = datetime.fromisoformat(entries[sid]["ends"])
        assert abs((ends - datetime.now(UTC)) - timedelta(hours=2)) < timedelta(seconds=5)
        (planned,) = (e for e in entries.values() if e["comment"] == "planned maintenance")
        assert planned["source"] == "config (not loaded)"  # no daemon has loaded it yet

        assert silence("expire", sid)[:2] == (0, f"expired silence {sid}\n")
        assert sid not in listed(silence)
        assert listed(silence, "--all")[sid]["state"] == "expired"
        code, out, _ = silence("expire", sid)
        assert code == 0
        assert "already ended" in out

    def test_until_and_json(self, silence):
        until = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
        code, out, _ = silence(
            "add", "severity=critical", "--until", until.isoformat(), "--comment", "c", "--json"
        )
        assert code == 0
        added = json.loads(out)
        assert datetime.fromisoformat(added["ends"]) == until
        assert added["id"] in listed(silence)

    def test_author_defaults_to_the_sudo_user(self, silence, monkeypatch):
        monkeypatch.setenv("SUDO_USER", "bob")
        _, out, _ = silence("add", "rule=x", "--for", "1h", "--comment", "c")
        assert listed(silence)[out.strip()]["created_by"] == "bob"

    def test_table_is_aligned(self, silence):
        silence("add", 'rule="a_much_longer_rule_name"', "--for", "1h", "--comment", "one two")
        silence("add", "rule=b", "--for", "30m", "--comment", "multi\nline")
        code, out, _ = silence("list")
        assert code == 0
        header, *rows = out.splitlines()
        assert len(rows) == 3
        columns = ["ID", "STATE", "MATCHERS", "STARTS", "ENDS", "CREATED BY", "SOURCE", "COMMENT"]
        starts = [header.index(name) for name in columns]
        assert starts == sorted(starts)
        for row in rows:
            for start in starts[1:]:
                assert row[start - 2 : start] == "  "
                assert row[start] != " "
        assert any(row.endswith("multi line") for row in rows)  # one line per silence

    def test_nothing_to_list(self, tmp_path, silence):
        bare = tmp_path / "bare.toml"
        bare.write_text(f'[daemon]\nstate_dir = "{tmp_path / "bare"}"\n')
        code, out, _ = silence("list", config_path=bare)
        assert (code, out) == (0, "no silences (--all shows expired ones)\n")
        assert not (tmp_path / "bare").exists()  # listing creates nothing


def _past():
    return (datetime.now(UTC) - timedelta(minutes=1)).isoformat()


class TestErrors:
    @pytest.mark.parametrize(
        ("args", "code", "message"),
        [
            (["add", "rule", "--for", "1h", "--comment", "c"], 64, "expected a matcher"),
            (["add", 'rule=~"("', "--for", "1h", "--comment", "c"], 64, "regular expression"),
            (["add", 'rule=~".*"', "--for", "1h", "--comment", "c"], 64, "would match all"),
            (["add", "rule=x", "--comment", "c"], 64, "--for DURATION or --until TIME"),
            (
                [
                    "add",
                    "rule=x",
                    "--for",
                    "1h",
                    "--until",
                    "2099-01-01T00:00:00Z",
                    "--comment",
                    "c",
                ],
                64,
                "either",
            ),
            (["add", "rule=x", "--for", "soon", "--comment", "c"], 64, "--for expected"),
            (["add", "rule=x", "--for", "0s", "--comment", "c"], 64, "longer than zero"),
            (["add", "rule=x", "--until", "tomorrow", "--comment", "c"], 64, "ISO 8601"),
            (["add", "rule=x", "--until", "2099-01-01T00:00", "--comment", "c"], 64, "time zone"),
            (["add", "rule=x", "--until", "PAST", "--comment", "c"], 64, "in the past"),
            (["add", "rule=x", "--for", "1h"], 64, "give --comment"),
            (["add", "rule=x", "--for", "1h", "--comment", "  "], 64, "give --comment"),
            (["expire", "0123456789ab"], 1, "no silence with id '0123456789ab'"),
        ],
    )
    def test_one_line_and_the_exit_code(self, silence, tmp_path, args, code, message):
        args = [_past() if a == "PAST" else a for a in args]
        got, out, err = silence(*args)
        assert (got, out) == (code, "")
        assert err.startswith(f"fossamon silence {args[0]}: ")
        assert err.count("\n") == 1
        assert message in err
        if args[0] == "add":
            assert not (tmp_path / "state").exists()  # refused before touching anything

    def test_a_config_silence_is_ended_in_the_config(self, silence):
        (planned,) = listed(silence)
        code, _, err = silence("expire", planned)
        assert code == 1
        assert "comes from the config file" in err

    @pytest.mark.parametrize(
        ("text", "message"),
        [(None, "no such file"), ("[daemon]\nstate_dri = 'x'\n", "invalid configuration")],
    )
    def test_config_problems_exit_78(self, tmp_path, silence, text, message):
        path = tmp_path / "other.toml"
        if text is not None:
            path.write_text(text)
        code, _, err = silence("list", config_path=path)
        assert code == 78
        assert message in err
        assert err.count("\n") == 1

    def test_a_newer_state_file_exits_73(self, tmp_path, silence):
        (tmp_path / "state").mkdir()
        with sqlite3.connect(tmp_path / "state" / "state.db") as conn:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        code, _, err = silence("add", "rule=x", "--for", "1h", "--comment", "c")
        assert code == 73
        assert "newer fossamon" in err


class TestNextToTheDaemon:
    async def test_the_open_store_sees_an_added_silence(self, tmp_path, silence):
        from fossamon.config import load_config

        store = await StateStore.open(str(tmp_path / "state" / "state.db"))
        try:
            config = load_config(tmp_path / "config.toml")
            await store.sync_config_silences(config.silences)
            version = await store.data_version()
            code, out, _ = silence("add", "rule=disk_full", "--for", "1h", "--comment", "c")
            assert code == 0
            assert await store.data_version() != version
            active = {s.id: s.source for s in await store.active_silences(time.time())}
            assert active[out.strip()] == "cli"
            assert sorted(active.values()) == ["cli", "config"]
            assert {e["source"] for e in listed(silence).values()} == {"cli", "config"}
            assert silence("expire", out.strip())[0] == 0
            assert len(await store.active_silences(time.time())) == 1
        finally:
            await store.close()

    def test_waits_for_a_writer_instead_of_failing(self, tmp_path, silence):
        silence("add", "rule=first", "--for", "1h", "--comment", "c")
        locked = threading.Event()

        def hold_the_write_lock():
            with sqlite3.connect(tmp_path / "state" / "state.db", isolation_level=None) as conn:
                conn.execute("BEGIN IMMEDIATE")
                locked.set()
                time.sleep(0.5)
                conn.execute("COMMIT")

        holder = threading.Thread(target=hold_the_write_lock)
        holder.start()
        try:
            assert locked.wait(5)
            began = time.monotonic()
            code, _, err = silence("add", "rule=second", "--for", "1h", "--comment", "c")
        finally:
            holder.join(5)
        assert (code, err) == (0, "")
        assert time.monotonic() - began >= 0.3


NOBODY = 65534


@pytest.fixture
def reachable_tmp():
    """A temp dir another user can pass through. Not below tmp_path: every pytest session that
    starts resets /tmp/pytest-of-root to 0700, which would lock that user out mid-test."""
    with tempfile.TemporaryDirectory(prefix="fossamon-silence-") as path:
        Path(path).chmod(0o711)
        yield Path(path)


OBSERVE = """
import json, os, sys
from fossamon.silences import become_owner
from fossamon.storage.state import connect_sync, state_path
state_dir = sys.argv[1]
become_owner(state_dir)
conn = connect_sync(state_path(state_dir))
conn.execute("INSERT OR REPLACE INTO meta VALUES ('probe', 1)")
owners = {name: os.stat(os.path.join(state_dir, name)).st_uid for name in os.listdir(state_dir)}
print(json.dumps({"uid": os.getuid(), "owners": owners}))
conn.close()
"""


class TestAsRoot:
    @pytest.fixture(autouse=True)
    def _root(self, need):
        # a skip without root, but a failure under FOSSAMON_E2E=require (as CI runs)
        need(os.geteuid() == 0, "root, to switch users")

    @pytest.mark.parametrize("reachable", [True, False], ids=["reachable", "under-0700-root"])
    def test_no_root_owned_file_in_the_daemons_directory(self, tmp_path, reachable_tmp, reachable):
        # `under-0700-root` is systemd's DynamicUser= layout: /var/lib/private is 0700 root
        parent = reachable_tmp / "open" if reachable else tmp_path / "private"
        parent.mkdir(mode=0o755 if reachable else 0o700)
        state_dir = parent / "fossamon"
        state_dir.mkdir(mode=0o700)
        os.chown(state_dir, NOBODY, NOBODY)
        config = tmp_path / "config.toml"
        config.write_text(CONFIG.format(state_dir=state_dir))
        config.chmod(0o600)  # readable by root only: read before switching

        def run(*argv, script=MAIN):
            return subprocess.run(
                [sys.executable, "-c", script, *argv],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
                env={k: v for k, v in os.environ.items() if k != "FOSSAMON_CONFIG"},
            )

        added = run("silence", "add", "rule=x", "--for", "1h", "--comment", "c", "-c", str(config))
        assert (added.returncode, added.stderr) == (0, "")
        listing = run("silence", "list", "--json", "-c", str(config))
        assert listing.returncode == 0, listing.stderr
        assert added.stdout.strip() in listing.stdout
        observed = run(str(state_dir), script=OBSERVE)
        assert observed.returncode == 0, observed.stderr
        seen = json.loads(observed.stdout)
        assert seen["uid"] == (NOBODY if reachable else 0)
        # while open: the -wal and -shm files exist, and are the daemon's too
        assert set(seen["owners"]) == {"state.db", "state.db-wal", "state.db-shm"}
        assert set(seen["owners"].values()) == {NOBODY}
        assert {p.stat().st_uid for p in state_dir.iterdir()} == {NOBODY}
