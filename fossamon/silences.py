"""Silences: alerts that match are recorded (alerts JSONL, with `silenced_by`) but not sent.

A silence is a list of Alertmanager-style matchers (see fossamon/matchers.py) and a time
range. They come from `[[silences]]` in the config (source "config", re-synced on every
reload) or from `fossamon silence add` (source "cli"), and live in the state store, so a
silence outlives restarts and the daemon sees one added while it runs.

`fossamon silence add|list|expire` works on `state_dir/state.db` with plain sqlite3, whether
or not the daemon is running (WAL mode, busy timeout). Run as root, it first becomes the
owner of the state directory, so it never leaves a root-owned file the daemon cannot open.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fossamon.errors import EX_CANTCREAT, EX_CONFIG, EX_CRITICAL, EX_OK, EX_USAGE
from fossamon.matchers import Matcher, alert_labels, matches_all, parse_matchers

if TYPE_CHECKING:
    import argparse
    import sqlite3
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from fossamon.config import SilenceConfig
    from fossamon.model import AlertEvent

Source = Literal["cli", "config"]
State = Literal["active", "pending", "expired"]


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts: float
    until: float
    comment: str
    created_by: str
    created_at: float
    source: Source = "cli"
    matcher_texts: tuple[str, ...] = ()  # as written (stored); defaults to the parsed form
    expired_at: float | None = None  # set by `fossamon silence expire`

    def __post_init__(self) -> None:
        if not self.matcher_texts:
            object.__setattr__(self, "matcher_texts", tuple(str(m) for m in self.matchers))

    def state(self, now: float) -> State:
        if now >= self.ends:
            return "expired"
        return "pending" if now < self.starts else "active"

    def active(self, now: float) -> bool:
        return self.state(now) == "active"

    @property
    def ends(self) -> float:
        return self.until if self.expired_at is None else min(self.until, self.expired_at)

    def matches(self, event: AlertEvent) -> bool:
        """Matchers only; whether the silence is active is `active(now)`."""
        labels = alert_labels(event.rule, event.severity.label, event.labels)
        return matches_all(self.matchers, labels)

    def expired(self, now: float) -> Silence:
        return dataclasses.replace(self, expired_at=now)


def first_match(
    silences: Iterable[Silence], event: AlertEvent, now: float | None = None
) -> Silence | None:
    """The first silence matching the event (with `now`: the first active one that does)."""
    for silence in silences:
        if (now is None or silence.active(now)) and silence.matches(event):
            return silence
    return None


def config_silence_id(config: SilenceConfig) -> str:
    """Derived from the content, so a reload that keeps a silence keeps its id."""
    import hashlib  # noqa: PLC0415 - this module is imported by every `fossamon` start
    import json  # noqa: PLC0415

    content = [config.matchers, config.starts, config.until, config.comment]
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()[:12]


def silence_from_config(config: SilenceConfig, now: float) -> Silence:
    return Silence(
        config_silence_id(config),
        parse_matchers(config.matchers),
        now if config.starts is None else config.starts,
        config.until,
        config.comment,
        config.created_by,
        now,
        "config",
        matcher_texts=tuple(config.matchers),
    )


def new_silence_id() -> str:
    import secrets  # noqa: PLC0415

    return secrets.token_hex(6)


# --- `fossamon silence` ---------------------------------------------------------------------

EX_NOT_FOUND = EX_CRITICAL  # `expire`: no such silence, or one only the config can end
EX_STORE = EX_CANTCREAT  # the state file cannot be opened or written


class CommandError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def add_silence_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    silence = subparsers.add_parser(
        "silence", help="add, list or expire silences (matching alerts are recorded, not sent)"
    )
    actions = silence.add_subparsers(dest="silence_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="silence the alerts that match every MATCHER")
    add.add_argument("matchers", nargs="+", metavar="MATCHER", help='e.g. rule="disk_full"')
    add.add_argument("--for", dest="duration", metavar="DURATION", help="e.g. 2h, 30m, 1d")
    add.add_argument("--until", metavar="TIME", help="ISO 8601, e.g. 2026-12-01T08:00:00Z")
    add.add_argument("--comment", help="why (required)")
    add.add_argument("--author", help="who (default: $SUDO_USER, else the current user)")
    add.add_argument("--json", action="store_true", help="print the silence as JSON")
    listing = actions.add_parser("list", help="show the silences that have not ended")
    listing.add_argument("--all", action="store_true", help="include expired silences")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    expire = actions.add_parser("expire", help="end a silence added with `silence add`")
    expire.add_argument("silence_id", metavar="ID")
    from fossamon.cli_options import add_config_option  # noqa: PLC0415

    for parser in (add, listing, expire):
        add_config_option(parser)


def run_silence_command(args: argparse.Namespace) -> int:
    import sqlite3  # noqa: PLC0415 - keep `fossamon run`'s startup lean

    from fossamon.storage.state import StateStoreError  # noqa: PLC0415

    actions: dict[str, Callable[[argparse.Namespace], int]] = {
        "add": _add,
        "list": _list,
        "expire": _expire,
    }
    try:
        return actions[args.silence_command](args)
    except CommandError as exc:
        message, code = exc.message, exc.code
    except StateStoreError as exc:
        message, code = str(exc), EX_STORE
    except sqlite3.Error as exc:  # e.g. still locked after the busy timeout
        message, code = f"the state file: {exc}", EX_STORE
    except PermissionError as exc:
        message = f"{exc.filename}: permission denied (run as root, or as the daemon's user)"
        code = EX_STORE
    except OSError as exc:
        message, code = f"{exc.filename or 'the state file'}: {exc.strerror or exc}", EX_STORE
    sys.stderr.write(f"fossamon silence {args.silence_command}: {message}\n")
    return code


def _add(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    now = time.time()
    try:
        matchers = parse_matchers(args.matchers)
    except ValueError as exc:
        raise CommandError(EX_USAGE, str(exc)) from None
    if all(m.matches({}) for m in matchers):
        # as Alertmanager: a silence every alert matches is a typo, not an intent
        raise CommandError(
            EX_USAGE, "at least one matcher must not match an empty value (it would match all)"
        )
    until = _until(args.duration, args.until, now)
    comment = " ".join((args.comment or "").split())
    if not comment:
        raise CommandError(EX_USAGE, "give --comment: why the alerts are silenced")
    author = args.author or _current_user()
    silence = Silence(
        new_silence_id(), matchers, now, until, comment, author, now, "cli", tuple(args.matchers)
    )
    _, state_dir = _config(args.config)
    with _store(state_dir, create=True) as conn:
        from fossamon.storage.state import insert_silence  # noqa: PLC0415

        assert conn is not None  # create=True
        insert_silence(conn, silence)
    _print(json.dumps(_json(silence, now)) if args.json else silence.id)
    return EX_OK


def _until(duration: str | None, until: str | None, now: float) -> float:
    from datetime import datetime  # noqa: PLC0415

    from fossamon.units import parse_duration  # noqa: PLC0415

    if (duration is None) == (until is None):
        raise CommandError(EX_USAGE, "give either --for DURATION or --until TIME")
    if duration is not None:
        try:
            seconds = parse_duration(duration)
        except ValueError as exc:
            raise CommandError(EX_USAGE, f"--for {exc}") from None
        if seconds <= 0:
            raise CommandError(EX_USAGE, "--for must be longer than zero")
        return now + seconds
    assert until is not None  # one of the two is given (checked above)
    try:
        moment = datetime.fromisoformat(until)
    except ValueError:
        raise CommandError(
            EX_USAGE, f"--until expects ISO 8601 like 2026-12-01T08:00:00Z, got {until!r}"
        ) from None
    if moment.tzinfo is None:
        raise CommandError(EX_USAGE, f"--until needs a time zone, e.g. {moment.isoformat()}Z")
    if moment.timestamp() <= now:
        raise CommandError(EX_USAGE, f"--until {until} is in the past")
    return moment.timestamp()


def _list(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    now = time.time()
    configured, state_dir = _config(args.config)
    stored: list[Silence] = []
    with _store(state_dir, create=False) as conn:
        if conn is not None:
            from fossamon.storage.state import select_silences  # noqa: PLC0415

            stored = select_silences(conn, include_expired=args.all, now=now)
    # in the file but not (yet) in the store: the daemon has not loaded this config
    known = {s.id for s in stored}
    unloaded = [s for s in configured if s.id not in known and (args.all or s.ends > now)]
    rows = [(s, s.source) for s in stored] + [(s, "config (not loaded)") for s in unloaded]
    if args.json:
        _print(json.dumps([{**_json(s, now), "source": source} for s, source in rows], indent=2))
    elif not rows:
        _print("no silences" if args.all else "no silences (--all shows expired ones)")
    else:
        _print(_table(rows, now))
    return EX_OK


def _expire(args: argparse.Namespace) -> int:
    from fossamon.storage.state import expire_silence, find_silence  # noqa: PLC0415

    now = time.time()
    configured, state_dir = _config(args.config)
    wanted = args.silence_id.strip()
    with _store(state_dir, create=False) as conn:
        found = None if conn is None else find_silence(conn, wanted)
        found = found or next((s for s in configured if s.id == wanted), None)
        if found is None:
            raise CommandError(EX_NOT_FOUND, f"no silence with id {wanted!r} (see silence list)")
        if found.source == "config":
            raise CommandError(
                EX_NOT_FOUND,
                f"silence {wanted} comes from the config file: remove or edit it there and "
                "reload (systemctl reload fossamon)",
            )
        if conn is None or not expire_silence(conn, wanted, now):
            _print(f"silence {wanted} had already ended at {_when(found.ends)}")
            return EX_OK
    _print(f"expired silence {wanted}")
    return EX_OK


# --- helpers ----------------------------------------------------------------------------------


def _config(path_arg: str | None) -> tuple[list[Silence], str]:
    """The config's silences and the state directory."""
    from fossamon.config import default_config_path, load_config  # noqa: PLC0415
    from fossamon.errors import ConfigError  # noqa: PLC0415

    path = path_arg or default_config_path()
    try:
        config = load_config(path)
    except ConfigError as exc:
        first = exc.problems[0] if exc.problems else path
        more = (
            f" (and {len(exc.problems) - 1} more; see fossamon check)" if exc.problems[1:] else ""
        )
        raise CommandError(EX_CONFIG, f"invalid configuration: {first}{more}") from None
    now = time.time()
    silences = [silence_from_config(s, now) for s in config.silences]
    return silences, config.daemon.state_dir


