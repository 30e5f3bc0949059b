"""Append-only JSONL files: one JSON object per line, never a torn line.

Each record is serialised first and handed to the kernel as ONE `write()` of whole lines on an
`O_APPEND` descriptor, so a reader (`tail -f`, jq, a log shipper) never sees half a record and
a crash can at worst lose the line being written, never corrupt an earlier one. A file that
ends in a partial line (a crash mid-write, a full disk) is terminated at open, so it parses.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from fossamon.redact import redact_json_line, redact_jsonl_line
from fossamon.storage.rotation import (
    CLOSE_WAIT,
    Archive,
    ArchiveKey,
    RotationPolicy,
    archive_name,
    archiver_for,
    list_archives,
    next_boundary,
)

if TYPE_CHECKING:
    from collections.abc import Callable

log = structlog.get_logger(__name__)

FILE_MODE = 0o640
DIR_MODE = 0o750


def dumps_line(record: dict[str, Any], *, free_text: bool = True) -> bytes:
    """Compact UTF-8 JSON plus a newline, secrets redacted. NaN/Infinity (not JSON) become
    null.

    orjson does the common case (about 15x faster than json here: serialising was most of a
    write's cost), and the redactor looks at its bytes: a line no rule applies to (nearly
    every one) is never decoded. What orjson refuses (a lone surrogate from a service's body,
    an integer beyond 64 bits) goes the slower json way, with the same result. `free_text`:
    see `Redactor.redact_jsonl_line` (False only for a record with no text from outside)."""
    try:
        # A line lives only until it is copied into the output's buffer (or written), so the
        # newline is orjson's own rather than a copy's.
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        return _dumps_line_with_json(record)
    return redact_jsonl_line(line, free_text=free_text)


def _dumps_line_with_json(record: dict[str, Any]) -> bytes:
    try:
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = json.dumps(finite_json(record), ensure_ascii=False, separators=(",", ":"))
    text = redact_json_line(text)
    # A lone surrogate (legal in JSON text a service sent us) cannot be UTF-8; written as the
    # escape \udXXX it stays valid JSON and the line is kept.
    return text.encode("utf-8", "backslashreplace") + b"\n"


def finite_json(node: Any) -> Any:
    """The same structure with NaN/Infinity (not JSON) replaced by None."""
    if isinstance(node, float) and not math.isfinite(node):
        return None
    if isinstance(node, dict):
        return {k: finite_json(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [finite_json(v) for v in node]
    return node


def _open_append(path: Path) -> int:
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    return os.open(path, flags, FILE_MODE)


def _terminate_partial_line(fd: int, path: Path) -> int:
    """End a last line left unterminated (a crash mid-write) so the file parses; 1 if it was."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 0
    last = _last_byte_via_path(path, size)
    if last is None or last == b"\n":
        return 0
    os.write(fd, b"\n")
    log.warning("terminated a partial last line", path=str(path), size=size)
    return 1


def _last_byte_via_path(path: Path, size: int) -> bytes | None:
    """Our descriptor is write-only; reading needs the path. None when it is unreadable
    (then there is nothing we can check, and appending is still right)."""
    try:
        with path.open("rb") as existing:
            existing.seek(size - 1)
            return existing.read(1)
    except OSError:
        log.info("output file is not readable; cannot check its last line", path=str(path))
        return None


def _forms(plain: Path) -> tuple[Path, ...]:
    return (plain, plain.with_name(plain.name + ".gz"), plain.with_name(plain.name + ".gz.tmp"))


