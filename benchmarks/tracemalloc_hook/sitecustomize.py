"""Where the daemon's memory grows, for a soak run: with this folder on PYTHONPATH and
FOSSAMON_TM_DIR set, a `fossamon run` process starts tracemalloc (12 frames) and writes a
snapshot there every FOSSAMON_TM_EVERY seconds (300), plus a line of traced and resident
memory to rss.txt. Other processes (the demo target, pytest) are left alone.

    FOSSAMON_TM_DIR=/tmp/tm FOSSAMON_TM_EVERY=240 PYTHONPATH=benchmarks/tracemalloc_hook \\
        .venv/bin/python benchmarks/soak.py --duration 1800 --output /tmp/soak.md
    .venv/bin/python benchmarks/tracemalloc_diff.py /tmp/tm/snap-02.pickle /tmp/tm/snap-06.pickle

tracemalloc costs CPU (about 40 % of a core in the soak) and memory: the soak's cycle and
RSS figures from such a run are not the daemon's.
"""

import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path

FOLDER = os.environ.get("FOSSAMON_TM_DIR")


def _dump_every(folder: Path, every: float) -> None:
    count = 0
    while True:
        time.sleep(every)
        count += 1
        tracemalloc.take_snapshot().dump(str(folder / f"snap-{count:02d}.pickle"))
        status = Path("/proc/self/status").read_text().splitlines()
        rss = [line.split(None, 1)[1].strip() for line in status if line.startswith("VmRSS")]
        traced, peak = tracemalloc.get_traced_memory()
        with (folder / "rss.txt").open("a") as out:
            out.write(f"{count} {time.time():.0f} traced={traced} peak={peak} rss={rss[0]}\n")


if FOLDER and sys.argv[:1] and sys.argv[0].endswith("fossamon") and "run" in sys.argv:
    tracemalloc.start(12)
    every = float(os.environ.get("FOSSAMON_TM_EVERY", "300"))
    threading.Thread(target=_dump_every, args=(Path(FOLDER), every), daemon=True).start()
