"""Fault matrix, API target row "1,000 endpoints of which half hang": a real `fossamon run`
probes 1,000 endpoints at `max_concurrency = 1000`, started with a soft open-files limit
below that (512). Then half of the endpoints accept and never answer.

The daemon must raise its own limit (1,000 sockets and its files do not fit in 512). It keeps
its cadence: a cycle lasts about the probes' timeout, under the interval. Each hanging endpoint
reports `timeout` and fires api_down, and the answering half never errs. When the hang ends,
all 1,000 recover and every alert resolves. Nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import sys
from typing import TYPE_CHECKING, Any

import pytest
from daemon_harness import start_daemon
from faults_support import assert_cadence_kept, assert_nothing_lost
from support import daemon_head

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

ENDPOINTS = 1000
INTERVAL = 2.0  # every collector's, in this row: a cycle (about TIMEOUT) fits well within
TIMEOUT = 1.0  # room for 1,000 probes and answers on 2 busy cores
# systemd gives a service 1024 unless its unit says otherwise: just enough for 1,000 sockets
# and the daemon's 30 files here, not with a database and sinks too. At 512, without the raise
# half the probes would fail as "Too many open files".
SOFT_LIMIT = 512
HARD_LIMIT = 4 * ENDPOINTS  # the daemon's and the test's: room for 1,000 sockets and more


class ApiRuns:
    """The api lines as the daemon writes them, parsed once each: a line here is ~300 KB, and
    parsing the whole file at every poll would compete with the daemon for the CPU."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines: list[dict[str, Any]] = []

    def __call__(self) -> list[dict[str, Any]]:
        if self.path.exists():
            with self.path.open("rb") as file:
                file.seek(self.offset)
                data = file.read()
            whole = data[: data.rfind(b"\n") + 1]
            self.offset += len(whole)
            for raw in whole.splitlines():
                line = json.loads(raw)
                if line["collector"] == "api":
                    self.lines.append(line)
        return self.lines