class JsonlWriter:
    """One output file. Write failures are counted and logged once per episode, never raised.

    With a `builtin` policy it rotates itself (see `fossamon.storage.rotation`): by size before
    a write that would pass `max_size`, by time at clock-aligned boundaries (checked on every
    write and by `maybe_rotate`, which the daemon calls every second so an idle file rotates
    on schedule too). Rotation happens between writes, so no line is ever split. With an
    `external` policy, `maybe_rotate` follows the path when logrotate moved the file away.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        policy: RotationPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.policy = policy or RotationPolicy()
        self.fd: int | None = None
        self.lines_written = 0
        self.lines_dropped = 0
        self.repaired_lines = 0
        self.rotations = 0
        # Rotations that could not be done (the folder read-only, permissions revoked): the
        # file grows on past its limits meanwhile. `rotation_error` is the last one's reason,
        # "" once a rotation works again (the `output_rotation_failing` alert).
        self.rotation_failures = 0
        self.rotation_error = ""
        self._failing = False
        self.last_error = ""
        self.sync_mode = "never"
        self.sync_interval = 5.0
        self.syncs = 0
        self._unsynced = False
        self._synced_at = 0.0
        self._clock = clock
        self._size = 0
        self._identity: tuple[int, int] = (0, 0)
        self._rotate_at: float | None = None
        self._retry_rotation_at = 0.0
        self._checked_at = 0.0
        self._last_archive: ArchiveKey | None = None
        self._archiver = archiver_for(self.path)

    @property
    def archives_removed(self) -> int:
        return self._archiver.archives_removed

    @property
    def lines_removed(self) -> int:
        return self._archiver.lines_removed

    def open(self) -> None:
        """Open (or reopen) the file at `self.path`; raises OSError naming the path."""
        self._switch(self.path)

    def retarget(self, path: str | os.PathLike[str], policy: RotationPolicy | None = None) -> None:
        """Continue in another file (under `policy`, when a reload changed that too: the new
        path's leftovers are finished and pruned by the new rules, not the old). The new one
        is opened (and repaired) first: if that fails (OSError), nothing changes."""
        self._switch(Path(path), policy)

    def set_policy(self, policy: RotationPolicy) -> None:
        """A reload changed how this file rotates: the new limits count from now."""
        if policy == self.policy:
            return
        self.policy = policy
        if self.fd is not None:
            self._schedule(self._clock())
        if policy.mode == "builtin":
            self._archiver.recover(policy, self._clock())

    def _switch(self, path: Path, policy: RotationPolicy | None = None) -> None:
        try:
            fd = _open_append(path)
        except OSError as exc:  # name the file, not only the folder mkdir tripped over
            raise OSError(exc.errno, f"cannot open output file {path}: {exc}") from None
        try:
            repaired = _terminate_partial_line(fd, path)
            info = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        self.close()
        if path != self.path:
            self._archiver = archiver_for(path)
            self._last_archive = None
        if policy is not None:
            self.policy = policy
        self.path, self.fd = path, fd
        self.repaired_lines += repaired
        self._size, self._identity = info.st_size, (info.st_dev, info.st_ino)
        self._checked_at = self._clock()
        # A file with lines was started at the latest when it was last written: one last
        # written before the current period began is rotated at the first chance.
        self._schedule(info.st_mtime if info.st_size else self._clock())
        if self.policy.mode == "builtin":
            self._archiver.recover(self.policy, self._clock())

    def _schedule(self, started: float) -> None:
        every = self.policy.rotate_every
        builtin = self.policy.mode == "builtin" and every > 0
        self._rotate_at = next_boundary(started, every) if builtin else None

    def maybe_rotate(self, now: float | None = None) -> bool:
        """Rotate now if the policy says so (time-based, or a file moved by logrotate); True
        when the writer continues in a new file. Cheap: the daemon calls it every second."""
        if self.fd is None:
            return False
        now = self._clock() if now is None else now
        every = self.policy.rotate_every
        if self._rotate_at is not None and every and now < self._rotate_at - every:
            self._schedule(now)  # the clock stepped back: the next boundary from now on
        if self.policy.mode == "builtin" and self._rotate_at is not None and now >= self._rotate_at:
            if self._size == 0:  # nothing to archive: an empty file just starts a new period
                self._schedule(now)
                return False
            return self._rotate(now)
        # Either mode: a file removed (its folder too) or moved under us would swallow every
        # line written to it from now on, unseen; continue at the path instead.
        if not 0 <= now - self._checked_at < 1.0:  # negative: the clock stepped back
            self._checked_at = now
            return self._follow_path()
        return False

    @property
    def failing(self) -> bool:
        """Writes are failing now (a full disk, a revoked permission): lines are dropped."""
        return self._failing

    def _follow_path(self) -> bool:
        """Reopen at the path when the file there is not ours any more (moved or removed)."""
        try:
            info = self.path.stat()
        except (FileNotFoundError, NotADirectoryError):
            pass  # gone (a folder on the way, too): reopen below
        except OSError:
            return False  # cannot tell; keep writing where we are
        else:
            if (info.st_dev, info.st_ino) == self._identity:
                return False
        try:
            self.open()
        except OSError as exc:
            # Lines written to the file that is gone would be lost unseen: stop writing there,
            # so they count as dropped (and each write retries the path) until it works.
            self.close()
            self.last_error = str(exc)
            if not self._failing:
                self._failing = True
                log.error("cannot reopen output file", path=str(self.path), error=str(exc))
            return False
        log.info("output file was moved away; continuing in a new one", path=str(self.path))
        return True

    def _before_write(self, size: int) -> None:
        if self.policy.mode == "external":
            self.maybe_rotate()
            return
        if self.policy.mode != "builtin" or self.fd is None:
            return
        now = self._clock()
        limit = self.policy.max_size
        if self._size and limit and self._size + size > limit and now >= self._retry_rotation_at:
            self._rotate(now)
        elif self._rotate_at is not None and now >= self._rotate_at:
            self.maybe_rotate(now)

    def _rotate(self, now: float) -> bool:
        """Rename the file to its archive name, continue in a fresh one, archive off-loop."""
        assert self.fd is not None
        key = self._next_archive(now)
        target = archive_name(self.path, key)
        try:
            self.path.rename(target)
        except OSError as exc:
            return self._rotation_failed(now, exc)
        try:
            fd = _open_append(self.path)
            info = os.fstat(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                target.rename(self.path)  # keep writing to the one file there was
            return self._rotation_failed(now, exc)
        old, self.fd = self.fd, fd
        if self.sync_mode != "never":
            # the archive's last lines are as durable as the live file's (rotation is rare)
            with contextlib.suppress(OSError):
                os.fsync(old)
        with contextlib.suppress(OSError):  # EIO at close (NFS): the lines were written
            os.close(old)
        self._size, self._identity = 0, (info.st_dev, info.st_ino)
        self._last_archive = key
        self.rotations += 1
        self.rotation_error = ""
        self._schedule(now)
        self._archiver.archived(Archive(key, target, has_plain=True), self.policy, now)
        return True

    def _rotation_failed(self, now: float, exc: OSError) -> bool:
        # Growing past max_size beats losing lines; try again in a minute, not on every write.
        self._retry_rotation_at = now + 60.0
        if self._rotate_at is not None:
            self._rotate_at = now + 60.0
        self.rotation_failures += 1
        self.rotation_error = f"cannot rotate {self.path}: {exc.strerror or exc}"
        log.error("cannot rotate output file", path=str(self.path), error=str(exc))
        return False

    def _next_archive(self, now: float) -> ArchiveKey:
        if self._last_archive is None:
            existing = list_archives(self.path)
            self._last_archive = existing[-1].key if existing else ArchiveKey(0, 0)
        key = ArchiveKey(int(now), 0)
        if key <= self._last_archive:  # same second (or the clock went back): number it
            key = ArchiveKey(self._last_archive.when, self._last_archive.seq + 1)
        while any(p.exists() for p in _forms(archive_name(self.path, key))):
            key = ArchiveKey(key.when, key.seq + 1)
        return key

    def wait_archiving(self, timeout: float = CLOSE_WAIT) -> int:
        """Wait (bounded) for compressions and pruning in flight; how many did not finish.
        What did not is dropped: the next start finishes it (a stop stays bounded)."""
        left = self._archiver.wait(timeout)
        if left:
            self._archiver.abandon()
        return left

    def release_archiver(self) -> None:
        """The writer is done for good: the archiver's idle thread may end."""
        self._archiver.abandon()

    def write(self, record: dict[str, Any], *, free_text: bool = True) -> bool:
        try:
            line = dumps_line(record, free_text=free_text)
        except (TypeError, ValueError) as exc:
            # A value json cannot represent is a bug upstream; lose this line, not the daemon.
            self.lines_dropped += 1
            log.error("cannot serialise a record", path=str(self.path), error=str(exc))
            return False
        return self.write_block(line, 1)

    def write_lines(self, lines: list[bytes]) -> bool:
        """Append whole lines in one write; True when they all reached the file."""
        return self.write_block(b"".join(lines), len(lines)) if lines else True

    def write_block(self, data: bytes | bytearray, lines: int) -> bool:
        """Append `lines` whole lines, already joined as `data`, in one write; True when they
        all reached the file. (The buffered output hands its buffer over this way: a line is
        never an object of its own between the loop and the disk.)"""
        if not lines:
            return True
        try:
            self._before_write(len(data))
        except Exception:  # rotation must never cost the lines themselves
            log.exception("output file rotation failed; writing on", path=str(self.path))
        try:
            self._append(data)
        except OSError as exc:
            self.lines_dropped += lines
            self.last_error = str(exc)
            if not self._failing:
                self._failing = True
                log.error("cannot write output file", path=str(self.path), error=str(exc))
            return False
        if self._failing:
            self._failing = False
            log.info("writing output file again", path=str(self.path), dropped=self.lines_dropped)
        self.lines_written += lines
        self._unsynced = True
        if self.sync_mode == "always":
            self._sync_now()
        return True

    def set_sync(self, mode: str, interval: float) -> None:
        """The fsync policy: "never", "interval" (`sync_if_due`), or "always"."""
        self.sync_mode, self.sync_interval = mode, interval

    def _sync_now(self) -> None:
        if self.fd is None or not self._unsynced:
            return
        try:
            os.fsync(self.fd)
        except OSError as exc:
            log.error("fsync of output file failed", path=str(self.path), error=str(exc))
            return
        self._unsynced, self.syncs = False, self.syncs + 1

    def sync_if_due(self, now: float) -> None:
        """With fsync = "interval": flush to the disk at most every `sync_interval`. It blocks
        for as long as the disk takes: the daemon calls it in the file's own thread
        (`fossamon.storage.output`), never on the event loop."""
        if self.sync_mode != "interval" or not self._unsynced or self.fd is None:
            return
        if 0 <= now - self._synced_at < self.sync_interval:  # negative: the clock stepped back
            return
        self._synced_at = now
        self._sync_now()

    def _append(self, data: bytes | bytearray) -> None:
        if self.fd is None:
            self.open()
        elif os.fstat(self.fd).st_nlink == 0:
            # Removed since the last write (the 1 s check may be up to a second away): lines
            # written now would go into a file nobody can reach. Continue at the path; one
            # fstat per batch, not per line. (A file moved away, by logrotate say, still has
            # its link: what is written there is kept, and the 1 s check follows the path.)
            self._follow_path()
            if self.fd is None:
                raise OSError(errno.ENOENT, f"{self.path} was removed: {self.last_error}")
        assert self.fd is not None
        written = os.write(self.fd, data)
        self._size += written
        if written != len(data):
            # The disk filled mid-line: cut the partial line off again, so no reader ever
            # sees it, and count the batch as dropped. (Only we append to the file, so the
            # partial bytes are the last `written` ones.)
            self._cut_last(written)
            raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")

    def _cut_last(self, count: int) -> None:
        try:
            if self.fd is not None:
                os.ftruncate(self.fd, os.fstat(self.fd).st_size - count)
                self._size -= count
        except OSError:
            pass  # the next open() terminates the partial line instead

    def close(self) -> None:
        if self.fd is not None:
            if self.sync_mode != "never":
                self._sync_now()  # what was written is on the disk when we stop
            fd, self.fd = self.fd, None
            try:
                os.close(fd)
            except OSError as exc:  # EIO on a network file system: the data was written
                log.error("closing output file failed", path=str(self.path), error=str(exc))
