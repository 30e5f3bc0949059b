"""Load-tester throughput: `fossamon loadtest` beside `hey` and `wrk` on static nginx.

    .venv/bin/python benchmarks/loadtest.py [--duration 10] [--concurrency 50] [--repeat 3]
                                            [--processes 1,2] [--engines lean,aiohttp]

Starts nginx (Debian's `nginx-light`) on a free loopback port with a config of its own in a
temp dir (no system service is touched), serving one small static JSON file; then runs each
tester against it with the same concurrency and duration, `--repeat` times in a rotating
order (so drift on a busy machine does not always favour the same tool), and prints a
markdown table: the median requests/s (min-max), the client CPU seconds per 1,000 requests
(`getrusage` of the tester's process tree, start-up included), the ratio to `hey` in the
same rounds, and the ratio to the runbook script's 5.4k req/s (measured on this kind of
machine, see shared/FACTS.md; the script itself is not part of this repository).

A tester that is not installed gets a row saying so. Every process started here is stopped
before the script ends, and each run is bounded by its duration plus a margin.
Issue 8, budget 7: fossamon >= 2x the runbook script and >= 0.5x hey.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from _common import cpu_model, free_port, loadavg, summary

if TYPE_CHECKING:
    from collections.abc import Iterator

RUNBOOK_RPS = 5_400.0  # shared/FACTS.md: "runbook load tester 5.4k req/s" on this target
BODY = b'{"status":"healthy","database":"connected","version":"2.0.0"}\n'
MARGIN = 30.0  # seconds a run may take beyond its duration before it is killed

NGINX_CONF = """\
worker_processes auto;
daemon off;
pid {root}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
        default_type application/json;
    }}
}}
"""


@dataclass
class Run:
    requests: int
    seconds: float
    cpu_seconds: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


@dataclass
class Tester:
    name: str
    command: list[str] | None  # None: not installed
    runs: list[Run] = field(default_factory=list)


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None
    )


@contextlib.contextmanager
def nginx(binary: str, root: Path) -> Iterator[str]:
    (root / "www").mkdir()
    (root / "tmp").mkdir()
    (root / "www" / "health.json").write_bytes(BODY)
    # nginx started as root serves from worker processes running as "nobody"
    for path in (root, root / "www"):
        path.chmod(0o755)
    (root / "www" / "health.json").chmod(0o644)
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(root=root, port=port))
    log = (root / "nginx.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603 - our own command line, no shell
        [binary, "-p", str(root), "-c", str(conf), "-e", "stderr"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/health.json"
    try:
        wait_ready(url, proc, root)
        yield url
    finally:
        proc.terminate()  # SIGTERM: nginx's fast shutdown; its workers end with it
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def wait_ready(url: str, proc: subprocess.Popen[bytes], root: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            log = (root / "nginx.log").read_text(errors="replace")
            raise SystemExit(f"nginx exited ({proc.returncode}):\n{log}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own URL
                if response.read() == BODY:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("nginx did not answer within 10s")
        time.sleep(0.05)


def measure(command: list[str], duration: float) -> tuple[subprocess.CompletedProcess[str], float]:
    before = cpu_of_children()
    done = subprocess.run(  # noqa: S603 - the testers' command lines, built here, no shell
        command, capture_output=True, text=True, timeout=duration + MARGIN, check=False
    )
    return done, cpu_of_children() - before


def run_hey(command: list[str], duration: float) -> Run:
    done, cpu = measure(command, duration)
    out = done.stdout
    total = re.search(r"Total:\s+([\d.]+) secs", out)
    codes = [int(n) for n in re.findall(r"\[\d{3}\]\s+(\d+) responses", out)]
    errors = re.search(r"Error distribution:\n((?:\s+\[\d+\].*\n?)+)", out)
    failed = sum(int(n) for n in re.findall(r"\[(\d+)\]", errors.group(1))) if errors else 0
    if done.returncode != 0 or total is None:
        raise SystemExit(f"hey failed ({done.returncode}):\n{out}\n{done.stderr}")
    ok = sum(codes)
    return Run(ok + failed, float(total.group(1)), cpu, failed)


def run_wrk(command: list[str], duration: float) -> Run:
    done, cpu = measure(command, duration)
    out = done.stdout
    found = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{out}\n{done.stderr}")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[found.group(3)]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (
        sum(int(n) for n in sockets.groups()) if sockets else 0
    )
    return Run(int(found.group(1)), float(found.group(2)) * scale, cpu, errors)


def run_fossamon(command: list[str], duration: float) -> Run:
    with tempfile.TemporaryDirectory(prefix="fossamon-bench-") as folder:
        report = Path(folder) / "report.json"
        done, cpu = measure([*command, "--report", str(report)], duration)
        if done.returncode not in (0, 1) or not report.exists():
            raise SystemExit(f"fossamon loadtest failed ({done.returncode}):\n{done.stderr}")
        data = json.loads(report.read_text())
    overall = data["overall"]
    errors = sum(overall["errors"].values())
    return Run(overall["requests"], data["wall_seconds"], cpu, errors)


RUNNERS = {"hey": run_hey, "wrk": run_wrk}


def testers(url: str, args: argparse.Namespace) -> list[Tester]:
    duration = f"{args.duration:g}s"
    found = []
    hey = shutil.which("hey")
    found.append(
        Tester("hey", [hey, "-z", duration, "-c", str(args.concurrency), url] if hey else None)
    )
    wrk = shutil.which("wrk")
    threads = str(min(os.cpu_count() or 1, args.concurrency))
    found.append(
        Tester(
            "wrk",
            [wrk, "-t", threads, "-c", str(args.concurrency), "-d", duration, url] if wrk else None,
        )
    )
    for engine in args.engines:
        for processes in args.processes:
            command = [
                sys.executable,
                "-m",
                "fossamon",
                "loadtest",
                "--url",
                url,
                "--concurrency",
                str(args.concurrency),
                "--duration",
                duration,
                "--processes",
                str(processes),
                "--engine",
                engine,
                "--min-rps",
                "0",
            ]
            found.append(Tester(f"fossamon {engine} --processes {processes}", command))
    return found


def run_once(tester: Tester, duration: float) -> Run:
    assert tester.command is not None
    runner = RUNNERS.get(tester.name, run_fossamon)
    return runner(tester.command, duration)


def table(found: list[Tester]) -> list[str]:
    hey = next((t for t in found if t.name == "hey" and t.runs), None)
    lines = [
        (
            "| tester | req/s (median) | min-max | CPU s / 1,000 req | errors | vs hey "
            "| vs runbook 5.4k |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for tester in found:
        if not tester.runs:
            lines.append(f"| {tester.name} | not installed | | | | | |")
            continue
        rates = [r.rps for r in tester.runs]
        cpu = statistics.median(r.cpu_seconds / r.requests * 1000 for r in tester.runs)
        errors = sum(r.errors for r in tester.runs)
        versus_hey = "-"
        if hey is not None:
            # the same rounds side by side: the median of per-round ratios
            pairs = zip(tester.runs, hey.runs, strict=True)
            versus_hey = f"{statistics.median(a.rps / b.rps for a, b in pairs):.2f}x"
        lines.append(
            f"| {tester.name} | {statistics.median(rates):,.0f} | "
            f"{min(rates):,.0f}-{max(rates):,.0f} | {cpu:.3f} | {errors:,} | {versus_hey} | "
            f"{statistics.median(rates) / RUNBOOK_RPS:.2f}x |"
        )
    return lines


def summarize(found: list[Tester]) -> None:
    """Budget 7's rows for the summary: fossamon at its defaults (the lean engine, one
    process) against the runbook's rate and against hey in the same rounds."""
    ours = next((t for t in found if t.runs and t.name == "fossamon lean --processes 1"), None)
    ours = ours or next((t for t in found if t.runs and t.name.startswith("fossamon")), None)
    if ours is None:
        return
    rate = statistics.median(r.rps for r in ours.runs)
    cpu = statistics.median(r.cpu_seconds / r.requests * 1000 for r in ours.runs)
    shown = f"{rate:,.0f} req/s ({ours.name.removeprefix('fossamon ')}), {cpu:.3f} CPU s/1k"
    summary(7, "load tester vs the runbook's", shown, ">= 2x", f"runbook {RUNBOOK_RPS:,.0f}",
            rate >= 2 * RUNBOOK_RPS)  # fmt: skip
    hey = next((t for t in found if t.name == "hey" and t.runs), None)
    if hey is None:
        summary(7, "load tester vs hey", shown, ">= 0.5x", "hey not installed", met=False)
        return
    ratio = statistics.median(a.rps / b.rps for a, b in zip(ours.runs, hey.runs, strict=True))
    hey_rate = statistics.median(r.rps for r in hey.runs)
    hey_cpu = statistics.median(r.cpu_seconds / r.requests * 1000 for r in hey.runs)
    summary(7, "load tester vs hey", f"{shown}; {ratio:.2f}x hey", ">= 0.5x",
            f"hey {hey_rate:,.0f} req/s, {hey_cpu:.3f} CPU s/1k", ratio >= 0.5)  # fmt: skip


