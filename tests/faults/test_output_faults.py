"""Fault matrix, output rows not covered by their own files here (disk full:
test_disk_full.py; concurrent logrotate: test_logrotate.py; SIGKILL mid-write:
test_output_crash.py): the folder removed under a running daemon, and permissions revoked."""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import TYPE_CHECKING

from daemon_harness import start_daemon
from faults_support import (
    INTERVAL,
    alert_events,
    assert_cadence_kept,
    assert_nothing_lost,
    ts,
    without_root_bypass,
)
from support import daemon_head

if TYPE_CHECKING:
    from pathlib import Path


def config(tmp_path: Path, metrics_extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        daemon_head(tmp_path, alerts=f"{tmp_path}/alerts/alerts.jsonl", metrics_extra=metrics_extra)
        + f'[collectors.system]\ninterval = "{INTERVAL}s"\n'
    )
    return path


async def start(tmp_path: Path, notify, metrics_extra: str = "", prefix=()):
    daemon = await start_daemon(
        config(tmp_path, metrics_extra), tmp_path, {"NOTIFY_SOCKET": str(notify.path)}, prefix
    )
    daemon.alerts = tmp_path / "alerts" / "alerts.jsonl"  # out of the way of the metrics
    return daemon


async def test_folder_removed_lines_go_to_a_new_file_none_to_the_lost_one(tmp_path, notify):
    daemon = await start(tmp_path, notify)
    await daemon.wait_for(lambda: len(daemon.lines()) >= 3, what="the first runs")
    # A reader holding the file open sees what went into it even after it is gone.
    with daemon.metrics.open("rb") as lost:
        removed_at = time.time()
        shutil.rmtree(daemon.metrics.parent)
        await daemon.wait_for(lambda: len(daemon.lines()) >= 4, what="lines in a new file")
        rc, _ = await daemon.stop()
        in_lost = [json.loads(line) for line in lost.read().splitlines()]
    assert rc == 0, daemon.stderr.decode()[-2000:]
    new = daemon.lines()
    assert daemon.metrics.parent.is_dir()  # made again
    written = assert_nothing_lost(daemon, elsewhere=len(in_lost))
    assert written == len(in_lost) + len(new) + len(daemon.lines(daemon.alerts))
    # nothing written after the removal went into the file nobody can reach any more
    late = [line for line in in_lost if ts(line) > removed_at + 0.05]
    assert late == [], f"{len(late)} lines written into the removed file"
    assert_cadence_kept(daemon, "system")


async def test_permissions_revoked_rotation_warns_nothing_is_lost_and_it_recovers(
    tmp_path, notify, need
):
    """The folder made read-only under the running daemon (a wrong chmod, a policy tool): the
    open file is still written, every line kept, but it cannot be rotated, which
    `output_rotation_failing` says, until the folder is writable again."""
    need(os.geteuid() != 0 or shutil.which("setpriv") is not None, "setpriv (util-linux)")
    daemon = await start(
        tmp_path,
        notify,
        'max_size = "4KiB"\ncompress = false\n',
        without_root_bypass(),
    )
    folder = daemon.metrics.parent
    await daemon.wait_for(lambda: len(daemon.lines()) >= 2, what="the first runs")
    folder.chmod(0o555)
    try:
        await daemon.wait_for(
            lambda: "firing" in alert_events(daemon, "output_rotation_failing", file="metrics"),
            timeout=20,
            what="output_rotation_failing firing",
        )
    finally:
        folder.chmod(0o755)
    # the retry comes within a minute; a SIGUSR1-free way to see it sooner is not wanted
    await daemon.wait_for(
        lambda: "resolved" in alert_events(daemon, "output_rotation_failing", file="metrics"),
        timeout=75,
        what="output_rotation_failing resolved once the folder is writable",
    )
    rc, _ = await daemon.stop()
    assert rc == 0, daemon.stderr.decode()[-2000:]
    assert b"cannot rotate output file" in daemon.stderr
    assert "firing" not in alert_events(daemon, "output_write_failing")
    archived = sorted(folder.glob("metrics-*.jsonl"))
    assert archived  # rotation works again
    found = sum(len(path.read_text().splitlines()) for path in archived)
    assert_nothing_lost(daemon, elsewhere=found)
