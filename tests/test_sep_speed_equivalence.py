"""The optimised SEP two-pass gives what a plain implementation of the method gives.

``reference_two_pass`` below is the two-pass written the straightforward way
(sep's default settings, the full segmentation map compared for every mask,
the placeholder arithmetic of the Kron aperture always applied), following the
method as ``sep_baseline``'s docstring states it.  The optimised
``SepTwoPass`` (stamp-sized pixel stack, box-only mask writes, vectorised
checks, kept process pool) must reproduce it exactly on seeded blends, for the
paper's settings and every option.  Also here: the pixel-stack bookkeeping and
the kept pool's behaviour (reuse, opt-out, shutdown, recovery, workers that
outlive a killed parent).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from napari_blendphot.testing.stand_ins import WorkerPid

from napari_blendphot.deblend import parallel
from napari_blendphot.deblend.base import BlendContext
from napari_blendphot.deblend.sep_baseline import (
    COLD_PASS,
    HOT_PASS,
    PASS_NO_NOISE,
    PASS_SEP_ERROR,
    SepTwoPass,
    stamp_sized_pixel_stack,
)
from napari_blendphot.match.assign import DETECTION_NONE, assign_detections
from napari_blendphot.sample.toy import sersic_stamp

N_BLENDS = 48


def seeded_blends(n: int = N_BLENDS, seed: int = 7):
    """Sersic pairs with noise: separated, close (hot pass), superposed, faint, plus blank and constant stamps."""
    rng = np.random.default_rng(seed)
    blends = np.empty((n, 128, 128), np.float32)
    shifts = np.empty((n, 2))
    radii = np.empty(n)
    for i in range(n):
        r1, r2 = rng.uniform(1.5, 9.0, size=2)
        distance = rng.uniform(0.3, 4.0) * max(r1, r2)
        angle = rng.uniform(0, 2 * np.pi)
        dy, dx = int(round(distance * np.sin(angle))), int(round(distance * np.cos(angle)))
        f1, f2 = rng.uniform(2.0, 60.0, size=2)
        central = sersic_stamp(f1, r1, rng.choice([1.0, 4.0]), q=rng.uniform(0.3, 1.0), theta=rng.uniform(0, np.pi))
        companion = sersic_stamp(f2, r2, rng.choice([1.0, 2.0]), dy=dy, dx=dx, q=rng.uniform(0.3, 1.0))
        blends[i] = central + companion + rng.normal(0.0, 0.01, (128, 128)).astype(np.float32)
        shifts[i] = dy, dx
        radii[i] = r1
    blends[3] = 0.0  # blank padding
    blends[4] = 2.5  # constant
    blends[5] += np.float32(0.03)  # a pedestal for the background subtraction
    shifts[6] = np.nan  # no truth: the heuristic assignment
    for row, (dy, dx) in ((7, (-30, 25)), (8, (35, 35))):  # a third galaxy: more than two sources
        blends[row] += sersic_stamp(30.0, 3.0, 1.0, dy=dy, dx=dx)
    # A small source in a negative ring: its Kron sum is negative, so the radius is
    # undefined and the circular aperture replaces the ellipse.
    yy, xx = np.mgrid[:128, :128] - np.array([24, 24])[:, None, None]
    r2 = yy ** 2 + xx ** 2
    blends[9] += (0.6 * np.exp(-r2 / 3.0) - 0.08 * ((r2 >= 16) & (r2 <= 100))).astype(np.float32)
    return blends, BlendContext(shifts, radii)


def reference_kron(data, objects, segmap, rms, mask_other_segments):
    import sep

    x, y, a, b, theta = (objects[key] for key in ("x", "y", "a", "b", "theta"))
    masking = {}
    if mask_other_segments:
        masking = {"seg_id": np.arange(1, len(objects) + 1, dtype=np.int32), "segmap": segmap}
    good = (a > 0) & (b > 0) & np.isfinite(a) & np.isfinite(b)
    a_safe, b_safe, theta_safe = np.where(good, a, 1.0), np.where(good, b, 1.0), np.where(good, theta, 0.0)
    kron_radius, _ = sep.kron_radius(data, x, y, a_safe, b_safe, theta_safe, 6.0, **masking)
    defined = good & np.isfinite(kron_radius) & (kron_radius > 0)
    scale = np.where(defined, np.maximum(2.5 * np.where(defined, kron_radius, 0.0), 3.5), 1.0)
    circle = ~defined | (scale * np.sqrt(a_safe * b_safe) < 1.75)
    flux, error, _ = sep.sum_ellipse(data, x, y, a_safe, b_safe, theta_safe, scale, err=rms, subpix=1, **masking)
    flux, error = np.array(flux, np.float64), np.array(error, np.float64)
    for i in np.flatnonzero(circle):
        circle_masking = {"seg_id": masking["seg_id"][i:i + 1], "segmap": segmap} if masking else {}
        circle_flux, circle_error, _ = sep.sum_circle(data, x[i:i + 1], y[i:i + 1], 1.75, err=rms, subpix=1,
                                                      **circle_masking)
        flux[i], error[i] = circle_flux[0], circle_error[0]
    return flux, error


def reference_two_pass(blends, context, subtract_background=True, photometry="auto", background_box=128,
                       mask_other_segments=True):
    """The two-pass, one blend at a time, the plain way, with sep's default settings."""
    import sep

    n = len(blends)
    fluxes, errors = np.full((n, 2), np.nan), np.full((n, 2), np.nan)
    masks = np.zeros((n, 2, 128, 128), np.float32)
    detection = np.full(n, DETECTION_NONE, np.int8)
    n_sources = np.zeros(n, np.int16)
    passes = np.zeros(n, np.int8)
    assignment = np.zeros(n, np.int8)
    for i, stamp in enumerate(blends):
        shift = None if context is None else context.companion_shift[i]
        radius = None if context is None else context.central_radius[i]
        assignment[i] = shift is not None and bool(np.isfinite(shift).all())
        if stamp.min() == stamp.max():
            passes[i] = PASS_NO_NOISE
            continue
        filter_size = 1 if background_box >= 128 else 3
        background = sep.Background(stamp, bw=background_box, bh=background_box, fw=filter_size, fh=filter_size)
        rms = background.globalrms
        data = stamp
        if subtract_background:
            data = stamp - (np.float32(background.globalback) if background_box >= 128 else background.back())
        found = []
        for params in (COLD_PASS, HOT_PASS):
            objects, segmap = sep.extract(data, params.threshold, err=rms, minarea=params.minarea,
                                          deblend_cont=params.deblend_cont, deblend_nthresh=params.deblend_nthresh,
                                          segmentation_map=True)
            found.append((objects, segmap))
            if len(objects) != 1:
                break
        objects, segmap = found[-1]
        passes[i] = len(found) - 1
        if len(objects) == 0:
            continue
        if photometry == "auto":
            flux, error = reference_kron(data, objects, segmap, rms, mask_other_segments)
        else:
            flux, error = objects["flux"].astype(np.float64), rms * np.sqrt(objects["npix"].astype(np.float64))
        chosen = assign_detections(objects["x"], objects["y"], flux, companion_shift=shift, central_radius=radius)
        for slot, source in enumerate((chosen.central, chosen.companion)):
            if source >= 0:
                fluxes[i, slot], errors[i, slot] = flux[source], error[source]
                masks[i, slot] = segmap == source + 1
        detection[i], n_sources[i], assignment[i] = chosen.detection, len(objects), chosen.used_truth
    return fluxes, errors, masks, detection, n_sources, passes, assignment


