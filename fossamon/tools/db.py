"""`fossamon db analyze|optimize`: the configured database's queries, plans and indexes.

    fossamon db analyze [--runs N] [--query SQL]… [--advisor auto|expert|plan] [--json]
    fossamon db optimize [--apply "CREATE INDEX …"]… [--advised] [--dry-run]
                         [--backup-dir DIR] [--no-vacuum] [--busy-timeout DURATION] [--runs N]

Exit statuses: 0 done; 1 a query failed (analyze), or refused or failed (optimize: nothing is
changed by a refusal); 78 the config is invalid or has no [collectors.db].

The CLI imports this module at every start, so it imports the standard library only; the
work is in db_analyze / db_optimize, imported when a command runs.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from fossamon.cli_options import add_config_option, load_config_or_report

if TYPE_CHECKING:
    import argparse

    from fossamon.config import DbCollectorConfig

EX_OK = 0
EX_FAILED = 1
EX_CONFIG = 78


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "db", help="analyze the configured database's queries; create the indexes they need"
    )
    actions = parser.add_subparsers(dest="db_command", required=True, metavar="ACTION")

    analyze = actions.add_parser(
        "analyze",
        help="time the configured queries, show their plans, table sizes and index advice "
        "(read-only)",
    )
    add_config_option(analyze)
    _add_runs_option(analyze)
    analyze.add_argument(
        "--query",
        metavar="SQL",
        action="append",
        default=[],
        help="analyze this query too (repeatable)",
    )
    _add_advisor_option(analyze)
    analyze.add_argument("--json", action="store_true", help="print JSON instead of tables")

    optimize = actions.add_parser(
        "optimize",
        help="back up (verified), then create indexes, REINDEX, ANALYZE and VACUUM",
    )
    add_config_option(optimize)
    optimize.add_argument(
        "--apply",
        metavar="SQL",
        action="append",
        default=[],
        help='a "CREATE INDEX …" statement to run (repeatable; nothing else is accepted)',
    )
    optimize.add_argument(
        "--advised", action="store_true", help="create the indexes `db analyze` advises"
    )
    optimize.add_argument(
        "--dry-run", action="store_true", help="print the plan and change nothing"
    )
    optimize.add_argument(
        "--backup-dir",
        metavar="DIR",
        default=None,
        help="where the backup goes (default: next to the database)",
    )
    optimize.add_argument("--no-vacuum", action="store_true", help="skip VACUUM")
    optimize.add_argument(
        "--busy-timeout",
        metavar="DURATION",
        default=None,
        help="how long to wait for another connection's lock (default: collectors.db.timeout)",
    )
    _add_advisor_option(optimize)
    _add_runs_option(optimize)
    optimize.add_argument("--json", action="store_true", help="print one JSON document at the end")


def _add_advisor_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--advisor",
        choices=("auto", "expert", "plan"),
        default="auto",
        help="index advice from the sqlite3 shell's .expert, or from what-if plans "
        "(default auto: .expert where the sqlite3 shell is installed)",
    )


def _add_runs_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs",
        type=int,
        default=5,
        metavar="N",
        help="timed runs per query, after one warm-up run (default: 5)",
    )


def run(args: argparse.Namespace) -> int:
    command = f"db {args.db_command}"
    if args.runs < 1:
        print(f"fossamon {command}: --runs must be at least 1", file=sys.stderr)
        return EX_FAILED
    config = load_config_or_report(args.config, command)
    if config is None:
        return EX_CONFIG
    db: DbCollectorConfig | None = config.collectors.db
    if db is None:
        print(
            f"fossamon {command}: the config has no [collectors.db] section "
            "(its path, timeout and queries are what this command works on)",
            file=sys.stderr,
        )
        return EX_CONFIG
    if args.db_command == "analyze":
        from fossamon.tools.db_analyze import run_analyze  # noqa: PLC0415

        return run_analyze(args, db)
    from fossamon.tools.db_optimize import run_optimize  # noqa: PLC0415

    return run_optimize(args, db)
