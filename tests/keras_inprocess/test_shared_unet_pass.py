"""One U-Net pass for the ``unet`` method and blend2mask2flux when they hold the same U-Net.

Keras runs in this process (PyTorch backend unless KERAS_BACKEND says otherwise).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras  # noqa: E402

from napari_blendphot.models.io import save_model  # noqa: E402
from napari_blendphot.models.networks import (build_blend2flux, build_blend2mask2flux, build_unet,  # noqa: E402
                                              load_unet_weights, unet_fingerprint)
from napari_blendphot.testing.stand_ins import gaussian_pair_stamps  # noqa: E402

UNET = {"depth": 2, "filters": 4}


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(5)


def _stamps(n=6, seed=0):
    return gaussian_pair_stamps(n, seed, (60, 66, 30.0, (1, 5)), (70, 75, 20.0, (1, 5)))


@pytest.fixture
def pair(tmp_path):
    """(unet.keras, blend2mask2flux.keras holding that U-Net, blend2mask2flux.keras with its own U-Net)."""
    unet = build_unet(**UNET)
    same = build_blend2mask2flux(unet_depth=2, unet_filters=4, head_filters=4, head_depth=2, head_dense=(8,))
    load_unet_weights(same, unet)
    other = build_blend2mask2flux(unet_depth=2, unet_filters=4, head_filters=4, head_depth=2, head_dense=(8,))
    paths = tmp_path / "unet.keras", tmp_path / "same.keras", tmp_path / "other.keras"
    for model, path in zip((unet, same, other), paths):
        save_model(model, path)
    return paths


def test_the_fingerprint_names_the_u_net_and_nothing_else(pair):
    from napari_blendphot.models.io import load_model

    unet, same, other = (load_model(path, compile=False) for path in pair)
    assert unet_fingerprint(unet) == unet_fingerprint(same) != unet_fingerprint(other)
    assert unet_fingerprint(build_blend2flux(filters=4, dense_widths=(8,))) is None
    # Freezing does not change the U-Net; one changed weight does.
    for layer in same.layers:
        if layer.name.startswith("unet_"):
            layer.trainable = False
    assert unet_fingerprint(same) == unet_fingerprint(unet)
    kernel = same.get_layer("masks").get_weights()
    kernel[0] = kernel[0] + 1e-3
    same.get_layer("masks").set_weights(kernel)
    assert unet_fingerprint(same) != unet_fingerprint(unet)


def test_unet_takes_blend2mask2flux_masks_of_the_same_blends(pair):
    from napari_blendphot.deblend.keras_methods import Blend2Mask2FluxDeblender, UNetDeblender

    unet_path, same_path, other_path = pair
    stamps = _stamps()
    alone = UNetDeblender(weights=str(unet_path)).deblend(stamps)  # its own pass

    b2m2f, unet = Blend2Mask2FluxDeblender(weights=str(same_path)), UNetDeblender(weights=str(unet_path))
    with_masks = b2m2f.deblend(stamps)
    shared = unet.deblend(stamps.copy())  # equal pixels in another array: reused
    assert unet.reused_passes == 1
    np.testing.assert_allclose(shared.masks, with_masks.masks)
    np.testing.assert_allclose(shared.masks, alone.masks, atol=1e-5)  # the same U-Net, one pass fewer
    np.testing.assert_allclose(shared.fluxes, alone.fluxes, rtol=1e-5, equal_nan=True)
    assert shared.masks is not with_masks.masks  # a copy: editing one output leaves the other alone
    assert shared.metadata["unet_fingerprint"] == with_masks.metadata["unet_fingerprint"]

    # Other blends, or the same array edited in place, are computed afresh.
    edited = stamps.copy()
    b2m2f.deblend(edited)
    edited[0, 64, 64] += 1.0
    unet.deblend(edited)
    unet.deblend(_stamps(seed=1))
    assert unet.reused_passes == 1
    # Another U-Net inside blend2mask2flux, or another precision: never reused.
    Blend2Mask2FluxDeblender(weights=str(other_path)).deblend(stamps)
    unet.deblend(stamps)
    b2m2f.deblend(stamps)
    in_bfloat16 = UNetDeblender(weights=str(unet_path), precision="bfloat16")
    in_bfloat16.deblend(stamps)
    assert unet.reused_passes == 1 and in_bfloat16.reused_passes == 0


def test_swap_unet_writes_a_new_run_with_the_donor_u_net(pair, tmp_path):
    import json

    from napari_blendphot.errors import InputError
    from napari_blendphot.models.io import load_model
    from napari_blendphot.training.swap import swap_unet

    unet_path, _, other_path = pair
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(other_path.read_bytes())
    (run / "config.json").write_text(json.dumps({"name": "tiny", "model": {"kind": "blend2mask2flux"}}))
    (run / "run.json").write_text(json.dumps({"seed": 3}))
    record = swap_unet(run, unet_path, tmp_path / "swapped")
    swapped = load_model(tmp_path / "swapped" / "model.keras", compile=False)
    donor, original = load_model(unet_path, compile=False), load_model(other_path, compile=False)
    assert unet_fingerprint(swapped) == unet_fingerprint(donor) == record["unet_replaced"]["fingerprint_after"]
    assert record["unet_replaced"]["fingerprint_before"] == unet_fingerprint(original) and record["seed"] == 3
    # The head is the run's, untouched.
    for layer in original.layers:
        if layer.name.startswith("head_"):
            for a, b in zip(layer.get_weights(), swapped.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(a, b)
    assert json.loads((run / "run.json").read_text()) == {"seed": 3}  # the source run is left as it was
    with pytest.raises(InputError, match="exists already"):
        swap_unet(run, unet_path, tmp_path / "swapped")
    (run / "config.json").write_text(json.dumps({"name": "tiny", "model": {"kind": "unet"}}))
    with pytest.raises(InputError, match="not a blend2mask2flux"):
        swap_unet(run, unet_path, tmp_path / "other")
