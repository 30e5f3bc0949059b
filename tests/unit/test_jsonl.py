from __future__ import annotations

import json
import os
import stat
import tracemalloc

import orjson
import pytest

from fossamon.config import parse_config
from fossamon.model import Batch, ErrorKind, Failure, Sample, make_labels
from fossamon.redact import set_secrets, set_secrets_from_config
from fossamon.storage.jsonl import JsonlWriter, dumps_line
from fossamon.storage.output import BufferedOutput


class TestLines:
    def test_batch_line_matches_the_schema(self, tmp_path):
        writer = JsonlWriter(tmp_path / "out" / "m.jsonl")
        writer.open()
        batch = Batch(
            "api",
            1_795_000_000.1234,
            0.0421,
            (Sample("api_up", 1.0, make_labels(endpoint="health")),),
            (Failure("work_orders", ErrorKind.TIMEOUT, "no response within 2s"),),
        )
        assert writer.write(batch.to_json("web-1"))
        writer.close()
        (line,) = (tmp_path / "out" / "m.jsonl").read_text().splitlines()
        doc = json.loads(line)
        assert doc == {
            "v": 1,
            "ts": "2026-11-18T11:06:40.123Z",
            "host": "web-1",
            "collector": "api",
            "duration_ms": 42.1,
            "samples": [{"name": "api_up", "labels": {"endpoint": "health"}, "value": 1.0}],
            "errors": [
                {"target": "work_orders", "kind": "timeout", "message": "no response within 2s"}
            ],
        }

    def test_non_finite_numbers_become_null_and_unicode_stays_readable(self):
        line = dumps_line({"a": float("nan"), "b": [float("inf")], "c": "café → ok"})
        assert line == '{"a":null,"b":[null],"c":"café → ok"}\n'.encode()

    def test_file_mode_and_directory_creation(self, tmp_path):
        path = tmp_path / "a" / "b" / "m.jsonl"
        writer = JsonlWriter(path)
        writer.write({"x": 1})
        writer.close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750


class TestNeverTorn:
    def test_partial_last_line_is_terminated_on_open(self, tmp_path):
        path = tmp_path / "m.jsonl"
        path.write_bytes(b'{"v":1}\n{"v":1,"ts":"20')  # a crash mid-line
        writer = JsonlWriter(path)
        writer.open()
        writer.write({"v": 1, "n": 2})
        writer.close()
        lines = path.read_bytes().split(b"\n")
        assert lines[0] == b'{"v":1}'
        assert lines[1] == b'{"v":1,"ts":"20'  # kept, but ends at its own newline
        assert json.loads(lines[2]) == {"v": 1, "n": 2}
        assert writer.repaired_lines == 1

    def test_appends_across_writers_and_reopen(self, tmp_path):
        path = tmp_path / "m.jsonl"
        for n in range(3):
            writer = JsonlWriter(path)
            writer.open()
            writer.write({"n": n})
            writer.close()
        assert [json.loads(x)["n"] for x in path.read_text().splitlines()] == [0, 1, 2]

    def test_write_failure_is_counted_not_raised(self, tmp_path):
        writer = JsonlWriter(tmp_path / "m.jsonl")
        writer.open()
        assert writer.fd is not None
        os.close(writer.fd)  # the descriptor goes bad under the writer (EBADF)
        assert writer.write({"x": 1}) is False
        assert writer.write({"x": 2}) is False
        assert writer.lines_dropped == 2
        writer.fd = None
        assert writer.write({"x": 3}) is True  # reopens and carries on

    def test_full_disk_leaves_no_partial_line(self, tmp_path):
        # /dev/full fails every write with ENOSPC: the real kernel error, not a mock
        writer = JsonlWriter(tmp_path / "m.jsonl")
        writer.open()
        assert writer.fd is not None
        os.close(writer.fd)
        writer.fd = os.open("/dev/full", os.O_WRONLY)
        assert writer.write({"x": 1}) is False
        assert writer.lines_dropped == 1
        writer.close()


class TestHostileText:
    def test_a_lone_surrogate_from_a_service_keeps_the_line(self):
        # json.loads accepts "\ud800" (legal JSON); it reaches us in failure messages
        message = json.loads('"bad \\ud800 value"')
        failure = Failure("health", ErrorKind.BODY_MISMATCH, f"status was {message}\nnext line")
        assert failure.message == "status was bad \\ud800 value next line"
        line = dumps_line({"m": message})
        assert json.loads(line) == {"m": message}

    def test_an_unserialisable_record_is_dropped_and_counted(self, tmp_path):
        writer = JsonlWriter(tmp_path / "m.jsonl")
        assert writer.write({"x": object()}) is False
        assert writer.lines_dropped == 1
        assert writer.write({"x": 1}) is True
        writer.close()