def assert_matches_reference(output, reference):
    fluxes, errors, masks, detection, n_sources, passes, assignment = reference
    np.testing.assert_array_equal(output.fluxes, fluxes)
    # The errors travel as flux_errors, through the process pool too.
    np.testing.assert_array_equal(output.flux_errors, errors)
    np.testing.assert_array_equal(output.masks, masks)
    for key, expected in (("detection", detection), ("n_sources", n_sources), ("pass", passes),
                          ("assignment", assignment)):
        np.testing.assert_array_equal(output.extra[key], expected, err_msg=key)
        assert output.extra[key].dtype == expected.dtype, key


@pytest.fixture(scope="module")
def batch():
    return seeded_blends()


def test_the_seeded_blends_exercise_every_branch(batch, monkeypatch):
    import sep

    blends, context = batch
    circles = []
    sum_circle = sep.sum_circle

    def recording_sum_circle(data, x, *args, **kwargs):
        circles.append(len(x))
        return sum_circle(data, x, *args, **kwargs)

    monkeypatch.setattr(sep, "sum_circle", recording_sum_circle)
    out = SepTwoPass().deblend(blends, context)
    assert circles  # Kron's circular fallback
    passes, detection = out.extra["pass"], out.extra["detection"]
    assert {0, 1, PASS_NO_NOISE} <= set(passes.tolist())
    assert {DETECTION_NONE, 0, 1, 2, 3} <= set(detection.tolist())
    assert set(out.extra["assignment"].tolist()) == {0, 1}


