"""Benchmarks are not tests; each is smoke-run briefly (its `quick` argv in run_all.py) so that
it keeps working, and its summary rows keep the shape docs/benchmarks.md is built from."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # run_all imports its neighbour _common, as a script does
_spec = importlib.util.spec_from_file_location("run_all", BENCHMARKS / "run_all.py")
assert _spec is not None
assert _spec.loader is not None
run_all = importlib.util.module_from_spec(_spec)
sys.modules["run_all"] = run_all  # dataclasses look their module up while the class is built
_spec.loader.exec_module(run_all)

# What a benchmark's smoke run needs beyond the package (a peer it measures against).
PARTS = {
    "overhead": (
        ("prometheus-node-exporter", "node_exporter (apt: prometheus-node-exporter)"),
        ("prometheus-blackbox-exporter", "blackbox_exporter (apt: prometheus-blackbox-exporter)"),
    ),
    "loadtest": (("nginx", "nginx (apt: nginx-light)"),),
}
VERDICTS = {"met", "**NOT met**"}


def quick_run(name: str) -> subprocess.CompletedProcess[str]:
    bench = next(b for b in run_all.BENCHMARKS if b.name == name)
    script, *options = bench.quick
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *options],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=BENCHMARKS.parent,
    )


def summary_rows(stdout: str) -> list[list[str]]:
    return [
        line.removeprefix(run_all.SUMMARY_PREFIX).split("|")
        for line in stdout.splitlines()
        if line.startswith(run_all.SUMMARY_PREFIX)
    ]


@pytest.mark.parametrize("name", [b.name for b in run_all.BENCHMARKS])
def test_each_benchmark_smoke_runs_and_states_its_budget(name, need):
    for binary, what in PARTS.get(name, ()):
        found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")
        need(found is not None, what)
    done = quick_run(name)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = summary_rows(done.stdout)
    assert rows, f"{name} printed no SUMMARY line:\n{done.stdout[-2000:]}"
    for row in rows:
        assert len(row) == len(run_all.SUMMARY_HEADERS), row
        assert row[0].isdigit(), row  # the budget's number in issue 8
        assert re.search(r"\d", row[2]), row  # a measured figure, not a placeholder
        assert row[-1] in VERDICTS, row
    assert "|---" in done.stdout  # its own markdown table


def test_writer_benchmark_accounts_for_every_line():
    done = quick_run("writer")
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if re.match(r"\| (no|rotation)", line)]
    assert len(rows) == 3, done.stdout
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert float(cells[1].replace(",", "").split()[0]) > 0  # lines/s
        assert cells[-1] == "3,000 / 3,000"


def test_make_bench_runner_writes_the_page_with_its_summary(tmp_path):
    page = tmp_path / "benchmarks.md"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "run_all.py"),
            "--quick",
            "--only",
            "writer",
            "db_analyze",
            "--output",
            str(page),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert text.startswith("# Benchmarks")
    assert "CPUs" in text
    summary = text.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"^\| 5 \| .*\| (met|\*\*NOT met\*\*) \|$", summary, re.MULTILINE), summary
    assert re.search(r"^\| 8 \| .*\| met \|$", summary, re.MULTILINE), summary  # 53 MB vs 150
    assert "## JSONL writer throughput" in text
    assert "## DB analyze memory" in text
    assert "SUMMARY|" not in text  # gathered into the table, not left in the sections
    assert "3,000 / 3,000" in text  # the writer's own accounting made it onto the page


def test_a_benchmark_that_fails_is_on_the_page_and_fails_the_run(tmp_path, monkeypatch):
    broken = run_all.Benchmark(
        "broken", "A broken one", ("no_such_script.py",), ("no_such_script.py",), "none", 30.0
    )
    monkeypatch.setattr(run_all, "BENCHMARKS", (broken,))
    page = tmp_path / "benchmarks.md"
    assert run_all.main(["--quick", "--output", str(page)]) == 1
    text = page.read_text()
    assert "## A broken one" in text
    assert "exit 2" in text  # python's status for a missing script
    assert "no figure (exit 2)" in text  # its row in the summary says so


def test_the_soak_smoke_runs_and_writes_its_block(tmp_path):
    """`make soak` runs 30 minutes; this runs it for 25 s on a small database: every check
    it makes must hold already (the lines accounted for, no leak yet, a clean stop)."""
    page = tmp_path / "reliability.md"
    page.write_text("# x\n<!-- soak:begin -->\nold\n<!-- soak:end -->\ntail\n")
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "soak.py"), "--duration", "25", "--work-orders",
         "2000", "--output", str(page)],
        capture_output=True, text=True, timeout=240, check=False, cwd=BENCHMARKS.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = page.read_text()
    assert text.startswith("# x\n<!-- soak:begin -->\nCommand: `python benchmarks/soak.py")
    assert text.endswith("<!-- soak:end -->\ntail\n")
    assert "old" not in text
    assert "| lines written / found |" in text
    assert "**NOT met**" not in text
