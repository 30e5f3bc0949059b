"""BufferedOutput: the loop hands lines over, the file's own thread writes them."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time

import orjson
import pytest

from fossamon.config import parse_config
from fossamon.errors import ConfigError
from fossamon.redact import set_secrets
from fossamon.storage import output
from fossamon.storage.jsonl import JsonlWriter, dumps_line
from fossamon.storage.output import BufferedOutput
from fossamon.storage.rotation import RotationPolicy

MIB = 1024 * 1024


def read_numbers(path):
    return [json.loads(line)["n"] for line in path.read_text().splitlines()]


class GatedWrites:
    """Holds the file's thread inside write_block until released: a disk that hangs."""

    def __init__(self, writer: JsonlWriter) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self._write_block = writer.write_block
        writer.write_block = self.write_block  # type: ignore[method-assign]

    def write_block(self, data, lines):
        self.entered.set()
        assert self.gate.wait(30), "the test never released the gate"
        return self._write_block(data, lines)


async def wait_until(predicate, what, limit=10.0):
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class TestBatching:
    async def test_every_line_arrives_in_order_in_fewer_writes(self, tmp_path):
        out = BufferedOutput(tmp_path / "m.jsonl")
        out.open()
        for n in range(20_000):
            assert out.write({"n": n})
            if n % 1000 == 0:
                await asyncio.sleep(0)  # let the flusher run now and then, as batches would
        await out.close(10)
        assert read_numbers(tmp_path / "m.jsonl") == list(range(20_000))
        assert out.lines_written == 20_000
        assert out.lines_dropped == 0
        assert 1 <= out.batches < 200  # lines that arrived during a write went together

    async def test_writes_happen_in_the_files_thread_fsync_too(self, tmp_path, monkeypatch):
        threads: set[str] = set()
        real_write, real_fsync = os.write, os.fsync

        def spy_write(fd, data):
            threads.add(threading.current_thread().name)
            return real_write(fd, data)

        def spy_fsync(fd):
            threads.add(threading.current_thread().name)
            return real_fsync(fd)

        out = BufferedOutput(tmp_path / "m.jsonl")
        out.set_sync("always", 5.0)
        out.open()
        monkeypatch.setattr(os, "write", spy_write)
        monkeypatch.setattr(os, "fsync", spy_fsync)
        out.write({"n": 1})
        await out.flush()
        monkeypatch.undo()
        await out.close(5)
        assert out.file.syncs >= 1
        assert threads
        assert all(name.startswith("fossamon-output") for name in threads), threads

    async def test_a_hung_disk_does_not_hold_the_loop(self, tmp_path):
        out = BufferedOutput(tmp_path / "m.jsonl")
        out.open()
        gated = GatedWrites(out.file)
        out.write({"n": 0})
        await asyncio.to_thread(gated.entered.wait, 5)
        # The thread is stuck in the "disk"; the loop goes on accepting lines, quickly.
        began = time.perf_counter()
        for n in range(1, 1001):
            assert out.write({"n": n})
        accepted = time.perf_counter() - began
        lag_began = time.monotonic()
        await asyncio.sleep(0.05)
        lag = time.monotonic() - lag_began - 0.05
        assert accepted < 0.5
        assert lag < 0.2
        assert out.lines_written == 0
        gated.gate.set()
        await out.close(10)
        assert read_numbers(tmp_path / "m.jsonl") == list(range(1001))

    async def test_flush_interval_collects_lines_then_writes_them_together(self, tmp_path):
        out = BufferedOutput(tmp_path / "m.jsonl", flush_interval=0.3)
        out.open()
        began = time.monotonic()
        for n in range(5):
            out.write({"n": n})
            await asyncio.sleep(0.01)
        assert out.lines_written == 0  # held for the interval
        await wait_until(lambda: out.lines_written == 5, "the interval's batch")
        assert time.monotonic() - began >= 0.25
        assert out.batches == 1
        await out.close(5)

    async def test_a_stream_is_gathered_into_few_writes(self, tmp_path):
        out = BufferedOutput(tmp_path / "m.jsonl")
        out.open()
        began = time.monotonic()
        for n in range(3000):
            assert out.write({"n": n})
            if n % 10 == 0:
                await asyncio.sleep(0)  # 300 chances to hand a batch over
        took = time.monotonic() - began
        # at most one hand-over per COALESCE, plus the first and the one at close
        await out.close(10)
        assert out.batches <= took / output.COALESCE + 2, (out.batches, took)
        assert read_numbers(tmp_path / "m.jsonl") == list(range(3000))

    async def test_a_line_after_a_quiet_spell_is_handed_over_at_once(self, tmp_path):
        out = BufferedOutput(tmp_path / "m.jsonl")
        out.open()
        out.write({"n": 0})
        await out.flush()
        await asyncio.sleep(output.COALESCE * 2)
        handed = out.batches
        out.write({"n": 1})
        await asyncio.sleep(0)  # the flusher's turn: no timer in between
        assert out.batches == handed + 1
        await out.close(5)
        assert read_numbers(tmp_path / "m.jsonl") == [0, 1]

    @pytest.mark.parametrize("interval", [0.0, 60.0])
    async def test_close_as_a_batch_fills_up_returns(self, tmp_path, interval):
        """The flusher's wait for a batch's worth ends just as close() cancels it: the
        cancellation must not be lost (asyncio.wait_for loses it on Python 3.11)."""
        big = "x" * 1000
        for attempt in range(30):
            out = BufferedOutput(tmp_path / f"m{attempt}.jsonl", flush_interval=interval)
            out.open()
            out.write({"n": -1})
            await out.flush()
            out.write({"n": 0})
            await asyncio.sleep(0)  # the flusher waits for the batch to fill (or COALESCE)
            for n in range(1, 1100):  # about 1.1 MB: a batch's worth
                out.write({"n": n, "pad": big})
            await asyncio.sleep(0)  # its wait has ended; it has not run yet
            began = time.monotonic()
            assert await asyncio.wait_for(out.close(5), 3) == 0
            assert time.monotonic() - began < 2, "close() waited for a flusher that lived on"
            assert out.lines_written == 1101

    async def test_a_full_batch_does_not_wait_for_the_interval(self, tmp_path):
        out = BufferedOutput(tmp_path / "m.jsonl", flush_interval=60.0)
        out.open()
        big = "x" * 1000
        for n in range(1200):  # about 1.2 MB: more than one batch's worth
            out.write({"n": n, "pad": big})
        await wait_until(lambda: out.lines_written == 1200, "an early batch", limit=5.0)
        await out.close(5)


