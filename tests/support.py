"""Plain helpers any test may import (conftest fixtures aside): ports, daemon configs."""

from __future__ import annotations

import socket
from html.parser import HTMLParser
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


def demo_collectors(
    url: str,
    db: Path | str,
    *,
    interval: str | None = "500ms",
    system_interval: str | None = "500ms",
    api_timeout: str = "1s",
    record_value: bool = True,
) -> str:
    """The `[collectors.*]` sections watching the demo target and its database: the system
    collector (left out when `system_interval` is None), the api collector on /api/health and
    /api/work-orders, the db collector counting work orders. `interval=None` leaves the api
    and db collectors at their default intervals."""
    lines = []
    if system_interval is not None:
        lines += ["[collectors.system]", f'interval = "{system_interval}"']
    lines.append("[collectors.api]")
    if interval is not None:
        lines.append(f'interval = "{interval}"')
    lines += [
        f'timeout = "{api_timeout}"',
        f'base_url = "{url}"',
        "[[collectors.api.endpoints]]",
        'name = "health"',
        'path = "/api/health"',
        "[[collectors.api.endpoints]]",
        'name = "work_orders"',
        'path = "/api/work-orders?limit=10"',
        "[collectors.db]",
    ]
    if interval is not None:
        lines.append(f'interval = "{interval}"')
    lines += [
        f'path = "{db}"',
        "[[collectors.db.queries]]",
        'name = "work_orders_count"',
        'sql = "SELECT COUNT(*) FROM work_orders"',
    ]
    if record_value:
        lines.append("record_value = true")
    return "\n".join(lines) + "\n"


# --- reading HTML (the status page) ---------------------------------------------------------

VOID = {"meta", "br", "img", "input", "link", "hr"}


class Element:
    def __init__(self, tag: str, attrs: dict[str, str | None]) -> None:
        self.tag, self.attrs, self.text = tag, attrs, ""


class Dom(HTMLParser):
    """Every element with its attributes and the text inside it (descendants included)."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.elements: list[Element] = []
        self._open: list[Element] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs))
        self.elements.append(element)
        if tag not in VOID:
            self._open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        while self._open and self._open.pop().tag != tag:
            pass

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.text += data

    def find(self, tag: str = "", **attrs: str) -> list[Element]:
        wanted = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        return [
            e
            for e in self.elements
            if (not tag or e.tag == tag)
            and all(
                (e.attrs.get(k) or "").split().count(v) if k == "class" else e.attrs.get(k) == v
                for k, v in wanted.items()
            )
        ]

    def one(self, tag: str = "", **attrs: str) -> Element:
        found = self.find(tag, **attrs)
        assert len(found) == 1, (tag, attrs, len(found))
        return found[0]


# --- a real headless browser (Debian chromium) ----------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")


def chromium_argv(profile: Path, *args: str) -> list[str]:
    """A headless Chromium run as root with a fresh profile (the flags FACTS.md verified)."""
    return [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
