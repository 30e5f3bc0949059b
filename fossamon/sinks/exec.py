"""The `exec` sink: runs a command for each event — as an argv list, never through a shell.

The event arrives twice: as one JSON object on stdin (`event.to_json(host)`) and in the
environment — FOSSAMON_EVENT (firing, resolved, …), FOSSAMON_RULE, FOSSAMON_SEVERITY,
FOSSAMON_PREVIOUS_SEVERITY, FOSSAMON_VALUE, FOSSAMON_THRESHOLD (empty when there is none),
FOSSAMON_SUMMARY, FOSSAMON_FINGERPRINT, FOSSAMON_SINCE, FOSSAMON_TS (ISO-8601 UTC),
FOSSAMON_HOST, FOSSAMON_LABELS (a JSON object) and one FOSSAMON_LABEL_<NAME> per label (the
name upper-cased, other characters than letters and digits as `_`). Label values are data:
no shell ever reads them, so `"; rm -rf /"` is just a string.

Exit status 0 is delivered; anything else is a failure, retried, logged with the end of the
command's stderr. The command runs in its own session, and on `timeout` its whole process
group is killed.

```toml
[[sinks]]
type = "exec"
command = ["/usr/local/bin/page-oncall", "--team", "ops"]
env = { ONCALL_QUEUE = "fossamon" }
timeout = "20s"
```
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
from typing import TYPE_CHECKING

from fossamon.config import sink_name
from fossamon.model import iso_ts
from fossamon.sinks._http import json_body
from fossamon.sinks.base import Delivery, DeliveryError, EventSink

if TYPE_CHECKING:
    from fossamon.config import ExecSinkConfig
    from fossamon.model import AlertEvent

STDERR_KEEP = 4096  # bytes of stderr kept while the command runs (its tail goes to the log)
STDERR_SHOWN = 500  # characters of that tail in a log line
STDERR_AFTER_EXIT = 0.5  # a background child may hold stderr open; stop reading after this
REAP_WAIT = 0.1  # after SIGKILL to the group: how long to wait for the exit to be seen
ENV_PREFIX = "FOSSAMON_"


def label_variable(name: str) -> str:
    return ENV_PREFIX + "LABEL_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def _text(value: float | None) -> str:
    return "" if value is None else repr(value)


def _env_safe(value: str) -> str:
    # A NUL cannot be in an environment variable; stdin carries the exact value.
    return value.replace("\0", "")


def event_environment(event: AlertEvent, host: str) -> dict[str, str]:
    """The FOSSAMON_* variables for one event."""
    env = {
        "FOSSAMON_EVENT": str(event.kind),
        "FOSSAMON_RULE": event.rule,
        "FOSSAMON_SEVERITY": event.severity.label,
        "FOSSAMON_PREVIOUS_SEVERITY": event.previous.label,
        "FOSSAMON_VALUE": _text(event.value),
        "FOSSAMON_THRESHOLD": _text(event.threshold),
        "FOSSAMON_SUMMARY": event.summary,
        "FOSSAMON_FINGERPRINT": event.key,
        "FOSSAMON_SINCE": iso_ts(event.since),
        "FOSSAMON_TS": iso_ts(event.ts),
        "FOSSAMON_HOST": host,
        "FOSSAMON_LABELS": json.dumps(dict(event.labels), ensure_ascii=False),
    }
    for name, value in event.labels:
        env[label_variable(name)] = value
    return {k: _env_safe(v) for k, v in env.items()}


class ExecSink(EventSink):
    def __init__(self, config: ExecSinkConfig, host: str) -> None:
        super().__init__(sink_name(config))
        self.host = host
        self.command = list(config.command)
        self.extra_env = {k: _env_safe(v) for k, v in config.env.items()}

    def environment(self, delivery: Delivery) -> dict[str, str]:
        # The daemon's own environment (PATH, LANG, …) minus FOSSAMON_* variables that would
        # pass for this event's, then the configured `env`, then the event itself.
        base = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        return {**base, **self.extra_env, **event_environment(delivery.event, delivery.host)}

    async def deliver(self, delivery: Delivery) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=self.environment(delivery),
                start_new_session=True,  # its own process group, killed whole on timeout
            )
        except OSError as exc:
            raise DeliveryError(
                self.name, f"cannot run {self.command[0]}: {exc.strerror or exc}"
            ) from None
        stdin = json_body(delivery.event.to_json(delivery.host)) + b"\n"
        stderr = asyncio.ensure_future(_tail(process.stderr))
        try:
            await _feed(process.stdin, stdin)
            status = await process.wait()
            tail = await _finish_reading(stderr)
        finally:
            if process.returncode is None:  # cancelled: the attempt timed out, or a stop
                await _kill_group(process)
            if not stderr.done():
                await _finish_reading(stderr, REAP_WAIT)
        if status != 0:
            how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
            reason = f"{self.command[0]} failed ({how})"
            raise DeliveryError(self.name, f"{reason}: {tail}" if tail else reason)


async def _feed(stdin: asyncio.StreamWriter | None, data: bytes) -> None:
    if stdin is None:
        return
    # A command that ignores stdin and exits is fine: its exit status decides.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(data)
        await stdin.drain()
    stdin.close()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        await stdin.wait_closed()


async def _tail(stream: asyncio.StreamReader | None) -> str:
    if stream is None:
        return ""
    kept = b""
    while chunk := await stream.read(STDERR_KEEP):
        kept = (kept + chunk)[-STDERR_KEEP:]
    lines = kept.decode("utf-8", "replace").strip().splitlines()[-5:]
    return " | ".join(line.strip() for line in lines if line.strip())[-STDERR_SHOWN:]


async def _finish_reading(reader: asyncio.Future[str], wait: float = STDERR_AFTER_EXIT) -> str:
    """The stderr tail; a grandchild that keeps stderr open does not hold the delivery."""
    done, _ = await asyncio.wait({reader}, timeout=wait)
    if not done:
        reader.cancel()
        return ""
    if reader.cancelled() or reader.exception() is not None:
        return ""
    return reader.result()


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(REAP_WAIT):
            await process.wait()
