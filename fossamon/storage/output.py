"""The daemon's output files, off the event loop: a bounded buffer in front of a writer thread.

Collectors and the alert dispatcher hand records to `BufferedOutput.write()`, which serialises
each one on the loop (a few microseconds; a record that cannot be serialised is refused where
it was made) and appends the line to an in-memory buffer. A flusher task hands the buffer to
the file's own thread as one batch: as soon as the thread is free (`flush_interval = 0`, the
default: lines that arrive while it writes go together into the next write), or once
`flush_interval` has passed or a batch's worth (`BATCH_BYTES`) is waiting. With no interval,
a stream of lines is still gathered for `COALESCE` after each hand-over: a hand-over costs
the loop about 0.1 ms of waking the thread and being woken, as much as serialising 25 lines,
so a busy stream goes in fewer, larger writes; a line after a quiet spell goes at once.

Everything that touches the file runs in that one thread, in the order it was asked for:
writes, rotation, reopening after logrotate, fsync, closing. So no rotation or reopen lands
inside a batch, and the loop never waits for a disk (an `fsync = "always"` neither): the 1 s
housekeeping is handed over without waiting, a reload's file operations wait at most
`FILE_OP_WAIT`, the stop at most its grace. A batch the disk has not finished for
`STALL_AFTER` makes the file `failing`, so a hung disk raises the alert before the buffer
fills.

The buffer is bounded (`buffer_limit` bytes, batches handed to the thread and not yet written
included). When the disk cannot keep up (a hung network file system), lines beyond the bound
are dropped and counted, like lines a full disk refuses, and the file counts as failing (the
`output_write_failing` alert) until the backlog has drained below half the bound.

The thread needs Python's GIL for a moment around each write, and CPython hands it over
poorly to a waiting thread while the holder keeps releasing it for microseconds (a loop busy
with callbacks polls its selector between them): a write can then wait until the loop has an
idle moment. The buffer absorbs such bursts. A producer that could keep the loop saturated
awaits `drain()`, as with asyncio streams.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson
import structlog

from fossamon.redact import PROCESS_REDACTOR as _REDACTOR
from fossamon.redact import redact_jsonl_line
from fossamon.storage.jsonl import JsonlWriter, dumps_line

if TYPE_CHECKING:
    import os
    from collections.abc import Callable
    from pathlib import Path

    from fossamon.storage.rotation import RotationPolicy

log = structlog.get_logger(__name__)

DEFAULT_BUFFER_LIMIT = 8 * 1024 * 1024
BATCH_BYTES = 1024 * 1024  # with a flush_interval: write early once this much is waiting
DRAIN_BYTES = 2 * BATCH_BYTES  # `drain()` waits while more than this is waiting
# A batch that has waited this long for the disk makes the file "failing" (the alert), long
# before a hung disk fills the buffer.
STALL_AFTER = 10.0
FILE_OP_WAIT = 5.0  # what a reload or SIGUSR1 waits for an operation on the file
COALESCE = 0.005  # with flush_interval 0: at most one hand-over per this while lines stream in

T = TypeVar("T")

_orjson_dumps = orjson.dumps
_APPEND_NEWLINE = orjson.OPT_APPEND_NEWLINE


def _nothing() -> None:
    """A job for the file's thread that only marks a place in its queue."""


class LineOutput(Protocol):
    """What the pipeline, the dispatcher and the internal metrics need of an output file."""

    @property
    def path(self) -> Path: ...
    @property
    def lines_written(self) -> int: ...
    @property
    def lines_dropped(self) -> int: ...
    @property
    def rotations(self) -> int: ...
    @property
    def failing(self) -> bool: ...
    @property
    def last_error(self) -> str: ...
    @property
    def rotation_failures(self) -> int: ...
    @property
    def rotation_error(self) -> str: ...

    def write(self, record: dict[str, Any], *, free_text: bool = True) -> bool: ...


