"""Reading a JSONL output file and its archives, oldest first, one line at a time.

Which files: for a live file `metrics.jsonl`, the built-in rotation's archives
(`metrics-20261126T000000Z[-n].jsonl[.gz]`, fossamon/storage/rotation.py), logrotate's with
`dateext` (`metrics.jsonl-20261126[.gz]`) and without (`metrics.jsonl.1`, `metrics.jsonl.2.gz`),
and the live file, read in the order of each file's first record (both rotation schemes can
lie side by side after a switch). An archive whose name proves that all of it is older than
the range is not opened: a built-in archive holds nothing later than a second past the UTC
time in its name; a dateext archive nothing later than the end of its (local) day. A plain
logrotate archive next to its `.gz` (compression cut short) is read, the `.gz` not.

Memory stays bounded by the longest line, never the file's size: files are iterated line by
line, gzip is decompressed as a stream, and a line longer than `MAX_LINE` (no JSONL record is)
is skipped without being held. A line that is not a JSON object with a valid `ts` is skipped
and counted, with the first few places named; a gzip archive cut short (a crash while it was
written elsewhere) is read up to where it breaks, and said so.
"""

from __future__ import annotations

import datetime as dt
import gzip
import re
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from fossamon.storage.rotation import list_archives
from fossamon.units import parse_duration

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

MAX_LINE = 16 * 1024 * 1024
SHOWN_PLACES = 5
PEEKED_LINES = 100  # for a file's first time: past a torn line or two, not through garbage
DAY = 86400.0
# logrotate names a dateext archive after its local date; no zone is more than 14 h from UTC
_LOCAL_SLACK = 14 * 3600.0


@dataclass(frozen=True, slots=True)
class Source:
    path: Path
    newest: float | None
    """No record in it is later than this, by its name; None when its name does not say."""


def sources(live: Path) -> list[Source]:
    """Every file holding records of `live` (only those that exist), by rotation scheme:
    logrotate's, the built-in rotation's, the live file. `records()` reads them in time order
    (after a switch from one rotation to the other, both kinds lie side by side)."""
    found = _logrotate_archives(live)
    for archive in list_archives(live):
        # the name holds int(now) of the rotation, and records up to a second later may be in
        # it: the whole second counts
        newest = float(archive.key.when) + 1.0
        # a .gz exists only once complete (rotation.py); a plain one without it is whole too
        if archive.has_gz:
            found.append(Source(archive.gz, newest))
        elif archive.has_plain:
            found.append(Source(archive.plain, newest))
    if live.exists():
        found.append(Source(live, None))
    return found


def _logrotate_archives(live: Path) -> list[Source]:
    """`live.N[.gz]` (the highest number is the oldest), then `live-YYYYMMDD[.gz]` by date."""
    numbered: dict[int, Path] = {}
    dated: dict[str, Path] = {}
    pattern = re.compile(rf"{re.escape(live.name)}(?:\.(\d+)|-(\d{{8}}))(\.gz)?")
    try:
        names = sorted(entry.name for entry in live.parent.iterdir())
    except OSError:
        names = []
    for name in names:
        match = pattern.fullmatch(name)
        if match is None:
            continue
        number, date, gz = match.groups()
        # a plain copy next to its .gz is logrotate's compression cut short: the plain is whole
        # (names are sorted, so the plain one comes first and the .gz is then left out)
        if number is not None:
            if not gz or int(number) not in numbered:
                numbered[int(number)] = live.with_name(name)
        elif not gz or date not in dated:
            dated[date] = live.with_name(name)
    found = [Source(path, None) for _, path in sorted(numbered.items(), reverse=True)]
    for date, path in sorted(dated.items()):
        try:
            day = dt.datetime.strptime(date, "%Y%m%d").replace(tzinfo=dt.UTC).timestamp()
        except ValueError:  # eight digits that are no date: read it, whatever it holds
            found.append(Source(path, None))
            continue
        found.append(Source(path, day + DAY + _LOCAL_SLACK))
    return found


def parse_ts(text: str) -> float:
    """An ISO-8601 time; one without a zone is UTC (as every fossamon timestamp is)."""
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def parse_when(text: str, now: float) -> float:
    """`--since`/`--until`: "now", a duration back from now ("24h", "90m", "7d"), or an
    ISO-8601 date or time ("2026-11-26", "2026-11-26T18:00", "…Z", "…+02:00"; UTC without a
    zone). Raises ValueError naming the forms."""
    value = text.strip()
    if value == "now":
        return now
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        return parse_ts(value)
    except ValueError:
        raise ValueError(
            f'expected "now", a duration back from now ("24h", "7d") or an ISO time '
            f'("2026-11-26T18:00Z"), got {text!r}'
        ) from None


@dataclass
class ReadStats:
    files: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)  # wholly before the range
    lines: int = 0
    unparsable: int = 0
    unparsable_at: list[str] = field(default_factory=list)  # the first few, as file:line
    damaged: list[str] = field(default_factory=list)  # files that could not be read to the end

    def reject(self, where: str) -> None:
        self.unparsable += 1
        if len(self.unparsable_at) < SHOWN_PLACES:
            self.unparsable_at.append(where)

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "skipped_files": self.skipped_files,
            "lines": self.lines,
            "unparsable": self.unparsable,
            "unparsable_at": self.unparsable_at,
            "damaged": self.damaged,
        }


def records(
    found: list[Source], stats: ReadStats, since: float = float("-inf")
) -> Iterator[tuple[float, dict[str, Any], str]]:
    """(ts, record, "file:line") of every parsable line, file by file, the files in the order
    of their first record's time; files wholly before `since` are skipped (not opened).
    Callers filter on ts, and `stats.reject(where)` a record whose shape they cannot use."""
    wanted = []
    for source in found:
        if source.newest is not None and source.newest < since:
            stats.skipped_files.append(str(source.path))
        else:
            wanted.append(source)
    # stable: files of equal time keep the rotation schemes' order
    for source in sorted(wanted, key=_time_key):
        stats.files.append(str(source.path))
        yield from _file_records(source.path, stats)


def _time_key(source: Source) -> float:
    """The time of the file's first record (a few lines are looked at); failing that, the
    time its name gives, or its modification time."""
    try:
        with _open(source.path) as stream:
            for _, line in zip(range(PEEKED_LINES), _lines(stream), strict=False):
                parsed = _parse(line)
                if parsed is not None:
                    return parsed[0]
    except (OSError, EOFError, zlib.error):
        pass
    if source.newest is not None:
        return source.newest
    try:
        return source.path.stat().st_mtime
    except OSError:
        return float("inf")


def _file_records(path: Path, stats: ReadStats) -> Iterator[tuple[float, dict[str, Any], str]]:
    number = 0
    try:
        with _open(path) as stream:
            for line in _lines(stream):
                number += 1
                stats.lines += 1
                where = f"{path.name}:{number}"
                parsed = _parse(line)
                if parsed is None:
                    stats.reject(where)
                else:
                    yield parsed[0], parsed[1], where
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        stats.damaged.append(f"{path}: {exc} (read {number} lines)")


def _open(path: Path) -> BinaryIO:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    """Whole lines; one longer than MAX_LINE is yielded as b"" (unparsable), never held."""
    while line := stream.readline(MAX_LINE):
        if len(line) == MAX_LINE and not line.endswith(b"\n"):
            while (rest := stream.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                pass
            yield b""
        else:
            yield line


def _parse(line: bytes) -> tuple[float, dict[str, Any]] | None:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("ts"), str):
        return None
    try:
        return parse_ts(record["ts"]), record
    except ValueError:
        return None