def machine() -> list[str]:
    model, load = cpu_model(), loadavg()
    return [
        (
            f"- machine: {os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
            f"load average {load}"
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--processes",
        type=lambda text: [int(p) for p in text.split(",")],
        default=[1, 2],
        help="fossamon's --processes values to measure, comma-separated (default 1,2)",
    )
    parser.add_argument(
        "--engines",
        type=lambda text: text.split(","),
        default=["lean", "aiohttp"],
        help="fossamon's --engine values to measure, comma-separated (default lean,aiohttp)",
    )
    args = parser.parse_args()
    binary = find_nginx()
    if binary is None:
        print("nginx is not installed (Debian: apt-get install nginx-light)", file=sys.stderr)
        return 2
    with (
        tempfile.TemporaryDirectory(prefix="fossamon-nginx-") as folder,
        nginx(binary, Path(folder)) as url,
    ):
        found = testers(url, args)
        present = [t for t in found if t.command is not None]
        for round_ in range(args.repeat):
            shift = round_ % len(present)
            for tester in present[shift:] + present[:shift]:
                tester.runs.append(run_once(tester, args.duration))
        print(
            f"Static nginx on 127.0.0.1, {BODY.__len__()}-byte JSON file, "
            f"concurrency {args.concurrency}, {args.duration:g}s per run, "
            f"{args.repeat} round(s), rotating order.\n"
        )
        print("\n".join(table(found)))
        summarize(found)
        print()
        print("\n".join(machine()))
        for tester in present:
            print(f"- `{' '.join(tester.command or [])}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
