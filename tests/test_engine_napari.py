"""SPEC §8: Keras networks run while a napari canvas is drawing, without a crash.

TensorFlow in the napari process crashes on Mesa OpenGL; through the engine
it lives in the worker process only.  This test shows a viewer (real OpenGL
under Xvfb), runs the networks through ``submit`` while the Qt event loop
turns, draws the result and checks that TensorFlow never entered this process.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from napari_blendphot.testing.stand_ins import tiny_models, toy_blends

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def test_networks_beside_a_live_napari_canvas(make_napari_viewer, tmp_path_factory, qapp):
    from napari_blendphot.deblend.engine import InferenceEngine

    built = tiny_models(tmp_path_factory)
    viewer = make_napari_viewer(show=True)
    blends = toy_blends(3, seed=11)
    viewer.add_image(blends[0], name="blend")
    options = {name: {"weights": built["paths"][name]} for name in ("blend2flux", "unet")}
    with InferenceEngine(["sep", "blend2flux", "unet"], method_options=options) as engine:
        future = engine.submit(blends)
        deadline = time.monotonic() + 120
        while not future.done() and time.monotonic() < deadline:
            qapp.processEvents()  # the GUI stays responsive while the worker computes
            time.sleep(0.01)
        outputs = future.result(timeout=1)
    viewer.add_labels((outputs["unet"].masks[0, 0] > 0.5).astype(np.uint8), name="central mask")
    screenshot = viewer.screenshot(canvas_only=True, flash=False)
    assert screenshot.ndim == 3 and screenshot[..., :3].max() > 0  # something was drawn
    assert outputs["blend2flux"].fluxes.shape == (3, 2)
    assert "tensorflow" not in sys.modules and "keras" not in sys.modules
