"""`fossamon loadtest`: load a web API, report latency percentiles and rates, judge the KPIs.

    fossamon loadtest --url http://127.0.0.1:8000/api/health --concurrency 50 --duration 30s
    fossamon loadtest --scenario examples/loadtest-runbook.toml --report result.json
    fossamon loadtest -c /etc/fossamon/config.toml          # the daemon's own api endpoints
    fossamon loadtest --url … --rate 200 --duration 1m      # open model, no coordinated omission

It sends only to what it is told: `--url`, a `--scenario` file, or (with neither) the
endpoints of the config's `[collectors.api]`. Exit 0 when every KPI passes, 1 when one fails
(also when every request failed), 64 on a usage error, 78 on an invalid scenario or config,
73 when the report cannot be written, 130 when interrupted (after printing what was measured).
The module imports the standard library only: the CLI loads it at every start.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fossamon.cli_options import add_config_option, report_problems

if TYPE_CHECKING:
    from fossamon.tools.loadtest_plan import Plan

EX_OK, EX_FAILED, EX_USAGE, EX_SOFTWARE, EX_CANTCREAT, EX_CONFIG = 0, 1, 64, 70, 73, 78
EX_INTERRUPTED = 130


class UsageError(Exception):
    """A wrong combination of options; the message says which."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "loadtest",
        help="load-test API endpoints: percentiles, rates, errors, a verdict against the KPIs",
        description=(
            "Send requests to the endpoints you name (--url, --scenario, or the config's "
            "[collectors.api]) and report latency percentiles, rates and errors per endpoint, "
            "with a verdict against the KPIs: exit 0 pass, 1 fail."
        ),
    )
    add_config_option(parser)
    what = parser.add_argument_group("what to send (one of --url, --scenario; else the config)")
    source = what.add_mutually_exclusive_group()
    source.add_argument("--url", help="one endpoint to load")
    source.add_argument(
        "--scenario", metavar="FILE", help="a TOML scenario file (endpoints, weights)"
    )
    what.add_argument(
        "--method", help="with --url: the HTTP method (default GET; POST with --json)"
    )
    what.add_argument(
        "--base-url", metavar="URL", help="with --scenario: instead of the file's base_url"
    )
    what.add_argument("--json", metavar="TEXT", help="with --url: a JSON body")
    what.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="with --url: a request header (repeatable)",
    )
    what.add_argument(
        "--expect-status",
        metavar="CODES",
        type=_statuses,
        help="with --url: statuses that count as success, comma-separated (default: any 2xx)",
    )
    how = parser.add_argument_group("how hard and how long (override the scenario file)")
    how.add_argument(
        "--concurrency", metavar="N", type=_positive_int, help="workers in total (default 50)"
    )
    amount = how.add_mutually_exclusive_group()
    amount.add_argument(
        "--requests", metavar="N", type=_positive_int, help="send this many requests"
    )
    amount.add_argument(
        "--duration", metavar="TIME", type=_duration, help="send for this long (default 10s)"
    )
    how.add_argument(
        "--rate",
        metavar="RATE",
        type=_positive_float,
        help="open model: requests per second, latency from each request's due time",
    )
    how.add_argument(
        "--processes",
        metavar="N",
        type=_positive_int,
        help=f"worker processes (default: the CPU count, {_cpu_count()} here)",
    )
    how.add_argument("--timeout", metavar="TIME", type=_duration, help="per request (default 10s)")
    how.add_argument(
        "--engine",
        choices=("lean", "aiohttp"),
        help="HTTP client: lean (default; HTTP/1.1 keep-alive, fastest) or aiohttp",
    )
    how.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    judge = parser.add_argument_group("KPIs (default: the runbook's) and output")
    judge.add_argument(
        "--max-p95", metavar="TIME", type=_duration, help="p95 latency must be below (500ms)"
    )
    judge.add_argument(
        "--min-rps", metavar="RATE", type=_non_negative_float, help="requests/s at least (100)"
    )
    judge.add_argument(
        "--min-success",
        metavar="PERCENT",
        type=_percent,
        help="percent of requests with an expected status (99)",
    )
    judge.add_argument("--report", metavar="FILE", help="write the JSON report here ('-': stdout)")


def run(args: argparse.Namespace) -> int:
    from fossamon.errors import ConfigError  # noqa: PLC0415 - keep the CLI's start lean

    try:
        plan = _plan(args)
    except UsageError as exc:
        print(f"fossamon loadtest: {exc}", file=sys.stderr)
        return EX_USAGE
    except ConfigError as exc:
        report_problems("loadtest", "scenario", exc)
        return EX_CONFIG
    if plan is None:
        return EX_CONFIG
    return _execute(plan, args.report)