class TestThePathChangesUnderTheWriter:
    def test_a_removed_folder_is_recreated_and_nothing_is_written_to_the_lost_file(self, tmp_path):
        import shutil

        from fossamon.storage.jsonl import JsonlWriter

        clock = [1_800_000_000.0]
        out = tmp_path / "out" / "m.jsonl"
        writer = JsonlWriter(out, clock=lambda: clock[0])
        writer.open()
        assert writer.write({"n": 1})
        shutil.rmtree(tmp_path / "out")
        clock[0] += 1.5
        assert writer.maybe_rotate(clock[0])  # noticed within a second: reopened
        assert writer.write({"n": 2})
        assert [json.loads(x)["n"] for x in out.read_text().splitlines()] == [2]
        writer.close()

    @pytest.mark.parametrize("what", ["file", "folder"])
    def test_a_removed_file_is_noticed_at_the_next_write_not_a_second_later(self, tmp_path, what):
        import shutil

        from fossamon.storage.jsonl import JsonlWriter

        out = tmp_path / "out" / "m.jsonl"
        writer = JsonlWriter(out, clock=lambda: 1_800_000_000.0)  # the 1 s check never comes
        writer.open()
        assert writer.write({"n": 1})
        if what == "file":
            out.unlink()
        else:
            shutil.rmtree(out.parent)
        assert writer.write({"n": 2})  # not into the unlinked inode: a new file at the path
        assert writer.write({"n": 3})
        assert [json.loads(x)["n"] for x in out.read_text().splitlines()] == [2, 3]
        assert writer.lines_written == 3
        assert writer.lines_dropped == 0
        writer.close()

    def test_a_moved_file_keeps_the_lines_written_to_it(self, tmp_path):
        from fossamon.storage.jsonl import JsonlWriter

        out = tmp_path / "m.jsonl"
        writer = JsonlWriter(out, clock=lambda: 1_800_000_000.0)
        writer.open()
        writer.write({"n": 1})
        out.rename(tmp_path / "m.jsonl.1")  # logrotate without copytruncate
        writer.write({"n": 2})  # still linked: kept there, until the 1 s check follows
        moved = (tmp_path / "m.jsonl.1").read_text().splitlines()
        assert [json.loads(x)["n"] for x in moved] == [1, 2]
        writer.close()

    def test_an_unusable_path_drops_and_counts_until_it_works_again(self, tmp_path):
        from fossamon.storage.jsonl import JsonlWriter

        clock = [1_800_000_000.0]
        out = tmp_path / "out" / "m.jsonl"
        writer = JsonlWriter(out, clock=lambda: clock[0])
        writer.open()
        writer.write({"n": 1})
        out.unlink()
        out.parent.rmdir()
        out.parent.write_text("a file where the folder was")  # mkdir now fails
        clock[0] += 1.5
        assert not writer.maybe_rotate(clock[0])
        assert writer.failing
        assert not writer.write({"n": 2})
        assert writer.lines_dropped == 1
        out.parent.unlink()
        assert writer.write({"n": 3})  # the folder can be made again: writing resumes
        assert not writer.failing
        assert [json.loads(x)["n"] for x in out.read_text().splitlines()] == [3]
        writer.close()


def test_the_fast_and_the_fallback_serialiser_agree():
    """orjson for the common case, json for what orjson refuses: the same data either way."""
    from fossamon.storage.jsonl import dumps_line

    plain = {"v": 1, "name": "é ✓", "x": 0.1, "big": 1e20, "small": 1e-7, "nan": float("nan")}
    assert json.loads(dumps_line(plain)) == {**plain, "nan": None}
    odd = {"lone": "\udcff", "huge": 2**70, "inf": float("inf")}  # orjson refuses these
    line = dumps_line(odd)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert json.loads(line) == {"lone": "\udcff", "huge": 2**70, "inf": None}


class TestFsyncPolicy:
    def writer(self, tmp_path, mode):
        from fossamon.storage.jsonl import JsonlWriter

        writer = JsonlWriter(tmp_path / "m.jsonl")
        writer.set_sync(mode, 5.0)
        writer.open()
        return writer

    def test_interval_syncs_at_most_every_interval(self, tmp_path):
        writer = self.writer(tmp_path, "interval")
        writer.sync_if_due(100.0)
        assert writer.syncs == 0  # nothing written yet
        writer.write({"n": 1})
        writer.sync_if_due(100.0)
        assert writer.syncs == 1
        writer.write({"n": 2})
        writer.sync_if_due(101.0)
        assert writer.syncs == 1  # not due
        writer.sync_if_due(105.5)
        assert writer.syncs == 2
        writer.sync_if_due(120.0)
        assert writer.syncs == 2  # nothing new
        writer.write({"n": 3})
        writer.close()  # and what was written is synced at close
        assert writer.syncs == 3

    def test_always_and_never(self, tmp_path):
        always = self.writer(tmp_path / "a", "always")
        for n in range(3):
            always.write({"n": n})
        assert always.syncs == 3
        always.close()
        never = self.writer(tmp_path / "b", "never")
        never.write({"n": 1})
        never.sync_if_due(1e9)
        never.close()
        assert never.syncs == 0


