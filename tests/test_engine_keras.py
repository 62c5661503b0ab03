"""The Keras methods through the engine, with tiny networks built inside the worker.

This process never imports TensorFlow or Keras (checked at the end): the
models are built, saved and run by the worker.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from napari_blendphot.testing.stand_ins import tiny_models

from napari_blendphot.deblend.engine import InferenceEngine
from napari_blendphot.errors import InputError
from napari_blendphot.provenance import sha256_file

pytestmark = pytest.mark.slow  # one TensorFlow start (~10 s here)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    engine = InferenceEngine(["blend2flux", "unet", "blend2mask2flux"], backend="tensorflow", chunk_size=2)
    built = tiny_models(tmp_path_factory, engine)
    for name in ("blend2flux", "unet", "blend2mask2flux"):
        engine.set_method_options(name, weights=built["paths"][name], batch_size=2)
    yield engine, built
    engine.close()


@pytest.fixture(scope="module")
def probe(tiny):
    return tiny[1]["probe"]


def test_models_are_built_in_the_worker_with_the_requested_backend(tiny):
    _, built = tiny
    assert built["backend"] == "tensorflow"
    assert "tensorflow" not in sys.modules


def test_network_outputs_match_the_keras_models(tiny, probe):
    engine, built = tiny
    raw = built["raw"]
    progress = []
    outputs = engine.run(probe, progress=lambda d, t: progress.append(d))
    assert progress == [2, 4, 5]
    assert list(outputs) == ["blend2flux", "unet", "blend2mask2flux"]

    b2f = outputs["blend2flux"]
    assert b2f.fluxes.dtype == np.float64 and b2f.fluxes.shape == (5, 2) and b2f.masks is None
    np.testing.assert_allclose(b2f.fluxes, raw["blend2flux"], rtol=1e-5)

    unet = outputs["unet"]
    assert unet.masks.dtype == np.float32 and unet.masks.shape == (5, 2, 128, 128)
    np.testing.assert_allclose(unet.masks, np.moveaxis(raw["unet"], -1, 1), atol=1e-6)
    masks = np.moveaxis(raw["unet"], -1, 1)
    owner = np.argmax(masks, axis=1)
    inside = np.stack([(masks[:, k] > 0.5) & (owner == k) for k in range(2)], axis=1)
    expected = np.einsum("nkij,nij->nk", inside, probe.astype(np.float64))
    expected[~inside.any(axis=(2, 3))] = np.nan
    np.testing.assert_allclose(unet.fluxes, expected, rtol=1e-6)

    b2m2f = outputs["blend2mask2flux"]
    np.testing.assert_allclose(b2m2f.fluxes, raw["blend2mask2flux"]["fluxes"], rtol=1e-5)
    np.testing.assert_allclose(b2m2f.masks, np.moveaxis(raw["blend2mask2flux"]["masks"], -1, 1), atol=1e-6)


def test_metadata_records_weights_and_backend(tiny, probe):
    engine, built = tiny
    info = engine.warm_up(["blend2flux"])
    metadata = engine.run(probe[:1], methods=["blend2flux"])["blend2flux"].metadata
    for record in (info["blend2flux"], metadata):
        assert record["weights"] == built["paths"]["blend2flux"]
        assert record["sha256"] == sha256_file(built["paths"]["blend2flux"])
        assert record["keras_backend"] == "tensorflow"
        assert record["parameters"] > 0


def test_ogg_masks_are_converted_to_two(tiny, probe):
    engine, built = tiny
    engine.set_method_options("unet", weights=built["paths"]["ogg"])
    try:
        masks = engine.run(probe, methods=["unet"])["unet"].masks
    finally:
        engine.set_method_options("unet", weights=built["paths"]["unet"], batch_size=2)
    overlap, central, companion = np.moveaxis(built["raw"]["ogg"], -1, 0)
    # A galaxy's mask is its own channel or the overlap (models.networks.decode_masks).
    np.testing.assert_allclose(masks[:, 0], np.maximum(central, overlap), atol=1e-6)
    np.testing.assert_allclose(masks[:, 1], np.maximum(companion, overlap), atol=1e-6)


def test_bad_weights_raise_input_error_from_the_worker(tiny, probe, tmp_path):
    engine, built = tiny
    not_a_model = tmp_path / "broken.keras"
    not_a_model.write_text("this is not a zip archive")
    cases = [
        (not_a_model, "not a Keras 3 '.keras' archive"),
        (tmp_path / "missing.keras", "model file not found"),
        (built["paths"]["unet"], "does not hold a blend2flux network"),
    ]
    try:
        for weights, problem in cases:
            engine.set_method_options("blend2flux", weights=str(weights))
            with pytest.raises(InputError, match=problem) as info:
                engine.run(probe[:1], methods=["blend2flux"])
            assert str(weights) in str(info.value)
    finally:
        engine.set_method_options("blend2flux", weights=built["paths"]["blend2flux"], batch_size=2)
    # The worker kept running and its other models are still loaded.
    assert engine.run(probe[:1], methods=["blend2flux"])["blend2flux"].fluxes.shape == (1, 2)


def test_the_shipped_unet_and_blend2mask2flux_share_one_u_net_pass(probe):
    """The shipped U-Net is blend2mask2flux's: asked for both, the worker runs it once."""
    blends = probe[:3]
    with InferenceEngine(["unet", "blend2mask2flux"], backend="tensorflow") as engine:
        alone = engine.run(blends, methods=["unet"])["unet"]  # its own pass: no blend2mask2flux ran yet
        assert engine.worker_stats()["unet"]["reused_passes"] == 0
        both = engine.run(blends)
        assert engine.worker_stats()["unet"]["reused_passes"] == 1
    assert list(both) == ["unet", "blend2mask2flux"]  # the order asked for, not the order computed
    assert both["unet"].metadata["unet_fingerprint"] == both["blend2mask2flux"].metadata["unet_fingerprint"]
    # The same U-Net in another graph: equal to float rounding.
    np.testing.assert_allclose(both["unet"].masks, alone.masks, atol=1e-4)
    np.testing.assert_allclose(both["unet"].masks, both["blend2mask2flux"].masks)
    np.testing.assert_allclose(both["unet"].fluxes, alone.fluxes, rtol=1e-3)