def _execute(plan: Plan, report_path: str | None) -> int:
    import datetime as dt  # noqa: PLC0415
    import json  # noqa: PLC0415

    from fossamon.tools.loadtest_processes import WorkerFailedError, run_plan  # noqa: PLC0415
    from fossamon.tools.loadtest_report import build_report, render  # noqa: PLC0415

    if report_path not in (None, "-"):
        problem = _unwritable(report_path)
        if problem is not None:  # before the run, not after a long one
            print(f"fossamon loadtest: cannot write {report_path}: {problem}", file=sys.stderr)
            return EX_CANTCREAT
    names = ", ".join(f"{ep.method} {ep.name}" for ep in plan.endpoints)
    print(f"fossamon loadtest: {names} (from {plan.source})", file=sys.stderr)
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    try:
        if sys.stderr.isatty():
            from fossamon.tools.loadtest_progress import LiveProgress  # noqa: PLC0415

            with LiveProgress(plan) as progress:
                result = run_plan(plan, progress)
        else:
            result = run_plan(plan)
    except WorkerFailedError as exc:
        print(f"fossamon loadtest: {exc}", file=sys.stderr)
        return EX_SOFTWARE
    report = build_report(plan, result, started_at)
    text = json.dumps(report, indent=2) + "\n"
    if report_path == "-":
        sys.stdout.write(text)
    else:
        print(render(report))
        if report_path is not None:
            try:
                _write_atomically(Path(report_path), text)
            except OSError as exc:
                print(f"fossamon loadtest: cannot write {report_path}: {exc}", file=sys.stderr)
                return EX_CANTCREAT
    if result.stopped:
        return EX_INTERRUPTED
    return EX_OK if report["verdict"]["passed"] else EX_FAILED


def _unwritable(path: str) -> str | None:
    """Why the report cannot be written at `path` (None: it can), found by creating and
    removing a file beside it, as the final write does."""
    import tempfile  # noqa: PLC0415

    target = Path(path)
    if target.is_dir():
        return "is a directory"
    try:
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}."):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _write_atomically(path: Path, text: str) -> None:
    """A temporary file beside `path`, renamed over it: never a half-written report."""
    import tempfile  # noqa: PLC0415

    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # as a plain open() would create it, not mkstemp's 0600
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _plan(args: argparse.Namespace) -> Plan | None:
    """The plan from the options, a scenario file, or the config (None: config invalid)."""
    from fossamon.tools import loadtest_plan  # noqa: PLC0415
    from fossamon.tools import loadtest_scenario as scenario  # noqa: PLC0415

    url_only = {
        "--method": args.method,
        "--json": args.json,
        "--header": args.header or None,
        "--expect-status": args.expect_status,
    }
    if args.url is None and any(v is not None for v in url_only.values()):
        given = next(name for name, value in url_only.items() if value is not None)
        raise UsageError(f"{given} goes with --url (a scenario file sets it per endpoint)")
    if args.base_url is not None and args.scenario is None:
        raise UsageError("--base-url goes with --scenario")
    if args.url is not None:
        try:
            headers = dict(scenario.parse_header(h) for h in args.header)
            endpoint = scenario.endpoint_from_url(
                args.url, args.method, headers, args.json, args.expect_status or ()
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        plan: Plan | None = loadtest_plan.Plan(endpoints=(endpoint,))
    elif args.scenario is not None:
        plan = scenario.load_scenario(args.scenario, args.base_url)
    else:
        plan = _plan_from_config(args.config)
    if plan is None:
        return None
    if args.timeout is not None:
        from dataclasses import replace  # noqa: PLC0415

        endpoints = tuple(replace(ep, timeout=args.timeout) for ep in plan.endpoints)
        plan = replace(plan, endpoints=endpoints)
    kpi = plan.kpi
    return scenario.with_overrides(
        plan,
        concurrency=args.concurrency,
        requests=args.requests,
        duration=args.duration,
        rate=args.rate,
        processes=args.processes or _cpu_count(),
        engine=args.engine,
        verify_tls=False if args.insecure else None,
        kpi=loadtest_plan.Kpi(
            kpi.max_p95 if args.max_p95 is None else args.max_p95,
            kpi.min_rps if args.min_rps is None else args.min_rps,
            kpi.min_success if args.min_success is None else args.min_success,
        ),
    )


def _plan_from_config(given: str | None) -> Plan | None:
    from fossamon.cli_options import config_path, load_config_or_report  # noqa: PLC0415
    from fossamon.tools.loadtest_scenario import plan_from_api  # noqa: PLC0415

    path = config_path(given)
    if given is None and not Path(path).exists():
        raise UsageError(
            f"nothing to load: give --url URL or --scenario FILE ({path}, whose "
            "[collectors.api] endpoints would be used, does not exist)"
        )
    config = load_config_or_report(path, "loadtest")
    if config is None:
        return None
    if config.collectors.api is None:
        raise UsageError(f"{path} has no [collectors.api]: give --url URL or --scenario FILE")
    return plan_from_api(config.collectors.api, path)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _float(text: str) -> float:
    import math  # noqa: PLC0415

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _percent(text: str) -> float:
    value = _float(text.removesuffix("%"))
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"expected a percentage 0..100, got {text}")
    return value


def _duration(text: str) -> float:
    from fossamon.units import parse_duration  # noqa: PLC0415

    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text!r}")
    return value


def _statuses(text: str) -> tuple[int, ...]:
    try:
        codes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected codes such as 200,204, got {text!r}") from None
    if not codes or any(not 100 <= code <= 599 for code in codes):
        raise argparse.ArgumentTypeError(f"expected HTTP statuses 100..599, got {text!r}")
    return codes
