"""Curation widget in a real napari viewer (pytest-xvfb): keys drive decisions saved in the sidecar."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from napari_blendphot.curation import REASONS, DecisionStore


@pytest.fixture(scope="module")
def sample():
    from napari_blendphot.sample.toy import make_toy_sample

    return make_toy_sample(25, seed=21)


@pytest.fixture
def sample_file(tmp_path, sample):
    from napari_blendphot.sample.io_native import write_native

    return write_native(sample, tmp_path / "toy.fits")


@pytest.fixture
def widget(make_napari_viewer, sample_file):
    from napari_blendphot.widgets.curation import CurationWidget

    viewer = make_napari_viewer()
    widget = CurationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Curation")
    widget.reviewer_edit.setText("tester")
    widget.open_sample(str(sample_file), background=False)
    return widget


def _press(viewer, key: str) -> None:
    """Press and release *key* through napari's keymap chain (active layer first, then viewer)."""
    handler = viewer.window._qt_viewer._key_map_handler
    handler.press_key(key)
    handler.release_key(key)


def _records(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[1:]]


def test_layers_side_by_side(widget, sample):
    from napari_blendphot.clean.neighbours import clean_stamp, galaxy_rng

    viewer = widget.viewer
    original, cleaned, segmentation = (viewer.layers[name] for name in ("original", "cleaned", "segmentation"))
    np.testing.assert_array_equal(original.data, sample.images[0])
    expected, _ = clean_stamp(sample.images[0], sample.segmaps[0], galaxy_rng(0, sample.ids[0]))
    np.testing.assert_array_equal(cleaned.data, expected)
    assert set(np.unique(segmentation.data)) <= {0, 1, 2} and segmentation.data[64, 64] == 1
    xs = [layer.translate[1] for layer in (original, cleaned, segmentation)]
    assert xs[0] == 0 and xs[1] >= 128 and xs[2] >= 2 * 128
    # next galaxy: same layers, new data (updated in place)
    n_layers = len(viewer.layers)
    widget.do("next")
    assert len(viewer.layers) == n_layers
    np.testing.assert_array_equal(viewer.layers["original"].data, sample.images[1])


def test_keys_make_decisions_in_the_sidecar(widget, sample, sample_file):
    viewer = widget.viewer
    sidecar = sample_file.with_name("toy.fits.curation.jsonl")
    assert widget.model.store.path == sidecar
    ids = [int(i) for i in sample.ids]

    _press(viewer, "A")
    viewer.layers.selection.active = viewer.layers["segmentation"]  # Labels binds 1-4 to its tools
    _press(viewer, "2")
    viewer.layers.selection.active = viewer.layers["cleaned"]
    _press(viewer, "T")
    _press(viewer, "S")
    records = _records(sidecar)
    assert [(r["id"], r["decision"]) for r in records] == [(ids[0], "accept"), (ids[1], "reject"), (ids[2], "skip")]
    assert records[1]["reason"] == REASONS[1] and records[0]["reviewer"] == "tester"
    types = ("sph", "disk", "sphd", "irr")
    original_type = str(sample.catalog["galtype"][2])
    assert records[2]["galtype"] == types[(types.index(original_type) + 1) % 4]
    assert viewer.layers["segmentation"].mode == "pan_zoom"  # '2' did not switch the paint tool
    assert widget.model.index == 3 and "3 / 25" not in widget.progress_bar.text()
    assert widget.progress_bar.value() == 2

    _press(viewer, "U")
    assert [r["id"] for r in _records(sidecar)] == ids[:2]
    assert widget.model.index == 2
    _press(viewer, "Control-Z")
    assert [r["id"] for r in _records(sidecar)] == ids[:1]
    _press(viewer, "Left")
    assert widget.model.index == 0
    _press(viewer, "Right")
    assert widget.model.index == 1
    assert "tensorflow" not in sys.modules


