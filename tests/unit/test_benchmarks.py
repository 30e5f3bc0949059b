"""Benchmarks are not tests; each is smoke-run briefly so that it keeps working."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_writer_benchmark_runs_and_accounts_for_every_line():
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "writer.py"), "--lines", "3000"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if re.match(r"\| (no|rotation)", line)]
    assert len(rows) == 3, done.stdout
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert float(cells[1].replace(",", "")) > 0  # lines/s
        assert cells[-1] == "3,000 / 3,000"


def test_make_bench_runner_writes_the_page(tmp_path):
    page = tmp_path / "benchmarks.md"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "run_all.py"),
            "--quick",
            "--only",
            "writer",
            "--output",
            str(page),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert text.startswith("# Benchmarks")
    assert "CPUs" in text
    assert "## JSONL writer throughput" in text
    assert "exit 0" in text
    assert "3,000 / 3,000" in text  # the writer's own accounting made it onto the page
