"""Make the screenshot of docs/field.md (run under a display or ``xvfb-run -a``).

    xvfb-run -a -s "-screen 0 1920x1080x24" python docs/img/make_field_screenshot.py

A seeded 1024x1024 synthetic field of the embedded mock galaxies (counts,
EXPTIME 1000 s, MAGZERO 30.2, TAN WCS) opened with the plugin's reader, the
Field widget docked: Detect, Measure all blends (SEP and blend2flux, in the
worker process), then the measurement of one pair member as a click does it
(SEP's masks drawn on the field), zoomed on that pair, with the cursor's
RA/Dec in the status bar.  Writes ``field_widget.png`` beside this file.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def settle(seconds: float = 0.6) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def wait_for(widget, timeout: float = 600.0) -> None:
    end = time.monotonic() + timeout
    while widget.cancel_button.isEnabled():
        if time.monotonic() > end:
            raise SystemExit("the measurement did not finish in time")
        settle(0.1)


def main() -> None:
    import napari

    from napari_blendphot.field.simulate import make_field
    from napari_blendphot.sample.embedded import load_embedded_sample
    from napari_blendphot.widgets.field_widget import FieldWidget

    folder = Path(tempfile.mkdtemp(prefix="field_screenshot_"))
    path = folder / "deep_field.fits"
    field = make_field(load_embedded_sample(), 60, shape=(1024, 1024), seed=4, zero_point=30.2, exptime=1000.0)
    field.write(path)

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1920, 1080)
    widget = FieldWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Field", area="right")
    from qtpy.QtCore import Qt

    viewer.window._qt_window.resizeDocks([viewer.window._dock_widgets["Field"]], [620], Qt.Orientation.Horizontal)
    widget.open_path(path)
    widget.detect()
    widget.measure_blends()
    wait_for(widget)
    model = widget.model
    members = model.blend_members()
    sizes = model.group_sizes()
    pairs = [int(i) for i in members if sizes[i] == 2]
    # A bright pair member well inside the image, so that the zoomed view stays on the field.
    points = model.points()
    inside = [i for i in pairs if 200 < points[i][0] < 824 and 200 < points[i][1] < 824]
    bright = sorted(inside or pairs, key=lambda i: model.features()["mag_blend2flux"][i])
    chosen = bright[0] if bright else int(members[0])
    widget._last_clicked = chosen
    widget._run([chosen], f"Measuring source {chosen + 1}")
    wait_for(widget)
    y, x = model.points()[chosen]
    viewer.camera.center = (y, x)
    viewer.camera.zoom = 5.0
    rows = [row for row in range(widget.table.rowCount()) if widget.table.item(row, 0).text() == str(chosen + 1)]
    if rows:
        widget.table.selectRow(rows[0])
    viewer.mouse_over_canvas = True
    viewer.cursor.position = (y + 6.0, x + 4.0)
    viewer.update_status_from_cursor()
    settle(1.5)
    viewer.screenshot(str(HERE / "field_widget.png"), canvas_only=False)
    features = model.features()
    truth = field.truth
    companion = int(model.result(chosen)["companion_index"])
    for index in (chosen, companion):
        t = int(np.argmin(np.hypot(truth["x"] - points[index][1], truth["y"] - points[index][0])))
        print(f"source {index + 1}: truth galaxy {truth['galaxy_id'][t]} ({truth['galtype'][t]}, mag "
              f"{truth['mag'][t]:.3f}); measured mag_sep {features['mag_sep'][index]:.3f}, mag_blend2flux "
              f"{features['mag_blend2flux'][index]:.3f}")
    print(f"source {chosen + 1}: group {features['group_id'][chosen]} of {features['group_size'][chosen]}, "
          f"mag_sep {features['mag_sep'][chosen]:.3f}, mag_blend2flux {features['mag_blend2flux'][chosen]:.3f}; "
          f"{model.n_sources} sources, {len(members)} in blends, status: {viewer.status}")
    widget.model.close()
    viewer.close()
    for item in folder.iterdir():
        item.unlink()
    folder.rmdir()


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
