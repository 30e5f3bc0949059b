"""Typed errors. Each names what it is about: a config key path, a collector target, a sink."""

from __future__ import annotations

from dataclasses import dataclass


class FossamonError(Exception):
    """Base of every error fossamon raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config file: where (file, key path) and what."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{where}: {self.message}"


class ConfigError(FossamonError):
    """A config file that cannot be used. Carries every problem found, not only the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class CollectorError(FossamonError):
    """A collector could not be built or closed (a failed probe is data, never this)."""

    def __init__(self, collector: str, target: str, message: str) -> None:
        self.collector = collector
        self.target = target
        super().__init__(f"{collector} {target}: {message}")


class SinkError(FossamonError):
    """A sink could not deliver or be built."""

    def __init__(self, sink: str, message: str) -> None:
        self.sink = sink
        super().__init__(f"sink {sink}: {message}")


# Exit statuses (sysexits.h), so systemd units can tell a bad config from a crash.
EX_OK = 0
EX_CRITICAL = 1  # `fossamon once`: a rule is critical; `fossamon reload`: rejected
EX_NOT_RUNNING = 3  # `fossamon reload`/`status`: no daemon (as LSB's "program is not running")
EX_USAGE = 64
EX_NOINPUT = 66  # sysexits.h: an input file is missing or unusable (a baseline, a JSONL file)
EX_UNAVAILABLE = 69  # the exporter cannot listen (the port is taken)
EX_SOFTWARE = 70  # a bug
EX_CANTCREAT = 73  # output files cannot be created at start
EX_CONFIG = 78  # the config file is invalid
