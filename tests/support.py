"""Plain helpers any test may import (conftest fixtures aside): ports, daemon configs."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


def free_port() -> int:
    """A port free on 127.0.0.1 right now (tests only ever listen on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def daemon_head(
    tmp_path: Path,
    *,
    metrics: str = "",
    alerts: str = "",
    grace: str = "1s",
    metrics_extra: str = "",
    alerts_extra: str = "",
    exporter: str = "",
) -> str:
    """The `[daemon]`, `[output.*]` and `[exporter]` sections of a test daemon: everything in
    tmp_path, plain log lines (the tests read stderr), the exporter off unless `exporter`
    gives an address (tests run side by side: none may take the default port)."""
    return f"""
[daemon]
log_format = "plain"
runtime_dir = "{tmp_path}/run"
state_dir = "{tmp_path}/state"
shutdown_grace = "{grace}"
[output.metrics]
path = "{metrics or f"{tmp_path}/out/metrics.jsonl"}"
{metrics_extra}
[output.alerts]
path = "{alerts or f"{tmp_path}/out/alerts.jsonl"}"
{alerts_extra}
[exporter]
listen = "{exporter}"
"""