def test_filter_widgets_and_resume(widget, sample, sample_file, make_napari_viewer):
    from napari_blendphot.widgets.curation import CurationWidget

    for _ in range(3):
        widget.do("accept")
    widget.do("reject4")
    widget.status_combo.setCurrentText("rejected")
    assert widget.model.filter.status == "rejected"
    assert widget.model.filtered_rows().tolist() == [3]
    assert widget.model.index == 3
    widget.status_combo.setCurrentText("all galaxies")
    widget.type_checks["sph"].setChecked(False)
    assert "sph" not in widget.model.filter.galtypes

    # a second viewer opening the same sample resumes after the last decision
    other = CurationWidget(make_napari_viewer())
    other.open_sample(str(sample_file), background=False)
    assert other.model.index == 4
    assert other.model.store.counts()["accept"] == 3


def test_export_from_widget(widget, sample, tmp_path):
    from napari_blendphot.sample.io import load_sample

    widget.do("accept")
    widget.do("accept")
    out = widget.export(tmp_path / "curated.fits")
    assert load_sample(out).ids.tolist() == [int(i) for i in sample.ids[:2]]
    assert widget.export(tmp_path / "curated.fits") is None  # exists: refused, shown as an error


def test_sidecar_of_other_sample_is_shown_not_raised(make_napari_viewer, sample_file, tmp_path):
    from napari_blendphot.sample.toy import make_toy_sample
    from napari_blendphot.widgets.curation import CurationWidget

    sidecar = tmp_path / "other.jsonl"
    DecisionStore(sidecar, make_toy_sample(10, seed=3)).decide(make_toy_sample(10, seed=3).ids[0], "accept")
    before = sidecar.read_bytes()
    widget = CurationWidget(make_napari_viewer())
    widget.open_sample(str(sample_file), sidecar=sidecar, background=False)
    assert widget.model is None
    assert sidecar.read_bytes() == before


def test_panel_shortcuts_when_the_focus_is_in_the_widget(widget, sample, sample_file, qtbot):
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    widget.viewer.window._qt_window.show()
    widget.viewer.window._qt_window.activateWindow()
    widget.progress_bar.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
    widget.progress_bar.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is widget.progress_bar, timeout=60_000)
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_A)
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_3)
    records = _records(sample_file.with_name("toy.fits.curation.jsonl"))
    assert [(r["decision"], r["reason"]) for r in records] == [("accept", None), ("reject", REASONS[2])]


def test_viewer_keys_borrowed_only_while_curating(make_napari_viewer, sample_file):
    from napari.utils.key_bindings import coerce_keybinding

    from napari_blendphot.widgets.curation import CurationWidget

    viewer = make_napari_viewer()
    widget = CurationWidget(viewer)
    assert coerce_keybinding("Left") not in viewer.keymap  # nothing taken before a sample is open
    widget.open_sample(str(sample_file), background=False)
    assert coerce_keybinding("Left") in viewer.keymap and coerce_keybinding("A") in viewer.keymap
    widget.close()
    assert coerce_keybinding("Left") not in viewer.keymap and coerce_keybinding("A") not in viewer.keymap


def test_curate_the_selected_sample_layer(make_napari_viewer, sample, tmp_path, monkeypatch, qtbot):
    from napari_blendphot._reader import sample_layers
    from napari_blendphot.widgets.curation import CurationWidget

    monkeypatch.chdir(tmp_path)
    viewer = make_napari_viewer()
    for data, kwargs, kind in sample_layers(sample, name="toy"):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = CurationWidget(viewer)
    viewer.layers.selection.active = viewer.layers["toy stamps"]
    widget.layer_button.click()  # opens in a worker thread
    qtbot.waitUntil(lambda: widget.model is not None, timeout=120_000)
    assert widget.model.sample is sample
    # an in-memory sample has no file to sit beside: the sidecar goes to the current folder
    assert widget.model.store.path == tmp_path / "toy-sample-seed-21.curation.jsonl"


# -- page of thumbnails ------------------------------------------------------------------------------


@pytest.fixture
def shown_widget(make_napari_viewer, sample_file, qtbot):
    from napari_blendphot.widgets.curation import CurationWidget

    viewer = make_napari_viewer(show=True)
    widget = CurationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Curation")
    widget.reviewer_edit.setText("tester")
    widget.open_sample(str(sample_file), background=False)
    widget.page_rows_spin.setValue(2)
    widget.page_columns_spin.setValue(3)
    return widget


