"""Security rows, against a real daemon: hostile text from a monitored service is inert in
everything rendered as HTML, and no configured credential reaches a log line, a JSONL record,
/status, /metrics or the status page."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import urllib.request
from typing import TYPE_CHECKING

import pytest
from aiohttp import web
from daemon_harness import start_daemon
from faults_support import INTERVAL, errors_of, runs
from support import daemon_head, free_port

if TYPE_CHECKING:
    from pathlib import Path

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
TOKENS = {
    "exporter": "exp0rter-t0ken-5ecret",
    "header": "hdr-bearer-5ecret-abcdef",
    "userinfo": "p4ssw0rd-in-the-url",
    "query": "qu3ry-t0ken-5ecret",
    "body": "b0dy-5ecret-value-xyz",
    "webhook": "w3bhook-t0ken-5ecret",
}

# What goes over the wire: userinfo travels as basic auth, base64-encoded.
BASIC = base64.b64encode(f"svc:{TOKENS['userinfo']}".encode()).decode()
SENT = {k: v for k, v in TOKENS.items() if k not in {"userinfo", "exporter"}} | {
    "userinfo as basic auth": BASIC
}


@pytest.fixture
async def service():
    """A service that answers with hostile text and echoes what it was sent (headers, URL,
    body) in its failures, as a careless one would."""
    seen: list[str] = []

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": HOSTILE})

    async def echo(request: web.Request) -> web.Response:
        text = f"{request.method} {request.url} {dict(request.headers)} {await request.text()}"
        seen.append(text)
        return web.json_response({"status": text}, status=200)

    async def hook(request: web.Request) -> web.Response:
        seen.append(f"{request.url} {dict(request.headers)} {await request.text()}")
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/api/health", health)
    app.router.add_route("*", "/api/echo", echo)
    app.router.add_post("/hook/{token}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", port, seen
    await runner.cleanup()


def get(url: str, token: str) -> tuple[str, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return answer.headers.get("Content-Type", ""), answer.read().decode()


def write_config(tmp_path: Path, base: str, port: int, exporter: str) -> Path:
    t = TOKENS
    config = tmp_path / "config.toml"
    config.write_text(
        daemon_head(tmp_path, exporter=exporter).replace(
            "[daemon]\n", f"[daemon]\nhostname = {json.dumps(HOSTILE)}\n", 1
        )
        + f'bearer_token = "{t["exporter"]}"\n'
        + f'[collectors.system]\ninterval = "{INTERVAL}s"\n'
        + f'[collectors.api]\ninterval = "{INTERVAL}s"\ntimeout = "1s"\nbase_url = "{base}"\n'
        + '[[collectors.api.endpoints]]\nname = "health"\npath = "/api/health"\n'
        + 'expect_json = { status = "healthy" }\n'
        + '[[collectors.api.endpoints]]\nname = "echo"\n'
        + f'url = "http://svc:{t["userinfo"]}@127.0.0.1:{port}/api/echo?token={t["query"]}"\n'
        + 'method = "POST"\n'
        + f'json = {{ password = "{t["body"]}" }}\n'
        + 'expect_json = { status = "ok" }\n'
        + '[[collectors.api.endpoints]]\nname = "echo_header"\npath = "/api/echo"\n'
        + f'headers = {{ Authorization = "Bearer {t["header"]}" }}\n'
        + 'expect_json = { status = "ok" }\n'
        + '[[rules]]\nname = "api_down"\nmetric = "api_up"\ndirection = "below"\ncritical = 1\n'
        + '[[sinks]]\ntype = "webhook"\n'
        + f'url = "http://127.0.0.1:{port}/hook/{t["webhook"]}"\n'
        + f'headers = {{ X-Api-Key = "{t["webhook"]}" }}\n'
    )
    return config


async def test_hostile_text_is_inert_and_no_secret_leaves(tmp_path, service, notify):
    base, port, seen = service
    exporter = f"127.0.0.1:{free_port()}"
    config = write_config(tmp_path, base, port, exporter)
    daemon = await start_daemon(config, tmp_path, {"NOTIFY_SOCKET": str(notify.path)})
    await daemon.wait_for(
        lambda: [
            line
            for line in runs(daemon, "api")
            if all(
                errors_of(line, name) == ["body_mismatch"]
                for name in ("health", "echo", "echo_header")
            )
        ],
        what="every endpoint failing its JSON check (and nothing else)",
    )
    await daemon.wait_for(lambda: daemon.lines(daemon.alerts), what="an alert")
    await daemon.wait_for(lambda: len(seen) >= 3, what="the webhook delivery")
    # every secret did reach the service: the test would prove nothing otherwise
    for which, token in SENT.items():
        assert any(token in s for s in seen), f"the {which} credential was not sent"

    url = f"http://{exporter}"
    status_type, status = await asyncio.to_thread(get, f"{url}/status", TOKENS["exporter"])
    page_type, page = await asyncio.to_thread(get, f"{url}/", TOKENS["exporter"])
    _, metrics = await asyncio.to_thread(get, f"{url}/metrics", TOKENS["exporter"])
    assert status_type.startswith("application/json")
    errors = json.loads(status)["collectors"]["api"]["errors"]
    assert any("<script>alert(" in e["message"] for e in errors)  # raw in JSON, as data
    assert page_type.startswith("text/html")
    assert "&lt;script&gt;" in page  # the hostile text is shown, as text
    assert "<script" not in page
    assert "<img" not in page

    rc, _ = await daemon.stop()
    assert rc == 0, daemon.stderr.decode()[-2000:]
    html = tmp_path / "report.html"
    report = subprocess.run(
        [sys.executable, "-m", "fossamon", "report", "-c", str(config), "--since", "1h",
         "--html", str(html)],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr.decode()[-2000:]
    rendered = html.read_text()
    assert "&lt;script&gt;" in rendered
    assert "<script" not in rendered
    assert "<img" not in rendered

    outputs = {
        "log": daemon.stderr.decode(),
        "metrics JSONL": daemon.metrics.read_text(),
        "alerts JSONL": daemon.alerts.read_text(),
        "/status": status,
        "/metrics": metrics,
        "status page": page,
        "report": report.stdout.decode() + rendered,
    }
    for name, text in outputs.items():
        for which, token in (TOKENS | SENT).items():
            assert token not in text, f"the {which} credential reached the {name}"
