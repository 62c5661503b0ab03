"""Chaos test (issue 19): real ``blend``, ``predict`` and ``evaluate`` processes killed at random points.

For each command, a seeded schedule of 30 kills: SIGINT to the process group
(Ctrl-C in a terminal), SIGTERM and SIGKILL to the process (``kill``,
``kill -9``), each at a time drawn uniformly over the command's measured run
time, alternately on a run that replaces an existing output (``--overwrite``)
and on a run that makes a new one.  After every kill:

- no process of the killed run's tree is alive 5 s later (children snapshot
  at the kill, and the run's process group);
- every file under a final (not hidden) output name reads back;
- the inputs are unchanged (hashes);

and a rerun succeeds, after the 15th kill and after the last one: with
``--overwrite`` onto what the kills left, and without it onto the new output
(deleted first only when complete: what a killed run left half-made must not
stop a plain rerun).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_blendphot.testing.corpus import tree_digest

psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.slow

SEED = 19
KILLS = 30
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
ORPHAN_GRACE_S = 5.0
RERUN_AFTER = (15, KILLS)


# -- running and killing -----------------------------------------------------------------------

def _blendphot(argv, cwd: Path, log: Path):
    return subprocess.Popen([sys.executable, "-m", "napari_blendphot.cli", *map(str, argv)], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"), start_new_session=True)


def _run(argv, cwd: Path, log: Path, timeout: float = 300) -> tuple[int, float]:
    start = time.perf_counter()
    process = _blendphot(argv, cwd, log)
    code = process.wait(timeout=timeout)
    return code, time.perf_counter() - start


def _group_members(pgid: int) -> list:
    members = []
    for process in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return members


def _alive(processes) -> list:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.Error:
            continue
    return alive


def _describe(process) -> str:
    try:
        return f"pid {process.pid} (ppid {process.ppid()}): {' '.join(process.cmdline())[:160]}"
    except psutil.Error:
        return f"pid {process.pid}"


def _kill_run(argv, cwd: Path, log: Path, delay: float, sig) -> tuple[bool, list[str]]:
    """Start a run, send *sig* after *delay* s; returns (whether it was killed, orphans 5 s later)."""
    process = _blendphot(argv, cwd, log)
    try:
        process.wait(timeout=delay)
        return False, []  # finished before the kill
    except subprocess.TimeoutExpired:
        pass
    try:
        tree = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        tree = []
    try:
        if sig == signal.SIGINT:
            os.killpg(process.pid, sig)  # Ctrl-C reaches the whole foreground process group
        else:
            os.kill(process.pid, sig)
    except ProcessLookupError:
        pass
    process.wait(timeout=120)
    deadline = time.monotonic() + ORPHAN_GRACE_S
    while True:
        survivors = {p.pid: p for p in _alive(tree) + _group_members(process.pid)}
        if not survivors or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    orphans = [_describe(p) for p in survivors.values()]
    for leftover in survivors.values():  # hygiene: our descendants, by pid
        try:
            leftover.kill()
        except psutil.Error:
            pass
    return True, orphans


# -- what every output must look like ------------------------------------------------------------

def _check_dataset(path: Path) -> bool:
    """A dataset under its final name reads back whole; returns whether one is there."""
    from napari_blendphot.blend.dataset import BlendDataset

    if not path.exists():
        return False
    dataset = BlendDataset(path)
    for name in ("blends", "galaxy1", "galaxy2"):
        assert np.isfinite(np.asarray(getattr(dataset, name))).all(), f"{path}: {name}.npy"
    assert np.asarray(dataset.masks).max() <= 1
    return True


def _check_results(stem: Path) -> bool:
    """Results files under their final names read back, and a pair agrees; returns whether the pair is whole."""
    from napari_blendphot.report.results import read_results

    tables = {suffix: read_results(stem.with_name(stem.name + suffix))
              for suffix in (".csv", ".fits") if stem.with_name(stem.name + suffix).exists()}
    if len(tables) == 2:
        csv, fits = tables[".csv"], tables[".fits"]
        assert len(csv) == len(fits) and csv.colnames == fits.colnames, f"{stem}: the CSV and FITS differ"
        for name in csv.colnames:
            if csv[name].dtype.kind == "f":
                np.testing.assert_array_equal(np.asarray(csv[name]), np.asarray(fits[name]), err_msg=name)
    return len(tables) == 2


def _check_report(folder: Path) -> bool:
    """Every report file under its final name reads back; returns whether the report is complete."""
    from matplotlib.image import imread

    from napari_blendphot.report.evaluate import MANIFEST_NAME, read_manifest
    from napari_blendphot.tables import read_table

    if not folder.exists():
        return False
    for path in folder.iterdir():
        if path.name.startswith("."):
            continue  # a writer's temporary: removed by the next run
        assert path.stat().st_size > 0, f"{path}: empty file under a final name"
        if path.suffix == ".png":
            assert imread(path).ndim == 3, path
        elif path.suffix == ".csv":
            assert len(read_table(path)) > 0, path
        elif path.suffix == ".html":
            assert path.read_text(encoding="utf-8").endswith("</html>\n"), path
        elif path.suffix == ".md":
            assert "## Provenance" in path.read_text(encoding="utf-8"), path
        elif path.name == MANIFEST_NAME:
            json.loads(path.read_text(encoding="utf-8"))
    manifest = read_manifest(folder)
    if manifest is None or not manifest["complete"]:
        return False
    missing = [name for name in manifest["files"] if not (folder / name).is_file()]
    assert not missing, f"{folder}: the manifest lists missing files {missing}"
    return True


def _remove(path: Path) -> None:
    for item in (path, path.with_name(path.name + ".csv"), path.with_name(path.name + ".fits")):
        if item.is_dir():
            shutil.rmtree(item)
        elif item.exists():
            item.unlink()


# -- the commands ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A 40-galaxy sample, a 120-blend dataset and its SEP results table (the commands' inputs)."""
    from napari_blendphot.blend.dataset import write_blend_dataset
    from napari_blendphot.sample.io_native import write_native
    from napari_blendphot.sample.toy import make_toy_sample

    root = tmp_path_factory.mktemp("chaos-inputs")
    sample = make_toy_sample(40, seed=1234)
    write_native(sample, root / "sample.fits")
    write_blend_dataset(sample, root / "dataset", n=120, test_fraction=0.5, seed=2)
    code, _ = _run(["predict", root / "dataset", "--methods", "sep", "--split", "all", "--chunk-size", "20",
                    "-o", root / "results"], root, root / "predict.log")
    assert code == 0, (root / "predict.log").read_text()
    return root