@contextlib.contextmanager
def _store(state_dir: str, *, create: bool) -> Iterator[sqlite3.Connection | None]:
    """The state file, opened as the state directory's owner; None if it does not exist and
    `create` is false."""
    from fossamon.storage.state import connect_sync, state_path  # noqa: PLC0415

    become_owner(state_dir)
    try:
        conn = connect_sync(state_path(state_dir), create=create)
    except FileNotFoundError:
        yield None
        return
    try:
        yield conn
    finally:
        conn.close()


def become_owner(state_dir: str) -> None:
    """Run as root: become the state directory's owner (uid, gid, no supplementary groups),
    so every file SQLite creates is the daemon's. Under systemd's DynamicUser= the directory
    sits below /var/lib/private (0700 root), which that user can only reach inside the
    service; then we stay root, and the files still get the right owner (see connect_sync)."""
    if os.geteuid() != 0:
        return
    try:
        real = Path(state_dir).resolve(strict=True)
        owner = real.stat()
    except OSError:
        return  # created below, by root, for a daemon that runs as root
    if owner.st_uid == 0 or not _reachable(real, owner.st_uid, owner.st_gid):
        return
    os.setgroups([])
    os.setgid(owner.st_gid)
    os.setuid(owner.st_uid)


def _reachable(directory: Path, uid: int, gid: int) -> bool:
    """Whether uid:gid (no other groups) may search every directory down to `directory`."""
    for part in (directory, *directory.parents):
        info = part.stat()
        if info.st_uid == uid:
            bit = 0o100
        elif info.st_gid == gid:
            bit = 0o010
        else:
            bit = 0o001
        if not info.st_mode & bit:
            return False
    return True