@pytest.mark.parametrize("options", [
    {},
    {"subtract_background": False},
    {"photometry": "iso"},
    {"mask_other_segments": False},
    {"background_box": 64},
    {"subtract_background": False, "photometry": "iso"},
], ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items()) or "paper")
def test_two_pass_equals_the_reference(batch, options):
    blends, context = batch
    assert_matches_reference(SepTwoPass(**options).deblend(blends, context),
                             reference_two_pass(blends, context, **options))


@pytest.mark.parametrize("mask_other_segments", [True, False])
def test_kron_flux_equals_the_reference_on_edge_shapes(batch, mask_other_segments):
    """Tiny but valid ellipses (the circle replaces them on the fast path), degenerate and NaN shapes."""
    import sep

    blends, _ = batch
    data = blends[0] - np.float32(np.median(blends[0]))
    objects, segmap = sep.extract(data, 5.0, err=0.01, minarea=10, segmentation_map=True)
    assert len(objects) >= 2
    method = SepTwoPass(mask_other_segments=mask_other_segments)
    tiny = objects.copy()
    tiny["a"], tiny["b"] = 0.3, 0.2  # valid shape, aperture below the 1.75 px circle
    degenerate = objects.copy()
    degenerate["a"][0], degenerate["b"][-1] = 0.0, np.nan
    for case in (objects, tiny, degenerate):
        flux, error = method._kron_flux(data, case, segmap, 0.01)
        expected_flux, expected_error = reference_kron(data, case, segmap, 0.01, mask_other_segments)
        np.testing.assert_array_equal(flux, expected_flux)
        np.testing.assert_array_equal(error, expected_error)


def test_two_pass_equals_the_reference_without_truth(batch):
    blends, _ = batch
    assert_matches_reference(SepTwoPass().deblend(blends), reference_two_pass(blends, None))


def test_pool_equals_the_reference(batch):
    blends, context = batch
    pooled = parallel.deblend_in_processes(SepTwoPass(), blends, context, n_jobs=2, chunk_size=16,
                                           start_method="fork")
    assert_matches_reference(pooled, reference_two_pass(blends, context))


def test_pooled_deblend_carries_the_flux_errors(batch, monkeypatch):
    from napari_blendphot.deblend import sep_baseline

    blends, context = batch
    monkeypatch.setattr(sep_baseline, "PARALLEL_MIN_BLENDS", 8)
    assert_matches_reference(SepTwoPass(n_jobs=2).deblend(blends, context), reference_two_pass(blends, context))


def test_the_paper_configuration_is_the_two_pass_with_the_paper_options(batch):
    """``seppaper``: no background subtraction, isophotal sums, sep's default 64-pixel meshes."""
    from napari_blendphot.deblend.sep_baseline import SepPaper

    blends, context = batch
    options = {"subtract_background": False, "photometry": "iso", "background_box": 64}
    out = SepPaper().deblend(blends, context)
    assert (out.method, out.metadata["method"], SepPaper.name) == ("seppaper", "seppaper", "seppaper")
    assert "isophotal" in out.metadata["label"]
    assert_matches_reference(out, reference_two_pass(blends, context, **options))


def test_pixel_stack_is_restored_and_shared():
    import sep

    before = sep.get_extract_pixstack()
    with stamp_sized_pixel_stack(128 * 128):
        assert sep.get_extract_pixstack() == 128 * 128 + 2
        with stamp_sized_pixel_stack(64 * 64):  # nested, smaller: keeps the larger stack
            assert sep.get_extract_pixstack() == 128 * 128 + 2
        assert sep.get_extract_pixstack() == 128 * 128 + 2
    assert sep.get_extract_pixstack() == before
    with pytest.raises(RuntimeError), stamp_sized_pixel_stack(128 * 128):
        raise RuntimeError("the block failed")
    assert sep.get_extract_pixstack() == before


