"""`fossamon` command line: argument parsing and dispatch only."""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys
from typing import TYPE_CHECKING

from fossamon import __version__
from fossamon.cli_options import add_config_option, config_path
from fossamon.errors import (
    EX_CONFIG,
    EX_CRITICAL,
    EX_NOT_RUNNING,
    EX_OK,
    EX_SOFTWARE,
    EX_USAGE,
    ConfigError,
)
from fossamon.silences import add_silence_parser, run_silence_command
from fossamon.tools import TOOLS, tool

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from fossamon.config import Config


FROZENLIST_SWITCH = "FROZENLIST_NO_EXTENSIONS"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fossamon",
        description="Performance monitor for a web API + SQLite application and its host.",
    )
    parser.add_argument("--version", action="version", version=f"fossamon {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon in the foreground (what systemd runs)")
    add_config_option(run)

    check = commands.add_parser("check", help="validate the config and show what would run")
    add_config_option(check)

    once = commands.add_parser("once", help="one cycle of every collector and rule, printed")
    add_config_option(once)
    once.add_argument("--json", action="store_true", help="print JSON instead of a table")

    reload = commands.add_parser(
        "reload", help="make the running daemon reload its config; wait for its verdict"
    )
    add_config_option(reload)
    reload.add_argument("--pid", type=int, default=None, help="the daemon's pid ($MAINPID)")
    reload.add_argument(
        "--timeout", default="60s", help="how long to wait for the verdict (default: 60s)"
    )

    status = commands.add_parser(
        "status", help="what the running daemon knows: collectors, firing alerts, trends"
    )
    add_config_option(status)
    status.add_argument("--json", action="store_true", help="print the /status document")
    demo = commands.add_parser("demo", help="run against a built-in stand-in application")
    demo.add_argument("--dir", metavar="DIR", help="where to keep the demo files (default: temp)")
    demo.add_argument("--port", type=int, default=0, help="port for the stand-in (default: free)")
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    add_silence_parser(commands)
    for name in TOOLS:
        tool(name).add_parser(commands)
    return parser


def _load(path_arg: str | None) -> tuple[Config | None, str]:
    from fossamon.overview import load_checked  # noqa: PLC0415 - keep startup lean

    path = _config_path(path_arg)
    try:
        return load_checked(path), path
    except ConfigError as exc:
        print(f"fossamon: invalid configuration ({len(exc.problems)} problem(s)):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None, path


def cmd_check(args: argparse.Namespace) -> int:
    from fossamon.overview import (  # noqa: PLC0415 - keep startup lean
        describe,
        readable_secret_warnings,
        warnings,
    )

    config, path = _load(args.config)
    if config is None:
        return EX_CONFIG
    print("\n".join(describe(config, path)))
    found = readable_secret_warnings(config, path) + warnings(config)
    if found:
        print(f"warnings ({len(found)}):")
        print("\n".join(f"  {w}" for w in found))
    return EX_OK


def cmd_once(args: argparse.Namespace) -> int:
    from fossamon.model import Severity  # noqa: PLC0415
    from fossamon.oneshot import render_json, render_table, run_once  # noqa: PLC0415
    from fossamon.rlimits import descriptors_needed, fit_open_files_limit  # noqa: PLC0415
    from fossamon.runner import run_bounded  # noqa: PLC0415

    config, _ = _load(args.config)
    if config is None:
        return EX_CONFIG
    ready = config
    limit = fit_open_files_limit(descriptors_needed(config))  # as the daemon does
    if not limit.enough:
        print(  # stderr: stdout is the table or the JSON
            f"fossamon once: the open-files limit ({limit.soft}, hard {limit.hard}) is below "
            f"the {limit.needed} this config can hold open; probes past it fail as 'Too many "
            "open files' (raise `ulimit -n`, or lower collectors.api.max_concurrency)",
            file=sys.stderr,
        )

    async def once() -> int:
        result = await run_once(ready)
        print(render_json(result) if args.json else render_table(result))
        return EX_CRITICAL if result.worst >= Severity.CRITICAL else EX_OK

    return run_bounded(once())


def _config_path(given: str | None) -> str:
    return config_path(given)


def _exit_before_start(_signum: int, _frame: object) -> None:
    raise SystemExit(EX_OK)


def cmd_run(args: argparse.Namespace) -> int:
    # Until the daemon installs its handlers, SIGHUP/SIGUSR1 would kill the process (a
    # logrotate postrotate that meets a start): ignore them while we load. A stop request
    # that early has nothing to flush yet: leave at once, but as a clean exit (0), not as
    # "killed by SIGTERM".
    for early in (signal.SIGHUP, signal.SIGUSR1):
        signal.signal(early, signal.SIG_IGN)
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, _exit_before_start)

    import structlog  # noqa: PLC0415

    from fossamon.config import config_digest, read_config_text  # noqa: PLC0415
    from fossamon.daemon import Daemon, limit_malloc_arenas  # noqa: PLC0415
    from fossamon.log import configure_logging  # noqa: PLC0415
    from fossamon.overview import load_checked  # noqa: PLC0415
    from fossamon.runner import run_bounded  # noqa: PLC0415

    limit_malloc_arenas()  # before the first thread

    # Log from the first line in the shape the journal wants, so even "invalid config"
    # arrives with an error priority (`journalctl -p err` shows why the unit failed).
    configure_logging("info", "auto")
    log = structlog.get_logger("fossamon")
    path = _config_path(args.config)
    try:
        text = read_config_text(path)
        config = load_checked(path, text)
    except ConfigError as exc:
        log.error("invalid configuration; not starting", problems=len(exc.problems))
        for problem in exc.problems:
            log.error(str(problem))
        return EX_CONFIG
    # A hung loop ends in the watchdog's SIGABRT; this puts the Python stack in the journal.
    faulthandler.enable()
    configure_logging(config.daemon.log_level, config.daemon.log_format)
    try:
        return run_bounded(Daemon(config, path, config_digest=config_digest(text)).run())
    except Exception:
        log.exception("fossamon crashed")
        return EX_SOFTWARE


