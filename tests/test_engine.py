"""The out-of-process inference engine with SEP and a slow stand-in method (no Keras here)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import numpy as np
import pytest
from napari_blendphot.testing.stand_ins import (crash_worker, environment_variables, expected_slow_fluxes, flux_totals, refuse_outputs,
                                 slow_identity, toy_blends)

from napari_blendphot.deblend.base import BlendContext
from napari_blendphot.deblend.engine import Cancelled, EngineFuture, InferenceEngine
from napari_blendphot.deblend.executor import exit_code_of
from napari_blendphot.deblend.registry import register_method, unregister_method
from napari_blendphot.errors import InputError, WorkerError


@pytest.fixture(scope="module")
def blends():
    return toy_blends(10, seed=3)


@pytest.fixture(scope="module")
def slow_method():
    register_method("slow", "napari_blendphot.testing.stand_ins:SlowDeblender", label="slow stand-in", needs_worker=False)
    yield "slow"
    unregister_method("slow")


@pytest.fixture(scope="module")
def engine(slow_method):
    with InferenceEngine(["sep", slow_method], method_options={"sep": {"n_jobs": 1}}) as engine:
        yield engine


def test_sep_in_worker_matches_sep_in_process(engine, blends):
    from napari_blendphot.deblend.sep_baseline import SepTwoPass

    rng = np.random.default_rng(0)
    context = BlendContext(companion_shift=rng.integers(-20, 21, size=(len(blends), 2)),
                           central_radius=rng.uniform(2, 6, size=len(blends)))
    outputs = engine.run(blends, context, methods=["sep"], chunk_size=3)
    expected = SepTwoPass(n_jobs=1).deblend(blends, context)
    got = outputs["sep"]
    assert got.method == "sep"
    np.testing.assert_array_equal(got.fluxes, expected.fluxes)
    np.testing.assert_array_equal(got.masks, expected.masks)
    assert sorted(got.extra) == sorted(expected.extra)
    for key in expected.extra:
        np.testing.assert_array_equal(got.extra[key], expected.extra[key])


def test_progress_is_reported_per_chunk(engine, blends):
    calls = []
    outputs = engine.run(blends, methods=["slow"], chunk_size=4, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(4, 10), (8, 10), (10, 10)]
    np.testing.assert_allclose(outputs["slow"].fluxes, expected_slow_fluxes(blends))
    # Per-blend extras are concatenated across chunks in order.
    np.testing.assert_array_equal(outputs["slow"].extra["index_check"], [0, 1, 2, 3, 0, 1, 2, 3, 0, 1])


def test_stream_yields_chunks_in_order(engine, blends):
    chunks = list(engine.stream(blends, methods=["slow"], chunk_size=4))
    assert [(c.start, c.stop) for c in chunks] == [(0, 4), (4, 8), (8, 10)]
    np.testing.assert_allclose(chunks[1].outputs["slow"].fluxes, expected_slow_fluxes(blends[4:8]))


def test_single_stamp_and_dtype_conversions(engine, blends):
    single = engine.run(blends[0], methods=["slow", "sep"])
    assert single["slow"].fluxes.shape == (1, 2)
    assert single["sep"].masks.shape == (1, 2, 128, 128)
    reference = engine.run(blends[:3], methods=["slow", "sep"])
    for converted in (blends[:3].astype(np.float64), blends[:3].astype(">f4"), blends[:3].astype(">f8")):
        got = engine.run(converted, methods=["slow", "sep"])
        for name in ("slow", "sep"):
            np.testing.assert_array_equal(got[name].fluxes, reference[name].fluxes)


@pytest.mark.parametrize("bad, problem", [
    (np.zeros((3, 64, 64), np.float32), "expected (N, 128, 128)"),
    (np.zeros((0, 128, 128), np.float32), "empty"),
    (np.zeros((2, 2, 128, 128), np.float32), "expected (N, 128, 128)"),
])
def test_bad_batches_are_refused(engine, bad, problem):
    with pytest.raises(InputError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        engine.run(bad, methods=["slow"])


def test_nan_pixels_name_the_blend(engine, blends):
    bad = blends[:6].copy()
    bad[4, 10, 10] = np.nan
    with pytest.raises(InputError, match=r"blends\[4:6\].*NaN") as info:
        engine.run(bad, methods=["slow"], chunk_size=2)
    # The chunks before the bad one are done and kept.
    assert len(info.value.partial["slow"]) == 4


def test_unknown_method_and_bad_options(engine, blends):
    with pytest.raises(InputError, match="not a known deblending method"):
        engine.run(blends[:1], methods=["nosuchmethod"])
    with pytest.raises(InputError, match="chunk_size"):
        engine.run(blends[:1], methods=["slow"], chunk_size=0)
    with pytest.raises(InputError, match="backend"):
        InferenceEngine(["sep"], backend="theano")


def test_worker_exceptions_keep_type_and_message(engine, blends):
    """An InputError raised inside the worker arrives as an InputError with the same message."""
    from napari_blendphot.deblend.sep_baseline import SepTwoPass

    with pytest.raises(InputError) as direct:
        SepTwoPass(photometry="bogus")
    engine.set_method_options("sep", photometry="bogus")
    try:
        with pytest.raises(InputError) as remote:
            engine.run(blends[:2], methods=["sep"])
    finally:
        engine.set_method_options("sep", n_jobs=1)
    assert str(remote.value) == str(direct.value)
    assert remote.value.source == direct.value.source and remote.value.hint == direct.value.hint
    assert "SepTwoPass" in remote.value.worker_traceback or "sep_baseline" in remote.value.worker_traceback
    # The worker survived and serves the next request.
    assert engine.run(blends[:2], methods=["sep"])["sep"].fluxes.shape == (2, 2)


def test_unpicklable_factory_is_refused_before_sending(blends):
    register_method("lambdamethod", lambda: None, needs_worker=False)
    try:
        engine = InferenceEngine(["lambdamethod"])
        with pytest.raises(InputError, match="cannot be sent to the worker"):
            engine.run(blends[:1])
        assert engine.worker_pid is None  # nothing was started for it
    finally:
        unregister_method("lambdamethod")


def test_cancel_between_chunks_keeps_partial_results(engine, blends):
    cancel = threading.Event()

    def progress(done, total):
        if done >= 4:
            cancel.set()

    with pytest.raises(Cancelled) as info:
        engine.run(blends, methods=["slow"], chunk_size=2, progress=progress, cancel=cancel)
    assert info.value.done == 4 and info.value.total == 10
    np.testing.assert_allclose(info.value.partial["slow"].fluxes, expected_slow_fluxes(blends[:4]))
    # Still usable afterwards.
    assert len(engine.run(blends[:3], methods=["slow"])["slow"]) == 3


def test_each_methods_own_time_in_the_worker_is_reported(engine, blends):
    engine.set_method_options("slow", seconds_per_blend=0.03)
    try:
        engine.run(blends[:4], methods=["sep", "slow"], chunk_size=2)
        seconds = dict(engine.last_compute_seconds)
        assert sorted(seconds) == ["sep", "slow"] and seconds["sep"] > 0
        assert seconds["slow"] >= 4 * 0.03  # summed over the request's two chunks (it sleeps that long)
        engine.run(blends[:1], methods=["sep"])
        assert list(engine.last_compute_seconds) == ["sep"]  # per request, not accumulated across requests
    finally:
        engine.set_method_options("slow")


def test_run_then_post_processes_the_outputs_in_the_worker(engine, blends):
    outputs, totals = engine.run_then(blends[:3], None, ["sep", "slow"], flux_totals, 2.0)
    assert list(outputs) == ["sep", "slow"] and len(outputs["slow"]) == 3
    np.testing.assert_allclose(outputs["slow"].fluxes, expected_slow_fluxes(blends[:3]))
    assert totals == pytest.approx({name: 2.0 * float(np.nansum(out.fluxes)) for name, out in outputs.items()})
    assert sorted(engine.last_compute_seconds) == ["sep", "slow"]
    # A failing step keeps its type and message, and the outputs the methods gave.
    with pytest.raises(InputError, match="refused \\['sep'\\]") as info:
        engine.run_then(blends[:2], None, ["sep"], refuse_outputs)
    assert info.value.in_post and len(info.value.partial["sep"]) == 2
    # A failing method raises as in run(); the engine stays usable.
    with pytest.raises(InputError):
        engine.run_then(blends[:2], None, ["nosuchmethod"], flux_totals)
    assert engine.run_then(blends[:1], None, ["slow"], flux_totals)[1]["slow"] > 0
    with pytest.raises(InputError, match="cannot be sent"):
        engine.run_then(blends[:1], None, ["slow"], lambda outputs: None)


def test_worker_environment_is_set_and_the_callers_own_values_win(monkeypatch):
    monkeypatch.setenv("BLENDPHOT_TEST_KEPT", "caller")
    environment = {"BLENDPHOT_TEST_SET": "engine", "BLENDPHOT_TEST_KEPT": "engine"}
    with InferenceEngine(["sep"], environment=environment) as engine:
        seen = engine.call(environment_variables, "BLENDPHOT_TEST_SET", "BLENDPHOT_TEST_KEPT")
    assert seen == {"BLENDPHOT_TEST_SET": "engine", "BLENDPHOT_TEST_KEPT": "caller"}
    assert "BLENDPHOT_TEST_SET" not in os.environ  # set in the worker only


def test_submit_and_cancel_a_running_future(engine, slow_method, blends):
    engine.set_method_options("slow", seconds_per_blend=0.05)
    try:
        started = threading.Event()
        future = engine.submit(blends, methods=["slow"], chunk_size=1, progress=lambda d, t: started.set())
        assert isinstance(future, EngineFuture)
        assert started.wait(30)
        assert future.cancel()
        with pytest.raises(Cancelled) as info:
            future.result(timeout=30)
        done = info.value.done
        assert 1 <= done < len(blends)
        np.testing.assert_allclose(info.value.partial["slow"].fluxes, expected_slow_fluxes(blends[:done]))
        # Cancelled is also a concurrent.futures.CancelledError, what GUI code expects.
        import concurrent.futures

        assert isinstance(info.value, concurrent.futures.CancelledError)
        # A normal submission afterwards completes.
        result = engine.submit(blends[:2], methods=["slow"]).result(timeout=30)
        np.testing.assert_allclose(result["slow"].fluxes, expected_slow_fluxes(blends[:2]))
    finally:
        engine.set_method_options("slow")


def test_worker_killed_mid_batch(engine, slow_method, blends):
    """SIGKILL while a chunk runs: WorkerError naming signal, method and chunk; finished chunks kept."""
    # Slow enough (2 s per chunk) that a late timer thread on a loaded machine still kills chunk 2.
    engine.set_method_options("slow", seconds_per_blend=1.0)
    try:
        pid = engine.start()
        killer = {}

        def progress(done, total):
            if done == 2 and not killer:  # chunk 2 (blends 2-3) now runs for ~2 s
                killer["timer"] = threading.Timer(0.05, os.kill, (pid, signal.SIGKILL))
                killer["timer"].start()

        with pytest.raises(WorkerError) as info:
            engine.run(blends, methods=["slow"], chunk_size=2, progress=progress)
        message = str(info.value)
        assert f"pid {pid}" in message and "SIGKILL" in message
        assert "'slow'" in message and "blends 2-3" in message
        assert info.value.exitcode == -signal.SIGKILL
        assert info.value.method == "slow"
        np.testing.assert_allclose(info.value.partial["slow"].fluxes, expected_slow_fluxes(blends[:2]))
        restarts = engine.restarts
        # The next request starts a new worker transparently.
        outputs = engine.run(blends[:3], methods=["slow", "sep"])
        assert engine.worker_pid not in (None, pid)
        assert engine.restarts == restarts
        np.testing.assert_allclose(outputs["slow"].fluxes, expected_slow_fluxes(blends[:3]))
    finally:
        engine.set_method_options("slow")


def test_worker_exit_code_is_reported_and_idle_death_is_recovered(engine, blends):
    with pytest.raises(WorkerError, match="exited with code 3"):
        engine.call(crash_worker, 3)
    assert engine.call(slow_identity, 0.0) == 0.0
    # Killed while idle: the next request notices and starts a new worker.
    pid = engine.start()
    os.kill(pid, signal.SIGKILL)
    # Dead for sure before the next request (no fixed sleep; exit_code_of asks until the code is there,
    # since the pool's own thread may reap the process first).
    process = engine.worker_process
    exit_code_of(process, wait=30)
    assert not process.is_alive()
    assert engine.run(blends[:1], methods=["slow"])["slow"].fluxes.shape == (1, 2)
    assert engine.worker_pid != pid


def test_close_stops_the_worker(slow_method, blends):
    engine = InferenceEngine([slow_method])
    pid = engine.start()
    process = engine.worker_process
    engine.close()
    assert not process.is_alive()
    with pytest.raises(WorkerError, match="closed"):
        engine.run(blends[:1])
    assert pid is not None


def test_abort_stops_a_long_chunk_at_once(slow_method, blends):
    # A 20 s chunk: "at once" is then told apart from "at the end of the chunk" by a wide margin.
    with InferenceEngine([slow_method], method_options={slow_method: {"seconds_per_blend": 5.0}}) as engine:
        engine.start()
        future = engine.submit(blends, chunk_size=4)
        time.sleep(0.3)  # the first chunk (4 x 5 s) is running
        started = time.perf_counter()
        assert engine.abort()
        with pytest.raises(Cancelled, match="aborted") as info:
            future.result(timeout=60)
        assert time.perf_counter() - started < 10  # not the ~20 s left of the chunk
        assert info.value.done == 0 and info.value.total == 10 and info.value.partial == {}
        # The engine recovers: not counted as a crash, next request works.
        engine.set_method_options(slow_method, seconds_per_blend=0.0)
        assert len(engine.run(blends[:2])[slow_method]) == 2
        assert engine.restarts == 0


def test_close_ends_every_submitted_future(slow_method, blends):
    import concurrent.futures

    engine = InferenceEngine([slow_method], method_options={slow_method: {"seconds_per_blend": 0.05}})
    running = engine.submit(blends, chunk_size=2)
    queued = engine.submit(blends, chunk_size=2)
    time.sleep(0.5)
    engine.close()
    with pytest.raises(concurrent.futures.CancelledError):
        running.result(timeout=30)
    with pytest.raises(concurrent.futures.CancelledError):
        queued.result(timeout=30)
    assert queued.cancelled()


def test_no_tensorflow_in_the_test_process():
    assert "tensorflow" not in sys.modules
    assert "keras" not in sys.modules
