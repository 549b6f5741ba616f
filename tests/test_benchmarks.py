"""The benchmark tools run end to end and print their tables (marked slow: `python -m pytest -m slow`).

They measure speed, so nothing here asserts a speed: only that each tool runs on a real model and reports
the figures it promises, so a refactor cannot leave a tool broken until someone needs its numbers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
pytestmark = pytest.mark.slow


def _tool(*args: str) -> str:
    res = subprocess.run([sys.executable, str(TOOLS / args[0]), *args[1:]], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_bench_threads_prints_a_row_per_busy_setting(stories_ellm):
    out = _tool("bench_threads.py", str(stories_ellm["q4"]), "--tokens", "32", "--repeat", "1", "--busy", "0,1")
    rows = [line.split() for line in out.splitlines() if line.startswith("stories-q4.ellm")]
    assert [r[1] for r in rows] == ["0", "1"]
    assert all(float(r[2]) > 0 and float(r[4]) > 0 and float(r[6]) > 0 for r in rows)


def test_bench_kernels_reports_prefill_decode_and_bandwidth(stories_ellm):
    out = _tool(
        "bench_kernels.py", str(stories_ellm["q4"]), "--repeat", "1", "--prompt-tokens", "32", "--gen-tokens", "16"
    )
    assert "memory read bandwidth here" in out
    row = next(line.split() for line in out.splitlines() if "stories-q4.ellm" in line)
    assert row[1] == "q4" and float(row[2]) > 0 and float(row[3]) > 0


def test_bench_chat_reports_each_turn(stories_ellm):
    out = _tool("bench_chat.py", str(stories_ellm["q4"]), "--turns", "2")
    assert "TTFT" in out or "ttft" in out.lower()
