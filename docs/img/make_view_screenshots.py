"""Screenshots at 1920x1080 of the demo, the side-by-side view and the failure browser (issue 17).

    xvfb-run -a -s "-screen 0 1920x1200x24" python docs/img/make_view_screenshots.py

Writes ``demo.png``, ``side_by_side.png`` and ``failures.png`` beside this file
(replacing them: they are the project's own pictures).  Everything shown is
seeded; the demo runs the shipped networks in the inference worker.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZE = (1920, 1080)


def settle(seconds: float = 0.8) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def demo_and_side_by_side() -> None:
    from napari_blendphot.cli import _demo

    viewer, _builder, inspector = _demo.build_demo_viewer(show=True)
    viewer.window._qt_window.resize(*SIZE)
    deadline = time.monotonic() + 180
    while _demo._waiting_for_inspector(inspector) and time.monotonic() < deadline:
        settle(0.3)
    settle()
    _demo._select_position_layer(viewer)
    _demo.write_screenshot(viewer, str(HERE / "demo.png"), overwrite=True)
    inspector.view.side_by_side_box.setChecked(True)
    settle()
    viewer.reset_view()
    settle()
    _demo.write_screenshot(viewer, str(HERE / "side_by_side.png"), overwrite=True)
    inspector.close_inspector()
    viewer.close()


def failure_browser() -> None:
    import napari
    from qtpy.QtCore import Qt

    from napari_blendphot.cli import _demo
    from napari_blendphot.testing.stand_ins import make_results
    from napari_blendphot.widgets._failures_table import COLUMN_NAMES
    from napari_blendphot.widgets.failure_browser import FailureBrowserWidget

    with tempfile.TemporaryDirectory() as folder:
        results_path, dataset = make_results(Path(folder), n_blends=120)
        viewer = napari.Viewer(title="napari-blendphot failure browser", show=True)
        viewer.window._qt_window.resize(*SIZE)
        widget = FailureBrowserWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Failure Browser", area="right")
        widget.open_results(results_path, dataset.path)
        widget.table.sortByColumn(COLUMN_NAMES.index("abs_z"), Qt.SortOrder.DescendingOrder)
        widget.select_position(0)
        deadline = time.monotonic() + 120
        while not any(layer.name.endswith(" masks") for layer in viewer.layers) and time.monotonic() < deadline:
            settle(0.3)
        settle()
        viewer.reset_view()
        settle()
        _demo.write_screenshot(viewer, str(HERE / "failures.png"), overwrite=True)
        widget._close_engine()
        viewer.close()


if __name__ == "__main__":
    demo_and_side_by_side()
    failure_browser()
