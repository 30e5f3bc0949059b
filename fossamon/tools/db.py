"""`fossamon db` (being built: issue 7)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from fossamon.cli_options import add_config_option

if TYPE_CHECKING:
    import argparse


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("db", help="(being built)")
    add_config_option(parser)


def run(args: argparse.Namespace) -> int:
    del args
    print("fossamon db: not built yet", file=sys.stderr)
    return 70