def _current_user() -> str:
    import getpass  # noqa: PLC0415

    sudo = os.environ.get("SUDO_USER", "")
    if sudo:
        return sudo
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no name for our uid (a container)
        return f"uid {os.getuid()}"


def _when(ts: float) -> str:
    from datetime import UTC, datetime  # noqa: PLC0415

    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(silence: Silence, now: float) -> dict[str, Any]:
    return {
        "id": silence.id,
        "state": silence.state(now),
        "source": silence.source,
        "matchers": [str(m) for m in silence.matchers],
        "starts": _when(silence.starts),
        "ends": _when(silence.ends),
        "created_by": silence.created_by,
        "created_at": _when(silence.created_at),
        "comment": silence.comment,
    }


def _table(rows: Sequence[tuple[Silence, str]], now: float) -> str:
    header = ("ID", "STATE", "MATCHERS", "STARTS", "ENDS", "CREATED BY", "SOURCE", "COMMENT")
    lines = [header] + [
        (
            s.id,
            s.state(now),
            ", ".join(str(m) for m in s.matchers),
            _when(s.starts),
            _when(s.ends),
            _one_line(s.created_by),
            source,
            _one_line(s.comment),
        )
        for s, source in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(line, widths, strict=False)), line[-1]])
        for line in lines
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())  # a newline in a comment must not break the table


def _print(text: str) -> None:
    sys.stdout.write(f"{text}\n")
