"""The Deblend Inspector by napari's conventions (issue 17): methods told apart, results never selected,
a state that never lies (out of date, cleared after errors, the image under its masks), flux errors.

One SEP-only engine for the module (no TensorFlow start): SEP and the paper's SEP both make masks and
SEP gives flux errors, which is all these views need.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_blendphot.app.inspector import InspectorModel
from napari_blendphot.app.session import BlendState, current_blend_for
from napari_blendphot.blend.assemble import make_blend
from napari_blendphot.deblend.engine import InferenceEngine

METHODS = ["sep", "seppaper"]


@pytest.fixture(scope="module")
def engine():
    engine = InferenceEngine(tuple(METHODS))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def blends(toy_sample):
    return make_blend(toy_sample[0], toy_sample[1], 9, -12), make_blend(toy_sample[0], toy_sample[1], -6, 14)


def make_widget(make_napari_viewer, engine, methods=METHODS, show=False):
    from napari_blendphot.widgets.deblend_inspector import DeblendInspectorWidget

    viewer = make_napari_viewer(show=show)
    widget = DeblendInspectorWidget(viewer, model=InspectorModel(methods=list(methods), engine=engine, chunk_size=8))
    viewer.window.add_dock_widget(widget, name="Deblend Inspector", area="right")
    return viewer, widget


def show_blend(viewer, blend, name, origin="builder"):
    current_blend_for(viewer).set(BlendState(blend.blend, name, truth=blend, origin=origin))


def wait_drawn(qtbot, widget, count):
    qtbot.waitUntil(lambda: widget.drawn_count >= count, timeout=60000)


@pytest.mark.gui
def test_each_method_in_its_own_colour_and_line_style_with_a_legend(make_napari_viewer, qtbot, engine, blends):
    from napari_blendphot.display import CENTRAL_LABEL, method_style

    viewer, widget = make_widget(make_napari_viewer, engine)
    show_blend(viewer, blends[0], "pair")
    wait_drawn(qtbot, widget, 1)
    central = {name: tuple(viewer.layers[f"masks: {name}"].colormap.map(np.array([CENTRAL_LABEL]))[0])
               for name in ("truth", *METHODS)}
    assert len(set(central.values())) == 3  # before: every method blue/orange, like the truth
    for name in METHODS:
        np.testing.assert_allclose(central[name], method_style(name).central_rgba, atol=1e-6)
        assert method_style(name).label in widget.view.legend.text()
        assert method_style(name).galaxy_hex("central") in widget.view.legend.text()
    # SEP is dashed: its outline has gaps where the solid truth outline of the same mask has none.
    sep_masks = np.asarray(widget.last_inspection.outputs["sep"].masks)[0]
    from napari_blendphot.display import styled_outlines

    assert 0 < np.count_nonzero(viewer.layers["masks: sep"].data) < np.count_nonzero(styled_outlines(sep_masks))
    widget.close_inspector()


@pytest.mark.gui
def test_the_truth_is_drawn_once_and_results_never_take_the_active_layer(make_napari_viewer, qtbot, engine, blends):
    from napari_blendphot._reader import show_masks

    viewer, widget = make_widget(make_napari_viewer, engine)
    show_masks(viewer, "builder truth", blends[0].masks)  # what the Blend Builder draws (blendphot_truth)
    point = viewer.add_points(np.array([[64.0, 70.0]]), name="companion")
    viewer.layers.selection.active = point
    show_blend(viewer, blends[0], "pair")
    wait_drawn(qtbot, widget, 1)
    assert "masks: truth" not in viewer.layers  # the Builder's truth already shows it
    assert "masks: sep" in viewer.layers
    assert viewer.layers.selection.active is point
    assert set(viewer.layers.selection) == {point}
    assert not viewer.layers["masks: sep"].editable
    widget.close_inspector()


@pytest.mark.gui
def test_results_of_an_earlier_blend_are_flagged_and_an_error_clears_them(make_napari_viewer, qtbot, engine, blends):
    viewer, widget = make_widget(make_napari_viewer, engine)
    show_blend(viewer, blends[0], "first")
    wait_drawn(qtbot, widget, 1)
    assert not widget.view.out_of_date.isVisibleTo(widget)
    widget.live_box.setChecked(False)
    show_blend(viewer, blends[1], "moved")
    assert widget.view.out_of_date.isVisibleTo(widget)
    assert viewer.layers["masks: sep (out of date)"].opacity < 1
    widget.run_now()
    wait_drawn(qtbot, widget, 2)
    assert not widget.view.out_of_date.isVisibleTo(widget)
    assert viewer.layers["masks: sep"].opacity == 1.0
    # A blend that cannot be measured: the old masks and table go, the error stays.
    viewer.add_image(np.zeros((100, 100), np.float32), name="wrong size")
    widget.select_source("wrong size")
    qtbot.waitUntil(lambda: widget.error_label.isVisibleTo(widget), timeout=10000)
    assert not any(name.startswith("masks:") for name in (layer.name for layer in viewer.layers))
    assert widget.table.rowCount() == 0
    widget.close_inspector()


@pytest.mark.gui
def test_the_inspected_blend_set_image_is_the_one_under_the_masks(make_napari_viewer, qtbot, engine, toy_sample):
    from napari_blendphot._reader import blend_dataset_layers
    from napari_blendphot.blend.assemble import make_blends

    viewer, widget = make_widget(make_napari_viewer, engine, methods=["sep"])
    batch = make_blends(toy_sample, 4, seed=5, split="test")
    for data, kwargs, kind in blend_dataset_layers(batch, name="toy"):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.add_image(np.zeros((128, 128), np.float32), name="builder blend", metadata={"blendphot_kind": "builder"})
    widget.select_source("toy blends")
    wait_drawn(qtbot, widget, 1)
    names = [layer.name for layer in viewer.layers]
    from napari.layers import Image

    images = [layer.name for layer in viewer.layers if isinstance(layer, Image) and layer.visible]
    assert images[-1] == "toy blends"  # before: the Builder's blend lay above it, under the outlines
    assert names.index("masks: sep") > names.index("toy blends")
    widget.close_inspector()


@pytest.mark.gui
def test_flux_errors_in_the_table_and_the_layer_features(make_napari_viewer, qtbot, engine, blends):
    viewer, widget = make_widget(make_napari_viewer, engine, methods=["sep"])
    show_blend(viewer, blends[0], "pair")
    wait_drawn(qtbot, widget, 1)
    rows = {(row.method, row.galaxy): row for row in widget.table_rows()}
    sep = rows["sep", "central"]
    assert np.isfinite(sep.flux_err) and sep.flux_err > 0
    assert sep.mag_err == pytest.approx(2.5 / np.log(10) * sep.flux_err / sep.flux, rel=1e-6)
    features = viewer.layers["masks: sep"].features
    assert features["flux_err"][1] == pytest.approx(sep.flux_err)
    assert features["mag_err"][2] == pytest.approx(rows["sep", "companion"].mag_err)
    cell = next(widget.table.item(i, 2).text() for i in range(widget.table.rowCount())
                if widget.table.item(i, 0).text() == "sep")
    flux_text, error_text = cell.split(" ± ")
    assert float(flux_text) == pytest.approx(sep.flux, rel=1e-3)
    assert float(error_text) == pytest.approx(sep.flux_err, rel=1e-3)
    widget.close_inspector()


@pytest.mark.gui
def test_side_by_side_gives_each_method_a_titled_cell_over_the_image(make_napari_viewer, qtbot, engine, blends):
    viewer, widget = make_widget(make_napari_viewer, engine)
    show_blend(viewer, blends[0], "pair")
    wait_drawn(qtbot, widget, 1)
    widget.view.side_by_side_box.setChecked(True)
    cells = widget.side_by_side.cells
    assert set(cells) == {"truth", *METHODS}
    offsets = sorted(float(cells[key][0].translate[-1]) for key in cells)
    assert offsets[0] > 0 and len(set(offsets)) == 3  # each its own cell, right of the blend
    for key, (image, outlines, title) in cells.items():
        np.testing.assert_array_equal(image.data, blends[0].blend)
        np.testing.assert_array_equal(outlines.data, viewer.layers[f"masks: {key}"].data)
        assert tuple(image.translate) == tuple(outlines.translate) == tuple(title.translate)
        assert viewer.layers.index(outlines) > viewer.layers.index(image)
        from napari_blendphot.display import method_style

        assert list(title.features["title"]) == [method_style(key).label]
    # A re-run updates the cells in place; switching off removes them.
    show_blend(viewer, blends[1], "moved")
    wait_drawn(qtbot, widget, 2)
    np.testing.assert_array_equal(cells["sep"][1].data, viewer.layers["masks: sep"].data)
    np.testing.assert_array_equal(cells["sep"][0].data, blends[1].blend)
    widget.view.side_by_side_box.setChecked(False)
    assert not any(layer.name.startswith("side by side") for layer in viewer.layers)
    widget.close_inspector()


@pytest.mark.gui
def test_saved_table_reads_with_pandas_and_astropy_defaults(make_napari_viewer, qtbot, engine, blends, tmp_path,
                                                            monkeypatch):
    import pandas
    from astropy.table import Table

    viewer, widget = make_widget(make_napari_viewer, engine, methods=["sep"])
    show_blend(viewer, blends[0], "pair")
    wait_drawn(qtbot, widget, 1)
    monkeypatch.setattr(widget, "_ask_save_path", lambda *args: str(tmp_path / "table.csv"))
    written = widget.save_table()
    frame = pandas.read_csv(written)
    plain = Table.read(written, format="ascii.csv")
    assert list(frame.columns) == list(plain.colnames) and "flux_err" in frame.columns
    sep = frame[(frame["method"] == "sep") & (frame["galaxy"] == "central")]
    assert float(sep["flux_err"].iloc[0]) == pytest.approx(widget.table_rows()[2].flux_err)
    widget.close_inspector()


@pytest.mark.gui
def test_the_first_run_shows_a_busy_bar_until_drawn(make_napari_viewer, qtbot, blends):
    cold = InferenceEngine(("sep",))  # not started yet: the first run starts its worker
    try:
        viewer, widget = make_widget(make_napari_viewer, cold, methods=["sep"])
        show_blend(viewer, blends[0], "pair")
        assert widget.view.busy.isVisibleTo(widget)  # before: a grey text line only
        assert "first run" in widget.view.busy.format()
        wait_drawn(qtbot, widget, 1)
        assert not widget.view.busy.isVisibleTo(widget)
        widget.close_inspector()
    finally:
        cold.close()


@pytest.mark.gui
def test_the_default_split_is_one_the_set_has_and_chunks_stay_short(make_napari_viewer, qtbot, engine, toy_sample):
    from napari_blendphot._reader import blend_dataset_layers
    from napari_blendphot.blend.assemble import make_blends
    from napari_blendphot.widgets._inspector_batch import CANCEL_WITHIN_S, chunk_for

    viewer, widget = make_widget(make_napari_viewer, engine, methods=["sep"])
    # The sample-data blend set has split "all" only: "test" (the old default) failed with "has no test blends".
    for data, kwargs, kind in blend_dataset_layers(make_blends(toy_sample, 6, seed=5), name="mock"):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    assert widget.split_combo.currentText() == "all"
    assert [widget.split_combo.itemText(i) for i in range(widget.split_combo.count())] == ["all"]
    for data, kwargs, kind in blend_dataset_layers(make_blends(toy_sample, 6, seed=5, split="test"), name="toy"):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget.set_combo.setCurrentText("toy blends")
    assert widget.split_combo.currentText() == "test"
    # A chunk holds about CANCEL_WITHIN_S of work (Cancel waited 4-7 s for chunks of 64 blends).
    assert chunk_for(0.1, 64) == round(CANCEL_WITHIN_S / 0.1)
    assert chunk_for(1e-4, 64) == 64 and chunk_for(5.0, 64) == 1
    widget._last_seconds = 0.1
    widget.run_blend_set()
    assert widget.model.chunk_size == chunk_for(0.1, 8)  # the module's model allows 8
    qtbot.waitUntil(lambda: widget.batch_label.text().startswith("6 blends in"), timeout=60000)
    widget.close_inspector()
