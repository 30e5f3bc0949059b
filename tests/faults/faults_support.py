"""What every fault-matrix row asserts about a running daemon: it stays up and keeps its
cadence, the fault shows as its error kind (and as an alert where a rule covers it), it
recovers when the fault ends, and nothing is lost (the daemon's own count of lines written
equals the lines found, and every one of them parses)."""

from __future__ import annotations

import itertools
import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daemon_harness import Daemon

INTERVAL = 0.5  # every collector's interval in the matrix's daemons
ARTIFACTS = Path(__file__).parent.parent.parent / "artifacts"


def without_root_bypass() -> list[str]:
    """A prefix that runs the daemon without the capabilities that let root read and write
    any file, so a file's or folder's mode means what it says (empty when not root: the mode
    is enough)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


def ts(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(line["ts"]).timestamp()


def runs(daemon: Daemon, collector: str) -> list[dict[str, Any]]:
    return [line for line in daemon.lines() if line["collector"] == collector]


def errors_of(line: dict[str, Any], target: str) -> list[str]:
    return [e["kind"] for e in line.get("errors", []) if e["target"] == target]


def alert_events(daemon: Daemon, rule: str, **labels: str) -> list[str]:
    return [
        a["event"]
        for a in daemon.lines(daemon.alerts)
        if a["rule"] == rule and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def worst_gap(lines: list[dict[str, Any]]) -> float:
    """The longest time between two runs' starts (s)."""
    stamps = sorted(ts(line) for line in lines)
    return max((b - a for a, b in itertools.pairwise(stamps)), default=0.0)


def assert_cadence_kept(
    daemon: Daemon, collector: str, slack: float = 3.0, interval: float = INTERVAL
) -> None:
    """No run of `collector` was missed: never more than `slack` intervals between two."""
    found = runs(daemon, collector)
    assert len(found) >= 3, f"only {len(found)} {collector} runs"
    gap = worst_gap(found)
    assert gap <= slack * interval, f"{collector}: {gap:.2f} s between two runs"


def assert_nothing_lost(daemon: Daemon, elsewhere: int = 0) -> int:
    """After `stop()`: the lines the daemon says it wrote are the lines in its files (plus
    `elsewhere`: lines it wrote that the test found in other files, archives say), all whole
    JSON documents, and it dropped none. Returns how many it wrote."""
    stopped = [x for x in daemon.stderr.decode().splitlines() if "stopped" in x]
    assert stopped, daemon.stderr.decode()[-2000:]
    written = int(re.search(r"lines_written=(\d+)", stopped[-1]).group(1))  # type: ignore[union-attr]
    dropped = int(re.search(r"lines_dropped=(\d+)", stopped[-1]).group(1))  # type: ignore[union-attr]
    found = elsewhere
    for path in (daemon.metrics, daemon.alerts):
        if path.exists():
            for raw in path.read_bytes().splitlines():
                json.loads(raw)  # a torn or mangled line fails here
                found += 1
    assert (written, dropped) == (found, 0), f"wrote {written}, dropped {dropped}, found {found}"
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
    ARTIFACTS.mkdir(exist_ok=True)
    with (ARTIFACTS / "fault-lines.txt").open("a", encoding="utf-8") as out:
        out.write(f"{test} {written}\n")  # summed in the note: lines accounted for
    return written
