"""fossamon's /metrics against the real thing (Debian `prometheus`, `prometheus-alertmanager`).

- `promtool check metrics` (parse and lint) on a live scrape of `fossamon run` with the
  shipped config.toml pointed at the stand-in target, and the scrape's cost measured there;
- a real Prometheus, configured from the shipped examples/prometheus.yml (ports, paths and
  intervals rewritten in a temp copy), scraping a live fossamon with a bearer token, then
  its query API asked for an API latency series and a provoked alert;
- a real Alertmanager loaded from the shipped examples/alertmanager.yml, fed by fossamon's
  alertmanager sink, grouping the alert by host and rule.

Everything listens on 127.0.0.1; every wait is bounded in time; every process started here
ends with its test, pass or fail. Figures go to artifacts/prometheus-scrape.txt.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import statistics
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from daemon_harness import daemon_config, start_daemon
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from support import free_port

from fossamon.demo.target import DemoTarget

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "artifacts" / "prometheus-scrape.txt"
PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")
AMTOOL = Path("/usr/bin/amtool")
TOKEN = "prometheus-scrape-token-5521"
# api_up is 0 or 1: above -1 always, so this rule fires at the first run.
ALWAYS = """
[[rules]]
name = "always_breached"
metric = "api_up"
labels = { endpoint = "health" }
warning = -1
"""
TEXT_ACCEPT = "text/plain;version=0.0.4"
OPENMETRICS_ACCEPT = "application/openmetrics-text;version=1.0.0"
SCRAPES = 50
EXPORTER_OFF = '[exporter]\nlisten = ""\n'
HOSTNAME = '[daemon]\nhostname = "web-1"\n'


@pytest.fixture
async def target(small_demo_db):
    async with DemoTarget(small_demo_db) as running:
        yield running


@pytest.fixture
async def session():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
        yield client


def replace_once(text: str, old: str, new: str) -> str:
    """A rewrite of a shipped file that must hit: an edit of the file must not silently
    turn the test into a test of something else."""
    assert text.count(old) == 1, f"expected {old!r} once in the shipped file"
    return text.replace(old, new)


def shipped_config(tmp_path: Path, url: str, db: Path, port: int) -> Path:
    """The shipped config.toml as an operator would point it at the stand-in."""
    text = (REPO / "config.toml").read_text()
    text = replace_once(text, 'base_url = "http://localhost:8000"', f'base_url = "{url}"')
    text = replace_once(text, 'path = "/backend/fossawork_v2.db"', f'path = "{db}"')
    text = replace_once(text, 'log_format = "auto"', 'log_format = "plain"')
    text = replace_once(text, 'listen = "127.0.0.1:9847"', f'listen = "127.0.0.1:{port}"')
    text = text.replace("/var/log/fossamon", str(tmp_path / "out"))
    text = text.replace("/var/lib/fossamon", str(tmp_path / "state"))
    text = text.replace("/run/fossamon", str(tmp_path / "run"))
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def fast_config(tmp_path: Path, url: str, db: Path, port: int, more: str = "") -> Path:
    """The harness' fast config with the always-breached rule and a token-protected exporter."""
    path = daemon_config(tmp_path, url, db, more=ALWAYS + more)
    exporter = f'[exporter]\nlisten = "127.0.0.1:{port}"\nbearer_token = "{TOKEN}"\n'
    path.write_text(replace_once(path.read_text(), EXPORTER_OFF, exporter))
    return path


async def until(check, what: str, limit: float = 30.0, every: float = 0.2):
    """`await check()` until it returns something truthy; at most `limit` seconds."""
    deadline = time.monotonic() + limit
    last = None
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            last = await check()
            if last:
                return last
        await asyncio.sleep(every)
    pytest.fail(f"{what} not reached within {limit}s (last: {last!r})")


async def scrape(session, url: str, accept: str, token: str | None = None) -> tuple[str, str]:
    headers = {"Accept": accept}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with session.get(url, headers=headers) as response:
        assert response.status == 200, await response.text()
        return await response.text(), response.headers["Content-Type"]


async def ready_metrics(session, url: str, token: str | None = None) -> str:
    """/metrics once every collector has run once (what a scrape at steady state shows)."""

    async def ready():
        text, _ = await scrape(session, url, TEXT_ACCEPT, token)
        return text if "\nfossamon_ready 1.0\n" in text else None

    return await until(ready, "fossamon ready on /metrics")