def cmd_reload(args: argparse.Namespace) -> int:
    from fossamon.config import peek_runtime_dir  # noqa: PLC0415
    from fossamon.control import request_reload  # noqa: PLC0415
    from fossamon.log import under_journald  # noqa: PLC0415
    from fossamon.units import parse_duration  # noqa: PLC0415

    try:
        timeout = parse_duration(args.timeout)
    except ValueError as exc:
        print(f"fossamon reload: --timeout {exc}", file=sys.stderr)
        return EX_USAGE
    # Where the daemon keeps state.json: systemd tells us; else the config says (even when
    # it is the broken edit being reloaded, which the daemon must still get to reject).
    runtime_dir = os.environ.get("RUNTIME_DIRECTORY", "") or peek_runtime_dir(
        _config_path(args.config)
    )
    config = _config_path(args.config)
    outcome = request_reload(runtime_dir, timeout, args.pid, config)
    stream = sys.stdout if outcome.ok else sys.stderr
    # under journald (ExecReload=), a refusal is an error in `journalctl -p err`
    priority = ("<6>" if outcome.ok else "<3>") if under_journald(stream) else ""
    print(f"{priority}fossamon reload: {outcome.message}", file=stream)
    if outcome.not_running:
        return EX_NOT_RUNNING
    return EX_OK if outcome.ok else EX_CRITICAL


def cmd_status(args: argparse.Namespace) -> int:
    from fossamon.status import run_status_command  # noqa: PLC0415

    return run_status_command(args, _config_path(args.config))


def cmd_demo(args: argparse.Namespace) -> int:
    from fossamon.demo.run import run_demo  # noqa: PLC0415

    return run_demo(directory=args.dir, port=args.port, duration=args.duration)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "check": cmd_check,
    "once": cmd_once,
    "reload": cmd_reload,
    "status": cmd_status,
    "demo": cmd_demo,
    "silence": run_silence_command,
    **{name: tool(name).run for name in TOOLS},
}


def import_lean() -> None:
    """Import two libraries the lean way, before anything imports them their own way.

    - structlog imports `rich` whenever it is installed, for pretty tracebacks and reprs
      that fossamon never uses (log.py renders `plain_traceback`): 3-5 MB of RSS and 0.1 s
      of start-up. rich is installed for the load tester's progress bar and imports
      normally afterwards: only structlog's lookup is refused (a `None` entry in
      sys.modules makes that one import raise ImportError, which structlog expects).
    - frozenlist (aiohttp's signals) is a C++ extension that maps libstdc++: 1.1 MB of RSS
      for a few lists aiohttp freezes at start-up. Its pure-Python twin is the same class
      (FROZENLIST_NO_EXTENSIONS, read once when it is imported).
    """
    if "structlog" not in sys.modules and "rich" not in sys.modules:
        sys.modules["rich"] = None  # type: ignore[assignment]  # the import system's "not here"
        try:
            import structlog  # noqa: F401, PLC0415
        finally:
            del sys.modules["rich"]
    if "frozenlist" not in sys.modules:
        given = os.environ.get(FROZENLIST_SWITCH)
        os.environ[FROZENLIST_SWITCH] = "1"
        try:
            import frozenlist  # noqa: F401, PLC0415
        finally:
            if given is None:
                del os.environ[FROZENLIST_SWITCH]
            else:
                os.environ[FROZENLIST_SWITCH] = given


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import_lean()
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `fossamon check | head`: the reader left. Point stdout at /dev/null so the
        # interpreter's final flush does not complain again (the Python docs' recipe).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return code