class TestBounds:
    async def test_lines_beyond_the_bound_are_dropped_counted_and_alerted_then_it_recovers(
        self, tmp_path
    ):
        out = BufferedOutput(tmp_path / "m.jsonl", buffer_limit=MIB)
        out.open()
        gated = GatedWrites(out.file)
        pad = "y" * 1000
        out.write({"n": 0, "pad": pad})
        await asyncio.to_thread(gated.entered.wait, 5)
        accepted = 1
        for n in range(1, 3000):  # ~3 MB against a 1 MiB bound
            accepted += out.write({"n": n, "pad": pad})
        assert 900 < accepted < 1100
        assert out.lines_dropped == 3000 - accepted
        assert out.failing
        assert "buffer is full" in out.last_error
        gated.gate.set()
        await wait_until(lambda: not out.failing, "the backlog to drain")
        assert out.write({"n": 3000, "pad": pad})
        await out.close(10)
        found = read_numbers(tmp_path / "m.jsonl")
        assert len(found) == accepted + 1 == out.lines_written
        assert out.lines_written + out.lines_dropped == 3001
        assert found == sorted(found)  # the kept lines, in order, none torn

    async def test_close_writes_every_buffered_line(self, tmp_path):
        out = BufferedOutput(tmp_path / "m.jsonl", flush_interval=60.0)
        out.open()
        for n in range(5000):
            out.write({"n": n})
        assert await out.close(10) == 0
        assert read_numbers(tmp_path / "m.jsonl") == list(range(5000))
        assert not out.write({"n": 5000})  # after close: refused and counted, not lost unseen
        assert out.lines_dropped == 1

    async def test_a_cancelled_close_is_cancelled_not_swallowed(self, tmp_path):
        out = BufferedOutput(tmp_path / "m.jsonl", flush_interval=60.0)
        out.open()
        out.write({"n": 0})
        closing = asyncio.create_task(out.close(5))
        await asyncio.sleep(0)  # close() is waiting for the flusher to end
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert await out.close(5) == 0  # a second close still writes what was buffered
        assert read_numbers(tmp_path / "m.jsonl") == [0]

    async def test_close_on_a_hung_disk_is_bounded_and_says_what_was_lost(self, tmp_path):
        out = BufferedOutput(tmp_path / "m.jsonl")
        out.open()
        gated = GatedWrites(out.file)
        out.write({"n": 0})
        await asyncio.to_thread(gated.entered.wait, 5)
        out.write({"n": 1})
        began = time.monotonic()
        left = await out.close(0.3)
        assert time.monotonic() - began < 2
        assert left > 0
        gated.gate.set()  # let the thread end

    async def test_an_unserialisable_record_is_refused_alone(self, tmp_path):
        out = BufferedOutput(tmp_path / "m.jsonl")
        out.open()
        assert out.write({"n": 1})
        assert not out.write({"n": object()})
        assert out.write({"n": 2})
        await out.close(5)
        assert read_numbers(tmp_path / "m.jsonl") == [1, 2]
        assert out.lines_dropped == 1