def _edge_colours(layer):
    from napari.utils.colormaps.standardize_color import transform_color

    def rounded(rgba):
        return tuple(round(float(v), 3) for v in rgba)

    return [rounded(c) for c in layer.edge_color], lambda hex_: rounded(transform_color(hex_)[0])


def _click_tile(widget, qtbot, slot):
    """A real left click (Qt press + release) on the centre of tile *slot* of the page."""
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    from napari_blendphot.widgets.curation import PAGE_LAYER

    viewer = widget.viewer
    qt_canvas = viewer.window._qt_viewer.canvas
    native = qt_canvas._scene_canvas.native
    qtbot.waitUntil(native.isVisible, timeout=60_000)
    QApplication.processEvents()  # the canvas has its final size before the view is fitted to it
    viewer.reset_view()
    layer = viewer.layers[PAGE_LAYER]
    y, x = widget.page_layout().tile_origin(slot)
    half = widget.page_layout().stamp_size // 2
    transform = qt_canvas.layer_to_visual[layer].node.get_transform(map_from="visual", map_to="canvas")
    px, py = transform.map([x + half, y + half])[:2]
    assert 0 < px < native.width() and 0 < py < native.height(), "tile centre off the canvas"
    QTest.mouseClick(native, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(int(px), int(py)))


def test_page_of_thumbnails(shown_widget, sample, qtbot):
    from napari_blendphot.clean.neighbours import clean_stamp, galaxy_rng
    from napari_blendphot.curation.pages import CURRENT_COLOR, DECISION_COLORS
    from napari_blendphot.display import asinh_stretch
    from napari_blendphot.widgets.curation import PAGE_LAYER, PAGE_TILES_LAYER

    widget = shown_widget
    viewer = widget.viewer
    assert PAGE_LAYER not in viewer.layers
    _press(viewer, "G")  # the page on
    assert widget.page_check.isChecked()
    mosaic, tiles = viewer.layers[PAGE_LAYER], viewer.layers[PAGE_TILES_LAYER]
    layout = widget.page_layout()
    assert layout.per_page == 6 and mosaic.data.shape == layout.shape
    # tile 4 is the cleaned stamp of row 4, stretched on its own; the page sits right of the panels
    expected, _ = clean_stamp(sample.images[4], sample.segmaps[4], galaxy_rng(0, sample.ids[4]))
    y, x = layout.tile_origin(4)
    np.testing.assert_allclose(mosaic.data[y:y + 128, x:x + 128], asinh_stretch(expected), atol=1e-6)
    assert mosaic.translate[1] > viewer.layers["segmentation"].translate[1] + 128
    assert list(tiles.features["row"]) == [0, 1, 2, 3, 4, 5] * 2  # six tiles + their current frames
    assert widget.page_label.text().startswith("page 1 / 5")
    assert viewer.layers.selection.active is viewer.layers["original"]

    # decisions recolour the outlines in place; the current frame follows
    _press(viewer, "A")
    _press(viewer, "3")
    colours, colour = _edge_colours(tiles)
    assert colours[0] == colour(DECISION_COLORS["accept"]) and colours[1] == colour(DECISION_COLORS["reject"])
    assert colours[2] == colour(DECISION_COLORS[None]) and colours[6 + 2] == colour(CURRENT_COLOR)
    assert [c for c in colours if c == colour(CURRENT_COLOR)] == [colour(CURRENT_COLOR)]
    assert list(tiles.features["label"])[:2] == [
        f"{sample.ids[0]} ok", f"{sample.ids[1]} rej 3"]
    n_layers = len(viewer.layers)

    # PageDown / PageUp: first galaxy of the next / previous page, layers updated in place
    _press(viewer, "PageDown")
    assert widget.model.index == 6 and mosaic.metadata["page_rows"] == [6, 7, 8, 9, 10, 11]
    assert len(viewer.layers) == n_layers and viewer.layers[PAGE_LAYER] is mosaic
    widget.page_next_button.click()
    assert widget.model.index == 12
    _press(viewer, "PageUp")
    _press(viewer, "PageUp")
    assert widget.model.index == 0 and widget.page_label.text().startswith("page 1 / 5")

    # a click on a tile opens that galaxy
    _click_tile(widget, qtbot, 4)
    qtbot.waitUntil(lambda: widget.model.index == 4, timeout=60_000)
    np.testing.assert_array_equal(viewer.layers["original"].data, sample.images[4])
    colours, colour = _edge_colours(tiles)
    assert colours.index(colour(CURRENT_COLOR)) == 6 + 4

    # the filter changes the page: only the rejected galaxy
    widget.status_combo.setCurrentText("rejected")
    assert mosaic.metadata["page_rows"] == [1] and widget.model.index == 1
    assert list(tiles.features["row"]) == [1, 1] and len(tiles.data) == 2
    assert not mosaic.data[:, layout.step:].any()  # empty tiles stay black
    widget.status_combo.setCurrentText("all galaxies")

    # a bigger grid is rebuilt at once; G again takes the page away
    widget.page_rows_spin.setValue(3)
    assert mosaic.data.shape == widget.page_layout().shape and len(tiles.features) == 2 * 9
    _press(viewer, "G")
    assert PAGE_LAYER not in viewer.layers and PAGE_TILES_LAYER not in viewer.layers
    assert widget._on_page_click not in viewer.mouse_drag_callbacks
    _press(viewer, "Right")  # the walk goes on without the page
    assert widget.model.index == 2 and PAGE_LAYER not in viewer.layers
    assert "tensorflow" not in sys.modules


