"""``napari_blendphot.predict``: any blend set in, the results table out (no Keras in this process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from napari_blendphot import predict
from napari_blendphot.cli import main
from napari_blendphot.deblend.engine import Cancelled, InferenceEngine
from napari_blendphot.deblend.registry import register_method, unregister_method
from napari_blendphot.errors import InputError
from napari_blendphot.testing.stand_ins import expected_slow_fluxes


def _assert_all_gone_within(processes, seconds: float) -> None:
    """Every one of *processes* (psutil.Process) ended within *seconds* (the chaos test's invariant)."""
    import psutil

    def running(process) -> bool:
        try:
            return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(running(p) for p in processes):
        time.sleep(0.1)
    assert not [p.pid for p in processes if running(p)]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, toy_sample):
    from napari_blendphot.blend.dataset import write_blend_dataset

    folder = tmp_path_factory.mktemp("prediction") / "blends"
    return write_blend_dataset(toy_sample, folder, n=16, test_fraction=0.5, seed=9, chunk_size=4)


@pytest.fixture(scope="module")
def engine():
    register_method("slowstandin", "napari_blendphot.testing.stand_ins:SlowDeblender", label="slow stand-in",
                    needs_worker=False)
    register_method("witherrors", "napari_blendphot.testing.stand_ins:ErrorBarDeblender", label="with errors",
                    needs_worker=False, flux_errors=True)
    register_method("raising", "napari_blendphot.testing.stand_ins:RaisingDeblender", needs_worker=False)
    with InferenceEngine(["sep"], method_options={"sep": {"n_jobs": 1}}) as engine:
        yield engine
    for name in ("slowstandin", "witherrors", "raising"):
        unregister_method(name)


def test_a_folder_a_selection_and_arrays_give_the_same_numbers(dataset_dir, engine):
    from napari_blendphot.blend.dataset import BlendDataset

    dataset = BlendDataset(dataset_dir)
    from_folder = predict(dataset_dir, ["sep", "slowstandin"], split="test", engine=engine, chunk_size=3,
                          method_options={"slowstandin": {"seconds_per_blend": 0.0}})
    test = dataset.select(split="test")
    from_selection = predict(test, ["sep", "slowstandin"], engine=engine, chunk_size=8,
                             method_options={"slowstandin": {"seconds_per_blend": 0.0}})
    assert len(from_folder) == len(test) == 8
    np.testing.assert_array_equal(from_folder["id"], test.catalog["id"])
    for column in ("g1_flux_sep", "g2_flux_sep", "g1_iou_sep", "detection_sep", "g1_flux_slowstandin"):
        np.testing.assert_array_equal(from_folder[column], from_selection[column])
    np.testing.assert_allclose(np.column_stack([from_folder["g1_flux_slowstandin"], from_folder["g2_flux_slowstandin"]]),
                               expected_slow_fluxes(test.blends))
    # Bare arrays: no truth, so no IoU and SEP assigns without the true shifts; the rows are numbered.
    bare = predict(test.blends, ["slowstandin"], engine=engine, method_options={"slowstandin": {"seconds_per_blend": 0}})
    assert bare.colnames[0] == "id" and list(bare["id"]) == list(range(8)) and "g1_flux" not in bare.colnames
    np.testing.assert_array_equal(bare["g1_flux_slowstandin"], from_folder["g1_flux_slowstandin"])
    assert from_folder.meta["provenance"]["step"] == "predict"
    assert from_folder.meta["provenance"]["parameters"]["split"] == "test"


def test_progress_and_cancel_keep_the_chunks_done(dataset_dir, engine):
    cancel = threading.Event()
    calls = []

    def progress(done, total):
        calls.append((done, total))
        if done >= 4:
            cancel.set()

    with pytest.raises(Cancelled) as info:
        predict(dataset_dir, ["slowstandin"], split="all", engine=engine, chunk_size=2, progress=progress,
                cancel=cancel, method_options={"slowstandin": {"seconds_per_blend": 0.0}})
    assert calls == [(2, 16), (4, 16)]
    assert info.value.done == 4 and info.value.total == 16
    assert len(info.value.partial) == 4 and list(info.value.partial["id"]) == [0, 1, 2, 3]
    assert engine.worker_pid is not None  # the shared engine stays usable


