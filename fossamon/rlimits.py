"""The open-files limit the daemon needs for its config, and raising the soft limit to it.

systemd starts services with a soft RLIMIT_NOFILE of 1024 (for programs that still use
select(2)) and a hard one of 524288, and expects a program that needs more to raise its own
soft limit. The daemon's event loop uses epoll, so more is safe. An api collector with
`max_concurrency = 1000` holds up to that many sockets at once, and twice that when some
endpoints need the aiohttp session beside the lean client: past the soft limit, probes would
fail as "Too many open files" and so would the outputs, the state store and the database.

The soft limit is raised only as far as the config needs (children of the exec sink
inherit it), never lowered, and never past the hard limit: when even that is too low, the
daemon says so and runs with what it has.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fossamon.config import Config

# Everything but the probes' sockets: output files and their archiving, the state store, the
# monitored database (with -wal and -shm), the exporter's sockets, sinks' connections, the
# event loop's epoll and self-pipe, the threads' files, /proc reads. 54 in the soak (40
# endpoints); the rest is headroom.
BASE_DESCRIPTORS = 256


def descriptors_needed(config: Config) -> int:
    """The open files `config` can hold at once: a probe's socket per concurrent probe, on
    each of the two HTTP clients, plus the daemon's own."""
    needed = BASE_DESCRIPTORS
    api = config.collectors.api
    if api is not None and api.enabled:
        needed += 2 * min(api.max_concurrency, len(api.endpoints))
    return needed


@dataclass(frozen=True)
class OpenFilesLimit:
    needed: int
    soft_before: int
    soft: int  # after any raise
    hard: int
    error: str | None = None  # why the raise failed (a seccomp filter, say)

    @property
    def raised(self) -> bool:
        return self.soft > self.soft_before

    @property
    def enough(self) -> bool:
        return self.soft == resource.RLIM_INFINITY or self.soft >= self.needed


def fit_open_files_limit(needed: int) -> OpenFilesLimit:
    """Raise the soft RLIMIT_NOFILE to `needed` (at most the hard limit) when it is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return OpenFilesLimit(needed, soft, soft, hard)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        return OpenFilesLimit(needed, soft, soft, hard, error=str(exc))
    return OpenFilesLimit(needed, soft, target, hard)