class TestRedactionOnTheFastPath:
    """`write` inlines `dumps_line`: the same bytes, the same redaction, in every case."""

    @pytest.fixture
    def secret(self):
        set_secrets(["s3cr3t-token-value"])
        yield "s3cr3t-token-value"
        set_secrets(())

    RECORDS = (
        {"n": 1, "labels": {"endpoint": "health"}, "value": 0.5},
        {"n": 2, "error": "GET https://bob:hunter22@api.example/x?token=abcdef123456"},
        {"n": 3, "error": "Authorization: Bearer abc.def.ghi"},
        {"n": 4, "huge": 2**70, "text": "lone \udc80 surrogate"},
        {"n": 5, "nan": float("nan"), "inf": float("inf")},
    )

    async def written(self, tmp_path, records, *, free_text):
        out = BufferedOutput(tmp_path / "m.jsonl")
        out.open()
        for record in records:
            assert out.write(record, free_text=free_text)
        await out.close(5)
        return (tmp_path / "m.jsonl").read_bytes().splitlines(keepends=True)

    @pytest.mark.parametrize("free_text", [True, False])
    async def test_lines_equal_dumps_line(self, tmp_path, free_text, secret):
        lines = await self.written(tmp_path, self.RECORDS, free_text=free_text)
        assert lines == [dumps_line(r, free_text=free_text) for r in self.RECORDS]
        if free_text:
            text = b"".join(lines)
            assert b"hunter22" not in text
            assert b"abcdef123456" not in text
            assert b"abc.def.ghi" not in text

    async def test_a_configured_secret_is_masked_even_in_a_metrics_only_line(
        self, tmp_path, secret
    ):
        record = {"samples": [{"labels": {"endpoint": f"x{secret}"}, "value": 1.0}]}
        [line] = await self.written(tmp_path, [record], free_text=False)
        assert secret.encode() not in line
        assert json.loads(line)["samples"][0]["value"] == 1.0

    async def test_without_configured_secrets_a_metrics_only_line_is_orjsons(self, tmp_path):
        record = {"samples": [{"labels": {"url": "https://a:b@c/?token=x"}, "value": 1.0}]}
        [line] = await self.written(tmp_path, [record], free_text=False)
        assert line == orjson.dumps(record) + b"\n"


class TestOrderWithFileOperations:
    async def test_lines_before_a_retarget_stay_in_the_old_file(self, tmp_path):
        out = BufferedOutput(tmp_path / "old.jsonl", flush_interval=60.0)
        out.open()
        out.write({"n": 1})
        await out.retarget(tmp_path / "new.jsonl", out.policy)
        out.write({"n": 2})
        await out.close(5)
        assert read_numbers(tmp_path / "old.jsonl") == [1]
        assert read_numbers(tmp_path / "new.jsonl") == [2]

    async def test_reopen_after_a_move_continues_at_the_path(self, tmp_path):
        path = tmp_path / "m.jsonl"
        out = BufferedOutput(path)
        out.open()
        out.write({"n": 1})
        await out.flush()
        path.rename(tmp_path / "m.jsonl.1")
        out.write({"n": 2})  # may land in the moved file: it was accepted before the reopen
        await out.reopen()
        out.write({"n": 3})
        await out.close(5)
        moved, fresh = read_numbers(tmp_path / "m.jsonl.1"), read_numbers(path)
        assert moved[:2] == [1, 2]
        assert fresh == [3]

    async def test_write_through_says_whether_the_line_reached_the_file(self, tmp_path):
        (tmp_path / "not-a-dir").write_text("")
        good = BufferedOutput(tmp_path / "ok.jsonl")
        bad = BufferedOutput(tmp_path / "not-a-dir" / "x.jsonl")
        assert await good.write_through({"n": 1})
        assert not await bad.write_through({"n": 1})
        assert bad.failing
        assert bad.lines_dropped == 1
        await good.close(5)
        await bad.close(5)
        assert read_numbers(tmp_path / "ok.jsonl") == [1]


