"""Smoke tests of the benchmark scripts: each runs in its --quick mode, exits 0 and prints its figures.

The scripts are run as subprocesses (as a user would run them), so TensorFlow
only ever loads in their own processes.  Timings are not asserted: speed
targets are measured by the scripts themselves (docs/benchmarks.md).  The
scripts that start TensorFlow (one or two interpreters each) are marked
``slow``: on the shared 2-core machine each TensorFlow start costs 5-15 s.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


def run_script(name: str, *args: str, timeout: float = 300) -> str:
    """Run ``benchmarks/<name> *args``; returns its stdout + stderr, failing the test on a non-zero exit."""
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    completed = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], cwd=REPO, env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    assert completed.returncode == 0, f"{name} {' '.join(args)} exited {completed.returncode}:\n{completed.stdout[-4000:]}"
    return completed.stdout


def numbers_after(label: str, text: str) -> list[float]:
    return [float(value) for value in re.findall(re.escape(label) + r"\s*([0-9]+(?:\.[0-9]+)?)", text)]


def test_bench_sep_quick():
    output = run_script("bench_sep.py", "--quick")
    assert "blends/s" in output or "blends per second" in output, output


def test_bench_blend_quick(tmp_path):
    output = run_script("bench_blend.py", "--quick", "--workdir", str(tmp_path))
    assert re.search(r"\d", output) and ("RSS" in output or "rss" in output.lower()), output


@pytest.mark.slow
def test_bench_cpu_inference_quick(tmp_path):
    out_json = tmp_path / "cpu.json"
    output = run_script("bench_cpu_inference.py", "--quick", "--batch-sizes", "4", "--json", str(out_json))
    # One line per network and path, with positive throughputs and analytic GFLOP.
    for path in ("on_batch", "function", "engine"):
        rates = [float(m) for m in re.findall(rf"\b{path}\s+B=4\s+([0-9.]+) blends/s", output)]
        assert len(rates) == 3 and all(rate > 0 for rate in rates), output
    gflops = numbers_after("parameters,", output.replace(" GFLOP/blend", ""))
    assert len(gflops) == 3 and all(g > 0 for g in gflops), output
    assert "Budget for 5000 blends" in output and "total, engine:" in output, output
    assert out_json.exists()


@pytest.mark.slow
def test_bench_evaluate_testset_quick(tmp_path):
    # --workdir that does not exist yet is made (it ended in a FileNotFoundError traceback).
    workdir = tmp_path / "new" / "work"
    output = run_script("bench_evaluate_testset.py", "--quick", "--workdir", str(workdir))
    assert re.search(r"\[predict\] [0-9.]+ s wall, [0-9.]+ s CPU .*peak RSS per process: .*blendphot \d+ MiB", output), output
    assert re.search(r"\[evaluate\] [0-9.]+ s wall, [0-9.]+ s CPU", output), output
    assert "random-weight tiny models" in output, output
    assert re.search(r"predict [0-9.]+ s \+ evaluate [0-9.]+ s = [0-9.]+ s", output), output
    # The temporary work folder is removed afterwards.
    assert not any(workdir.iterdir())


def test_bench_evaluate_testset_refuses_a_file_as_workdir(tmp_path):
    taken = tmp_path / "results.csv"
    taken.write_text("a user's file\n")
    completed = subprocess.run([sys.executable, str(BENCHMARKS / "bench_evaluate_testset.py"), "--quick",
                                "--workdir", str(taken)], capture_output=True, text=True, cwd=REPO)
    assert completed.returncode == 2
    assert f"--workdir {taken}: exists and is not a folder" in completed.stderr
    assert taken.read_text() == "a user's file\n"


def test_stage_memory_poll_reads_proc_about_once_a_second(tmp_path, monkeypatch):
    # Regression: /proc (with smaps_rollup, which walks the process's page tables) was read every
    # 0.1 s, and that slowed the 5,000-blend predict stage it measured by ~20 s (118.9 against 97-102 s).
    bench = _load_benchmark("bench_evaluate_testset")
    readings = []
    real_status = bench._status

    def counted(pid):
        readings.append(pid)
        return real_status(pid)

    monkeypatch.setattr(bench, "_status", counted)
    stage = bench.run_stage("sleep", [sys.executable, "-c", "import time; time.sleep(2.2)"], tmp_path / "log")
    assert stage["seconds"] >= 2.2
    assert 1 <= len(readings) <= 4, readings
    assert stage["peaks_mb"] and stage["peaks_mb"][0]["peak_mb"] > 0


@pytest.mark.slow
def test_bench_engine_quick():
    output = run_script("bench_engine.py", "--size", "tiny", "--repeats", "2", "--batch", "16", "--no-transport")
    assert "ms" in output, output


@pytest.mark.slow
def test_bench_gui_latency_quick():
    # The script re-runs itself under xvfb-run when there is no display.
    output = run_script("bench_gui_latency.py", "--quick", "--networks", "tiny")
    assert "p95" in output, output


def _load_benchmark(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peak_record_takes_the_command_line_after_exec():
    # Regression: a child first polled before its exec() had an empty command line (or the parent's),
    # which was kept for good, so the CLI process was reported without its "blendphot" label.
    bench = _load_benchmark("bench_evaluate_testset")
    peaks: dict = {}
    bench.record_peak(peaks, 42, {"cmdline": "", "VmHWM": 10.0})
    bench.record_peak(peaks, 42, {"cmdline": "python -m napari_blendphot.cli predict x", "VmHWM": 150.0})
    bench.record_peak(peaks, 42, {"cmdline": "", "VmHWM": 120.0})  # exiting: cmdline gone, peak kept
    assert bench.describe_process(peaks[42]["cmdline"]) == "blendphot"
    assert peaks[42]["peak_mb"] == 150.0
    bench.record_peak(peaks, 7, {"cmdline": "python bench_evaluate_testset.py", "VmHWM": 50.0})
    bench.record_peak(peaks, 7, {"cmdline": "python -c from multiprocessing.spawn import spawn_main", "VmHWM": 60.0})
    assert bench.describe_process(peaks[7]["cmdline"]) == "worker/pool"


def test_stage_summary_always_lists_the_stages_own_process():
    # Regression: the summary listed the 4 largest processes only, so the "blendphot" process
    # dropped out whenever the worker and 3 pool processes (SEP starts a pool per chunk) were bigger.
    bench = _load_benchmark("bench_evaluate_testset")
    command = [sys.executable, "-m", "napari_blendphot.cli", "predict", "blends"]
    peaks: dict = {}
    bench.record_peak(peaks, 10, {"cmdline": "", "VmHWM": 90.0})  # the CLI, only ever seen before its exec()
    for pid, size in ((11, 900.0), (12, 150.0), (13, 140.0), (14, 130.0), (15, 120.0)):
        bench.record_peak(peaks, pid, {"cmdline": "python -c from multiprocessing.spawn import spawn_main",
                                       "VmHWM": size})
    listed = bench.summarise_peaks(peaks, 10, command)
    assert listed[0] == ("blendphot", 90.0, 10)
    assert [pid for _, _, pid in listed[1:]] == [11, 12, 13, 14]
    assert len(bench.summarise_peaks(peaks, 10, command, largest=len(peaks))) == 6


def test_bench_pool_gradient_tiny():
    output = run_script("bench_pool_gradient.py", "--batch", "2", "--filters", "8", "--size", "32", "--steps", "2")
    for name in ("reduce_window", "reshape_max"):
        assert re.search(rf"{name}\s+[0-9.]+ ms/step wall\s+[0-9.]+ ms/step CPU", output), output
    # The two poolings give the same gradient (no tied maxima in random data).
    assert "largest relative gradient difference 0.00e+00" in output, output


def test_bench_methods_quick():
    output = run_script("bench_methods.py", "--quick")
    for name in ("sep", "seppaper", "sextractor", "photutils"):
        assert re.search(rf"{name}: first call .* ms/blend", output), output


@pytest.mark.slow
def test_bench_network_set_counts_the_shared_u_net_pass(tmp_path, toy_sample):
    import json

    from napari_blendphot.blend.dataset import write_blend_dataset

    folder = write_blend_dataset(toy_sample, tmp_path / "blends", n=6, test_fraction=0.5, seed=3)
    output = run_script("bench_network_set.py", str(folder), "--split", "all", "--set", "shipped=",
                        "--json", str(tmp_path / "set.json"))
    figures = json.loads((tmp_path / "set.json").read_text())["shipped"]
    assert figures["n"] == 6 and figures["cpu_ms_per_blend"] > 0 and figures["reused_passes"] == 1
    assert "| shipped | 6 |" in output


def test_bench_stamp_share_bins_errors_by_the_light_inside_the_stamp(tmp_path, toy_sample):
    from napari_blendphot.blend.dataset import BlendDataset, write_blend_dataset
    from napari_blendphot.deblend.base import DeblendOutput
    from napari_blendphot.report.results import build_results_table, write_results

    folder = write_blend_dataset(toy_sample, tmp_path / "blends", n=40, test_fraction=0.5, seed=3)
    catalog = BlendDataset(folder).catalog
    # A method that measures exactly the light inside the stamp: its error is 1 - share.
    images = np.stack([np.load(folder / "galaxy1.npy"), np.load(folder / "galaxy2.npy")], axis=1)
    inside = images.astype(np.float64).sum(axis=(2, 3))
    table = build_results_table(catalog, [DeblendOutput("instamp", inside)])
    results = write_results(table, tmp_path / "results")[0]
    output = run_script("bench_stamp_share.py", str(folder), str(results), "--method", "instamp", "--min-flux", "0")
    assert "instamp: 80 galaxies brighter than 0 e-/s" in output
    lines = output.splitlines()
    split = lines.index("median predicted / true:")
    rows = [line for line in lines[:split] if re.match(r"^\d", line)]
    ratio_rows = [line for line in lines[split:] if re.match(r"^\d", line)]
    assert len(rows) == 3 and len(ratio_rows) == 3  # the three radius bins, for the MAPE and the ratio
    # Such a method's error is exactly |share - 1|: every printed cell is that mean over its galaxies.
    true = np.column_stack([np.asarray(catalog["g1_flux"], float), np.asarray(catalog["g2_flux"], float)])
    radius = np.column_stack([np.asarray(catalog["g1_rad"], float), np.asarray(catalog["g2_rad"], float)]).ravel()
    share = (inside / true).ravel()
    radius_edges, share_edges = (0, 10, 21, np.inf), (0, 0.8, 0.9, 0.95, np.inf)
    for row, (r_lo, r_hi) in zip(rows, zip(radius_edges, radius_edges[1:])):
        cells = re.findall(r"(-|[0-9.]+ \(\d+\))", row.split(maxsplit=1)[1])
        assert len(cells) == 4
        for cell, (s_lo, s_hi) in zip(cells, zip(share_edges, share_edges[1:])):
            chosen = (radius > r_lo) & (radius <= r_hi) & (share > s_lo) & (share <= s_hi)
            if not chosen.any():
                assert cell == "-"
                continue
            value, count = re.match(r"([0-9.]+) \((\d+)\)", cell).groups()
            assert int(count) == chosen.sum()
            assert float(value) == pytest.approx(100 * np.abs(share[chosen] - 1).mean(), abs=0.006)
    # ... and its median predicted / true flux is the median share (below 1: light beyond the edge missed).
    for row, (r_lo, r_hi) in zip(ratio_rows, zip(radius_edges, radius_edges[1:])):
        cells = row.split()[1:]
        assert len(cells) == 4
        for cell, (s_lo, s_hi) in zip(cells, zip(share_edges, share_edges[1:])):
            chosen = (radius > r_lo) & (radius <= r_hi) & (share > s_lo) & (share <= s_hi)
            assert cell == "-" if not chosen.any() else float(cell) == pytest.approx(np.median(share[chosen]),
                                                                                     abs=6e-4)


@pytest.mark.slow
@pytest.mark.skipif(not (REPO.parent / "shared" / "realgal").exists(),
                    reason="needs ../shared/realgal (the real validation galaxies)")
def test_bench_sersic_twins_small(tmp_path):
    """The twins benchmark on 60 blends: twins written, both sets blended alike, the tables printed."""
    output = run_script("bench_sersic_twins.py", "--work", str(tmp_path), "-n", "60", "--methods", "blend2flux",
                        timeout=600)
    assert len(list((tmp_path / "twins").glob("*.fits"))) == 51
    assert re.search(r"\| 0-10 \| \d+ \| [0-9.]+ \| [0-9.]+ \|", output), output
    assert re.search(r"flux MAPE: real [0-9.]+%, twins [0-9.]+%", output), output
    assert re.search(r"Pearson r\(real / twin prediction ratio, share ratio\) = -?[0-9.]+", output), output