def test_the_shipped_ensemble_runs_beside_its_member_with_calibrated_errors(probe):
    """`ensemble` loads its own shipped model (not blend2flux's default) and runs in the same worker."""
    blends = probe[:3]
    with InferenceEngine(["blend2flux", "ensemble"], backend="tensorflow") as engine:
        outputs = engine.run(blends)
    single, ensemble = outputs["blend2flux"], outputs["ensemble"]
    assert ensemble.metadata["model_name"] == "blend2flux_ensemble_v5" and ensemble.metadata["members"] == 4
    # blend2flux_v8 is one of its members, stored once in the package and put back in by reference
    assert [entry["name"] for entry in ensemble.metadata["shared_members"]] == ["blend2flux_v8"]
    assert single.metadata["model_name"] == "blend2flux_v8"
    assert ensemble.metadata["flux_error_calibration"]["fitted_with_tta"] == 1
    assert set(ensemble.metadata["flux_error_k95"]) == {"central", "companion"}
    assert np.all(np.isfinite(ensemble.flux_errors)) and np.all(ensemble.flux_errors > 0)
    # blend2flux_v8 is another network (depth 3, not one of the members): close, not equal.
    ratio = ensemble.fluxes / single.fluxes
    assert np.all(np.abs(np.log(ratio)) < 0.5) and not np.allclose(ratio, 1.0, rtol=1e-6)


def test_no_tensorflow_in_the_test_process():
    assert "tensorflow" not in sys.modules
    assert "keras" not in sys.modules