COMMANDS = {
    # name: (argv before -o, the inputs it must leave alone, output checker)
    "blend": (lambda root: ["blend", root / "sample.fits", "-n", "200", "--seed", "1", "--chunk-size", "20"],
              lambda root: [root / "sample.fits"], _check_dataset),
    "predict": (lambda root: ["predict", root / "dataset", "--methods", "sep", "--split", "all",
                              "--chunk-size", "20"],
                lambda root: [root / "dataset"], _check_results),
    "evaluate": (lambda root: ["evaluate", root / "results.csv"], lambda root: [root / "results.csv"],
                 _check_report),
}


def _digest(paths) -> dict:
    out = {}
    for path in paths:
        out.update({f"{path.name}/{k}": v for k, v in tree_digest(path).items()} if path.is_dir()
                   else tree_digest(path))
    return out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_killed_runs_leave_no_orphans_no_broken_outputs_and_a_rerun_succeeds(command, inputs, tmp_path):
    base, input_paths, check = COMMANDS[command]
    argv = base(inputs)
    watched = input_paths(inputs)
    before = _digest(watched)
    replaced, fresh = tmp_path / "replaced", tmp_path / "fresh"
    log = tmp_path / "run.log"

    code, duration = _run([*argv, "-o", replaced], tmp_path, log)
    assert code == 0, log.read_text()
    assert check(replaced)
    rng = np.random.default_rng([SEED, sorted(COMMANDS).index(command)])
    killed, orphans, finished = 0, [], 0
    for number in range(1, KILLS + 1):
        sig = SIGNALS[number % len(SIGNALS)]
        delay = float(rng.uniform(0.05, 0.9)) * duration
        overwrite = number % 2 == 0
        target = replaced if overwrite else fresh
        if not overwrite and check(fresh):
            _remove(fresh)  # a whole output from an earlier run: the next one starts from nothing
        was_killed, left = _kill_run([*argv, "-o", target, *(["--overwrite"] if overwrite else [])], tmp_path, log,
                                     delay, sig)
        killed += was_killed
        finished += not was_killed
        orphans += [f"kill {number} ({signal.Signals(sig).name} at {delay:.2f} s): {o}" for o in left]
        check(target)  # raises if a file under a final name does not read back
        assert _digest(watched) == before, f"kill {number}: an input changed"
        if number in RERUN_AFTER:
            code, _ = _run([*argv, "-o", replaced, "--overwrite"], tmp_path, log)
            assert code == 0, f"rerun after kill {number} with --overwrite failed:\n{log.read_text()}"
            assert check(replaced)
        if number == KILLS:
            if check(fresh):
                _remove(fresh)
            code, _ = _run([*argv, "-o", fresh], tmp_path, log)
            assert code == 0, f"plain rerun onto what kill {number} left failed:\n{log.read_text()}"
            assert check(fresh)
    assert killed >= 0.8 * KILLS, f"only {killed} of {KILLS} runs were still going when the signal came"
    assert not orphans, "processes outlived their killed run:\n" + "\n".join(orphans)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".") and ".partial-" in p.name]
    assert not leftovers, f"temporaries of killed runs not removed by the reruns: {leftovers}"