def test_page_click_outside_the_tiles_changes_nothing(shown_widget, qtbot):
    from napari_blendphot.widgets.curation import PAGE_LAYER

    widget = shown_widget
    widget.page_check.setChecked(True)
    layer = widget.viewer.layers[PAGE_LAYER]
    layout = widget.page_layout()
    gap_world = layer.data_to_world((10, layout.stamp_size + layout.gap / 2))  # in the gap after tile 0
    assert widget._slot_under(gap_world) is None
    assert widget._slot_under(layer.data_to_world((10, 10))) == 0
    assert widget._slot_under(layer.data_to_world((-30, 10))) is None
    widget.open_tile(99)  # no such tile: ignored
    assert widget.model.index == 0


def _drag(widget, path, button=1):
    """Feed napari's drag-callback protocol (press, moves, release) to the page's click handler."""
    from types import SimpleNamespace

    event = SimpleNamespace(type="mouse_press", button=button, modifiers=(), position=path[0])
    handler = widget._on_page_click(widget.viewer, event)
    try:
        next(handler)
        for position in path[1:]:
            event.type, event.position = "mouse_move", position
            next(handler)
        event.type = "mouse_release"
        next(handler)
    except StopIteration:
        pass


def test_page_drag_pans_without_opening_a_tile(shown_widget):
    from napari_blendphot.widgets.curation import PAGE_LAYER

    widget = shown_widget
    widget.page_check.setChecked(True)
    layer = widget.viewer.layers[PAGE_LAYER]
    layout = widget.page_layout()
    centre = lambda slot: layer.data_to_world(np.add(layout.tile_origin(slot), 64))  # noqa: E731
    _drag(widget, [centre(0), centre(1), centre(3)])  # a pan from tile 0 to tile 3
    assert widget.model.index == 0
    _drag(widget, [centre(3)], button=2)  # right button: not a selection
    assert widget.model.index == 0
    _drag(widget, [centre(3), centre(3)])  # a click (a move within the tile is still a click)
    assert widget.model.index == 3


def test_deleting_a_page_layer_turns_the_page_off(shown_widget):
    from napari_blendphot.widgets.curation import PAGE_LAYER, PAGE_TILES_LAYER

    widget = shown_widget
    viewer = widget.viewer
    widget.page_check.setChecked(True)
    viewer.layers.remove(PAGE_LAYER)
    assert not widget.page_check.isChecked() and PAGE_TILES_LAYER not in viewer.layers
    assert widget._on_page_click not in viewer.mouse_drag_callbacks
    widget.do("accept")  # no page layer comes back uninvited
    assert PAGE_LAYER not in viewer.layers
    widget.page_check.setChecked(True)
    assert PAGE_LAYER in viewer.layers and PAGE_TILES_LAYER in viewer.layers
    widget.close()
    assert widget._on_page_click not in viewer.mouse_drag_callbacks
    widget.show()  # shown again with the page still on: clicks work again
    assert widget._on_page_click in viewer.mouse_drag_callbacks
