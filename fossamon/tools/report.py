"""`fossamon report`: the runbook's trend analysis and a firing-alert summary over any time
range, from the metrics and alerts JSONL files and their archives (docs/bench-and-report.md).

Exit status: 0 done; 64 a bad `--since`/`--until`; 66 no metrics file nor archive of it;
73 the HTML file cannot be written; 78 an invalid config.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fossamon.cli_options import add_config_option, load_config_or_report
from fossamon.errors import EX_NOINPUT

if TYPE_CHECKING:
    import argparse


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "report",
        help="trends of the key series and a firing-alert summary over a time range",
        description="Average, median, p95, max, slope and 'increasing?' per key series, and "
        "the alerts that fired, from the JSONL files (rotated and gzipped archives included).",
    )
    add_config_option(parser)
    parser.add_argument(
        "--since",
        default="24h",
        help='start: a duration back from now ("24h", "7d") or an ISO time (UTC without a '
        "zone); default: 24h",
    )
    parser.add_argument("--until", default="now", help="end: the same forms; default: now")
    parser.add_argument(
        "--html", metavar="FILE", default=None, help="also write a self-contained HTML report"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--metrics", metavar="FILE", default=None, help="metrics file (default: [output.metrics])"
    )
    parser.add_argument(
        "--alerts", metavar="FILE", default=None, help="alerts file (default: [output.alerts])"
    )


def run(args: argparse.Namespace) -> int:
    import time  # noqa: PLC0415

    from fossamon.errors import EX_CANTCREAT, EX_CONFIG, EX_OK, EX_USAGE  # noqa: PLC0415
    from fossamon.tools.report_data import NoMetricsError, gather  # noqa: PLC0415
    from fossamon.tools.report_output import render_json, render_text  # noqa: PLC0415
    from fossamon.tools.report_read import parse_when  # noqa: PLC0415

    now = time.time()
    try:
        since, until = parse_when(args.since, now), parse_when(args.until, now)
    except ValueError as exc:
        print(f"fossamon report: --since/--until: {exc}", file=sys.stderr)
        return EX_USAGE
    if since > until:
        print("fossamon report: --since is after --until", file=sys.stderr)
        return EX_USAGE
    config = load_config_or_report(args.config, "report")
    if config is None:
        return EX_CONFIG
    metrics = Path(args.metrics or config.output.metrics.path)
    alerts = Path(args.alerts or config.output.alerts.path)
    try:
        report = gather(metrics, alerts, since, until)
    except NoMetricsError as exc:
        print(f"fossamon report: {exc}", file=sys.stderr)
        return EX_NOINPUT
    print(render_json(report) if args.json else render_text(report))
    if args.html:
        from fossamon.tools.report_html import render_html  # noqa: PLC0415

        target = Path(args.html)
        try:
            _write_atomically(target, render_html(report))
        except OSError as exc:
            print(f"fossamon report: cannot write {target}: {exc}", file=sys.stderr)
            return EX_CANTCREAT
        print(f"fossamon report: HTML written to {target}", file=sys.stderr)
    return EX_OK


def _write_atomically(target: Path, text: str) -> None:
    """A browser that has the file open never sees half of it."""
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(target)
