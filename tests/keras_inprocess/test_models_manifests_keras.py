"""The weights registry with real Keras models (Keras runs in this process: torch backend)."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import pytest  # noqa: E402

from napari_blendphot.errors import InputError  # noqa: E402
from napari_blendphot.models.manifests import write_manifest  # noqa: E402

TRAINED_ON = {"description": "toy blends", "sample_sha256": "ab" * 32, "seed": 3}


def test_load_registered_model_verifies_then_loads(tmp_path):
    from napari_blendphot.models.io import save_model
    from napari_blendphot.models.networks import build_unet
    from napari_blendphot.models.manifests import load_registered_model

    folder = tmp_path / "weights"
    folder.mkdir()
    path = save_model(build_unet(depth=2, filters=4), folder / "unet_tiny.keras")
    write_manifest(path, "unet", {"depth": 2, "filters": 4}, TRAINED_ON, {"iou": 0.5})
    model, manifest = load_registered_model("unet_tiny", weights_dir=folder)
    assert manifest.method == "unet" and model.output_shape == (None, 128, 128, 2)
    assert manifest.backend == __import__("keras").backend.backend()
    with pytest.raises(InputError, match="not blend2flux"):
        load_registered_model("unet_tiny", expect="blend2flux", weights_dir=folder)