class TestNoSecretReachesTheFile:
    """Redaction works on orjson's bytes now; what it must catch, it still catches."""

    @pytest.fixture
    def config_secrets(self):
        config = parse_config(
            "[collectors.api]\n"
            'base_url = "http://127.0.0.1:9"\n'
            'headers = { Authorization = "Bearer tok-from-config-77" }\n'
            "[[collectors.api.endpoints]]\n"
            'name = "work_orders"\n'
            'path = "/orders"\n'
            'headers = { "X-Api-Key" = "hdr-value-9f3k" }\n',
            env={},
        )
        set_secrets_from_config(config)
        yield
        set_secrets(())

    def test_an_api_batch_with_failures_is_written_without_its_secrets(
        self, tmp_path, config_secrets
    ):
        labels = make_labels(endpoint="work_orders")
        failures = (
            Failure("a", ErrorKind.REFUSED, "cannot connect to https://probe:pa55w0rd@db.local/"),
            Failure("b", ErrorKind.STATUS, "GET /orders?limit=5&access_token=qt-123 -> 401"),
            Failure("c", ErrorKind.OTHER, "request had authorization: Bearer abc.def.ghi"),
            Failure("d", ErrorKind.OTHER, "echoed header X-Api-Key: hdr-value-9f3k"),
            Failure("e", ErrorKind.OTHER, "upstream said Cookie: sid=c00kie-val"),
            Failure("f", ErrorKind.OTHER, "sent tok-from-config-77 and got 403"),
        )
        batch = Batch("api", 1_795_000_000.0, 0.02, (Sample("api_up", 0.0, labels),), failures)
        writer = JsonlWriter(tmp_path / "m.jsonl")
        writer.open()
        assert writer.write(batch.to_json("web-1"))
        writer.close()
        text = (tmp_path / "m.jsonl").read_text()
        for secret in ("pa55w0rd", "qt-123", "abc.def.ghi", "hdr-value-9f3k", "c00kie-val"):
            assert secret not in text
        assert "tok-from-config-77" not in text
        record = json.loads(text)
        assert record["samples"][0]["labels"] == {"endpoint": "work_orders"}
        assert record["errors"][0]["message"] == "cannot connect to https://probe:***@db.local/"

    def test_the_json_fallback_redacts_too(self, config_secrets):
        # a lone surrogate sends the record the json way
        line = dumps_line({"m": "\udcff hdr-value-9f3k https://u:pw1234@h/", "big": 2**70})
        assert b"hdr-value-9f3k" not in line
        assert b"pw1234" not in line
        assert json.loads(line)["big"] == 2**70

    def test_a_batch_without_errors_is_still_redacted_for_configured_secrets(self, config_secrets):
        # free_text=False (what the pipeline passes for a batch without errors) skips the
        # searches for credential shapes in someone's text, never the configured secrets.
        labels = make_labels(mount="/mnt/tok-from-config-77")  # an operator's own slip
        batch = Batch(
            "system", 1_795_000_000.0, 0.01, (Sample("system_disk_percent", 5.0, labels),)
        )
        assert not batch.has_free_text
        line = dumps_line(batch.to_json("web-1"), free_text=False)
        assert b"tok-from-config-77" not in line
        assert json.loads(line)["samples"][0]["labels"] == {"mount": "/mnt/***"}

    def test_a_batch_with_errors_is_free_text_and_searched_for_credential_shapes(self):
        failure = Failure("a", ErrorKind.OTHER, "server echoed authorization: Bearer abc.def.ghi")
        batch = Batch("api", 1_795_000_000.0, 0.02, (), (failure,))
        assert batch.has_free_text
        line = dumps_line(batch.to_json("web-1"), free_text=batch.has_free_text)
        assert b"abc.def.ghi" not in line

    def test_a_clean_line_is_orjsons_own_bytes(self):
        record = {"v": 1, "samples": [{"name": "api_up", "labels": {}, "value": 1.0}]}
        assert dumps_line(record) == orjson.dumps(record) + b"\n"


async def test_buffered_lines_hold_no_more_memory_than_their_size(tmp_path):
    """orjson's bytes keep its 4 KiB work buffer; a buffer of such lines would hold 5x what
    it counts (8 MiB of lines in 45 MB). The output copies each line into one buffer."""
    record = {"v": 1, "samples": [{"name": f"m{i}", "value": i} for i in range(8)]}
    size = len(dumps_line(record))
    out = BufferedOutput(tmp_path / "m.jsonl")
    out.open()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(1000):  # no await: nothing is handed to the thread meanwhile
            assert out.write(record)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert out.buffered_bytes == 1000 * size
    assert held < 1000 * (size + 200), f"{held / 1000:.0f} bytes held per {size}-byte line"
    await out.close(5)
    assert out.lines_written == 1000