def test_flux_errors_become_columns_and_metadata(dataset_dir, engine):
    table = predict(dataset_dir, ["sep", "witherrors"], split="test", engine=engine)
    assert table.meta["flux_errors"] == {"sep": True, "witherrors": True}  # SEP's errors from the noise
    flux = np.column_stack([table["g1_flux_witherrors"], table["g2_flux_witherrors"]])
    flux_err = np.column_stack([table["g1_flux_err_witherrors"], table["g2_flux_err_witherrors"]])
    mag_err = np.column_stack([table["g1_mag_err_witherrors"], table["g2_mag_err_witherrors"]])
    measured = np.isfinite(flux)
    assert measured.any() and (~measured).any()  # the stand-in leaves some galaxies unmeasured
    assert np.all(np.isfinite(flux_err[measured])) and np.all(np.isnan(flux_err[~measured]))
    np.testing.assert_allclose(mag_err[measured], 2.5 / np.log(10) * flux_err[measured] / flux[measured])
    sep_flux = np.asarray(table["g1_flux_sep"], float)
    sep_err = np.asarray(table["g1_flux_err_sep"], float)
    assert np.all(sep_err[np.isfinite(sep_flux)] > 0) and np.all(np.isnan(sep_err[~np.isfinite(sep_flux)]))
    from napari_blendphot.report.results import methods_in

    table.meta.pop("methods")
    assert methods_in(table) == ["sep", "witherrors"]  # g1_flux_err_<m> is not a method "err_<m>"


def test_a_nan_error_on_a_measured_flux_is_refused():
    from napari_blendphot.deblend.base import DeblendOutput
    from napari_blendphot.report.results import build_results_table

    fluxes = np.array([[1.0, np.nan], [2.0, 3.0]])
    errors = np.array([[0.1, np.nan], [np.nan, 0.3]])
    with pytest.raises(InputError, match="1 measured flux"):
        build_results_table({"id": [0, 1]}, [DeblendOutput("m", fluxes, flux_errors=errors)])
    with pytest.raises(InputError, match="would overwrite the column"):
        build_results_table({"id": [0, 1]}, [DeblendOutput("m", fluxes, extra={"g1_flux": np.zeros(2)})])


def test_a_dataset_replaced_during_the_run_gives_an_error_not_a_mixed_table(toy_sample, tmp_path, capsys,
                                                                               monkeypatch):
    """Issue 19, item 3: predict used to read each chunk afresh and the catalogue once, so a dataset
    rewritten mid-run gave a table mixing two datasets (exit 0)."""
    from napari_blendphot.blend.dataset import write_blend_dataset
    from napari_blendphot.cli import _predict

    folder = write_blend_dataset(toy_sample, tmp_path / "blends", n=12, test_fraction=0.5, seed=1)
    replaced = []

    def replace_after_the_first_chunk(label):
        def progress(done, total):
            if not replaced:
                write_blend_dataset(toy_sample, folder, n=12, test_fraction=0.5, seed=2, overwrite=True)
                replaced.append(done)
        return progress

    monkeypatch.setattr(_predict, "progress_printer", replace_after_the_first_chunk)
    out = tmp_path / "results"
    code = main(["predict", str(folder), "--methods", "sep", "--split", "all", "--chunk-size", "4", "-o", str(out)])
    error = capsys.readouterr().err
    assert replaced and code == 2
    assert "changed while it was being read" in error and "Traceback" not in error
    assert not (tmp_path / "results.csv").exists() and not (tmp_path / "results.fits").exists()