SERVER = """
import asyncio, os, sys

OK = (
    b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: 15\\r\\n\\r\\n"
    b'{"status":"ok"}'
)
flag = sys.argv[1]

async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            if head.startswith(b"GET /hang/") and os.path.exists(flag):
                await reader.read(1)  # b"" when the daemon gives up and closes
                return
            writer.write(OK)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=2048)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


class HalfHanging:
    """One loopback server for all 1,000 endpoints, in a process of its own (in the test's,
    it would compete with the test's polling, and the answering half could time out for
    want of a server): /ok/N always answers; /hang/N answers too until `hang()`, then
    accepts each request and holds it until the client gives up."""

    def __init__(self, folder: Path) -> None:
        self.flag = folder / "hang"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> str:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SERVER, str(self.flag), stdout=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None
        port = int(await asyncio.wait_for(self.proc.stdout.readline(), 30))
        return f"http://127.0.0.1:{port}"

    def hang(self, *, on: bool) -> None:
        if on:
            self.flag.touch()
        else:
            self.flag.unlink()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
def enough_descriptors_for_the_test(need) -> Iterator[None]:
    """The test's server (a child: it inherits the limit) holds up to 1,000 connections: the
    soft limit must allow them (CI may start it at 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = HARD_LIMIT
    if hard != resource.RLIM_INFINITY and hard < wanted:
        need(os.geteuid() == 0, f"root, or a hard open-files limit of {wanted}")
        hard = wanted
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        yield
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def endpoint_name(n: int) -> str:
    return f"ep{n:04d}"


def hangs(n: int) -> bool:
    return n % 2 == 0


def config_text(tmp_path, url: str) -> str:
    parts = [
        daemon_head(tmp_path),
        f'[collectors.system]\ninterval = "{INTERVAL}s"\n',
        f'[collectors.api]\ninterval = "{INTERVAL}s"\ntimeout = "{TIMEOUT}s"\n',
        f'base_url = "{url}"\nmax_concurrency = {ENDPOINTS}\n',
    ]
    for n in range(ENDPOINTS):
        path = f"/hang/{n}" if hangs(n) else f"/ok/{n}"
        parts.append(
            f'[[collectors.api.endpoints]]\nname = "{endpoint_name(n)}"\npath = "{path}"\n'
        )
    parts.append('[[rules]]\nname = "api_down"\nmetric = "api_up"\ndirection = "below"\n')
    parts.append("critical = 1\n")
    return "".join(parts)


def up_values(line: dict[str, Any]) -> dict[str, float]:
    return {s["labels"]["endpoint"]: s["value"] for s in line["samples"] if s["name"] == "api_up"}


def all_up(line: dict[str, Any]) -> bool:
    values = up_values(line)
    return len(values) == ENDPOINTS and set(values.values()) == {1} and not line.get("errors")


def half_hanging(line: dict[str, Any]) -> bool:
    """The hanging half timed out, the other half answered, nothing else went wrong."""
    values = up_values(line)
    expected = {endpoint_name(n): 0 if hangs(n) else 1 for n in range(ENDPOINTS)}
    kinds = {(e["kind"], e["target"]) for e in line.get("errors", [])}
    timed_out = {target for (kind, target) in kinds if kind == "timeout"}
    return (
        values == expected
        and len(kinds) == ENDPOINTS // 2
        and timed_out == {endpoint_name(n) for n in range(ENDPOINTS) if hangs(n)}
    )


async def test_thousand_endpoints_half_hanging(
    tmp_path, notify, need, enough_descriptors_for_the_test
):
    need(shutil.which("prlimit") is not None, "prlimit (util-linux)")
    server = HalfHanging(tmp_path)
    url = await server.start()
    config = tmp_path / "config.toml"
    config.write_text(config_text(tmp_path, url))
    daemon = await start_daemon(
        config,
        tmp_path,
        {"NOTIFY_SOCKET": str(notify.path)},
        prefix=["prlimit", f"--nofile={SOFT_LIMIT}:{HARD_LIMIT}", "--"],
    )
    daemon.keep_reading_stderr()  # 500 alerts firing, then resolving, are 1,000 log lines
    api_runs = ApiRuns(daemon.metrics)
    try:
        # the first run opens 1,000 connections at once: a few may take longer than the
        # timeout on 2 cores, and their alerts resolve at the next run
        await daemon.wait_for(
            lambda: any(all_up(line) for line in api_runs()),
            timeout=30,
            what="a run with all 1,000 endpoints up",
        )
        await daemon.wait_for(
            lambda: len(events(daemon, "firing")) == len(events(daemon, "resolved")),
            what="any alert of the first run resolved",
        )
        server.hang(on=True)
        await next_phase(daemon, api_runs, half_hanging, 5, "firing", "the hanging half timed out")
        server.hang(on=False)
        await next_phase(daemon, api_runs, all_up, 3, "resolved", "all 1,000 endpoints up again")
        rc, took = await daemon.stop()
    finally:
        await server.stop()
    log = daemon.stderr.decode()
    assert rc == 0, log[-2000:]
    assert took < 5
    assert "Traceback" not in log
    assert "Too many open files" not in log
    assert re.search(
        rf"open-files limit raised +soft={2 * ENDPOINTS + 256} was={SOFT_LIMIT}\n", log
    )
    assert_cadence_kept(daemon, "system", interval=INTERVAL)
    assert_cadence_kept(daemon, "api", interval=INTERVAL)
    for line in api_runs():
        # no probe failed for want of a descriptor, or for any reason but the hang
        assert {e["kind"] for e in line.get("errors", [])} <= {"timeout"}, line["errors"][:3]
        assert line["duration_ms"] < INTERVAL * 1000, line["duration_ms"]
    assert len(events(daemon, "firing")) == len(events(daemon, "resolved"))
    assert_nothing_lost(daemon)


async def next_phase(
    daemon,
    api_runs: ApiRuns,
    run_is: Callable[[dict[str, Any]], bool],
    runs: int,
    event: str,
    what: str,
) -> None:
    """From now on: `runs` runs of which `run_is` holds, and api_down's `event` once for each
    endpoint that hangs, and for no other."""
    runs_from, alerts_from = len(api_runs()), len(daemon.lines(daemon.alerts))
    await daemon.wait_for(
        lambda: sum(run_is(line) for line in api_runs()[runs_from:]) >= runs,
        timeout=30,
        what=f"{runs} runs with {what}",
    )
    await daemon.wait_for(
        lambda: len(events(daemon, event, alerts_from)) >= ENDPOINTS // 2,
        what=f"api_down {event} for each endpoint that hangs",
    )
    hanging_half = {endpoint_name(n) for n in range(ENDPOINTS) if hangs(n)}
    assert sorted(events(daemon, event, alerts_from)) == sorted(hanging_half)  # once each


def events(daemon, event: str, since: int = 0) -> list[str]:
    """The endpoints of api_down's `event`s, from the `since`th alert line on."""
    return [
        a["labels"]["endpoint"]
        for a in daemon.lines(daemon.alerts)[since:]
        if a["rule"] == "api_down" and a["event"] == event
    ]
