"""Fault matrix, API target rows: a real `fossamon run` against the demo target (or a server
made to fail), one endpoint broken and one healthy beside it. Each row: the daemon stays up
and keeps its cadence, the broken endpoint reports the fault's error kind with api_up 0 and
fires api_down, the healthy one never errs, the endpoint recovers (api_up 1, the alert
resolved) when the fault ends, and every line the daemon wrote is found whole."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from daemon_harness import start_daemon
from faults_support import (
    INTERVAL,
    alert_events,
    assert_cadence_kept,
    assert_nothing_lost,
    errors_of,
    runs,
)
from support import daemon_head

from fossamon.demo.target import DemoTarget

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

TIMEOUT = 0.4  # the api collector's: under INTERVAL, so a hang costs no run

RULE = """
[[rules]]
name = "api_down"
metric = "api_up"
direction = "below"
critical = 1
"""


@dataclass
class Row:
    """One fault: where the broken endpoint points, and how the fault begins and ends."""

    kind: str
    endpoint: Callable[[Rig], str | Awaitable[str]]  # its TOML after `name = "broken"`
    begin: Callable[[Rig], Awaitable[None]] | None = None  # None: broken from the start
    end: Callable[[Rig], Awaitable[None]] | None = None
    env: Callable[[Rig], dict[str, str]] = lambda _: {}
    prefix: Callable[[Rig], list[str]] = lambda _: []


@dataclass
class Rig:
    tmp_path: Path
    target: DemoTarget  # where the broken endpoint points, when the row uses it
    extra: dict[str, Any] = field(default_factory=dict)


def target_fault(
    path: str = "/api/dispensers", **fault: Any
) -> tuple[Callable[[Rig], Awaitable[None]], ...]:
    async def begin(rig: Rig) -> None:
        rig.target.faults.set(path, **fault)

    async def end(rig: Rig) -> None:
        rig.target.faults.clear()

    return begin, end


def on_target(rig: Rig) -> str:
    return 'path = "/api/dispensers?limit=5"\n'


# --- refused: nothing listens on the port until the fault ends ----------------------------


def refused_endpoint(rig: Rig) -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rig.extra["port"] = port
    return f'url = "http://127.0.0.1:{port}/api/health"\n'


async def start_listening(rig: Rig) -> None:
    second = DemoTarget(rig.target.db_path)
    await second.start(port=rig.extra["port"])
    rig.extra["cleanup"] = second.stop


# --- DNS: the daemon runs with its own /etc/hosts and a resolver on loopback only ------------


def dns_endpoint(rig: Rig) -> str:
    port = rig.target.url.rpartition(":")[2]
    return f'url = "http://fossamon-fault.test:{port}/api/health"\n'


def private_resolver(rig: Rig) -> list[str]:
    """The daemon in its own mount namespace, /etc/hosts and /etc/resolv.conf bound to files
    of ours: the name resolves only once we add it, and no query leaves 127.0.0.0/8."""
    folder = rig.tmp_path / "resolver"
    folder.mkdir()
    (folder / "hosts").write_text("127.0.0.1 localhost\n")
    (folder / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    rig.extra["hosts"] = folder / "hosts"
    binds = (
        f"mount --bind {folder / 'hosts'} /etc/hosts && "
        f'mount --bind {folder / "resolv.conf"} /etc/resolv.conf && exec "$@"'
    )
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", binds, "fossamon"]


async def name_resolves(rig: Rig) -> None:
    # written in place: the bind mount shows the same inode's new content
    rig.extra["hosts"].write_text("127.0.0.1 localhost\n127.0.0.1 fossamon-fault.test\n")


# --- TLS: a self-signed certificate, then one from a CA the daemon trusts --------------------


def make_certificates(folder: Path) -> dict[str, Path]:
    openssl = shutil.which("openssl")
    assert openssl is not None
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1")
    files = {n: folder / f"{n}.pem" for n in ("ca", "ca_key", "self", "self_key", "leaf")}
    files |= {"leaf_key": folder / "leaf_key.pem", "csr": folder / "leaf.csr"}
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")

    def run(*args: str | Path) -> None:
        subprocess.run([openssl, *map(str, args)], check=True, capture_output=True, timeout=30)

    run("req", "-x509", *ec, "-subj", "/CN=fossamon fault CA", "-keyout", files["ca_key"],
        "-out", files["ca"])  # fmt: skip
    run("req", "-x509", *ec, "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        "-keyout", files["self_key"], "-out", files["self"])  # fmt: skip
    run("req", "-new", *ec[:5], "-subj", "/CN=127.0.0.1", "-keyout", files["leaf_key"],
        "-out", files["csr"])  # fmt: skip
    run("x509", "-req", "-in", files["csr"], "-CA", files["ca"], "-CAkey", files["ca_key"],
        "-CAcreateserial", "-days", "1", "-extfile", folder / "san.ext",
        "-out", files["leaf"])  # fmt: skip
    return files


async def tls_server(rig: Rig) -> str:
    files = make_certificates(rig.tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files["self"], files["self_key"])

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "healthy"})

    app = web.Application()
    app.router.add_get("/api/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    rig.extra |= {"tls": (context, files), "cleanup": runner.cleanup}
    return f'url = "https://127.0.0.1:{port}/api/health"\n'


def trust_the_ca(rig: Rig) -> dict[str, str]:
    return {"SSL_CERT_FILE": str(rig.extra["tls"][1]["ca"])}


async def trusted_certificate(rig: Rig) -> None:
    context, files = rig.extra["tls"]
    context.load_cert_chain(files["leaf"], files["leaf_key"])  # new handshakes get it


# --- the server restarts while a request is in flight --------------------------------------


async def restart_mid_cycle(rig: Rig) -> None:
    rig.target.faults.set("/api/dispensers", latency=0.3)  # a request is always in flight
    await asyncio.sleep(INTERVAL)
    port = int(rig.target.url.rpartition(":")[2])
    await rig.target.stop()  # the requests in flight are answered 503, then refused
    await asyncio.sleep(3 * INTERVAL)
    rig.target.faults.clear()
    await rig.target.start(port=port)


ROWS: dict[str, Row] = {
    "connection refused": Row("refused", refused_endpoint, None, start_listening),
    "DNS failure": Row("dns", dns_endpoint, None, name_resolves, prefix=private_resolver),
    "accepted, never answered": Row("timeout", on_target, *target_fault(hang=True)),
    "1 byte a second": Row("timeout", on_target, *target_fault(body="trickle", error_rate=1)),
    "500": Row("status", on_target, *target_fault(status=500, error_rate=1)),
    "503": Row("status", on_target, *target_fault(status=503, error_rate=1)),
    "redirect loop": Row("redirect", on_target, *target_fault(body="redirect_loop", error_rate=1)),
    "100 MB body": Row("too_large", on_target, *target_fault(body="huge", error_rate=1)),
    "invalid JSON with a JSON check": Row(
        "body_mismatch",
        lambda _: 'path = "/api/health"\nexpect_json = { status = "healthy" }\n',
        *target_fault("/api/health", body="invalid_json", error_rate=1),
    ),
    "server restarting mid-cycle": Row("refused", on_target, restart_mid_cycle, None),
}
ROWS["TLS: self-signed certificate"] = Row(
    "tls", tls_server, None, trusted_certificate, env=trust_the_ca
)


@pytest.fixture
async def target(small_demo_db):
    async with DemoTarget(small_demo_db) as running:
        yield running


@pytest.fixture
async def bystander(small_demo_db):
    """A second server the healthy endpoint watches: untouched by any row's fault."""
    async with DemoTarget(small_demo_db) as running:
        yield running