class TestAHungOrFailingDisk:
    async def test_housekeeping_never_waits_and_a_stall_counts_as_failing(
        self, tmp_path, monkeypatch
    ):
        monkeypatch.setattr(output, "STALL_AFTER", 0.3)
        out = BufferedOutput(tmp_path / "m.jsonl")
        out.open()
        gated = GatedWrites(out.file)
        out.write({"n": 0})
        await asyncio.to_thread(gated.entered.wait, 5)
        began = time.monotonic()
        for _ in range(5):
            out.housekeep(time.time())  # the daemon's tick: must not wait for the disk
        assert time.monotonic() - began < 0.1
        assert not out.failing
        await asyncio.sleep(0.4)
        assert out.failing
        assert "has not finished a write" in out.last_error
        gated.gate.set()
        await wait_until(lambda: not out.failing, "the stall to end")
        await out.close(5)
        assert read_numbers(tmp_path / "m.jsonl") == [0]

    async def test_a_bug_in_the_writer_costs_one_batch_counted_not_the_flusher(self, tmp_path):
        out = BufferedOutput(tmp_path / "m.jsonl")
        out.open()
        real, calls = out.file.write_block, []

        def broken_once(data, lines):
            calls.append(lines)
            if len(calls) == 1:
                raise RuntimeError("a bug")
            return real(data, lines)

        out.file.write_block = broken_once
        out.write({"n": 1})
        await out.flush()
        out.write({"n": 2})
        assert await out.close(5) == 0
        assert read_numbers(tmp_path / "m.jsonl") == [2]
        assert (out.lines_written, out.lines_dropped) == (1, 1)

    async def test_a_stop_on_a_hung_disk_counts_what_it_could_not_write(self, tmp_path):
        out = BufferedOutput(tmp_path / "m.jsonl")
        out.open()
        gated = GatedWrites(out.file)
        out.write({"n": 0})
        await asyncio.to_thread(gated.entered.wait, 5)
        for n in range(1, 5):
            out.write({"n": n})
        assert await out.close(0.2) == 5
        assert out.lines_written + out.lines_dropped == 5
        gated.gate.set()

    async def test_a_reload_does_not_wait_for_a_hung_disk(self, tmp_path, monkeypatch):
        monkeypatch.setattr(output, "FILE_OP_WAIT", 0.3)
        out = BufferedOutput(tmp_path / "m.jsonl", RotationPolicy(mode="builtin", keep=3))
        out.open()
        gated = GatedWrites(out.file)
        out.write({"n": 0})
        await asyncio.to_thread(gated.entered.wait, 5)
        began = time.monotonic()
        await out.set_policy(out.policy)  # unchanged: no need to ask the thread
        assert time.monotonic() - began < 0.1
        with pytest.raises(OSError, match="did not answer within"):
            await out.retarget(tmp_path / "new.jsonl", out.policy)
        gated.gate.set()
        await out.flush()
        assert out.path == tmp_path / "m.jsonl"  # called off: the reload was rejected
        assert not (tmp_path / "new.jsonl").exists()
        await out.close(5)

    async def test_drain_holds_back_a_producer_even_with_the_smallest_bound(self, tmp_path):
        out = BufferedOutput(tmp_path / "m.jsonl", buffer_limit=MIB)
        out.open()
        pad = "z" * 1000
        for n in range(5000):
            out.write({"n": n, "pad": pad})
            if n % 100 == 0:
                await out.drain()
        await out.close(10)
        assert (out.lines_written, out.lines_dropped) == (5000, 0)

    async def test_one_record_larger_than_the_bound_is_still_written(self, tmp_path):
        out = BufferedOutput(tmp_path / "m.jsonl", buffer_limit=MIB)
        out.open()
        assert out.write({"n": 1, "pad": "x" * (2 * MIB)})
        await out.flush()
        assert not out.failing
        await out.close(5)
        assert out.lines_written == 1

    async def test_a_shorter_flush_interval_applies_at_once(self, tmp_path):
        out = BufferedOutput(tmp_path / "m.jsonl", flush_interval=60.0)
        out.open()
        out.write({"n": 1})
        await asyncio.sleep(0.05)
        out.set_buffering(0.0, out.buffer_limit)
        await wait_until(lambda: out.lines_written == 1, "the line, without the old interval")
        await out.close(5)


def test_outside_an_event_loop_it_writes_directly(tmp_path):
    out = BufferedOutput(tmp_path / "m.jsonl")
    assert out.write({"n": 1})
    assert read_numbers(tmp_path / "m.jsonl") == [1]
    out.file.close()


@pytest.mark.parametrize("bad", ['"512KiB"', '"0"', "-1"])
def test_buffer_limit_below_a_mebibyte_is_refused_and_named(bad):
    text = f'[output.metrics]\npath = "/tmp/m.jsonl"\nbuffer_limit = {bad}\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.toml", env={})
    assert any("output.metrics.buffer_limit" in str(p) for p in caught.value.problems)


def test_buffering_keys_parse():
    text = '[output.alerts]\npath = "/tmp/a.jsonl"\nflush_interval = "2s"\nbuffer_limit = "16MiB"\n'
    alerts = parse_config(text, "test.toml", env={}).output.alerts
    assert (alerts.flush_interval, alerts.buffer_limit) == (2.0, 16 * MIB)
    metrics = parse_config("", "test.toml", env={}).output.metrics
    assert (metrics.flush_interval, metrics.buffer_limit) == (0.0, 8 * MIB)