def test_pixel_stack_restored_after_concurrent_threads(batch):
    import sep

    blends, context = batch
    before = sep.get_extract_pixstack()
    expected = SepTwoPass().deblend(blends[:12], context.subset(slice(0, 12)))
    results, errors = [], []

    def work():
        try:
            results.append(SepTwoPass().deblend(blends[:12], context.subset(slice(0, 12))))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and len(results) == 3
    for result in results:
        np.testing.assert_array_equal(result.fluxes, expected.fluxes)
    assert sep.get_extract_pixstack() == before


def test_a_stamp_entirely_above_threshold_fits_the_stamp_sized_stack():
    """Every pixel above threshold is the worst case of the stack size (n_pixels + 2)."""
    rng = np.random.default_rng(0)
    plateau = (1.0 + rng.normal(0, 0.01, (128, 128))).astype(np.float32)
    out = SepTwoPass(subtract_background=False).deblend(plateau)
    assert out.extra["pass"].tolist() != [PASS_SEP_ERROR]
    assert out.extra["n_sources"].tolist() == [1]
    assert out.masks[0, 0].sum() == 128 * 128


def test_results_do_not_depend_on_the_process_pixel_stack(monkeypatch):
    """A small stack set elsewhere in the process used to make big sources fail (pass -2)."""
    import sep

    rng = np.random.default_rng(1)
    stamp = rng.normal(0, 0.01, (128, 128)).astype(np.float32)
    stamp[30:90, 30:90] += 1.0  # 3,600 pixels above threshold
    default = SepTwoPass(subtract_background=False).deblend(stamp)
    previous = sep.get_extract_pixstack()
    sep.set_extract_pixstack(1000)
    try:
        small = SepTwoPass(subtract_background=False).deblend(stamp)
        assert sep.get_extract_pixstack() == 1000
    finally:
        sep.set_extract_pixstack(previous)
    assert small.extra["pass"].tolist() == default.extra["pass"].tolist() != [PASS_SEP_ERROR]
    np.testing.assert_array_equal(small.fluxes, default.fluxes)


# ------------------------------------------------------------------ kept pool


def _pid_batch(n=8):
    return np.ones((n, 128, 128), np.float32)


def test_pool_is_kept_and_reused_between_calls():
    parallel.shutdown_pools()
    first = parallel.deblend_in_processes(WorkerPid(), _pid_batch(), n_jobs=2, chunk_size=1, start_method="fork",
                                          keep_pool=True)
    assert len(parallel._pools) == 1
    second = parallel.deblend_in_processes(WorkerPid(), _pid_batch(), n_jobs=2, chunk_size=1, keep_pool=True)
    assert len(parallel._pools) == 1  # no start method asked: the live pool of 2 is reused
    pool_pids = set(next(iter(parallel._pools.values()))._processes)
    assert set(first.extra["pid"]) <= pool_pids and set(second.extra["pid"]) <= pool_pids
    assert os.getpid() not in pool_pids
    parallel.shutdown_pools()
    assert parallel._pools == {}
    third = parallel.deblend_in_processes(WorkerPid(), _pid_batch(), n_jobs=2, chunk_size=1, start_method="fork",
                                          keep_pool=True)
    assert not set(third.extra["pid"]) & pool_pids  # a fresh pool after the shutdown
    parallel.shutdown_pools()


def test_forkserver_pool_is_kept_and_its_workers_stay(batch):
    """The workers' parent is the fork server there: they must not take that for a dead parent."""
    blends, context = batch
    serial = SepTwoPass().deblend(blends[:12], context.subset(slice(0, 12)))
    for _ in range(2):
        pooled = parallel.deblend_in_processes(SepTwoPass(), blends[:12], context.subset(slice(0, 12)), n_jobs=2,
                                               chunk_size=3, start_method="forkserver", keep_pool=True)
        np.testing.assert_array_equal(pooled.fluxes, serial.fluxes)
        np.testing.assert_array_equal(pooled.masks, serial.masks)
    (executor,) = parallel._pools.values()
    time.sleep(3 * parallel.PARENT_CHECK_SECONDS)
    assert all(process.is_alive() for process in executor._processes.values())
    parallel.shutdown_pools()