class BufferedOutput:
    """One output file written by its own thread; see the module docstring.

    Counters are the file's (lines written, rotations) plus the lines refused before they
    reached the thread (`lines_dropped` includes both). Outside a running event loop (a
    one-shot command) `write` writes directly."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        policy: RotationPolicy | None = None,
        *,
        flush_interval: float = 0.0,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.file = JsonlWriter(path, policy, clock=clock)
        self.batches = 0
        # The lines accepted and not handed over yet, one after the other: a line is copied
        # in and never kept as an object of its own (a bytes object per line, allocated on
        # the loop and freed by the file's thread, cost as much as serialising it).
        self._buffer = bytearray()
        self._buffer_lines = 0
        # Bytes `write` may still append with no other check: set by `_accept` (room below the
        # bound and below a batch's worth, so the line that fills a batch takes the way that
        # says so), 0 whenever anything it relied on changes. Too small is always safe.
        self._fast_room = 0
        self._in_flight = 0  # bytes handed to the thread and not written yet
        self._refused = 0  # lines refused on the loop (no room, unserialisable, closed)
        self._lost = 0  # lines handed to the thread that did not get written, uncounted there
        self._in_flight_lines = 0
        self._handed: deque[float] = deque()  # when each batch in flight was handed over
        self._handed_over_at = -COALESCE  # when the last batch was (time.monotonic())
        self._overflowing = False
        self._closed = False
        self._refused_after_close = False
        self._abandoned = False
        self._housekeeping: concurrent.futures.Future[None] | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="fossamon-output"
        )
        self._flusher: asyncio.Task[None] | None = None
        self._waiting: asyncio.Event | None = None  # lines are in the buffer
        self._batch_full: asyncio.Event | None = None  # a batch's worth is
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.set_buffering(flush_interval, buffer_limit)

    # --- what the rest of the daemon reads ----------------------------------------------

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def policy(self) -> RotationPolicy:
        return self.file.policy

    @property
    def lines_written(self) -> int:
        return self.file.lines_written

    @property
    def lines_dropped(self) -> int:
        return self.file.lines_dropped + self._refused + self._lost

    @property
    def rotations(self) -> int:
        return self.file.rotations

    @property
    def rotation_failures(self) -> int:
        return self.file.rotation_failures

    @property
    def rotation_error(self) -> str:
        """Why the last rotation failed; "" when the last one worked (or none was due)."""
        return self.file.rotation_error

    @property
    def archives_removed(self) -> int:
        return self.file.archives_removed

    @property
    def lines_removed(self) -> int:
        return self.file.lines_removed

    @property
    def failing(self) -> bool:
        """Lines are being lost now, or the disk has not answered for `STALL_AFTER`."""
        return self._overflowing or self.file.failing or self.stalled_for() >= STALL_AFTER

    @property
    def last_error(self) -> str:
        if (stalled := self.stalled_for()) >= STALL_AFTER:
            return f"the disk has not finished a write for {stalled:.0f} s"
        if self._overflowing:
            return f"the output buffer is full ({self.buffer_limit} bytes): the disk is too slow"
        return self.file.last_error

    def stalled_for(self) -> float:
        """How long the oldest batch handed to the thread has been waiting for the disk."""
        return time.monotonic() - self._handed[0] if self._handed else 0.0

    @property
    def buffered_bytes(self) -> int:
        """Bytes accepted and not yet written (buffered or being written)."""
        return len(self._buffer) + self._in_flight

    # --- writing -------------------------------------------------------------------------

    def open(self) -> None:
        """Open the file (at start, before anything is written); OSError names the path."""
        self.file.open()

    def set_sync(self, mode: str, interval: float) -> None:
        # Read by the thread at each write; a change applies from the next one.
        self.file.set_sync(mode, interval)

    def set_buffering(self, flush_interval: float, buffer_limit: int) -> None:
        self.flush_interval, self.buffer_limit = flush_interval, buffer_limit
        self._fast_room = 0
        self._batch_bytes = min(BATCH_BYTES, buffer_limit // 4)
        self._drain_bytes = min(DRAIN_BYTES, buffer_limit // 2)
        if self._batch_full is not None and self._buffer:
            self._batch_full.set()  # a shorter interval applies now, not after the old one

    def write(self, record: dict[str, Any], *, free_text: bool = True) -> bool:
        """Accept one record; False when it is dropped (unserialisable, or no room).
        `free_text=False`: the record holds no text from outside (see `dumps_line`)."""
        # The hot path of every line the daemon writes, where a function call costs a twentieth
        # of the line: `dumps_line` inlined, and the redactor called only when it has
        # something to look for (text from outside, or configured secrets; see `dumps_line`).
        try:
            try:
                line = _orjson_dumps(record, option=_APPEND_NEWLINE)
            except TypeError:  # orjson's JSONEncodeError: `dumps_line` has the slower way
                line = dumps_line(record, free_text=free_text)
            else:
                if free_text or _REDACTOR.byte_needles:
                    line = redact_jsonl_line(line, free_text=free_text)
        except (TypeError, ValueError) as exc:
            self._refused += 1  # a bug upstream: lose this line, not the daemon
            log.error("cannot serialise a record", path=str(self.path), error=str(exc))
            return False
        # A few attribute operations cost as much as a tenth of the line's serialisation, so
        # the common case checks one number.
        size = len(line)
        if size <= self._fast_room:
            self._fast_room -= size
            self._buffer += line
            self._buffer_lines += 1
            return True
        return self._accept(line, 1)

    def write_lines(self, lines: list[bytes]) -> bool:
        """Accept whole lines; they are written together, in order, with no other line
        between them. False when they were dropped for want of room (or after close)."""
        return self._accept(b"".join(lines), len(lines)) if lines else True

    def _accept(self, data: bytes, lines: int) -> bool:
        if self._closed:
            self._refuse(lines)
            return False
        if self._flusher is None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return self.file.write_block(data, lines)
            self._start_flusher()
        pending = len(self._buffer) + self._in_flight
        # One record larger than the whole bound is still taken when nothing else waits.
        if pending and pending + len(data) > self.buffer_limit:
            self._refuse(lines)
            return False
        self._buffer += data
        self._buffer_lines += lines
        buffered = len(self._buffer)
        assert self._waiting is not None
        self._waiting.set()
        room = self.buffer_limit - buffered - self._in_flight
        if buffered >= self._batch_bytes:
            assert self._batch_full is not None
            self._batch_full.set()
        else:
            room = min(room, self._batch_bytes - buffered - 1)
        self._fast_room = max(room, 0)
        return True

    async def write_through(self, record: dict[str, Any]) -> bool:
        """Write `record` now and wait for it: True once it is in the file (a sink that must
        know, to retry, uses this)."""
        if not self.write(record):
            return False
        return await asyncio.shield(self._hand_over())

    async def drain(self) -> None:
        """Wait while more than `DRAIN_BYTES` (at most half the bound) wait to be written,
        like asyncio's `StreamWriter.drain()`: a producer that can wait (a bulk export, the
        benchmark) lets the file's thread catch up instead of filling the buffer. On a hung
        disk it waits as long as the disk does; the daemon's pipeline does not call it."""
        loop = asyncio.get_running_loop()
        while self.buffered_bytes > self._drain_bytes and not self._closed:
            if not self._handed and self._buffer:
                self._hand_over()  # nothing in flight would ever wake us
            waiter: asyncio.Future[None] = loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    async def flush(self) -> None:
        """Wait until every line accepted so far has been written (or dropped by the file)."""
        await self._after_buffered(_nothing)

    def _refuse(self, lines: int) -> None:
        self._refused += lines
        if self._closed:
            if not self._refused_after_close:
                self._refused_after_close = True
                log.error("output file already closed; lines dropped", path=str(self.path))
        elif not self._overflowing:
            self._overflowing = True
            log.error(
                "output buffer full: the disk is not keeping up; lines are dropped and counted",
                path=str(self.path),
                buffer_limit=self.buffer_limit,
            )

    def _start_flusher(self) -> None:
        self._waiting, self._batch_full = asyncio.Event(), asyncio.Event()
        self._flusher = asyncio.get_running_loop().create_task(
            self._flush_forever(), name=f"flush {self.path.name}"
        )

    async def _flush_forever(self) -> None:
        assert self._waiting is not None
        assert self._batch_full is not None
        while True:
            await self._waiting.wait()
            wait = self.flush_interval
            if wait <= 0:  # lines streaming in: gather them until COALESCE after the last batch
                wait = self._handed_over_at + COALESCE - time.monotonic()
            if wait > 0 and not self._batch_full.is_set():
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that
                # arrives as the awaited thing completes, and close() would wait on the flusher
                # for ever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._batch_full.wait()
            if not self._buffer:  # a write_through or a file operation took them already
                self._waiting.clear()
                continue
            # Shielded: stopping the flusher must not cancel a batch the thread holds.
            await asyncio.shield(self._hand_over())

    def _hand_over(self) -> asyncio.Future[bool]:
        """Give the buffered lines to the thread as one batch (behind whatever it was already
        asked to do); the future says whether they reached the file."""
        assert self._waiting is not None
        assert self._batch_full is not None
        data, lines = self._buffer, self._buffer_lines
        self._buffer, self._buffer_lines, self._fast_room = bytearray(), 0, 0
        size = len(data)
        self._waiting.clear()
        self._batch_full.clear()
        self._in_flight += size
        self._in_flight_lines += lines
        self._handed_over_at = time.monotonic()
        self._handed.append(self._handed_over_at)
        future = self._in_thread(self._write_batch, data, lines)
        future.add_done_callback(lambda _: self._landed(size, lines))
        self.batches += 1
        return future

    def _write_batch(self, data: bytearray, lines: int) -> bool:
        """In the thread. Whatever goes wrong, the batch is accounted for and the thread goes
        on with the next one (a write's OSError is the file's own, counted there)."""
        try:
            return self.file.write_block(data, lines)
        except Exception:
            self._lost += lines
            log.exception("writing output file failed", path=str(self.path))
            return False

    def _landed(self, size: int, lines: int) -> None:
        if self._abandoned:
            return  # counted as lost at the stop
        self._in_flight -= size
        self._in_flight_lines -= lines
        self._handed.popleft()
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self._overflowing and self.buffered_bytes <= self.buffer_limit // 2:
            self._overflowing = False
            log.info(
                "output buffer has room again", path=str(self.path), dropped=self.lines_dropped
            )

    def _in_thread(self, job: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._executor, job, *args)

    def _after_buffered(self, job: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run `job` in the file's thread once every line accepted so far is written."""
        if self._buffer:
            self._hand_over()
        return self._in_thread(job, *args)

    async def _answer(self, what: str, job: Callable[..., None], *args: Any) -> None:
        """Run a file operation a reload or a signal waits for, after the buffered lines,
        for at most FILE_OP_WAIT: a hung disk must not hold a reload forever. If it times
        out, the operation is called off (unless the thread has begun it already)."""
        called_off = threading.Event()

        def unless_called_off() -> None:
            if not called_off.is_set():
                job(*args)

        try:
            await asyncio.wait_for(
                asyncio.shield(self._after_buffered(unless_called_off)), FILE_OP_WAIT
            )
        except TimeoutError:
            called_off.set()
            raise OSError(
                errno.ETIMEDOUT,
                f"{what} {self.path}: the disk did not answer within {FILE_OP_WAIT:.0f} s",
            ) from None

    # --- what happens to the file ----------------------------------------------------------

    def housekeep(self, now: float) -> None:
        """The daemon's 1 s tick: rotation on schedule, following a file logrotate moved,
        fsync when due. Never waits: while the thread is busy (or hung) it is skipped, and
        the tick goes on judging alerts."""
        if self._housekeeping is not None and not self._housekeeping.done():
            return
        # Submitted to the thread's queue (behind any batch), not run_in_executor: nobody
        # awaits it, and an asyncio future would wake the loop a second time every second to
        # resolve it (0.2 ms of the loop's CPU per file per second on a small VM: a tenth of
        # the daemon's whole idle budget, issue 8).
        self._housekeeping = self._executor.submit(self._housekeep_in_thread, now)

    def _housekeep_in_thread(self, now: float) -> None:
        try:
            self.file.maybe_rotate(now)
            self.file.sync_if_due(now)
        except Exception:
            log.exception("output file housekeeping failed", path=str(self.path))

    async def reopen(self) -> None:
        """SIGUSR1: continue in a new file at the path; OSError when it cannot be opened (the
        old descriptor is kept). Lines accepted before go to the old file."""
        await self._answer("reopening", self.file.open)

    async def retarget(self, path: str | os.PathLike[str], policy: RotationPolicy) -> None:
        """A reload moved the file (and maybe changed its rotation); lines accepted before
        go to the old path. OSError when the new one cannot be opened: nothing changed."""
        await self._answer("opening", self.file.retarget, path, policy)

    async def set_policy(self, policy: RotationPolicy) -> None:
        if policy != self.file.policy:  # read on the loop: an unchanged policy needs no hop
            await self._answer("applying the rotation policy of", self.file.set_policy, policy)

    async def close(self, grace: float) -> int:
        """Write every buffered line, then close the file; waits at most `grace` s (a hung
        disk must not hold the stop forever). Returns how many lines were lost to the wait;
        they are counted as dropped."""
        self._closed, self._fast_room = True, 0
        if self._flusher is not None:
            self._flusher.cancel()
            # wait(), not `await` inside suppress(CancelledError): that would also swallow a
            # cancellation aimed at close() itself.
            await asyncio.wait([self._flusher])
            if not self._flusher.cancelled() and self._flusher.exception() is not None:
                log.error("output flusher failed", path=str(self.path),
                          error=repr(self._flusher.exception()))  # fmt: skip
        closing = self._after_buffered(self.file.close)
        try:
            await asyncio.wait_for(asyncio.shield(closing), grace)
        except TimeoutError:
            self._abandoned = True
            left, self._lost = self._in_flight_lines, self._lost + self._in_flight_lines
            log.error(
                "output file not flushed in time; lines still waiting for the disk are lost",
                path=str(self.path),
                lines_lost=left,
            )
            self._executor.shutdown(wait=False, cancel_futures=True)
            return left
        except Exception:
            log.exception("closing output file failed", path=str(self.path))
        self._executor.shutdown(wait=False)
        return 0

    def wait_archiving(self, timeout: float) -> int:
        """At the stop, after close: wait (bounded) for archiving, then let its thread go
        (an idle worker would otherwise hold the interpreter's exit)."""
        left = self.file.wait_archiving(timeout)
        if not left:
            self.file.release_archiver()
        return left
