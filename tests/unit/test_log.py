"""Logging runs in a child process: it configures process-wide logging, as the daemon does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import logging, sys
    import structlog
    from fossamon.log import configure_logging
    fmt = configure_logging(sys.argv[1], sys.argv[2])
    print("format=" + fmt, file=sys.stdout)
    log = structlog.get_logger("t")
    log.debug("quiet detail")
    log.info("collector started", collector="api", interval=15)
    log.warning("slow run", duration=1.5)
    try:
        {}["missing"]
    except KeyError:
        log.exception("collector crashed", collector="db")
    logging.getLogger("aiohttp.client").error("stdlib says %s", "hello")
    """
)


def run(tmp_path, level="info", fmt="auto", journal=False):
    err = tmp_path / "stderr.txt"
    with err.open("wb") as sink:
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        if journal:
            info = os.fstat(sink.fileno())
            env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, level, fmt],
            stdout=subprocess.PIPE,
            stderr=sink,
            env=env,
            timeout=60,
            check=True,
        )
    return done.stdout.decode().strip(), err.read_text().splitlines()


class TestJournal:
    def test_detected_from_journal_stream_and_every_line_has_a_priority(self, tmp_path):
        chosen, lines = run(tmp_path, journal=True)
        assert chosen == "format=journal"
        assert lines[0] == "<6>collector started collector=api interval=15"
        assert lines[1] == "<4>slow run duration=1.5"
        assert lines[2] == "<3>collector crashed collector=db"
        # the traceback's lines keep the error priority, so `journalctl -p err` shows them all
        traceback = lines[3 : lines.index("<3>KeyError: 'missing'") + 1]
        assert traceback[0] == "<3>Traceback (most recent call last):"
        assert all(line.startswith("<3>") for line in traceback)
        assert lines[-1] == "<3>stdlib says hello"
        assert not any("quiet detail" in line for line in lines)
        assert not any("20" in line[:8] for line in lines)  # no timestamps

    def test_a_journal_stream_of_another_file_is_not_the_journal(self, tmp_path, monkeypatch):
        chosen, lines = run(tmp_path, journal=False)
        assert chosen == "format=plain"
        assert lines[0].endswith("collector=api interval=15")
        assert lines[0][:4].isdigit()  # plain lines carry a timestamp


class TestOtherFormats:
    def test_json_lines(self, tmp_path):
        chosen, lines = run(tmp_path, fmt="json", level="debug")
        assert chosen == "format=json"
        docs = [json.loads(line) for line in lines]
        assert docs[0]["event"] == "quiet detail"
        assert docs[1] == {
            "collector": "api",
            "interval": 15,
            "event": "collector started",
            "level": "info",
            "timestamp": docs[1]["timestamp"],
        }
        crash = docs[3]
        assert crash["level"] == "error"
        assert "KeyError" in crash["exception"]
        assert docs[-1]["event"] == "stdlib says hello"

    def test_forced_journal_format(self, tmp_path):
        chosen, lines = run(tmp_path, fmt="journal", level="warning")
        assert chosen == "format=journal"
        assert lines[0] == "<4>slow run duration=1.5"

    def test_a_notice_is_priority_5_and_secrets_are_masked(self, tmp_path):
        """A resolved alert asks for syslog's notice (the stdlib has no such level); a
        registered secret never reaches a line, tracebacks included."""
        script = textwrap.dedent(
            """
            import io, structlog
            from fossamon.log import configure_logging
            from fossamon.redact import set_secrets
            out = io.StringIO()
            configure_logging("info", "journal", out)
            set_secrets(["s3cr3t-token"])
            log = structlog.get_logger("t")
            log.info("alert resolved", syslog_level="notice", rule="r")
            log.error("post failed", url="https://user:s3cr3t-token@hooks.example/x")
            try:
                raise RuntimeError("token s3cr3t-token refused")
            except RuntimeError:
                log.exception("crashed")
            print(out.getvalue(), end="")
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, timeout=60, check=True
        )
        lines = done.stdout.decode().splitlines()
        assert lines[0] == "<5>alert resolved rule=r"
        assert lines[1].startswith("<3>post failed url=")
        assert "s3cr3t-token" not in done.stdout.decode()
        assert any(line.startswith("<3>RuntimeError: token *** refused") for line in lines)