@pytest.mark.parametrize("argv_tail, problem", [
    (["--methods", "sep", "--weights", "sep=x.keras"], "method 'sep' takes no weights file"),
    (["--methods", "raising"], "StandInFailure: the stand-in method gave up"),
], ids=["weights-for-sep", "third-party-method-raises"])
def test_cli_errors_are_one_line(dataset_dir, engine, tmp_path, capsys, argv_tail, problem):
    code = main(["predict", str(dataset_dir), "-o", str(tmp_path / "r"), *argv_tail])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert problem in error[-1] and error[-1].startswith("blendphot predict: error:")
    assert not any("Traceback" in line for line in error)


def test_an_empty_keras_backend_is_fine_for_sep_alone(dataset_dir, tmp_path, monkeypatch):
    """Issue 19, item 10: KERAS_BACKEND="" was refused even when no network runs."""
    monkeypatch.setenv("KERAS_BACKEND", "")
    assert main(["predict", str(dataset_dir), "--methods", "sep", "-o", str(tmp_path / "r")]) == 0


def test_a_missing_keras_backend_names_the_ways_out(dataset_dir, tmp_path, capsys, monkeypatch):
    """Issue 19, item 7: without TensorFlow the worker failed with a traceback after starting."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real(name, *a))
    code = main(["predict", str(dataset_dir), "--methods", "sep,blend2flux", "--backend", "tensorflow",
                 "-o", str(tmp_path / "r")])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert "tensorflow is not installed" in error and "--backend" in error and "--methods sep" in error


#: ``blendphot`` started with SIGINT and SIGTERM at their defaults and unblocked, as a shell starts it.  A child
#: inherits this pytest process's signal dispositions at the instant of its fork and the forking thread's
#: signal mask, which other libraries loaded in the suite may have changed for a moment (C ``system()``
#: ignores SIGINT process-wide while it runs); in full-suite runs a child now and then ignored the test's
#: Ctrl-C entirely (it finished all blends and exited 0), never when run alone.
AS_FROM_A_SHELL = [sys.executable, "-c",
                   "import os, signal, sys\n"
                   "for number in (signal.SIGINT, signal.SIGTERM):\n"
                   "    signal.signal(number, signal.SIG_DFL)\n"
                   "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})\n"
                   "os.execv(sys.executable, [sys.executable, '-m', 'napari_blendphot.cli', *sys.argv[1:]])\n"]


def test_ctrl_c_prints_one_line_and_leaves_no_process(toy_sample, tmp_path):
    """Ctrl-C reaches the whole process group (as from a terminal): one line, no child tracebacks, no orphan."""
    psutil = pytest.importorskip("psutil")
    from napari_blendphot.blend.dataset import write_blend_dataset

    # Enough one-blend chunks that the run is still going when the signal comes: it is sent once the
    # first tenth is reported, and on a loaded machine 400 chunks had all been done by then (CI: exit 0).
    dataset_dir = write_blend_dataset(toy_sample, tmp_path / "blends", n=1200, test_fraction=0.0, seed=3,
                                      chunk_size=400)
    log = tmp_path / "stderr"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "w") as stderr:
        command = subprocess.Popen([*AS_FROM_A_SHELL, "predict", str(dataset_dir),
                                    "--methods", "sep", "--split", "all", "--chunk-size", "1", "-o",
                                    str(tmp_path / "r")], stdout=subprocess.DEVNULL, stderr=stderr, env=env,
                                   start_new_session=True)
        caller = psutil.Process(command.pid)
        deadline = time.monotonic() + 120
        workers = []
        while time.monotonic() < deadline and not (workers and "predict [" in log.read_text()):
            workers = [p for p in caller.children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]
            time.sleep(0.05)  # until the worker runs and the first tenth of the blends is done
        assert workers and "predict [" in log.read_text(), log.read_text()
        descendants = caller.children(recursive=True)
        os.killpg(command.pid, signal.SIGINT)
        assert command.wait(timeout=60) == 130, log.read_text()
    lines = log.read_text().splitlines()
    assert lines[-1] == "blendphot predict: interrupted", lines
    assert not any(line.endswith("1200/1200") for line in lines), lines  # stopped mid-run
    assert not any("Traceback" in line or "KeyboardInterrupt" in line for line in lines), lines
    _assert_all_gone_within(descendants, 5.0)


def test_sigterm_of_predict_stops_cleanly(toy_sample, tmp_path):
    """A scheduler's SIGTERM mid-chunk (SEP's pool running in the worker): one line, exit 143, nothing left
    behind, and no semaphores left for multiprocessing's resource tracker to complain about."""
    psutil = pytest.importorskip("psutil")
    from napari_blendphot.blend.dataset import write_blend_dataset

    # One chunk long enough (~1-3 s of SEP) to be still running when the pool is seen, even on a loaded machine.
    folder = write_blend_dataset(toy_sample, tmp_path / "blends", n=900, test_fraction=0.0, seed=3, chunk_size=300)
    log = tmp_path / "stderr"
    with open(log, "w") as stderr:
        command = subprocess.Popen([*AS_FROM_A_SHELL, "predict", str(folder),
                                    "--methods", "sep", "--split", "all", "--chunk-size", "900", "-o",
                                    str(tmp_path / "r")], stdout=subprocess.DEVNULL, stderr=stderr,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1"))
        caller = psutil.Process(command.pid)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(caller.children(recursive=True)) < 4:  # tracker, worker, pool
            time.sleep(0.05)
        descendants = caller.children(recursive=True)
        assert len(descendants) >= 4, log.read_text()
        command.send_signal(signal.SIGTERM)
        assert command.wait(timeout=60) == 128 + signal.SIGTERM
    text = log.read_text()
    assert text.splitlines()[-1] == "blendphot predict: terminated", text
    assert "Traceback" not in text and "leaked" not in text, text
    _assert_all_gone_within(descendants, 5.0)


def test_after_sigterm_a_broken_pool_pipe_at_exit_is_not_printed(monkeypatch, capsys):
    """Bug: after SIGTERM, concurrent.futures' exit hook could hit the stopped pool's broken wake-up pipe and
    print an ignored-exception traceback under 'blendphot predict: terminated' (the test above failed so once)."""
    import signal
    import types

    from napari_blendphot.cli import _predict

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        with _predict._stopped_cleanly_by_sigterm():
            signal.raise_signal(signal.SIGTERM)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert capsys.readouterr().err.splitlines() == ["blendphot predict: terminated"]
    broken = types.SimpleNamespace(exc_type=BrokenPipeError, exc_value=BrokenPipeError(32, "Broken pipe"),
                                   exc_traceback=None, err_msg=None, object=None)
    other = types.SimpleNamespace(exc_type=ValueError, exc_value=ValueError("kept"), exc_traceback=None,
                                  err_msg=None, object=None)
    sys.unraisablehook(broken)
    sys.unraisablehook(other)
    assert seen == [other]  # the broken pipe is dropped, anything else still reported
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back


def test_a_method_with_its_own_shipped_model_is_refused_when_that_model_is_missing(monkeypatch):
    """'ensemble' shares blend2flux's network but not its model: blend2flux's being there is not enough."""
    import dataclasses

    from napari_blendphot.deblend import registry
    from napari_blendphot.errors import InputError
    from napari_blendphot.prediction import method_options_for

    assert method_options_for(["ensemble"]) == {}
    info = registry.method_info("ensemble")
    monkeypatch.setitem(registry._registry, "ensemble", dataclasses.replace(info, default_weights="no_such_model"))
    with pytest.raises(InputError, match="method 'ensemble': no shipped model is installed for it"):
        method_options_for(["ensemble"])
    assert method_options_for(["blend2flux"]) == {}