@pytest.mark.parametrize("name", list(ROWS))
async def test_api_fault(tmp_path, target, bystander, name, notify, need):
    if name == "TLS: self-signed certificate":
        need(shutil.which("openssl") is not None, "the openssl command (TLS row)")
    if name == "DNS failure":
        need(shutil.which("unshare") is not None, "unshare (util-linux; DNS row)")
        need(os.geteuid() == 0, "root, for unshare --mount (DNS row)")
    row, rig = ROWS[name], Rig(tmp_path, target)
    broken = row.endpoint(rig)
    if inspect.isawaitable(broken):
        broken = await broken
    config = tmp_path / "config.toml"
    config.write_text(
        daemon_head(tmp_path)
        + f'[collectors.system]\ninterval = "{INTERVAL}s"\n'
        + f'[collectors.api]\ninterval = "{INTERVAL}s"\ntimeout = "{TIMEOUT}s"\n'
        + f'base_url = "{target.url}"\nmax_redirects = 5\n'
        + f'[[collectors.api.endpoints]]\nname = "healthy"\nurl = "{bystander.url}/api/health"\n'
        + f'[[collectors.api.endpoints]]\nname = "broken"\n{broken}'
        + RULE
    )
    daemon = await start_daemon(
        config, tmp_path, {"NOTIFY_SOCKET": str(notify.path), **row.env(rig)}, row.prefix(rig)
    )
    try:
        await exercise(daemon, row, rig)
    finally:
        if "cleanup" in rig.extra:
            await rig.extra["cleanup"]()


async def exercise(daemon, row: Row, rig: Rig) -> None:
    def api_value(line: dict[str, Any], endpoint: str) -> float | None:
        return next(
            (
                s["value"]
                for s in line["samples"]
                if s["name"] == "api_up" and s["labels"]["endpoint"] == endpoint
            ),
            None,
        )

    await daemon.wait_for(lambda: runs(daemon, "api"), what="the first api run")
    if row.begin is not None:
        await row.begin(rig)
    faulted = await daemon.wait_for(
        lambda: [line for line in runs(daemon, "api") if row.kind in errors_of(line, "broken")],
        timeout=20,
        what=f"a {row.kind} error for the broken endpoint",
    )
    assert api_value(faulted[0], "broken") == 0
    await daemon.wait_for(
        lambda: "firing" in alert_events(daemon, "api_down", endpoint="broken"),
        what="api_down firing",
    )
    if row.end is not None:
        await row.end(rig)
    await daemon.wait_for(
        lambda: "resolved" in alert_events(daemon, "api_down", endpoint="broken"),
        timeout=20,
        what="api_down resolved once the fault ended",
    )
    after = len(runs(daemon, "api"))
    await daemon.wait_for(lambda: len(runs(daemon, "api")) >= after + 3, what="3 runs more")
    assert [api_value(line, "broken") for line in runs(daemon, "api")[-3:]] == [1, 1, 1]
    rc, took = await daemon.stop()
    assert rc == 0, daemon.stderr.decode()[-2000:]
    assert took < 5
    assert b"Traceback" not in daemon.stderr
    assert_cadence_kept(daemon, "system")
    assert_cadence_kept(daemon, "api")
    for line in runs(daemon, "api"):
        assert errors_of(line, "healthy") == [], line  # the fault stayed with its endpoint
    assert alert_events(daemon, "api_down", endpoint="healthy") == []
    assert_nothing_lost(daemon)
    with contextlib.suppress(Exception):
        rig.target.faults.clear()
