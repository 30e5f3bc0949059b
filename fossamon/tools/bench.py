"""`fossamon bench`: time the configured DB queries and API endpoints, keep a baseline, and
compare against it with a verdict that allows for noise (docs/bench-and-report.md).

Exit status: 0 done; 1 a round of some item failed (a refused connection, a status not
expected, a query error: the table says which; no baseline is saved from such a run), or
`--fail-over PCT` failed (an item DEGRADED by more than PCT, or an item of the baseline that
could not be timed now); 64 a bad option; 66 `--compare` without a usable baseline; 73 the
baseline cannot be written; 78 an invalid config, or nothing to time.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fossamon.cli_options import add_config_option, load_config_or_report
from fossamon.errors import EX_NOINPUT

if TYPE_CHECKING:
    import argparse

    from fossamon.tools.bench_measure import ItemRun

MAX_REPEAT = 10_000


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "bench",
        help="time the configured DB queries and API endpoints; save or compare a baseline",
        description="Time each configured query and endpoint N times (read-only, one at a "
        "time), print median and spread; save a baseline, or compare against it.",
    )
    add_config_option(parser)
    parser.add_argument(
        "--repeat", type=int, default=20, metavar="N", help="timed rounds (default: 20)"
    )
    parser.add_argument(
        "--warmup", type=int, default=1, metavar="N", help="discarded rounds first (default: 1)"
    )
    parser.add_argument(
        "--save-baseline", action="store_true", help="save this run as the baseline"
    )
    parser.add_argument("--compare", action="store_true", help="compare with the saved baseline")
    parser.add_argument(
        "--baseline",
        metavar="FILE",
        default=None,
        help="the baseline file (default: bench-baseline.json in [daemon] state_dir)",
    )
    parser.add_argument(
        "--fail-over",
        type=float,
        default=None,
        metavar="PCT",
        help="exit 1 if an item is DEGRADED by more than PCT percent (implies --compare)",
    )
    parser.add_argument(
        "--min-change",
        type=float,
        default=5.0,
        metavar="PCT",
        help="changes below this percent are never a verdict (default: 5)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _usage_problem(args: argparse.Namespace) -> str | None:
    if not 2 <= args.repeat <= MAX_REPEAT:
        return f"--repeat must be 2..{MAX_REPEAT} (a spread needs two timings)"
    if not 0 <= args.warmup <= MAX_REPEAT:
        return f"--warmup must be 0..{MAX_REPEAT}"
    if args.fail_over is not None and not args.fail_over >= 0:
        return "--fail-over must be a percentage >= 0"
    if not args.min_change >= 0:
        return "--min-change must be a percentage >= 0"
    return None


def run(args: argparse.Namespace) -> int:
    import time  # noqa: PLC0415

    from fossamon.errors import EX_CANTCREAT, EX_CONFIG, EX_CRITICAL, EX_OK, EX_USAGE  # noqa: PLC0415
    from fossamon.model import iso_ts  # noqa: PLC0415
    from fossamon.runner import run_bounded  # noqa: PLC0415
    from fossamon.tools import bench_baseline as bl  # noqa: PLC0415
    from fossamon.tools.bench_measure import items_of, measure  # noqa: PLC0415
    from fossamon.tools.bench_output import (  # noqa: PLC0415
        BenchResult,
        build_rows,
        render_json,
        render_text,
    )

    problem = _usage_problem(args)
    if problem:
        print(f"fossamon bench: {problem}", file=sys.stderr)
        return EX_USAGE
    config = load_config_or_report(args.config, "bench")
    if config is None:
        return EX_CONFIG
    if not items_of(config):
        print(
            "fossamon bench: nothing to time: no [[collectors.db.queries]] and no "
            "[[collectors.api.endpoints]] in an enabled collector",
            file=sys.stderr,
        )
        return EX_CONFIG
    path = Path(args.baseline) if args.baseline else bl.default_path(config.daemon.state_dir)
    baseline = None
    if args.compare or args.fail_over is not None:
        try:  # before timing anything: a missing baseline should not cost a whole run
            baseline = bl.load(path)
        except bl.BaselineError as exc:
            print(f"fossamon bench: {exc}", file=sys.stderr)
            return EX_NOINPUT
    started = iso_ts(time.time())
    items: list[ItemRun] = []

    async def timed() -> int:
        show = _show_progress if sys.stderr.isatty() else None
        items.extend(await measure(config, args.repeat, args.warmup, show))
        return EX_OK

    run_bounded(timed())
    rows = build_rows(items, baseline, args.min_change / 100)
    failed = [item.key for item in items if item.failures]
    saved, save_error = None, None
    if args.save_baseline:
        saved, save_error = _save_baseline(path, items, failed, started, config.host(), args.repeat)
    result = BenchResult(
        config.host(), started, args.repeat, args.warmup, rows, baseline, args.fail_over, saved
    )
    # the figures first: a baseline that could not be saved must not cost the run's results
    print(render_json(result) if args.json else render_text(result))
    if save_error:
        print(f"fossamon bench: {save_error}", file=sys.stderr)
        if not failed:
            return EX_CANTCREAT
    return EX_CRITICAL if result.failed or result.gate_failures else EX_OK


def _save_baseline(
    path: Path, items: list[ItemRun], failed: list[str], started: str, host: str, repeat: int
) -> tuple[Path | None, str | None]:
    """(where it was saved, or None and why not)."""
    from fossamon.tools import bench_baseline as bl  # noqa: PLC0415

    if failed:
        return None, f"not saving a baseline: {', '.join(failed)} failed in some rounds"
    try:
        bl.save(path, bl.document(items, created=started, host=host, repeat=repeat))
    except OSError as exc:
        return None, f"cannot write the baseline {path}: {exc}"
    return path, None


def _show_progress(done: int, total: int) -> None:
    end = "\n" if done == total else ""
    print(f"\rfossamon bench: round {done}/{total}", end=end, file=sys.stderr, flush=True)