def test_a_discarded_pool_serves_its_other_calls_to_the_end():
    """One call failing on a shared pool must not cancel another thread's call on it."""
    parallel.shutdown_pools()
    first, key = parallel._acquire_pool(2, "fork")
    second, same_key = parallel._acquire_pool(2, None)  # another call reuses the live pool
    assert second is first and same_key == key
    parallel._release_pool(key, first, discard=True)  # the first call failed
    assert parallel._pools == {}
    assert second.submit(os.getpid).result(timeout=60) != os.getpid()  # still serving the second call
    third, third_key = parallel._acquire_pool(2, None)
    assert third is not first  # new calls get a fresh pool
    parallel._release_pool(key, second, discard=False)  # the last user of the old pool: it stops
    with pytest.raises(RuntimeError):
        first.submit(os.getpid)
    parallel._release_pool(third_key, third, discard=False)
    assert third.submit(os.getpid).result(timeout=60) != os.getpid()  # a kept pool stays up after its calls
    parallel.shutdown_pools()


def test_private_pool_is_not_kept():
    parallel.shutdown_pools()
    out = parallel.deblend_in_processes(WorkerPid(), _pid_batch(), n_jobs=2, chunk_size=2, start_method="fork",
                                        keep_pool=False)
    assert parallel._pools == {}
    assert os.getpid() not in set(out.extra["pid"])


def test_a_crashed_worker_breaks_one_call_and_the_next_gets_a_fresh_pool():
    from concurrent.futures.process import BrokenProcessPool

    parallel.shutdown_pools()
    marked = _pid_batch()
    marked[5, 0, 0] = -1.0
    with pytest.raises(BrokenProcessPool):
        parallel.deblend_in_processes(WorkerPid(), marked, n_jobs=2, chunk_size=1, start_method="fork", keep_pool=True)
    assert parallel._pools == {}
    out = parallel.deblend_in_processes(WorkerPid(), _pid_batch(), n_jobs=2, chunk_size=1, start_method="fork",
                                        keep_pool=True)
    assert len(out.extra["pid"]) == 8
    parallel.shutdown_pools()


def test_cancel_leaves_the_next_call_correct(batch):
    blends, context = batch
    event = threading.Event()
    event.set()
    with pytest.raises(parallel.DeblendCancelled):
        parallel.deblend_in_processes(SepTwoPass(), blends, context, n_jobs=2, chunk_size=4, cancel_event=event,
                                      start_method="fork", keep_pool=True)
    pooled = parallel.deblend_in_processes(SepTwoPass(), blends, context, n_jobs=2, chunk_size=4,
                                           start_method="fork", keep_pool=True)
    np.testing.assert_array_equal(pooled.fluxes, SepTwoPass().deblend(blends, context).fluxes)
    parallel.shutdown_pools()


def test_a_worker_sees_a_lost_parent_even_if_it_started_after_the_loss():
    """Regression: a worker that started after the pool's process died took its new
    parent for the real one and waited forever (seen under load: a worker that had
    not run a task yet when the parent was killed)."""
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait(timeout=60)  # reaped: its pid no longer exists
    gone = finished.pid
    my_parent = os.getppid()
    assert not parallel._pool_parent_gone(my_parent, os.getpid())  # both alive: keep working
    assert parallel._pool_parent_gone(my_parent, gone)  # the pool's process no longer exists
    assert parallel._pool_parent_gone(gone, os.getpid())  # reparented: the watched parent is not ours


def test_kept_workers_exit_when_their_parent_is_killed():
    psutil = pytest.importorskip("psutil")
    code = textwrap.dedent("""
        import os, signal
        import numpy as np
        from napari_blendphot.testing.stand_ins import WorkerPid
        from napari_blendphot.deblend import parallel
        parallel.deblend_in_processes(WorkerPid(), np.ones((4, 128, 128), np.float32), n_jobs=2, chunk_size=1,
                                      start_method="fork", keep_pool=True)
        (executor,) = parallel._pools.values()
        print(" ".join(str(pid) for pid in executor._processes), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no shutdown, no exit handlers
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    pids = [int(pid) for pid in done.stdout.split()]
    assert len(pids) == 2, done.stderr
    # Watch these processes, not whatever later reuses their pids (a psutil.Process remembers its start time).
    watched = []
    for pid in pids:
        try:
            watched.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue

    def running(process) -> bool:
        try:
            return process.is_running() and process.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(running(p) for p in watched):
        time.sleep(0.2)
    assert not [p.pid for p in watched if running(p)]
