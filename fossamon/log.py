"""Logging through structlog, shaped for where the lines go.

- a terminal: structlog's coloured console output;
- journald (systemd sets JOURNAL_STREAM to our stderr's `device:inode`): one `<N>` syslog
  priority prefix on EVERY line, tracebacks included, and no timestamp (the journal has its
  own), so `journalctl -p err` finds errors and a traceback stays one priority;
- `json`: one JSON object per line, for log shippers;
- anything else (a file, a pipe): plain console lines with a UTC timestamp.

Standard-library loggers (aiohttp, asyncio) go through the same formatter. Secrets are
redacted (`fossamon.redact`) twice: in the event dict, where a secret-named key is masked
whole, and in the rendered line, where tracebacks and stdlib messages first exist as text.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Literal, TextIO

import structlog
from structlog.dev import ConsoleRenderer, plain_traceback
from structlog.processors import JSONRenderer, LogfmtRenderer

from fossamon.redact import redact_json_line
from fossamon.redact import structlog_processor as redact_secrets

if TYPE_CHECKING:
    from structlog.typing import EventDict, Processor, WrappedLogger

Format = Literal["console", "journal", "json", "plain"]

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
LEVELS["error"] = logging.ERROR

# syslog priorities, as sd-daemon(3) reads a `<N>` line prefix
PRIORITIES = {
    "debug": 7,
    "info": 6,
    "notice": 5,
    "warning": 4,
    "error": 3,
    "exception": 3,
    "critical": 2,
}


def _syslog_level(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """`syslog_level="notice"`: a priority the stdlib levels lack (a resolved alert), shown
    as that level; filtering still goes by the stdlib level the line was logged at."""
    override = event_dict.pop("syslog_level", None)
    if override in PRIORITIES:
        event_dict["level"] = override
    return event_dict


def under_journald(stream: TextIO) -> bool:
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{info.st_dev}:{info.st_ino}"


def resolve_format(requested: str, stream: TextIO) -> Format:
    if requested in {"console", "plain", "journal", "json"}:
        return requested  # type: ignore[return-value]  # checked just above
    if under_journald(stream):
        return "journal"
    try:
        tty = stream.isatty()
    except (ValueError, AttributeError):
        tty = False
    return "console" if tty else "plain"


class JournalRenderer:
    """`<6>message key=value` with the prefix repeated on every line of a traceback."""

    def __init__(self) -> None:
        self._fields = LogfmtRenderer(sort_keys=True, bool_as_flag=False)

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        priority = PRIORITIES.get(str(event_dict.pop("level", "info")), 6)
        event = str(event_dict.pop("event", ""))
        exc = event_dict.pop("exception", None)
        stack = event_dict.pop("stack", None)
        event_dict.pop("timestamp", None)
        fields = self._fields(logger, name, event_dict) if event_dict else ""
        text = f"{event} {fields}".rstrip()
        for extra in (exc, stack):
            if extra:
                text += "\n" + str(extra).rstrip("\n")
        return "\n".join(f"<{priority}>{line}" for line in text.split("\n"))


def _redact_json_line(_logger: WrappedLogger, _name: str, line: EventDict | str) -> str:
    return redact_json_line(line) if isinstance(line, str) else str(line)


def _renderer(fmt: Format) -> list[Processor]:
    if fmt == "journal":
        return [structlog.processors.format_exc_info, JournalRenderer()]
    if fmt == "json":
        # a plain-text traceback: dict_tracebacks would also dump local variables (secrets)
        return [structlog.processors.format_exc_info, JSONRenderer(sort_keys=False)]
    colors = fmt == "console"
    return [ConsoleRenderer(colors=colors, exception_formatter=plain_traceback)]


def configure_logging(
    level: str = "info", requested_format: str = "auto", stream: TextIO | None = None
) -> Format:
    """Route structlog and stdlib logging to `stream` (stderr) in the right shape.

    Safe to call again (a reload that changes `log_level` or `log_format`).
    """
    out = stream if stream is not None else sys.stderr
    fmt = resolve_format(requested_format, out)
    # The same processors for every format (the journal renderer drops the timestamp), because
    # loggers cache their processor chain on first use and a reload may change the format.
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        _syslog_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *_renderer(fmt),
                # the rendered line: tracebacks, reprs, stdlib messages (a JSON line is
                # redacted as JSON, so it stays valid JSON)
                _redact_json_line if fmt == "json" else redact_secrets,
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS.get(level, logging.INFO))
    return fmt
