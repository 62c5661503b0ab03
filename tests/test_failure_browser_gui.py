"""Failure browser widget in a real napari viewer (pytest-xvfb)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from napari_blendphot.testing.stand_ins import make_results

from napari_blendphot.widgets.failure_browser import BLEND_LAYER, TRUTH_LAYER, FailureBrowserWidget


@pytest.fixture(scope="module")
def toy_results(tmp_path_factory):
    return make_results(tmp_path_factory.mktemp("failures_gui"))


@pytest.fixture
def widget(make_napari_viewer, toy_results):
    results_path, dataset = toy_results
    viewer = make_napari_viewer()
    widget = FailureBrowserWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Failure browser")
    widget.rerun_check.setChecked(False)  # the worker-process test turns it on
    assert widget.open_results(results_path, dataset.path)
    yield widget
    widget._close_engine()


def _dataset_blend(dataset, blend_id):
    row = int(np.flatnonzero(np.asarray(dataset.catalog["id"]) == blend_id)[0])
    return dataset.blends[row], dataset.masks[row]


def test_selecting_a_row_shows_that_blend(widget, toy_results):
    from napari_blendphot._reader import mask_outlines
    from napari_blendphot.app.session import current_blend_for

    _, dataset = toy_results
    viewer, failures = widget.viewer, widget.failures
    assert widget.table_model.rowCount() == len(failures) == 2 * 2 * len(failures.results)
    # first row = largest |dmag| (default sort)
    assert failures.current == 0
    assert failures.record()["abs_dmag"] == np.nanmax(failures.columns["abs_dmag"])
    widget.table.selectRow(5)
    record = failures.record()
    assert failures.current == 5
    blend, masks = _dataset_blend(dataset, record["blend_id"])
    np.testing.assert_array_equal(viewer.layers[BLEND_LAYER].data, blend)
    np.testing.assert_array_equal(viewer.layers[TRUTH_LAYER].data, mask_outlines(masks))
    state = current_blend_for(viewer).state
    assert state.origin == "failure-browser" and state.extra["blend_id"] == record["blend_id"]
    assert f"blend {record['blend_id']}" in widget.numbers_label.text()
    # J / K through napari's keymap chain, layers updated in place
    n_layers = len(viewer.layers)
    handler = viewer.window._qt_viewer._key_map_handler
    handler.press_key("J")
    handler.release_key("J")
    assert failures.current == 6 and widget.table.currentIndex().row() == 6
    shown_blend, _ = _dataset_blend(dataset, failures.record()["blend_id"])
    np.testing.assert_array_equal(viewer.layers[BLEND_LAYER].data, shown_blend)
    handler.press_key("K")
    handler.release_key("K")
    assert failures.current == 5 and len(viewer.layers) == n_layers
    assert "tensorflow" not in sys.modules


def test_header_sort_and_filters(widget):
    from qtpy.QtCore import Qt

    from napari_blendphot.widgets._failures_table import COLUMN_NAMES as _COLUMN_NAMES

    failures = widget.failures
    widget.table.sortByColumn(_COLUMN_NAMES.index("distance"), Qt.SortOrder.AscendingOrder)
    distances = failures.columns["distance"][failures.view]
    assert np.all(np.diff(distances) >= 0)
    assert widget.table_model.data(widget.table_model.index(0, _COLUMN_NAMES.index("distance"))) == \
        f"{distances[0]:.1f}"
    widget.method_combo.setCurrentText("sep")
    widget.galaxy_combo.setCurrentText("companion")
    low, _ = widget.range_edits["abs_dmag"]
    low.setText("0.1")
    low.editingFinished.emit()
    c = failures.columns
    expected = np.flatnonzero((c["method"] == "sep") & (c["galaxy"] == "companion") & (c["abs_dmag"] >= 0.1))
    assert sorted(failures.view.tolist()) == expected.tolist()
    assert widget.table_model.rowCount() == expected.size


def test_sorting_by_abs_z_puts_confident_failures_first(widget, toy_results):
    """|z| = |flux - true| / flux_err: a wrong flux with a small error bar first."""
    from qtpy.QtCore import Qt

    from napari_blendphot.widgets._failures_table import COLUMN_NAMES as _COLUMN_NAMES

    failures = widget.failures
    results = failures.results
    sep_central = (failures.columns["method"] == "sep") & (failures.columns["galaxy"] == "central")
    rows = failures.columns["row"][sep_central]
    expected = np.abs(np.asarray(results["g1_flux_sep"])[rows] - np.asarray(results["g1_flux"])[rows]) \
        / np.asarray(results["g1_flux_err_sep"])[rows]
    np.testing.assert_allclose(failures.columns["abs_z"][sep_central], expected)
    widget.table.sortByColumn(_COLUMN_NAMES.index("abs_z"), Qt.SortOrder.DescendingOrder)
    shown = failures.columns["abs_z"][failures.view]
    finite = shown[np.isfinite(shown)]
    assert finite.size and np.all(np.diff(finite) <= 0)
    assert np.all(np.isfinite(shown[: finite.size]))  # methods without errors last
    assert widget.table_model.headerData(_COLUMN_NAMES.index("abs_z"), Qt.Orientation.Horizontal) == "|z|"
    first = widget.table_model.data(widget.table_model.index(0, _COLUMN_NAMES.index("abs_z")))
    assert float(first) == pytest.approx(finite[0], abs=1e-3)


def test_scatter_pick_selects_the_row(widget):
    from matplotlib.backend_bases import MouseEvent

    failures = widget.failures
    widget.x_combo.setCurrentIndex(1)  # distance
    target = int(np.nanargmax(np.where(failures.columns["method"] == "net", failures.columns["abs_dmag"], np.nan)))
    widget.canvas.draw()
    x = failures.columns["distance"][target]
    y = failures.columns["dmag"][target]
    px, py = widget._axis.transData.transform((x, y))
    event = MouseEvent("button_press_event", widget.canvas, px, py, button=1)
    widget.figure.pick(event)  # what a click on the canvas does (Figure connects button_press_event to pick)
    picked = failures.current_row
    assert picked is not None
    assert failures.columns["distance"][picked] == pytest.approx(x, abs=0.5)
    assert failures.columns["dmag"][picked] == pytest.approx(y, abs=0.05)
    assert widget.table.currentIndex().row() == failures.current


def test_exports_from_widget(widget, tmp_path):
    from PIL import Image

    from napari_blendphot.tables import read_table

    widget.method_combo.setCurrentText("net")
    out = widget.export_csv(tmp_path / "rows.csv")
    assert len(read_table(out)) == len(widget.failures.view)
    assert widget.export_csv(tmp_path / "rows.csv") is None  # exists: refused (shown as an error)
    png = widget.export_montage(tmp_path / "montage.png")
    assert np.asarray(Image.open(png).convert("L"), float).std() > 20


def test_paper_catalogue_without_images(make_napari_viewer, paper_catalog_path):
    viewer = make_napari_viewer()
    widget = FailureBrowserWidget(viewer)
    assert widget.open_results(paper_catalog_path)
    assert widget.table_model.rowCount() == len(widget.failures)
    assert not widget.montage_button.isEnabled()
    assert "No blend images" in widget.source_label.text()
    assert BLEND_LAYER not in viewer.layers
    assert "blend" in widget.numbers_label.text()
    widget.detection_combo.setCurrentIndex(1)  # first detection case
    assert set(widget.failures.columns["detection"][widget.failures.view].tolist()) == {0}


def test_results_not_in_dataset_is_shown(make_napari_viewer, toy_results, tmp_path):
    from napari_blendphot.blend.dataset import write_blend_dataset
    from napari_blendphot.sample.toy import make_toy_sample

    results_path, _ = toy_results
    other = write_blend_dataset(make_toy_sample(30, seed=99), tmp_path / "other", n=5, test_fraction=0.0, seed=1)
    widget = FailureBrowserWidget(make_napari_viewer())
    assert not widget.open_results(results_path, other)
    assert widget.failures is None


def test_sep_masks_recomputed_in_worker(widget, toy_results, qtbot):
    from napari_blendphot.deblend.sep_baseline import SepTwoPass
    from napari_blendphot.display import masks_to_labels

    _, dataset = toy_results
    widget.rerun_check.setChecked(True)
    widget.step(+1)
    layer_name = "failures: sep masks"
    qtbot.waitUntil(lambda: layer_name in widget.viewer.layers, timeout=180_000)
    assert widget._engine is not None and widget._engine.worker_pid is not None  # ran in another process
    record = widget.failures.record()
    row = int(np.flatnonzero(np.asarray(dataset.catalog["id"]) == record["blend_id"])[0])
    view = dataset.select(index=[row])
    expected = SepTwoPass().deblend(view.blends, view.context()).masks[0]
    # Outlines in SEP's colour and line style (before: filled masks at 0.35 opacity in the truth's colours).
    from napari_blendphot.display import CENTRAL_LABEL, method_style, styled_outlines

    layer = widget.viewer.layers[layer_name]
    np.testing.assert_array_equal(layer.data, styled_outlines(expected, method_style("sep").line_style))
    assert layer.opacity == 1.0
    assert layer not in widget.viewer.layers.selection  # results never take the active layer
    np.testing.assert_allclose(layer.colormap.map(np.array([CENTRAL_LABEL]))[0], method_style("sep").central_rgba)
    assert np.count_nonzero(layer.data) < np.count_nonzero(masks_to_labels(expected))
    assert "tensorflow" not in sys.modules


def test_network_masks_can_be_rerun_with_shipped_weights(qtbot):
    """Masks of every mask-making method are re-run, networks too when a model is shipped."""
    from napari_blendphot.models.manifests import default_model
    from napari_blendphot.widgets.failure_browser import can_rerun_masks

    assert can_rerun_masks("sep")
    assert not can_rerun_masks("blend2flux")  # makes no masks
    for network in ("unet", "blend2mask2flux"):
        assert can_rerun_masks(network) == (default_model(network) is not None)
    assert default_model("unet") is not None  # the plugin ships a U-Net
