"""The Field widget and the field-image reader in a real napari viewer (under Xvfb)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from napari_blendphot.field.model import FieldModel
from napari_blendphot.field.run import MethodRunner
from test_field_support import small_field

pytestmark = pytest.mark.filterwarnings("ignore::napari_blendphot.field.image.FieldWarning")


class FakeEvent:
    """What napari's drag callbacks read from a mouse event."""

    def __init__(self, position):
        self.type = "mouse_press"
        self.position = position


def sep_runner(methods, options):
    return MethodRunner(methods, options, in_process=True)


@pytest.fixture(scope="module")
def field_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("gui") / "deep_field.fits"
    small_field(n_galaxies=24, zero_point=28.0, exptime=500.0).write(path)
    return path


def test_reader_shows_field_with_stretch_and_sky_position(make_napari_viewer, field_path):
    from napari_blendphot._reader import get_reader

    viewer = make_napari_viewer()
    assert get_reader(str(field_path)) is not None
    (layer,) = viewer.open(str(field_path), plugin="napari-blendphot")
    assert layer.metadata["blendphot_kind"] == "field" and layer.data.shape == (768, 768)
    low, high = layer.contrast_limits
    assert low < 0 < high and layer.gamma == 0.5
    assert layer.metadata["field"]["calibration"]["zero_point"] == 28.0
    viewer.mouse_over_canvas = True
    viewer.cursor.position = (383.5, 383.5)
    viewer.update_status_from_cursor()
    status = viewer.status
    assert isinstance(status, dict) and "RA 10:00:24.00 Dec +02:12:00.0" in status["coordinates"]
    assert "tensorflow" not in sys.modules


def test_reader_leaves_non_images_to_others(tmp_path):
    from astropy.table import Table

    from napari_blendphot._reader import field_image_layers

    Table({"a": [1, 2]}).write(tmp_path / "table.fits")
    assert field_image_layers(tmp_path / "table.fits") is None


def test_widget_detect_click_rectangle_blends_save(make_napari_viewer, qtbot, field_path, tmp_path):
    from napari_blendphot.widgets.field_widget import MASK_LAYER, FieldWidget

    viewer = make_napari_viewer()
    model = FieldModel(methods=("sep",), runner_factory=sep_runner)
    widget = FieldWidget(viewer, model=model)
    viewer.window.add_dock_widget(widget)
    widget.open_path(field_path)
    assert widget.zero_point.value() == pytest.approx(28.0) and widget.zero_point_source.text() == "MAGZERO"
    assert widget.pixel_scale.value() == pytest.approx(0.06)
    widget.detect()
    points = viewer.layers["deep_field sources"]
    assert len(points.data) == model.n_sources and "group_size" in points.features
    assert {tuple(c) for c in np.round(points.border_color, 2)} >= {(1.0, 1.0, 1.0, 1.0), (1.0, 0.55, 0.0, 1.0)}

    # A click on a pair member measures it and draws SEP's masks where the source is (a drag does nothing).
    index = int(model.blend_members()[0])
    y, x = model.points()[index]
    drag = FakeEvent((y + 1, x))
    gesture = widget._on_click(points, drag)
    next(gesture)
    drag.type, drag.position = "mouse_move", (y + 40, x)
    next(gesture)
    drag.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(gesture)
    assert not widget.cancel_button.isEnabled()
    click = FakeEvent((y + 1, x - 1))
    gesture = widget._on_click(points, click)
    next(gesture)
    click.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(gesture)
    assert widget._last_clicked == index
    qtbot.waitUntil(lambda: not widget.cancel_button.isEnabled(), timeout=60_000)
    masks = viewer.layers[MASK_LAYER.format("sep")]
    rows, cols = np.nonzero(masks.data)
    assert abs(masks.translate[0] + rows.mean() - y) < 40 and abs(masks.translate[1] + cols.mean() - x) < 40
    assert points.features["measured"][index] and widget.table.rowCount() == 1

    # Rectangle: the first press makes the selection layer, the second measures what is inside.
    widget.measure_rectangle()
    shapes = viewer.layers["deep_field selection"]
    shapes.add_rectangles(np.array([[y - 60, x - 60], [y + 60, x + 60]]))
    widget.measure_rectangle()
    qtbot.waitUntil(lambda: not widget.cancel_button.isEnabled(), timeout=60_000)
    assert len(model.measured_indices) >= 2

    widget.measure_blends()
    qtbot.waitUntil(lambda: not widget.cancel_button.isEnabled(), timeout=60_000)
    assert set(model.blend_members().tolist()) <= set(model.measured_indices.tolist())
    assert widget.table.rowCount() == len(model.measured_indices)

    # An edited zero point moves every magnitude by the difference after a new detection.
    written = widget.save(tmp_path / "field_catalog")
    assert [p.name for p in written] == ["field_catalog.fits", "field_catalog.csv", "field_catalog.json"]
    widget.zero_point.setValue(28.5)
    widget.apply_calibration()
    assert model.calibration.zero_point == 28.5 and widget.zero_point_source.text() == "option"
    assert "deep_field sources" not in viewer.layers
    assert "tensorflow" not in sys.modules


@pytest.mark.slow
def test_widget_runs_methods_in_the_worker(make_napari_viewer, qtbot, field_path):
    """The widget's own runner: every method in the worker process (none in napari's)."""
    from napari_blendphot.widgets.field_widget import FieldWidget

    viewer = make_napari_viewer()
    widget = FieldWidget(viewer, model=FieldModel(methods=("sep",)))
    widget.open_path(field_path)
    widget.detect()
    index = int(widget.model.blend_members()[0])
    widget._run([index], "worker")
    qtbot.waitUntil(lambda: not widget.cancel_button.isEnabled(), timeout=180_000)
    assert np.isfinite(widget.model.features()["mag_sep"][index])
    runner = widget.model._runner
    assert runner.local_methods == () and runner._engine is not None and runner._engine.worker_pid
    widget.model.close()
