"""What every subcommand shares: `-c FILE`, where the config is, loading it with the errors
printed the way `fossamon check` prints them. Light on imports: the CLI loads it at start."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    from fossamon.config import Config
    from fossamon.errors import ConfigError


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=None,
        help="config file (default: $FOSSAMON_CONFIG, then /etc/fossamon/config.toml)",
    )


def config_path(given: str | None) -> str:
    # imported here: fossamon.config pulls in msgspec and yarl, and `fossamon run` must reach its
    # early signal handling (cmd_run) quickly
    from fossamon.config import default_config_path  # noqa: PLC0415

    return given or default_config_path()


def load_config_or_report(given: str | None, command: str) -> Config | None:
    """The validated config, or None after printing every problem (the caller exits 78)."""
    from fossamon.errors import ConfigError  # noqa: PLC0415
    from fossamon.overview import load_checked  # noqa: PLC0415

    path = config_path(given)
    try:
        return load_checked(path)
    except ConfigError as exc:
        report_problems(command, "configuration", exc)
        return None


def report_problems(command: str, what: str, exc: ConfigError) -> None:
    """Print every problem of `exc` to stderr, under a line naming the command and `what`."""
    print(
        f"fossamon {command}: invalid {what} ({len(exc.problems)} problem(s)):",
        file=sys.stderr,
    )
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)
