"""Smoke test of benchmarks/bench_field.py in its --quick mode (SEP only, tiny fields; figures mean nothing)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # three small fields and two CLI runs: ~20 s on the shared machine
def test_bench_field_quick(tmp_path):
    environment = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    completed = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_field.py"), "--quick",
                                "--folder", str(tmp_path)], cwd=REPO, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=600)
    output = completed.stdout
    assert completed.returncode == 0, output[-4000:]
    assert re.search(r"completeness \(match within 0\.3\"\): \d+/20", output), output
    assert re.search(r"blendphot measure 768x768: [0-9.]+ s wall", output), output
    assert re.search(r"peak RSS of the measuring process: \d+ MiB", output), output
    assert list(tmp_path.iterdir()) == []  # the big image and its catalogue are removed
