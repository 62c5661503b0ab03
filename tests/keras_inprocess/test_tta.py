"""Test-time symmetries of the network methods (``tta=``): the average of the network on turned blends.

Keras runs in this process (PyTorch backend unless KERAS_BACKEND says otherwise).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras  # noqa: E402

from napari_blendphot.models.io import save_model  # noqa: E402
from napari_blendphot.models.networks import build_blend2flux, build_unet  # noqa: E402
from napari_blendphot.testing.stand_ins import gaussian_pair_stamps  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(9)


def _stamps(n=4, seed=0):
    return gaussian_pair_stamps(n, seed, (64, 64, 30.0, (1, 5)), (75, 58, 20.0, (1, 5)))


def test_fluxes_errors_and_masks_are_averages_over_the_turned_blends(tmp_path):
    from napari_blendphot.deblend.keras_methods import (Blend2FluxDeblender, UNetDeblender, square_symmetry)
    from napari_blendphot.errors import InputError

    save_model(build_blend2flux(filters=4, dense_widths=(8,), uncertainty=True), tmp_path / "b2f.keras")
    save_model(build_unet(depth=2, filters=4), tmp_path / "unet.keras")
    stamps = _stamps()
    once = Blend2FluxDeblender(weights=str(tmp_path / "b2f.keras"))
    turned = [once.deblend(square_symmetry(stamps, code)) for code in range(8)]
    averaged = Blend2FluxDeblender(weights=str(tmp_path / "b2f.keras"), tta=8).deblend(stamps)
    np.testing.assert_allclose(averaged.fluxes, np.mean([t.fluxes for t in turned], axis=0), rtol=1e-5)
    relative = np.mean([t.flux_errors / t.fluxes for t in turned], axis=0)
    np.testing.assert_allclose(averaged.flux_errors, averaged.fluxes * relative, rtol=1e-5)
    assert averaged.metadata["tta"] == 8 and once.metadata()["tta"] == 1

    unet_once = UNetDeblender(weights=str(tmp_path / "unet.keras"))
    masks = [square_symmetry(unet_once.deblend(square_symmetry(stamps, code)).masks, code, inverse=True)
             for code in (0, 2, 4, 6)]
    unet_four = UNetDeblender(weights=str(tmp_path / "unet.keras"), tta=4).deblend(stamps)
    np.testing.assert_allclose(unet_four.masks, np.mean(masks, axis=0), atol=1e-6)
    progress = []
    UNetDeblender(weights=str(tmp_path / "unet.keras"), tta=2).deblend(stamps, progress=lambda d, t: progress.append((d, t)))
    assert progress[-1] == (4, 4) and all(t == 4 for _, t in progress)

    for bad in (3, 0, True, "8"):
        with pytest.raises(InputError, match="option tta of blend2flux"):
            Blend2FluxDeblender(weights=str(tmp_path / "b2f.keras"), tta=bad)
