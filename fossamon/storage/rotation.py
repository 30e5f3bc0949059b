"""Built-in rotation of the JSONL output files: archive names, gzip off the event loop, retention.

A rotated file is renamed (in the file's writer thread: one `rename()`, no data copied) to
`<stem>-<UTC time of the rotation>[-n]<suffix>` next to the live file, e.g.
`performance-metrics-20261126T000000Z.jsonl`; `-1`, `-2` … when several rotations share a
second. Compression and pruning run in one worker thread per file, one job after the other,
so a deletion never races a compression. Compression writes `<archive>.gz.tmp`, fsyncs it,
renames it to `<archive>.gz` and only then unlinks the plain archive: at every instant one
complete copy exists, and a crash leaves at worst a stale `.gz.tmp` (deleted at start) or a
plain archive next to its finished `.gz` (the plain one is deleted at start).
"""

from __future__ import annotations

import datetime as dt
import gzip
import math
import os
import re
import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import structlog

if TYPE_CHECKING:
    from pathlib import Path

    from fossamon.config import OutputFileConfig

log = structlog.get_logger(__name__)

ARCHIVE_TIME = "%Y%m%dT%H%M%SZ"
CLOSE_WAIT = 5.0
ARCHIVE_MODE = 0o640
_CHUNK = 1 << 20

Mode = Literal["none", "builtin", "external"]


@dataclass(frozen=True)
class RotationPolicy:
    """How one output file rotates. `none`: never (the JSONL sink's files); `external`:
    logrotate moves the file and the writer follows; `builtin`: the writer rotates.
    Zero means "no limit" for max_size, rotate_every, keep and max_age."""

    mode: Mode = "none"
    max_size: int = 0
    rotate_every: float = 0.0
    compress: bool = True
    keep: int = 0
    max_age: float = 0.0


def policy_from(config: OutputFileConfig) -> RotationPolicy:
    return RotationPolicy(
        mode=config.rotation,
        max_size=config.max_size,
        rotate_every=config.rotate_every,
        compress=config.compress,
        keep=config.keep,
        max_age=config.max_age,
    )


def next_boundary(after: float, every: float) -> float:
    """The first multiple of `every` (seconds since the epoch) later than `after`: "1d" rotates
    at 00:00:00Z, "1h" on the hour, "15m" at :00, :15, :30, :45."""
    return (math.floor(after / every) + 1) * every


@dataclass(frozen=True, order=True)
class ArchiveKey:
    """Orders archives oldest first: by the time in the name, then by the collision number."""

    when: int
    seq: int


def archive_name(path: Path, key: ArchiveKey) -> Path:
    stamp = dt.datetime.fromtimestamp(key.when, dt.UTC).strftime(ARCHIVE_TIME)
    extra = f"-{key.seq}" if key.seq else ""
    return path.with_name(f"{path.stem}-{stamp}{extra}{path.suffix}")


def _archive_pattern(path: Path) -> re.Pattern[str]:
    return re.compile(
        rf"{re.escape(path.stem)}-(\d{{8}}T\d{{6}}Z)(?:-(\d+))?{re.escape(path.suffix)}"
        r"(\.gz|\.gz\.tmp)?"
    )


@dataclass
class Archive:
    key: ArchiveKey
    plain: Path  # the uncompressed name; `.gz` and `.gz.tmp` are derived from it
    has_plain: bool = False
    has_gz: bool = False
    has_tmp: bool = False

    @property
    def gz(self) -> Path:
        return self.plain.with_name(self.plain.name + ".gz")

    @property
    def tmp(self) -> Path:
        return self.plain.with_name(self.plain.name + ".gz.tmp")