@contextlib.contextmanager
def serving(args: list[str], log: Path):
    """A server process for the length of a `with`, killed at its end (pass or fail)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


async def wait_ready(session, url: str, proc: subprocess.Popen, log: Path) -> None:
    async def ready():
        assert proc.poll() is None, f"exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
        async with session.get(f"{url}/-/ready") as response:
            return response.status == 200

    await until(ready, f"{url}/-/ready")


def record(section: str, lines: list[str]) -> None:
    """Each test keeps its own `## section` of the artifact up to date."""
    ARTIFACT.parent.mkdir(exist_ok=True)
    old = ARTIFACT.read_text() if ARTIFACT.exists() else ""
    blocks = dict(re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", old, re.MULTILINE | re.DOTALL))
    blocks[section] = "\n".join(lines) + "\n\n"
    ARTIFACT.write_text("".join(f"## {name}\n{body}" for name, body in sorted(blocks.items())))


async def stopped(daemon) -> int:
    """SIGTERM and wait; the caller asserts the status after its `finally`, so a failure
    inside the `try` is the one reported."""
    rc, _ = await daemon.stop(signal.SIGTERM, timeout=15)
    return rc


class TestPromtool:
    async def test_a_live_scrape_passes_promtool_lint_and_is_cheap(
        self, tmp_path, target, small_demo_db, session, need
    ):
        need(PROMTOOL.exists(), f"{PROMTOOL} (Debian package prometheus)")
        port = free_port()
        config = shipped_config(tmp_path, target.url, small_demo_db, port)
        daemon = await start_daemon(config, tmp_path)
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            text = await ready_metrics(session, url)
            assert 'api_response_seconds{endpoint="health"}' in text
            checked = subprocess.run(
                [str(PROMTOOL), "check", "metrics"],
                input=text,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            findings = f"promtool exit {checked.returncode}:\n{checked.stdout}{checked.stderr}"
            assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", ""), findings
            figures = {}
            for name, accept in (("text", TEXT_ACCEPT), ("openmetrics", OPENMETRICS_ACCEPT)):
                took = []
                for _ in range(SCRAPES):
                    began = time.perf_counter()
                    body, content_type = await scrape(session, url, accept)
                    took.append(time.perf_counter() - began)
                figures[name] = (statistics.median(took), max(took), len(body.encode()))
                if name == "openmetrics":
                    assert content_type.startswith("application/openmetrics-text")
                    families = list(text_string_to_metric_families(body))  # strict parser
                    assert any(f.name == "fossamon_build" for f in families)
                    series = sum(len(f.samples) for f in families)
        finally:
            rc = await stopped(daemon)
        assert rc == 0, daemon.stderr.decode()[-3000:]
        lines = [
            "fossamon run, the shipped config.toml against the stand-in target (DemoTarget,",
            f"small demo db); {SCRAPES} sequential GET /metrics per format, one keep-alive",
            "connection, time.perf_counter around each request and body read.",
            f"sample lines (OpenMetrics): {series}",
        ]
        for name, (median, worst, size) in figures.items():
            lines.append(
                f"{name}: median {median * 1000:.2f} ms, max {worst * 1000:.2f} ms, "
                f"body {size} bytes"
            )
        print("\n".join(lines))
        record("promtool check metrics + scrape cost (shipped config.toml)", lines)
        assert figures["text"][0] < 0.25, "a scrape must be cheap"


class TestPrometheus:
    async def test_prometheus_scrapes_fossamon_with_the_shipped_config(
        self, tmp_path, target, small_demo_db, session, need
    ):
        need(PROMETHEUS.exists(), f"{PROMETHEUS} (Debian package prometheus)")
        need(PROMTOOL.exists(), f"{PROMTOOL} (Debian package prometheus)")
        port, web_port = free_port(), free_port()
        prometheus_yml = self.rewritten(tmp_path, port)
        checked = subprocess.run(
            [str(PROMTOOL), "check", "config", str(prometheus_yml)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        url = f"http://127.0.0.1:{web_port}"
        log = tmp_path / "prometheus.log"
        args = [
            str(PROMETHEUS),
            f"--config.file={prometheus_yml}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web_port}",
        ]
        config = fast_config(tmp_path, target.url, small_demo_db, port)
        daemon = await start_daemon(config, tmp_path)
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        try:
            await ready_metrics(session, metrics_url, TOKEN)
            async with session.get(metrics_url) as refused:
                assert refused.status == 401  # what a scraper without the token gets
            with serving(args, log) as proc:
                await wait_ready(session, url, proc, log)
                latency = await self.query_until(
                    session, url, 'api_response_seconds{job="fossamon",endpoint="health"}', log
                )
                alert = await self.query_until(
                    session, url, 'fossamon_alert_state{rule="always_breached"}', log
                )
                build = await self.query_until(session, url, "fossamon_build_info", log)
                cost = await self.query_until(
                    session,
                    url,
                    '{__name__=~"scrape_duration_seconds|scrape_samples_scraped"}',
                    log,
                )
        finally:
            rc = await stopped(daemon)
        assert rc == 0, daemon.stderr.decode()[-3000:]
        (series,) = latency
        assert series["metric"]["instance"] == "127.0.0.1"  # the example's relabelling
        assert float(series["value"][1]) > 0
        (firing,) = alert
        assert firing["value"][1] == "1"
        assert firing["metric"]["severity"] == "warning"
        assert firing["metric"]["endpoint"] == "health"
        assert firing["metric"]["env"] == "production"
        assert build[0]["metric"]["version"]
        seen = {s["metric"]["__name__"]: s["value"][1] for s in cost}
        lines = [f"{name}: {value}" for name, value in sorted(seen.items())]
        print("\n".join(lines))
        record("Prometheus 2.42 scraping fossamon every 1s (harness config)", lines)

    @staticmethod
    def rewritten(tmp_path: Path, port: int) -> Path:
        """examples/prometheus.yml with our target, a 1 s interval and a temp token file."""
        token = tmp_path / "fossamon.token"
        token.write_text(TOKEN + "\n")
        text = (REPO / "examples" / "prometheus.yml").read_text()
        text, intervals = re.subn(r"scrape_interval: \d+s", "scrape_interval: 1s", text)
        assert intervals == 2
        text = replace_once(text, "scrape_timeout: 5s", "scrape_timeout: 1s")
        text = replace_once(text, "/etc/prometheus/fossamon.token", str(token))
        targets = re.compile(r"^(\s+- targets: )\[.*\]$", re.MULTILINE)  # not the commented one
        text, hits = targets.subn(rf'\g<1>["127.0.0.1:{port}"]', text)
        assert hits == 1
        path = tmp_path / "prometheus.yml"
        path.write_text(text)
        return path

    @staticmethod
    async def query_until(session, url: str, query: str, log: Path) -> list[dict]:
        async def result():
            async with session.get(f"{url}/api/v1/query", params={"query": query}) as response:
                body = await response.json()
                assert body["status"] == "success", body
                return body["data"]["result"]

        try:
            return await until(result, f"a result for {query}")
        except pytest.fail.Exception:
            async with session.get(f"{url}/api/v1/targets") as response:
                print(await response.text())
            print(log.read_text()[-3000:])
            raise


class TestAlertmanager:
    async def test_the_shipped_alertmanager_config_groups_by_host_and_rule(
        self, tmp_path, target, small_demo_db, session, need
    ):
        need(ALERTMANAGER.exists(), f"{ALERTMANAGER} (Debian package prometheus-alertmanager)")
        need(AMTOOL.exists(), f"{AMTOOL} (Debian package prometheus-alertmanager)")
        shipped = REPO / "examples" / "alertmanager.yml"
        checked = subprocess.run(
            [str(AMTOOL), "check-config", str(shipped)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        am_port, port, nobody = free_port(), free_port(), free_port()
        # Receivers on a loopback port nobody listens on: notifications fail, nothing leaves.
        text, receivers = re.subn(
            r'(url: ")http://[a-z.-]+\.example\.com:\d+',
            rf"\g<1>http://127.0.0.1:{nobody}",
            shipped.read_text(),
        )
        assert receivers == 2
        config = tmp_path / "alertmanager.yml"
        config.write_text(text)
        url = f"http://127.0.0.1:{am_port}"
        sink = f'\n[[sinks]]\ntype = "alertmanager"\nurl = "{url}"\n'
        fossamon = fast_config(tmp_path, target.url, small_demo_db, port, more=sink)
        fossamon.write_text(replace_once(fossamon.read_text(), "[daemon]\n", HOSTNAME))
        log = tmp_path / "alertmanager.log"
        args = [
            str(ALERTMANAGER),
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ]
        with serving(args, log) as proc:
            await wait_ready(session, url, proc, log)
            daemon = await start_daemon(fossamon, tmp_path)
            try:

                async def grouped():
                    async with session.get(f"{url}/api/v2/alerts/groups") as response:
                        groups = await response.json()
                    return [g for g in groups if g["labels"].get("alertname") == "always_breached"]

                (group,) = await until(grouped, "the alert grouped in Alertmanager")
            finally:
                rc = await stopped(daemon)
        assert rc == 0, daemon.stderr.decode()[-3000:]
        assert group["labels"] == {"alertname": "always_breached", "instance": "web-1"}
        assert group["receiver"]["name"] == "ops-chat"
        (alert,) = group["alerts"]
        assert alert["labels"]["severity"] == "warning"
        assert alert["labels"]["endpoint"] == "health"
