"""The runbook's one-shot tools as `fossamon` subcommands: `db analyze|optimize`, `loadtest`,
`bench`, `report`.

Each module here defines `add_parser(commands)` (its argparse subcommand, with `-c` via
`fossamon.cli.add_config_option`) and `run(args) -> int` (the exit status). The CLI imports
every one of them to build its parser, so a module's top level imports the standard library
only; aiohttp, sqlite work and the like are imported inside `run`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import argparse

TOOLS = ("db", "loadtest", "bench", "report")


class Tool(Protocol):
    def add_parser(self, commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def tool(name: str) -> Tool:
    module: Tool = importlib.import_module(f"fossamon.tools.{name}")
    return module