def list_archives(path: Path) -> list[Archive]:
    """The archives of the live file `path`, oldest first (compressed or not, or half-done)."""
    pattern = _archive_pattern(path)
    found: dict[ArchiveKey, Archive] = {}
    try:
        names = [entry.name for entry in path.parent.iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:  # an unreadable folder: no archives we can see or manage
        log.warning("cannot list archives", folder=str(path.parent), error=str(exc))
        return []
    for name in names:
        match = pattern.fullmatch(name)
        if match is None:
            continue
        try:
            stamp = dt.datetime.strptime(match.group(1), ARCHIVE_TIME).replace(tzinfo=dt.UTC)
        except ValueError:
            continue  # looks like ours but is no time (m-20261399T000000Z.jsonl): not ours
        key = ArchiveKey(int(stamp.timestamp()), int(match.group(2) or 0))
        archive = found.setdefault(key, Archive(key, archive_name(path, key)))
        ending = match.group(3)
        if ending == ".gz":
            archive.has_gz = True
        elif ending == ".gz.tmp":
            archive.has_tmp = True
        else:
            archive.has_plain = True
    return [found[key] for key in sorted(found)]


def compress(archive: Archive) -> None:
    """gzip `archive.plain` to `archive.gz` so that a crash at any point leaves one whole copy."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    with archive.plain.open("rb") as source:
        fd = os.open(archive.tmp, flags, ARCHIVE_MODE)
        with open(fd, "wb") as raw:  # noqa: PTH123 - a descriptor
            with gzip.GzipFile(archive.plain.name, "wb", 6, raw) as packed:
                shutil.copyfileobj(source, packed, _CHUNK)
            raw.flush()
            os.fsync(raw.fileno())
    archive.tmp.replace(archive.gz)
    _fsync_dir(archive.plain.parent)
    archive.plain.unlink()
    archive.has_gz, archive.has_plain, archive.has_tmp = True, False, False


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def count_lines(file: Path) -> int:
    opener = gzip.open if file.name.endswith(".gz") else open
    count = 0
    with opener(file, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            count += chunk.count(b"\n")
    return count


_ARCHIVERS: dict[Path, Archiver] = {}
_ARCHIVERS_LOCK = threading.Lock()


def archiver_for(path: Path) -> Archiver:
    """The one Archiver of a live file: two (a retarget away and back) would race on the
    same archives, one deleting what the other is writing."""
    key = path.absolute()
    with _ARCHIVERS_LOCK:
        found = _ARCHIVERS.get(key)
        if found is None or found.closed:
            found = _ARCHIVERS[key] = Archiver(key)
        return found


class Archiver:
    """The worker thread of one output file: compression, crash leftovers, retention."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.archives_removed = 0
        self.lines_removed = 0
        self.compressed = 0
        self.closed = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="fossamon-archive")
        self._pending: set[Future[None]] = set()
        self._lock = threading.Lock()

    def archived(self, archive: Archive, policy: RotationPolicy, now: float) -> None:
        """A rotation produced `archive` (plain): compress it (if asked) and prune."""
        self._submit(self._after_rotation, archive, policy, now)

    def recover(self, policy: RotationPolicy, now: float) -> None:
        """Finish what a crash (or a stop that could not wait) left, then prune."""
        self._submit(self._recover, policy, now)

    def wait(self, timeout: float = CLOSE_WAIT) -> int:
        """Wait up to `timeout` for queued work; the number of jobs still unfinished."""
        with self._lock:
            pending = set(self._pending)
        if not pending:
            return 0
        _, left = wait_futures(pending, timeout)
        return len(left)

    def abandon(self) -> None:
        """After a bounded wait at stop: drop queued jobs (the next start finishes them) and
        do not make the interpreter wait for the thread at exit."""
        self.closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _submit(self, job: object, *args: object) -> None:
        assert callable(job)
        try:
            future: Future[None] = self._executor.submit(self._guarded, job, *args)
        except RuntimeError:  # abandoned at a stop: the next start finishes the leftovers
            log.info("archiving after the stop is left to the next start", path=str(self.path))
            return
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    def _guarded(self, job: object, *args: object) -> None:
        assert callable(job)
        try:
            job(*args)
        except OSError as exc:
            # Left for the next job or the next start; the live file is never affected.
            log.error("archiving output file failed", path=str(self.path), error=str(exc))
        except Exception:  # a bug here must not stop retention for good
            log.exception("archiving output file failed", path=str(self.path))

    def _after_rotation(self, archive: Archive, policy: RotationPolicy, now: float) -> None:
        try:
            if policy.compress:
                self._compress_all(archive)
        finally:
            # Retention runs whatever compression did: on a full disk it is what frees space.
            self._prune(policy, now)

    def _compress_all(self, newest: Archive) -> None:
        """The new archive, and any an earlier failure (a full disk) left plain."""
        waiting = [a for a in list_archives(self.path) if a.has_plain and not a.has_gz]
        if newest.key not in {a.key for a in waiting}:
            waiting.append(newest)
        for archive in waiting:
            try:
                compress(archive)
                self.compressed += 1
            except FileNotFoundError:
                pass  # retention (a job queued before this one) has removed it already
            except OSError:
                archive.tmp.unlink(missing_ok=True)  # a half-written copy only takes space
                raise

    def _recover(self, policy: RotationPolicy, now: float) -> None:
        try:
            self._finish_leftovers(policy)
        finally:
            self._prune(policy, now)

    def _finish_leftovers(self, policy: RotationPolicy) -> None:
        for archive in list_archives(self.path):
            if archive.has_tmp:
                archive.tmp.unlink(missing_ok=True)
                log.info("removed an unfinished compression", path=str(archive.tmp))
            if archive.has_plain and archive.has_gz:
                # The .gz was renamed into place after its fsync: it is whole.
                archive.plain.unlink()
                log.info("removed an archive already compressed", path=str(archive.plain))
            elif archive.has_plain and policy.compress:
                compress(archive)
                self.compressed += 1
                log.info("compressed an archive left uncompressed", path=str(archive.gz))

    def _prune(self, policy: RotationPolicy, now: float) -> None:
        archives = [a for a in list_archives(self.path) if a.has_plain or a.has_gz]
        doomed = []
        if policy.keep and len(archives) > policy.keep:
            doomed = archives[: len(archives) - policy.keep]
        if policy.max_age:
            limit = now - policy.max_age
            doomed += [a for a in archives if a.key.when < limit and a not in doomed]
        for archive in doomed:
            # Lines are counted as they go, so that written == live + archived + removed;
            # counted once removed, so a deletion that fails is not counted again and again.
            lines = count_lines(archive.gz if archive.has_gz else archive.plain)
            archive.gz.unlink(missing_ok=True)
            archive.plain.unlink(missing_ok=True)
            self.lines_removed += lines
            self.archives_removed += 1
