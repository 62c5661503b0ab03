"""Smoke test of benchmarks/bench_load.py: ``--quick`` exits 0 and prints its load figures.

Run as a subprocess, as a user would (the GUI part re-runs itself under
``xvfb-run`` when there is no display; ``--quick`` leaves the networks out so
no TensorFlow starts).  The figures themselves are judged in
docs/reliability.md ("Load"), not here: only that they are printed and sane.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_load.py"


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("DISPLAY") and shutil.which("xvfb-run") is None,
                    reason="the GUI part needs a display or xvfb-run")
def test_bench_load_quick_prints_its_figures(tmp_path):
    pytest.importorskip("psutil")
    # ~70 s on the shared 2-core machine at load 4, 145 s at load 10: the limit only catches a hang.
    completed = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--workdir", str(tmp_path)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=480,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    output = completed.stdout
    assert completed.returncode == 0, output[-4000:]

    # Predict part: 2,000 blends, a positive rate, peak RSS of the predict process and its worker,
    # and the RSS at three progress points.
    match = re.search(r"blends: (\d+)\s+wall \(whole command\): ([\d.]+) s\s+blends/s: ([\d.]+)", output)
    assert match and int(match.group(1)) == 2000 and float(match.group(3)) > 0, output
    peaks = re.search(r"peak RSS: predict process (\d+) MB\s+worker (\d+) MB", output)
    assert peaks and int(peaks.group(1)) > 0 and int(peaks.group(2)) > 0, output
    progress_rows = re.findall(r"^\s+(10|50|90) % \(\s*[\d.]+ % done\)\s+(\d+)\s+(\d+)", output, re.M)
    assert [row[0] for row in progress_rows] == ["10", "50", "90"], output
    assert all(int(parent) > 0 and int(worker) > 0 for _, parent, worker in progress_rows), output

    # GUI part: 50 moves sampled every 10 (6 rows), a constant number of layers, growth figures,
    # the tracemalloc diff, and no TensorFlow in the napari process.
    samples = re.findall(r"^\s+sample: moves (\d+) layers (\d+) GUI RSS ([\d.]+) MB worker RSS ([\d.]+) MB", output, re.M)
    assert [int(s[0]) for s in samples] == [0, 10, 20, 30, 40, 50], output
    assert len({s[1] for s in samples}) == 1, output
    assert all(float(s[2]) > 0 and float(s[3]) > 0 for s in samples), output
    assert re.search(r"growth per 100 moves .*GUI RSS [+-][\d.]+ MB, worker RSS [+-][\d.]+ MB, gc objects [+-]\d+",
                     output), output
    assert "(constant)" in output and "tracemalloc: lines that grew most" in output, output
    assert "tensorflow in the napari process: False" in output, output
