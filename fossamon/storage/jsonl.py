"""Append-only JSONL files: one JSON object per line, never a torn line.

Each record is serialised first and handed to the kernel as ONE `write()` of whole lines on an
`O_APPEND` descriptor, so a reader (`tail -f`, jq, a log shipper) never sees half a record and
a crash can at worst lose the line being written, never corrupt an earlier one. A file that
ends in a partial line (a crash mid-write, a full disk) is terminated at open, so it parses.
"""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path
from typing import Any

import structlog

from fossamon.redact import redact_json_line

log = structlog.get_logger(__name__)

FILE_MODE = 0o640
DIR_MODE = 0o750


def dumps_line(record: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON plus a newline, secrets redacted. NaN/Infinity (not JSON) become
    null."""
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


class JsonlWriter:
    """One output file. Write failures are counted and logged once per episode, never raised."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.fd: int | None = None
        self.lines_written = 0
        self.lines_dropped = 0
        self.repaired_lines = 0
        self._failing = False

    def open(self) -> None:
        """Open (or reopen) the file at `self.path`; raises OSError naming the path."""
        self._switch(self.path)

    def retarget(self, path: str | os.PathLike[str]) -> None:
        """Continue in another file. The new one is opened (and repaired) first: if that
        fails (OSError), this writer still writes where it did."""
        self._switch(Path(path))

    def _switch(self, path: Path) -> None:
        fd = _open_append(path)
        try:
            repaired = _terminate_partial_line(fd, path)
        except OSError:
            os.close(fd)
            raise
        self.close()
        self.path, self.fd = path, fd
        self.repaired_lines += repaired

    def write(self, record: dict[str, Any]) -> bool:
        try:
            line = dumps_line(record)
        except (TypeError, ValueError) as exc:
            # A value json cannot represent is a bug upstream; lose this line, not the daemon.
            self.lines_dropped += 1
            log.error("cannot serialise a record", path=str(self.path), error=str(exc))
            return False
        return self.write_lines([line])

    def write_lines(self, lines: list[bytes]) -> bool:
        """Append whole lines in one write; True when they all reached the file."""
        if not lines:
            return True
        data = b"".join(lines)
        try:
            self._append(data)
        except OSError as exc:
            self.lines_dropped += len(lines)
            if not self._failing:
                self._failing = True
                log.error("cannot write output file", path=str(self.path), error=str(exc))
            return False
        if self._failing:
            self._failing = False
            log.info("writing output file again", path=str(self.path), dropped=self.lines_dropped)
        self.lines_written += len(lines)
        return True

    def _append(self, data: bytes) -> None:
        if self.fd is None:
            self.open()
        assert self.fd is not None
        written = os.write(self.fd, data)
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
        except OSError:
            pass  # the next open() terminates the partial line instead

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                os.close(fd)
            except OSError as exc:  # EIO on a network file system: the data was written
                log.error("closing output file failed", path=str(self.path), error=str(exc))
