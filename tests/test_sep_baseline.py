"""SEP two-pass baseline on synthetic blends of known photometry."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_blendphot.deblend.base import BlendContext, Deblender
from napari_blendphot.deblend.parallel import DeblendCancelled, deblend_in_processes
from napari_blendphot.deblend.sep_baseline import (
    COLD_PASS,
    HOT_PASS,
    PASS_NO_NOISE,
    PASS_SEP_ERROR,
    SepTwoPass,
)
from napari_blendphot.errors import InputError
from napari_blendphot.sample.toy import sersic_stamp

NOISE = 0.01
CENTRE = 64


def make_blend(central, companion, seed=0, pedestal=0.0):
    """Blend of two exponential-ish Sersic galaxies plus seeded Gaussian noise.

    central = (flux, radius, n); companion = (flux, radius, n, dy, dx).
    Returns the blend and both noiseless galaxies.
    """
    rng = np.random.default_rng(seed)
    g1 = sersic_stamp(central[0], central[1], central[2])
    g2 = sersic_stamp(companion[0], companion[1], companion[2], dy=companion[3], dx=companion[4])
    noise = rng.normal(0.0, NOISE, g1.shape).astype(np.float32)
    return g1 + g2 + noise + np.float32(pedestal), g1, g2


SEPARATED = ((40.0, 4.0, 1.0), (25.0, 3.0, 1.0, 18, -14))


def context_for(companion, central_radius):
    return BlendContext(np.array([[companion[3], companion[4]]]), np.array([central_radius]))


def iou(a, b):
    a, b = a > 0.5, b > 0.5
    return (a & b).sum() / (a | b).sum()


def test_protocol_and_attributes():
    method = SepTwoPass()
    assert isinstance(method, Deblender)
    assert (method.name, method.makes_masks, method.needs_worker) == ("sep", True, False)
    assert (COLD_PASS.threshold, COLD_PASS.minarea, COLD_PASS.deblend_cont) == (5.0, 10, 0.01)
    assert (HOT_PASS.threshold, HOT_PASS.minarea, HOT_PASS.deblend_cont) == (4.0, 6, 0.0001)


def test_well_separated_pair_is_detected_and_measured():
    blend, g1, g2 = make_blend(*SEPARATED)
    out = SepTwoPass().deblend(blend, context_for(SEPARATED[1], 4.0))
    assert out.extra["detection"].tolist() == [2]
    assert out.extra["pass"].tolist() == [0]
    assert out.extra["assignment"].tolist() == [1]
    # Kron flux of exponential profiles: within 10% of the truth (measured ~5% low, as FLUX_AUTO is).
    np.testing.assert_allclose(out.fluxes[0], [40.0, 25.0], rtol=0.10)
    assert out.masks.shape == (1, 2, 128, 128) and out.masks.dtype == np.float32
    assert set(np.unique(out.masks)) <= {0.0, 1.0}
    # Masks: each covers its own galaxy's centre and overlaps its bright core (> 5 rms).
    assert out.masks[0, 0, CENTRE, CENTRE] == 1 and out.masks[0, 1, CENTRE + 18, CENTRE - 14] == 1
    assert iou(out.masks[0, 0], g1 > 5 * NOISE) > 0.6
    assert iou(out.masks[0, 1], g2 > 5 * NOISE) > 0.6
    assert not (out.masks[0, 0].astype(bool) & out.masks[0, 1].astype(bool)).any()
    assert np.all(out.flux_errors[:, 0] > 0)


def test_iso_versus_auto():
    blend, _, _ = make_blend(*SEPARATED)
    context = context_for(SEPARATED[1], 4.0)
    auto = SepTwoPass(photometry="auto").deblend(blend, context).fluxes[0]
    iso = SepTwoPass(photometry="iso").deblend(blend, context).fluxes[0]
    truth = np.array([40.0, 25.0])
    # The isophote misses the wings: iso is lower than Kron, which is closer to the truth.
    assert np.all(iso < auto)
    assert np.all(np.abs(auto - truth) < np.abs(iso - truth))
    np.testing.assert_allclose(iso, truth, rtol=0.25)


def test_superposed_faint_companion_gives_central_only():
    central, companion = (40.0, 4.0, 1.0), (4.0, 2.0, 1.0, 1, 1)
    blend, _, _ = make_blend(central, companion)
    out = SepTwoPass().deblend(blend, context_for(companion, 4.0))
    # One source within 0.5 R_central of the centre: the central galaxy.
    assert out.extra["n_sources"].tolist() == [1]
    assert out.extra["detection"].tolist() == [0]
    assert out.extra["pass"].tolist() == [1]  # cold found one, so hot ran
    assert np.isnan(out.fluxes[0, 1]) and out.fluxes[0, 0] > 0
    assert out.masks[0, 1].sum() == 0


def test_single_source_off_centre_is_the_companion():
    # A faint small central under a bright companion 2 px away: the single source's
    # centroid lies beyond 0.5 R_central (0.75 px), so the rule calls it the companion.
    central, companion = (2.0, 1.5, 1.0), (100.0, 4.0, 1.0, 0, 2)
    blend, _, _ = make_blend(central, companion)
    out = SepTwoPass().deblend(blend, context_for(companion, 1.5))
    assert out.extra["n_sources"].tolist() == [1]
    assert out.extra["detection"].tolist() == [1]
    assert np.isnan(out.fluxes[0, 0])
    np.testing.assert_allclose(out.fluxes[0, 1], 100.0, rtol=0.10)


def test_hot_pass_separates_what_cold_merged():
    central, companion = (40.0, 5.0, 1.0), (8.0, 3.0, 1.0, 0, 8)
    blend, _, _ = make_blend(central, companion, seed=1)
    out = SepTwoPass().deblend(blend, context_for(companion, 5.0))
    assert out.extra["pass"].tolist() == [1]
    assert out.extra["detection"].tolist() == [2]
    np.testing.assert_allclose(out.fluxes[0], [40.0, 8.0], rtol=0.15)


def test_hot_pass_runs_only_where_cold_found_one(monkeypatch):
    calls = []
    original = SepTwoPass._extract

    def recording_extract(data, rms, params):
        objects, segmap = original(data, rms, params)
        calls.append((params, len(objects)))
        return objects, segmap

    monkeypatch.setattr(SepTwoPass, "_extract", staticmethod(recording_extract))
    separated, _, _ = make_blend(*SEPARATED)
    superposed, _, _ = make_blend((40.0, 4.0, 1.0), (4.0, 2.0, 1.0, 1, 1))
    SepTwoPass().deblend(np.stack([separated, superposed]))
    assert [(params is HOT_PASS, count) for params, count in calls] == [(False, 2), (False, 1), (True, 1)]


def test_background_subtraction_removes_a_pedestal():
    blend, _, _ = make_blend(*SEPARATED, pedestal=2 * NOISE)
    context = context_for(SEPARATED[1], 4.0)
    truth = np.array([40.0, 25.0])
    subtracted = SepTwoPass(subtract_background=True).deblend(blend, context).fluxes[0]
    raw = SepTwoPass(subtract_background=False).deblend(blend, context).fluxes[0]
    # Without subtraction the pedestal adds to every aperture pixel: fluxes come out higher.
    assert np.all(raw > subtracted * 1.2)
    np.testing.assert_allclose(subtracted, truth, rtol=0.10)


def test_background_meshes_of_64_pixels_agree_with_one_mesh():
    blend, _, _ = make_blend(*SEPARATED, pedestal=2 * NOISE)
    context = context_for(SEPARATED[1], 4.0)
    one_mesh = SepTwoPass(background_box=128).deblend(blend, context)
    four_meshes = SepTwoPass(background_box=64).deblend(blend, context)
    assert four_meshes.extra["detection"].tolist() == [2]
    # A flat pedestal is the same constant either way, up to the mesh statistics.
    np.testing.assert_allclose(four_meshes.fluxes, one_mesh.fluxes, rtol=0.05)
    with pytest.raises(InputError, match="background_box"):
        SepTwoPass(background_box=0)


def test_blank_and_constant_blends_are_not_detected_and_batch_continues():
    good, _, _ = make_blend(*SEPARATED)
    batch = np.stack([np.zeros_like(good), good, np.full_like(good, 3.0)])
    out = SepTwoPass().deblend(batch)
    assert out.extra["detection"].tolist() == [-1, 2, -1]
    assert out.extra["pass"].tolist() == [PASS_NO_NOISE, 0, PASS_NO_NOISE]
    assert np.isnan(out.fluxes[[0, 2]]).all() and np.isfinite(out.fluxes[1]).all()
    assert out.masks[[0, 2]].sum() == 0
    assert out.metadata["n_not_run"] == 2


def test_sep_error_on_one_blend_does_not_stop_the_batch(monkeypatch):
    import sep

    original = sep.extract

    def failing_extract(data, *args, **kwargs):
        if data[0, 0] > 50:  # the marked blend
            raise Exception("internal pixel buffer full")  # what sep raises
        return original(data, *args, **kwargs)

    monkeypatch.setattr(sep, "extract", failing_extract)
    good, _, _ = make_blend(*SEPARATED)
    marked = good.copy()
    marked[0, 0] = 100.0
    out = SepTwoPass().deblend(np.stack([good, marked, good]))
    assert out.extra["pass"].tolist() == [0, PASS_SEP_ERROR, 0]
    assert out.extra["detection"].tolist() == [2, -1, 2]
    assert out.metadata["n_sep_errors"] == 1


def test_big_endian_float64_input_matches_native_float32():
    blend, _, _ = make_blend(*SEPARATED)
    context = context_for(SEPARATED[1], 4.0)
    native = SepTwoPass().deblend(blend, context)
    swapped = SepTwoPass().deblend(blend.astype(">f8"), context)
    np.testing.assert_array_equal(native.fluxes, swapped.fluxes)
    np.testing.assert_array_equal(native.masks, swapped.masks)


def test_heuristic_assignment_is_flagged():
    blend, _, _ = make_blend(*SEPARATED)
    out = SepTwoPass().deblend(blend)
    assert out.extra["assignment"].tolist() == [0]
    assert "heuristic" in out.metadata["assignment_note"]
    # Here the heuristic agrees with the truth: central nearest the centre, companion the other.
    truth = SepTwoPass().deblend(blend, context_for(SEPARATED[1], 4.0))
    np.testing.assert_array_equal(out.fluxes, truth.fluxes)


def test_options_are_validated():
    with pytest.raises(InputError, match="photometry"):
        SepTwoPass(photometry="model")
    with pytest.raises(InputError, match="n_jobs"):
        SepTwoPass(n_jobs=0)
    with pytest.raises(InputError, match="companion_shift"):
        SepTwoPass().deblend(np.zeros((2, 128, 128), np.float32), BlendContext(np.zeros((3, 2))))


def _batch(n, seed=3):
    """n varied blends with their context (the shifts vary so both rules are exercised)."""
    rng = np.random.default_rng(seed)
    blends, shifts = [], []
    for index in range(n):
        dy, dx = (int(v) for v in rng.integers(-25, 26, size=2))
        blend, _, _ = make_blend((rng.uniform(10, 60), rng.uniform(2, 6), 1.0),
                                 (rng.uniform(5, 40), rng.uniform(2, 5), rng.choice([1.0, 4.0]), dy, dx),
                                 seed=seed * 1000 + index)
        blends.append(blend)
        shifts.append((dy, dx))
    blends.append(np.zeros_like(blends[0]))
    shifts.append((3, 3))
    return np.stack(blends), BlendContext(np.array(shifts), np.full(len(shifts), 4.0))


def _assert_same(a, b):
    np.testing.assert_array_equal(a.fluxes, b.fluxes)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.extra.keys() == b.extra.keys()
    for key in a.extra:
        np.testing.assert_array_equal(a.extra[key], b.extra[key])
        assert a.extra[key].dtype == b.extra[key].dtype


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_processes_give_identical_results(start_method):
    blends, context = _batch(11)
    serial_calls = []
    serial = SepTwoPass().deblend(blends, context, progress=lambda done, total: serial_calls.append((done, total)))
    assert serial_calls[-1] == (12, 12)
    calls = []
    pooled = deblend_in_processes(SepTwoPass(n_jobs=2), blends, context, n_jobs=2, chunk_size=5,
                                  progress=lambda done, total: calls.append((done, total)),
                                  start_method=start_method)
    _assert_same(serial, pooled)
    # One call per chunk as it completes: 12 blends on 2 processes are cut into
    # chunks of 2 (about four per process), finishing in any order.
    done = [d for d, _ in calls]
    assert {total for _, total in calls} == {12}
    assert done == list(range(2, 13, 2))


def test_deblend_uses_the_pool_for_large_batches(monkeypatch):
    from napari_blendphot.deblend import sep_baseline

    monkeypatch.setattr(sep_baseline, "PARALLEL_MIN_BLENDS", 4)
    blends, context = _batch(7)
    pooled = SepTwoPass(n_jobs=2).deblend(blends, context)
    serial = SepTwoPass(n_jobs=1).deblend(blends, context)
    _assert_same(serial, pooled)
    assert pooled.metadata["n_not_run"] == 1


def test_pool_cancels_from_progress_and_event():
    blends, context = _batch(7)

    def stop(done, total):
        raise KeyboardInterrupt("user cancelled")

    with pytest.raises(KeyboardInterrupt):
        deblend_in_processes(SepTwoPass(), blends, context, n_jobs=2, chunk_size=2, progress=stop)
    event = threading.Event()
    event.set()
    with pytest.raises(DeblendCancelled):
        deblend_in_processes(SepTwoPass(), blends, context, n_jobs=2, chunk_size=2, cancel_event=event)


class ProbabilityMasks:
    """A stand-in method whose masks are probabilities (not 0/1), to test their transfer."""

    name, label, makes_masks, needs_worker = "prob", "probabilities", True, False

    def deblend(self, blends, context=None, progress=None):
        from napari_blendphot.deblend.base import DeblendOutput

        level = blends.mean(axis=(1, 2))
        masks = np.broadcast_to((level[:, None, None, None] * 0.5 + 0.25).astype(np.float32),
                                (len(blends), 2, 128, 128)).copy()
        return DeblendOutput(self.name, np.stack([level, -level], axis=1), masks,
                             {"level": level.astype(np.float32)}, {"chunk": len(blends)})


def test_pool_transfers_non_binary_masks_and_extras():
    blends = np.random.default_rng(0).normal(size=(9, 128, 128)).astype(np.float32)
    serial = ProbabilityMasks().deblend(blends)
    pooled = deblend_in_processes(ProbabilityMasks(), blends, n_jobs=2, chunk_size=4, start_method="fork")
    _assert_same(serial, pooled)
    assert pooled.method == "prob"


def test_start_method_avoids_fork_when_threads_run():
    from napari_blendphot.deblend.parallel import default_start_method

    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:
        assert default_start_method() == "spawn"
    finally:
        release.set()
        thread.join()


def test_pool_refuses_worker_methods():
    class NeedsWorker:
        name, label, makes_masks, needs_worker = "net", "net", False, True

    with pytest.raises(InputError, match="inference worker"):
        deblend_in_processes(NeedsWorker(), np.zeros((2, 128, 128), np.float32))


def test_deep_learning_runtimes_rule_out_fork():
    """Regression: TensorFlow's native thread pools are invisible to the threading
    module, so the SEP pool forked a multi-threaded inference worker."""
    import subprocess
    import sys

    code = (
        "import sys, types\n"
        "from napari_blendphot.deblend import parallel\n"
        "before = parallel.default_start_method()\n"
        "sys.modules['tensorflow'] = types.ModuleType('tensorflow')  # stands in for the loaded runtime\n"
        "print(before, parallel.default_start_method())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["fork", "spawn"]


def test_memory_mapped_dataset_blends_are_measured(tmp_path):
    """Regression: read-only memmapped blends reached sep, which failed on every
    blend, so SEP reported 'not detected' for a whole dataset."""
    from napari_blendphot.blend.dataset import BlendDataset, write_blend_dataset
    from napari_blendphot.deblend.sep_baseline import SepTwoPass
    from napari_blendphot.sample.toy import make_toy_sample

    path = write_blend_dataset(make_toy_sample(40, seed=1), tmp_path / "ds", n=12, test_fraction=0.0, seed=1)
    dataset = BlendDataset(path)
    assert not dataset.blends.flags.writeable
    from_disk = SepTwoPass().deblend(dataset.blends, dataset.context())
    in_memory = SepTwoPass().deblend(np.array(dataset.blends), dataset.context())
    assert (from_disk.extra["detection"] >= 0).any()
    np.testing.assert_array_equal(from_disk.extra["detection"], in_memory.extra["detection"])
    np.testing.assert_array_equal(from_disk.fluxes, in_memory.fluxes)
