"""Make the screenshots of docs/plugin.md (run under a display or ``xvfb-run -a``).

    xvfb-run -a -s "-screen 0 1920x1200x24" python docs/img/make_plugin_screenshots.py

Writes ``plugin_reader.png`` and ``plugin_builder.png`` beside this file
(``demo.png`` comes from ``blendphot demo --screenshot docs/img/demo.png``).
Everything shown is seeded, so the pictures only change when the code does.
"""

from __future__ import annotations

import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def settle(seconds: float = 0.6) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def reader_screenshot() -> None:
    """The sample-data blends as the reader shows a blend dataset: stack, true outlines, slider."""
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1300, 850)
    import numpy as np

    layers = viewer.open_sample("napari-blendphot", "mock_blends")
    catalog = layers[0].metadata["catalog"]
    # Show a blend of two fairly bright galaxies at a typical separation.
    bright = (np.asarray(catalog["g1_mag"]) < 21.0) & (np.asarray(catalog["g2_mag"]) < 21.5)
    typical = (np.asarray(catalog["distance"]) > 9) & (np.asarray(catalog["distance"]) < 16)
    viewer.dims.set_current_step(0, int(np.flatnonzero(bright & typical)[0]))
    settle()
    viewer.reset_view()
    settle()
    viewer.screenshot(str(HERE / "plugin_reader.png"), canvas_only=False)
    viewer.close()


def builder_screenshot() -> None:
    """The Blend Builder alone: a bright bulge+disk central, an irregular companion placed close by."""
    import napari

    from napari_blendphot.app.builder import BlendBuilderModel
    from napari_blendphot.widgets.blend_builder import POSITION_LAYER, BlendBuilderWidget

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    widget = BlendBuilderWidget(viewer, model=BlendBuilderModel(pair_seed=4))
    viewer.window.add_dock_widget(widget, name="Blend Builder", area="right")
    widget.load_embedded(background=False)
    widget.central_picker.type_combo.setCurrentText("sphd")
    widget.central_picker.mag_max.setValue(21.0)
    widget.companion_picker.type_combo.setCurrentText("irr")
    widget.random_pair()
    widget.dy_spin.setValue(-12)
    widget.dx_spin.setValue(9)
    widget.dmag_slider.setValue(-30)
    widget.add_to_set()
    viewer.layers.selection.active = viewer.layers[POSITION_LAYER]
    settle()
    viewer.reset_view()
    settle()
    viewer.screenshot(str(HERE / "plugin_builder.png"), canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    reader_screenshot()
    builder_screenshot()
