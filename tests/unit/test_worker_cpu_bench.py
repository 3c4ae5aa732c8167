"""bench/worker_cpu.py runs (it drives spark._worker.run_partition through private parts that
may move) and prints the table run_all.py's worker section reads. Its numbers are not checked
here: they are read in docs/PERFORMANCE.md, never asserted (the machines are noisy)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_worker_cpu_bench_prints_its_table() -> None:
    command = [sys.executable, "bench/worker_cpu.py", "--rows", "200", "--rounds", "1"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for label in ("dbstruct worker (run_partition)", "raw openai.AsyncOpenAI"):
        row = re.search(re.escape(label) + r"\s+(\d+\.\d+)\s+\d+", done.stdout)
        assert row is not None and float(row.group(1)) > 0, done.stdout
    assert re.search(r"dbstruct worker / raw openai\s+\d+\.\d\d", done.stdout), done.stdout
    assert "rows failed" not in done.stdout  # every row got a value: the CPU is a real row's
