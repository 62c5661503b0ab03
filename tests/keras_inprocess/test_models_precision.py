"""bfloat16 compute on float32 models: which layers change, and how little the outputs move.

Keras runs in this process (torch backend unless KERAS_BACKEND says otherwise).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras  # noqa: E402

from napari_blendphot.models.networks import build_blend2flux, build_blend2mask2flux  # noqa: E402
from napari_blendphot.models.precision import FLOAT32_LAYERS, set_compute_precision  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded_keras():
    """Initial weights from a fixed seed (the bfloat16 error bound then holds for known weights:
    0.9 % at most over 40 seeds, against the 5 % allowed)."""
    keras.utils.set_random_seed(2020)


def _stamps(n=4, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:128, :128]
    stamps = rng.normal(0.0, 0.01, (n, 128, 128))
    stamps += 5.0 * np.exp(-((yy - 64) ** 2 + (xx - 64) ** 2) / 18.0)
    stamps += 2.0 * np.exp(-((yy - 70) ** 2 + (xx - 52) ** 2) / 10.0)
    return stamps.astype("float32")


def _policies(model):
    return {layer.name: layer.dtype_policy.name for layer in model.layers}


def test_bfloat16_keeps_weights_and_scale_layers_float32():
    # With the flux-uncertainty output, so that every layer of FLOAT32_LAYERS exists.
    model = build_blend2mask2flux(unet_depth=2, unet_filters=4, head_filters=4, head_depth=2, head_dense=(8,),
                                  uncertainty=True)
    weights_before = [np.array(w) for w in model.get_weights()]
    set_compute_precision(model, "bfloat16")
    policies = _policies(model)
    for name in FLOAT32_LAYERS:
        assert policies[name] == "float32", name
    convolutions = [name for name in policies if "conv" in name]
    assert convolutions and all(policies[name] == "mixed_bfloat16" for name in convolutions)
    assert all(w.dtype == "float32" for w in model.weights)
    for before, after in zip(weights_before, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    # And back: float32 again everywhere.
    set_compute_precision(model, "float32")
    assert set(_policies(model).values()) == {"float32"}


def test_bfloat16_outputs_are_float32_and_close_to_float32_ones():
    stamps = _stamps()
    reference = build_blend2flux(filters=4, dense_widths=(8, 8))
    fast = build_blend2flux(filters=4, dense_widths=(8, 8))
    fast.set_weights(reference.get_weights())
    set_compute_precision(fast, "bfloat16")
    expected = np.asarray(reference.predict_on_batch(stamps))
    got = np.asarray(fast.predict_on_batch(stamps))
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert not np.array_equal(got, expected)  # the computation really ran in bfloat16
    # bfloat16 keeps 8 bits of mantissa: random tiny networks agree to a few per cent.
    np.testing.assert_allclose(got, expected, rtol=0.05)


def test_a_network_method_on_a_gpu_defaults_to_bfloat16_and_gpu_sized_batches(tmp_path, monkeypatch):
    """Where the backend computes on a GPU with native bfloat16: batch 1,024 and bfloat16 unless asked otherwise."""
    from napari_blendphot.deblend.keras_methods import Blend2FluxDeblender
    from napari_blendphot.models import precision
    from napari_blendphot.models.io import save_model

    path = save_model(build_blend2flux(filters=2, depth=1, dense_widths=(4,)), tmp_path / "b2f.keras")
    on_cpu = Blend2FluxDeblender(weights=str(path))
    assert (on_cpu.device, on_cpu.batch_size, on_cpu.precision) == ("cpu", on_cpu.default_batch_size, "float32")
    monkeypatch.setattr(precision, "_loaded_backend_gpu", lambda: (9, 0))
    on_gpu = Blend2FluxDeblender(weights=str(path))
    assert (on_gpu.device, on_gpu.batch_size, on_gpu.precision) == ("gpu", 1024, "bfloat16")
    assert on_gpu.metadata()["precision"] == "bfloat16" and on_gpu.metadata()["device"] == "gpu"
    asked = Blend2FluxDeblender(weights=str(path), batch_size=8, precision="float32")
    assert (asked.batch_size, asked.precision) == (8, "float32")
    # bfloat16 chosen by default still gives fluxes close to float32's
    stamps = _stamps()
    np.testing.assert_allclose(on_gpu.deblend(stamps).fluxes, on_cpu.deblend(stamps).fluxes, rtol=0.05)
