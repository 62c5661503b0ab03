"""The Deblend Inspector: its model without a viewer, and the widget in a real napari viewer.

One inference engine serves the whole module (its worker starts once); the
tiny networks are built and saved by a throwaway TensorFlow worker
(``napari_blendphot.testing.stand_ins.tiny_models``), so this process never imports
TensorFlow — checked in several tests.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np
import pytest
from napari_blendphot.testing.stand_ins import tiny_models

from napari_blendphot.blend.assemble import make_blend, make_blends
from napari_blendphot.deblend.engine import InferenceEngine
from napari_blendphot.deblend.registry import (
    available_methods,
    default_methods,
    register_method,
    unregister_method,
)
from napari_blendphot.errors import InputError
from napari_blendphot.app.inspector import (
    NO_TRUTH_NOTE,
    InspectorModel,
    layer_features,
    measure,
    rows_as_tsv,
    state_from_image,
    truth_catalog,
    truth_context,
)
from napari_blendphot.app.session import BlendState, current_blend_for

pytestmark = pytest.mark.slow  # one engine start plus a TensorFlow start for the tiny networks

NETWORKS = ("blend2flux", "unet", "blend2mask2flux")


@pytest.fixture(scope="module")
def engine_and_tiny(tmp_path_factory):
    """The module's engine; its own worker builds the tiny networks (one TensorFlow start in all)."""
    engine = InferenceEngine(("sep",), backend="tensorflow")
    tiny = tiny_models(tmp_path_factory, engine)
    for name in NETWORKS:
        engine.set_method_options(name, weights=tiny["paths"][name])
    engine.warm_up(["sep", *NETWORKS])
    yield engine, tiny
    engine.close()


@pytest.fixture(scope="module")
def engine(engine_and_tiny):
    return engine_and_tiny[0]


@pytest.fixture(scope="module")
def tiny(engine_and_tiny):
    return engine_and_tiny[1]


@pytest.fixture(scope="module")
def blends(toy_sample):
    """Two blends of the same pair, the companion moved between them."""
    return make_blend(toy_sample[0], toy_sample[1], 9, -12), make_blend(toy_sample[0], toy_sample[1], -6, 14)


@pytest.fixture
def notes(monkeypatch):
    """Every notification the inspector shows, as (kind, message); they still reach napari."""
    from napari_blendphot.widgets import deblend_inspector

    shown = []
    original = deblend_inspector._notify

    def record(kind, message):
        shown.append((kind, message))
        original(kind, message)

    monkeypatch.setattr(deblend_inspector, "_notify", record)
    return shown


def make_widget(make_napari_viewer, engine, tiny, methods=None, show=False):
    from napari_blendphot.widgets.deblend_inspector import DeblendInspectorWidget

    viewer = make_napari_viewer(show=show)
    model = InspectorModel(methods=methods, engine=engine, chunk_size=8)
    for name in NETWORKS:
        model.weights[name] = tiny["paths"][name]
    widget = DeblendInspectorWidget(viewer, model=model)
    viewer.window.add_dock_widget(widget, name="Deblend Inspector", area="right")
    return viewer, widget


def wait_drawn(qtbot, widget, count, timeout=30000):
    qtbot.waitUntil(lambda: widget.drawn_count >= count, timeout=timeout)


def table_text(widget):
    return [[widget.table.item(i, j).text() for j in range(widget.table.columnCount())]
            for i in range(widget.table.rowCount())]


# ----------------------------------------------------------------------------- the model alone
def test_states_refuse_bad_stamps_with_input_errors():
    with pytest.raises(InputError, match="shape \\(100, 100\\)"):
        state_from_image(np.zeros((100, 100), np.float32), "small")
    image = np.zeros((128, 128), np.float32)
    image[3, 4] = np.nan
    with pytest.raises(InputError, match="1 pixel\\(s\\) are NaN"):
        state_from_image(image, "holes")
    state = state_from_image(np.ones((128, 128), ">f8"), "big-endian")
    assert state.image.dtype == np.float32 and state.image.dtype.isnative and state.truth is None


def test_model_rows_equal_the_library_for_sep(engine, blends):
    from napari_blendphot.deblend.sep_baseline import SepTwoPass
    from napari_blendphot.metrics.binned import galaxy_measurements
    from napari_blendphot.report.results import build_results_table

    blend = blends[0]
    model = InspectorModel(methods=["sep"], engine=engine)
    inspection = model.inspect(BlendState(blend.blend, "b", truth=blend)).result(timeout=60)
    model.close()
    assert inspection.errors == {}
    direct = SepTwoPass(n_jobs=1).deblend(blend.blend[None], truth_context(blend))
    table = build_results_table(truth_catalog(blend), {"sep": direct}, true_masks=blend.masks[None])
    rows = {(row.method, row.galaxy): row for row in inspection.rows}
    for galaxy, prefix in (("central", "g1"), ("companion", "g2")):
        expected = galaxy_measurements(table, "sep", galaxy, "all")[0]
        row = rows["sep", galaxy]
        assert row.flux == pytest.approx(float(table[f"{prefix}_flux_sep"][0]), rel=1e-12)
        assert row.dmag == pytest.approx(float(expected["dmag"]), abs=1e-12)
        assert row.iou == pytest.approx(float(table[f"{prefix}_iou_sep"][0]), abs=1e-12)
        assert row.detection.startswith(str(int(table["detection_sep"][0])))
        assert rows["truth", galaxy].flux == pytest.approx(float(table[f"{prefix}_flux"][0]))
    features = layer_features(inspection.rows, "sep")
    assert features["flux"][1] == rows["sep", "central"].flux and features["flux"][2] == rows["sep", "companion"].flux
    assert np.isnan(features["flux"][0]) and np.isnan(features["flux"][3])
    tsv = rows_as_tsv(inspection.rows).splitlines()
    assert tsv[0].split("\t")[:3] == ["method", "label", "galaxy"] and len(tsv) == 1 + len(inspection.rows)
    assert "tensorflow" not in sys.modules


def test_a_queued_request_is_dropped_when_a_newer_one_arrives(engine, blends):
    register_method("slowgui", "napari_blendphot.testing.stand_ins:SlowDeblender", label="slow stand-in", needs_worker=False)
    try:
        model = InspectorModel(methods=["slowgui"], engine=engine)
        engine.set_method_options("slowgui", seconds_per_blend=0.5)
        first = model.inspect(BlendState(blends[0].blend, "first"))
        stale = [model.inspect(BlendState(blends[0].blend, f"stale {i}")) for i in range(3)]
        last = model.inspect(BlendState(blends[1].blend, "last"))
        assert first.result(timeout=30).outputs and not model.is_latest(first.result())
        assert [f.result(timeout=30).note for f in stale] == ["superseded"] * 3
        assert all(not f.result().outputs for f in stale)
        assert last.result(timeout=30).state.name == "last" and model.is_latest(last.result())
        model.close()
    finally:
        unregister_method("slowgui")
        engine.method_options.pop("slowgui", None)


def test_an_inspection_records_where_its_time_went(engine, blends):
    model = InspectorModel(methods=["sep"], engine=engine)
    inspection = model.inspect(BlendState(blends[0].blend, "b", truth=blends[0])).result(timeout=60)
    model.close()
    timings = inspection.timings
    assert sorted(timings) == ["compute", "measure", "request"]
    # The methods' time in the worker is part of the request, which is part of the whole inspection.
    assert 0 < timings["compute"] < timings["request"] <= inspection.seconds
    assert 0 < timings["measure"] <= inspection.seconds
    # The worker measured (one phase): the same lines as measuring here.
    local_rows, _ = measure(inspection.state, inspection.outputs)
    assert [row.as_tuple()[:3] + row.as_tuple()[-1:] for row in inspection.rows] == \
        [row.as_tuple()[:3] + row.as_tuple()[-1:] for row in local_rows]
    np.testing.assert_array_equal([row.as_tuple()[3:7] for row in inspection.rows],
                                  [row.as_tuple()[3:7] for row in local_rows])


def test_missing_shipped_weights_are_reported_and_sep_still_runs(engine, blends, tmp_path, monkeypatch):
    from napari_blendphot.models import manifests as registry

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)  # an installation without shipped models
    model = InspectorModel(methods=["sep", "blend2flux"], engine=engine)
    inspection = model.inspect(BlendState(blends[0].blend, "b", truth=blends[0])).result(timeout=60)
    model.close()
    assert list(inspection.outputs) == ["sep"]
    assert "no shipped model installed" in inspection.errors["blend2flux"]
    assert model.weights_description("blend2flux") == "no shipped model"


# ----------------------------------------------------------------------------- the widget
def test_an_unavailable_method_is_listed_disabled_with_its_install_hint(make_napari_viewer, engine, tiny):
    register_method("missinggui", "test_engine_support:SlowDeblender", label="missing method", needs_worker=False,
                    check="test_method_availability:_missing")
    try:
        _, widget = make_widget(make_napari_viewer, engine, tiny)
        box = widget.method_boxes["missinggui"]
        assert not box.isEnabled() and not box.isChecked() and "not available" in box.text()
        assert "apt-get install thing" in box.toolTip()
        assert "apt-get install thing" in widget.model.check_method("missinggui")
        widget.close_inspector()
    finally:
        unregister_method("missinggui")


def test_checkboxes_follow_the_registry(make_napari_viewer, engine, tiny):
    register_method("echogui", "napari_blendphot.testing.stand_ins:SlowDeblender", label="stand-in method", needs_worker=False)
    try:
        _, widget = make_widget(make_napari_viewer, engine, tiny)
        assert list(widget.method_boxes) == list(available_methods())
        assert widget.method_boxes["echogui"].text() == "stand-in method"
        assert set(widget.weights_labels) == set(NETWORKS) | {"ensemble"}  # every method that takes weights
        widget.close_inspector()
    finally:
        unregister_method("echogui")


def test_a_third_party_keras_method_gets_a_weights_button_and_the_precision(make_napari_viewer, engine, tiny):
    """The weights row and the precision choice follow the registry's capabilities, not a list of names."""
    register_method("thirdnet", "napari_blendphot.testing.stand_ins:SlowDeblender", label="third-party network",
                    uses_keras=True, accepts_weights=True, precisions=("float32", "bfloat16", "auto"))
    try:
        _, widget = make_widget(make_napari_viewer, engine, tiny)
        assert set(widget.weights_labels) == {*NETWORKS, "ensemble", "thirdnet"}
        assert widget.weights_labels["thirdnet"].text() == "no shipped model"
        assert not widget.method_boxes["thirdnet"].isChecked()  # no weights yet
        assert widget.precision_combo.isVisibleTo(widget)
        widget.close_inspector()
    finally:
        unregister_method("thirdnet")


def test_runs_draw_layers_table_and_features_and_rerun_updates(make_napari_viewer, qtbot, engine, tiny, blends):
    viewer, widget = make_widget(make_napari_viewer, engine, tiny, methods=["sep", *NETWORKS])
    current_blend_for(viewer).set(BlendState(blends[0].blend, "pair 0+1", truth=blends[0], origin="builder"))
    wait_drawn(qtbot, widget, 1)
    names = [layer.name for layer in viewer.layers]
    expected = {"masks: truth", "masks: sep", "masks: unet", "masks: blend2mask2flux"}
    assert expected <= set(names) and "masks: blend2flux" not in names  # blend2flux makes no masks
    assert widget.last_inspection.errors == {}

    # Network numbers equal the engine's own output with the same weights on the same blend.
    direct = engine.run(blends[0].blend, truth_context(blends[0]), methods=list(NETWORKS))
    rows = {(row.method, row.galaxy): row for row in widget.table_rows()}
    for name in NETWORKS:
        for k, galaxy in enumerate(("central", "companion")):
            # nan_ok: the tiny stand-in U-Net's masks may leave a galaxy no pixel of its own (not found).
            assert rows[name, galaxy].flux == pytest.approx(float(direct[name].fluxes[0, k]), rel=1e-5, nan_ok=True)
    # layer.features hold the table's numbers for label 1 (central) and 2 (companion).
    for name in ("sep", "unet", "blend2mask2flux"):
        features = viewer.layers[f"masks: {name}"].features
        assert list(features["galaxy"]) == ["background", "central", "companion", "both"]
        assert features["flux"][1] == pytest.approx(rows[name, "central"].flux, nan_ok=True)
        assert features["dmag"][2] == pytest.approx(rows[name, "companion"].dmag, nan_ok=True)
        assert features["iou"][1] == pytest.approx(rows[name, "central"].iou, nan_ok=True)
        assert viewer.layers[f"masks: {name}"].metadata["blend"] == "pair 0+1"
    # The Qt table shows the same numbers, rounded.
    text = table_text(widget)
    sep_row = next(r for r in text if r[0] == "sep")
    assert float(sep_row[2].split(" ± ")[0]) == pytest.approx(rows["sep", "central"].flux, rel=1e-3)
    assert float(sep_row[4]) == pytest.approx(rows["sep", "central"].dmag, abs=1e-3)

    # Second blend: same layers, new data.
    count = len(viewer.layers)
    old_truth = viewer.layers["masks: truth"].data.copy()
    current_blend_for(viewer).set(BlendState(blends[1].blend, "pair 0+1 moved", truth=blends[1], origin="builder"))
    wait_drawn(qtbot, widget, 2)
    assert len(viewer.layers) == count
    assert not np.array_equal(viewer.layers["masks: truth"].data, old_truth)
    assert viewer.layers["masks: sep"].metadata["blend"] == "pair 0+1 moved"
    # Unticking a method removes its (now stale) layer.
    widget.method_boxes["unet"].setChecked(False)
    wait_drawn(qtbot, widget, 3)
    assert "masks: unet" not in viewer.layers and "masks: sep" in viewer.layers
    widget.close_inspector()
    assert "tensorflow" not in sys.modules


def test_image_layer_without_truth(make_napari_viewer, qtbot, engine, tiny, blends):
    viewer, widget = make_widget(make_napari_viewer, engine, tiny, methods=["sep", "unet"])
    viewer.add_image(blends[0].blend.copy(), name="my stamp")
    current_blend_for(viewer).set(BlendState(blends[1].blend, "shared", truth=blends[1]))
    wait_drawn(qtbot, widget, 1)
    assert viewer.layers["inspected blend"].visible  # nothing else showed the shared blend
    widget.select_source("my stamp")
    wait_drawn(qtbot, widget, 2)
    assert not viewer.layers["inspected blend"].visible  # it would show another blend than the one inspected
    assert NO_TRUTH_NOTE in widget.blend_label.text()
    assert "masks: truth" not in viewer.layers and "masks: sep" in viewer.layers
    rows = widget.table_rows()
    assert {row.method for row in rows} == {"sep", "unet"}
    assert all(np.isnan(row.dmag) and np.isnan(row.iou) for row in rows)
    assert all(np.isfinite(row.mag) for row in rows if row.flux > 0)
    assert all(r[4] == "" and r[5] == "" for r in table_text(widget))
    widget.close_inspector()


def test_bad_layers_give_notifications_not_crashes(make_napari_viewer, qtbot, engine, tiny, notes, blends):
    viewer, widget = make_widget(make_napari_viewer, engine, tiny, methods=["sep"])
    viewer.add_image(np.zeros((100, 100), np.float32), name="wrong size")
    widget.select_source("wrong size")
    qtbot.waitUntil(lambda: any("wrong size" in message for _, message in notes), timeout=60000)
    assert any("shape (100, 100)" in message and "128x128" in message for _, message in notes)
    holes = blends[0].blend.copy()
    holes[10:12, 10:12] = np.nan
    viewer.add_image(holes, name="with holes")
    widget.select_source("with holes")
    qtbot.waitUntil(lambda: any("NaN" in message for _, message in notes), timeout=60000)
    assert widget.drawn_count == 0
    # A good layer afterwards works.
    viewer.add_image(blends[0].blend.copy(), name="fine")
    widget.select_source("fine")
    wait_drawn(qtbot, widget, 1)
    widget.close_inspector()


def test_blend_set_slice_follows_the_slider(make_napari_viewer, qtbot, engine, tiny, toy_sample):
    from napari_blendphot._reader import blend_dataset_layers

    batch = make_blends(toy_sample, 6, seed=5, split="test")
    viewer, widget = make_widget(make_napari_viewer, engine, tiny, methods=["sep"])
    for data, kwargs, kind in blend_dataset_layers(batch, name="toy"):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget.select_source("toy blends")
    wait_drawn(qtbot, widget, 1)
    viewer.dims.set_current_step(0, 4)
    qtbot.waitUntil(lambda: widget.last_inspection is not None and widget.last_inspection.state.name == "toy blends #4",
                    timeout=30000)
    rows = {(row.method, row.galaxy): row for row in widget.table_rows()}
    assert rows["truth", "central"].flux == pytest.approx(float(batch.catalog["g1_flux"][4]))
    assert rows["truth", "companion"].flux == pytest.approx(float(batch.catalog["g2_flux"][4]))
    np.testing.assert_array_equal(widget.last_inspection.state.image, batch.blends[4])
    widget.close_inspector()


def test_worker_killed_mid_run_is_reported_and_the_next_run_works(make_napari_viewer, qtbot, tiny, notes, blends):
    # Its own engine without networks: the restarted worker need not load TensorFlow again.
    engine = InferenceEngine(("sep",))
    register_method("slowgui", "napari_blendphot.testing.stand_ins:SlowDeblender", label="slow stand-in", needs_worker=False)
    try:
        viewer, widget = make_widget(make_napari_viewer, engine, tiny, methods=["sep", "slowgui"])
        engine.set_method_options("slowgui", seconds_per_blend=3.0)
        widget.live_box.setChecked(False)
        current_blend_for(viewer).set(BlendState(blends[0].blend, "pair", truth=blends[0], origin="builder"))
        widget.run_now()
        qtbot.waitUntil(lambda: engine.worker_pid is not None, timeout=20000)
        time.sleep(0.5)  # usually mid-run; a kill while the worker still starts is reported the same way
        os.kill(engine.worker_pid, signal.SIGKILL)
        wait_drawn(qtbot, widget, 1)
        assert any(kind == "error" and "SIGKILL" in message for kind, message in notes)
        assert "worker" in widget.error_label.text()
        engine.set_method_options("slowgui", seconds_per_blend=0.0)
        widget.run_now()
        wait_drawn(qtbot, widget, 2)
        assert set(widget.last_inspection.outputs) == {"sep", "slowgui"}
        assert widget.error_label.isHidden() and engine.restarts == 1
        widget.close_inspector()
    finally:
        unregister_method("slowgui")
        engine.close()


def test_corrupted_user_weights_are_reported_and_sep_keeps_working(make_napari_viewer, qtbot, engine, tiny, notes,
                                                                   blends, tmp_path):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a keras archive")
    viewer, widget = make_widget(make_napari_viewer, engine, tiny, methods=["sep", "unet"])
    widget.set_weights("unet", bad)
    current_blend_for(viewer).set(BlendState(blends[0].blend, "pair", truth=blends[0], origin="builder"))
    wait_drawn(qtbot, widget, 1)
    assert "sep" in widget.last_inspection.outputs and "unet" not in widget.last_inspection.outputs
    assert any("broken.keras" in message for _, message in notes)
    assert widget.weights_labels["unet"].text() == "broken.keras"
    widget.set_weights("unet", tiny["paths"]["unet"])
    wait_drawn(qtbot, widget, 2)
    assert "unet" in widget.last_inspection.outputs
    widget.close_inspector()


def test_copy_and_save_table(make_napari_viewer, qtbot, engine, tiny, blends, tmp_path, monkeypatch):
    from qtpy.QtGui import QGuiApplication

    from napari_blendphot.tables import read_table

    viewer, widget = make_widget(make_napari_viewer, engine, tiny, methods=["sep"])
    current_blend_for(viewer).set(BlendState(blends[0].blend, "pair", truth=blends[0], origin="builder"))
    wait_drawn(qtbot, widget, 1)
    text = widget.copy_table()
    assert QGuiApplication.clipboard().text() == text == rows_as_tsv(widget.table_rows())
    target = tmp_path / "inspector"
    monkeypatch.setattr(widget, "_ask_save_path", lambda *args: str(target))
    written = widget.save_table()
    assert written == target.with_suffix(".csv")
    table = read_table(written)
    assert list(table["method"]) == [row.method for row in widget.table_rows()]
    np.testing.assert_allclose(np.asarray(table["flux"], float), [row.flux for row in widget.table_rows()])
    monkeypatch.setattr(widget, "_ask_save_path", lambda *args: "")  # the user cancels the dialog
    assert widget.save_table() is None
    widget.close_inspector()


def test_blend_set_run_cancel_summary_and_save(make_napari_viewer, qtbot, engine, tiny, toy_sample, tmp_path,
                                               monkeypatch, notes):
    from napari_blendphot._reader import blend_dataset_layers
    from napari_blendphot.report.results import read_results

    batch = make_blends(toy_sample, 40, seed=3, split="test")
    register_method("slowgui", "napari_blendphot.testing.stand_ins:SlowDeblender", label="slow stand-in", needs_worker=False)
    try:
        viewer, widget = make_widget(make_napari_viewer, engine, tiny, methods=["sep", "slowgui"])
        widget.live_box.setChecked(False)
        for data, kwargs, kind in blend_dataset_layers(batch, name="toy"):
            getattr(viewer, f"add_{kind}")(data, **kwargs)
        assert widget.set_combo.currentText() == "toy blends" and widget.batch_button.isEnabled()
        widget.split_combo.setCurrentText("all")
        engine.set_method_options("slowgui", seconds_per_blend=0.05)
        widget.run_blend_set()
        assert widget.cancel_button.isEnabled()
        qtbot.waitUntil(lambda: "of 40 blends done" in widget.batch_label.text(), timeout=30000)
        widget.cancel_blend_set()
        qtbot.waitUntil(lambda: widget._batch_future is None, timeout=30000)
        assert any("cancelled after" in message for _, message in notes)
        assert widget.batch_table is not None and 0 < len(widget.batch_table) < 40
        assert widget.batch_button.isEnabled() and not widget.cancel_button.isEnabled()

        widget.method_boxes["slowgui"].setChecked(False)
        widget.run_blend_set()
        qtbot.waitUntil(lambda: widget._batch_future is None, timeout=60000)
        assert len(widget.batch_table) == 40 and widget.batch_table.meta["methods"] == ["sep"]
        assert not widget.summary.isHidden() and widget.summary.rowCount() == 3
        assert widget.canvas is not None and widget.figure.axes
        stem = tmp_path / "results"
        monkeypatch.setattr(widget, "_ask_save_path", lambda *args: str(stem) + ".csv")
        written = widget.save_results()
        assert sorted(p.name for p in written) == ["results.csv", "results.fits"]
        saved = read_results(stem.with_suffix(".csv"))
        np.testing.assert_allclose(saved["g1_flux_sep"], widget.batch_table["g1_flux_sep"])
        # The dialog confirmed the CSV; the FITS beside it is replaced only after asking.
        monkeypatch.setattr(widget, "_confirm_replace", lambda paths: False)
        assert widget.save_results() is None
        widget.close_inspector()
    finally:
        unregister_method("slowgui")
        engine.method_options.pop("slowgui", None)


def test_screenshot_shows_blend_and_outlines(make_napari_viewer, qtbot, engine, tiny, blends, tmp_path):
    viewer, widget = make_widget(make_napari_viewer, engine, tiny, methods=["sep", "unet"], show=True)
    current_blend_for(viewer).set(BlendState(blends[0].blend, "pair", truth=blends[0], origin="builder"))
    wait_drawn(qtbot, widget, 1)
    assert "inspected blend" in viewer.layers  # nothing else showed the blend: the inspector does
    shot = viewer.screenshot(str(tmp_path / "inspector.png"), canvas_only=True)
    assert shot.std() > 5  # not a blank canvas
    # Each method's outlines in its own colour (SEP red, the U-Net purple) and the truth's white are on screen.
    from napari_blendphot.display import method_style

    rgb = shot[..., :3].astype(int)
    for name in ("sep", "unet"):
        colour = np.array(method_style(name).central_rgba[:3]) * 255
        assert np.any(np.abs(rgb - colour).max(axis=-1) < 40), name
    assert np.any(rgb.min(axis=-1) > 235)
    widget.close_inspector()
    assert "tensorflow" not in sys.modules


def test_live_drag_bursts_run_once_and_live_off_waits_for_run(make_napari_viewer, qtbot, engine, tiny, toy_sample):
    viewer, widget = make_widget(make_napari_viewer, engine, tiny, methods=["sep"])
    session = current_blend_for(viewer)
    moves = [make_blend(toy_sample[2], toy_sample[3], dy, 10) for dy in range(-5, 6)]
    for blend in moves:  # a drag: many interactive changes within the debounce time
        session.set(BlendState(blend.blend, "drag", truth=blend, origin="builder", interactive=True))
    wait_drawn(qtbot, widget, 1)
    qtbot.wait(300)
    assert widget.drawn_count == 1 and widget.last_inspection.state.truth is moves[-1]
    widget.live_box.setChecked(False)
    session.set(BlendState(moves[0].blend, "not live", truth=moves[0], origin="builder"))
    qtbot.wait(300)
    assert widget.drawn_count == 1
    widget.run_button.click()
    wait_drawn(qtbot, widget, 2)
    assert widget.last_inspection.state.name == "not live"
    widget.close_inspector()


def test_status_text_changes_do_not_relayout_the_window(make_napari_viewer, qtbot, engine, tiny):
    # Regression: the status line was a QLabel, whose every new text (each run's timing) asked the
    # dock and napari's main window for a new layout, and so one more full-window repaint per run.
    from qtpy.QtCore import QCoreApplication, QEvent, QObject

    viewer, widget = make_widget(make_napari_viewer, engine, tiny, methods=["sep"], show=True)
    qtbot.wait(50)
    QCoreApplication.sendPostedEvents(widget, QEvent.Type.LayoutRequest.value)  # the set-up's own layout

    class LayoutRequests(QObject):
        count = 0

        def eventFilter(self, watched, event):
            if event.type() == QEvent.Type.LayoutRequest:
                LayoutRequests.count += 1
            return False

    counter = LayoutRequests()
    widget.installEventFilter(counter)
    for text in ("sep in 12 ms", "sep, blend2flux, unet, blend2mask2flux in 153 ms", "no method ticked"):
        widget.status_label.setText(text)
        QCoreApplication.sendPostedEvents(widget, QEvent.Type.LayoutRequest.value)  # what the text change asked
    widget.removeEventFilter(counter)
    assert LayoutRequests.count == 0
    assert widget.status_label.text() == "no method ticked" and widget.status_label.toolTip() == "no method ticked"
    widget.close_inspector()


def test_progressive_drawing_follows_the_methods_compute_time(make_napari_viewer, qtbot, engine, tiny, blends):
    # Regression: the choice followed the run's wall time, which on a busy machine grows with the load
    # and the repaints; fast methods then got the slower two-phase runs (one more repaint per run).
    viewer, widget = make_widget(make_napari_viewer, engine, tiny, methods=["sep", "unet"])
    widget._last_seconds = 1.0  # as after a slow run: this one is progressive
    current_blend_for(viewer).set(BlendState(blends[0].blend, "pair", truth=blends[0], origin="builder"))
    wait_drawn(qtbot, widget, 1)
    assert widget.partial_count == 1
    assert widget._last_seconds == widget.last_inspection.timings["compute"] < 0.5
    current_blend_for(viewer).set(BlendState(blends[1].blend, "pair", truth=blends[1], origin="builder"))
    wait_drawn(qtbot, widget, 2)
    assert widget.partial_count == 1  # tiny networks compute in well under 0.5 s: one phase
    widget.close_inspector()


def test_model_precision_is_checked_and_reaches_only_the_networks(engine, tiny):
    with pytest.raises(InputError, match="not a precision"):
        InspectorModel(methods=["sep"], engine=engine, precision="half")
    model = InspectorModel(methods=["sep", "unet"], engine=engine)
    try:
        with pytest.raises(InputError, match="not a precision"):
            model.set_precision("float16")
        model.set_precision("bfloat16")
        # The borrowed engine keeps the weights it was given; only the precision is added.
        assert engine.method_options["unet"] == {"weights": tiny["paths"]["unet"], "precision": "bfloat16"}
        assert "precision" not in engine.method_options.get("sep", {})
        assert model.precision_description() == "bfloat16"
        model.set_precision("float32")  # the networks' default: the option is dropped again
        assert engine.method_options["unet"] == {"weights": tiny["paths"]["unet"]}
    finally:
        model.set_precision("float32")
        model.close()


def test_network_precision_choice_is_used_and_recorded(make_napari_viewer, qtbot, engine, tiny, blends, tmp_path,
                                                       monkeypatch):
    from napari_blendphot.tables import read_table

    viewer, widget = make_widget(make_napari_viewer, engine, tiny, methods=["sep", *NETWORKS])
    try:
        assert widget.precision_combo.currentData() == "float32"
        widget.set_precision("bfloat16")
        assert widget.model.precision == "bfloat16"
        current_blend_for(viewer).set(BlendState(blends[0].blend, "pair", truth=blends[0], origin="builder"))
        wait_drawn(qtbot, widget, 1)
        outputs = widget.last_inspection.outputs
        assert widget.last_inspection.errors == {}
        assert {name: outputs[name].metadata["precision"] for name in NETWORKS} == dict.fromkeys(NETWORKS, "bfloat16")
        assert viewer.layers["masks: unet"].metadata["precision"] == "bfloat16"
        assert "precision" not in viewer.layers["masks: sep"].metadata
        assert "networks in bfloat16" in widget.status_label.text()
        # The GUI's numbers are the library's at the same precision.
        direct = engine.run(blends[0].blend, truth_context(blends[0]), methods=list(NETWORKS))
        assert direct["unet"].metadata["precision"] == "bfloat16"
        rows = {(row.method, row.galaxy): row for row in widget.table_rows()}
        for name in NETWORKS:
            for k, galaxy in enumerate(("central", "companion")):
                assert rows[name, galaxy].flux == pytest.approx(float(direct[name].fluxes[0, k]), rel=1e-5,
                                                                nan_ok=True)  # a galaxy may get no U-Net pixel
        # The saved table says which precision gave its numbers.
        monkeypatch.setattr(widget, "_ask_save_path", lambda *args: str(tmp_path / "table.csv"))
        written = widget.save_table()
        assert read_table(written).meta["precision"] == dict.fromkeys(NETWORKS, "bfloat16")
    finally:
        widget.set_precision("float32")  # the engine is shared with the other tests
        widget.close_inspector()
    assert engine.method_options["unet"] == {"weights": tiny["paths"]["unet"]}
    assert "tensorflow" not in sys.modules


def test_mask_layers_stay_above_images_added_later(make_napari_viewer, qtbot, engine, tiny, blends):
    viewer, widget = make_widget(make_napari_viewer, engine, tiny, methods=["sep"])
    current_blend_for(viewer).set(BlendState(blends[0].blend, "pair", truth=blends[0], origin="builder"))
    wait_drawn(qtbot, widget, 1)
    image = viewer.add_image(np.zeros((3, 128, 128), np.float32), name="later stack")
    top_image = viewer.layers.index(image)
    assert viewer.layers.index("masks: truth") > top_image and viewer.layers.index("masks: sep") > top_image
    assert viewer.layers.index("masks: sep") > viewer.layers.index("masks: truth")
    widget.close_inspector()


def test_a_late_progress_report_does_not_overwrite_the_summary(make_napari_viewer, engine, tiny):
    from napari_blendphot.widgets.deblend_inspector import _short_case

    _, widget = make_widget(make_napari_viewer, engine, tiny, methods=["sep"])
    widget.batch_label.setText("40 blends in 1.0 s")
    widget._on_batch_progress(40, 40)  # no run in progress
    assert widget.batch_label.text() == "40 blends in 1.0 s"
    assert _short_case("3: more than two") == "3 (>2)" and _short_case("") == ""
    widget.close_inspector()


def test_closing_the_viewer_stops_the_inspector_worker(make_napari_viewer, qtbot, blends):
    from napari_blendphot.widgets.deblend_inspector import DeblendInspectorWidget

    viewer = make_napari_viewer()
    model = InspectorModel(methods=["sep"])  # owns its engine, as in napari
    widget = DeblendInspectorWidget(viewer, model=model)
    viewer.window.add_dock_widget(widget, name="Deblend Inspector")
    current_blend_for(viewer).set(BlendState(blends[0].blend, "pair", truth=blends[0]))
    wait_drawn(qtbot, widget, 1)
    pid = model.engine.worker_pid
    assert pid is not None
    viewer.close()
    qtbot.waitUntil(lambda: model._closed, timeout=10000)
    qtbot.waitUntil(lambda: not os.path.exists(f"/proc/{pid}") or _is_zombie(pid), timeout=10000)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_blend_set_layer_without_its_arrays_uses_the_catalogue(make_napari_viewer, qtbot, engine, tiny, toy_sample):
    """A blends layer whose set object is gone (restored session): dmag from the catalogue, no IoU."""
    from napari_blendphot._reader import blend_dataset_layers

    batch = make_blends(toy_sample, 4, seed=8, split="test")
    viewer, widget = make_widget(make_napari_viewer, engine, tiny, methods=["sep"])
    (data, kwargs, _), _ = blend_dataset_layers(batch, name="restored")
    kwargs["metadata"] = {k: v for k, v in kwargs["metadata"].items() if k not in ("blend_set", "source")}
    viewer.add_image(data, **kwargs)
    widget.select_source("restored blends")
    viewer.dims.set_current_step(0, 2)
    qtbot.waitUntil(lambda: widget.last_inspection is not None
                    and widget.last_inspection.state.name == "restored blends #2", timeout=30000)
    rows = {(row.method, row.galaxy): row for row in widget.table_rows()}
    assert rows["truth", "companion"].flux == pytest.approx(float(batch.catalog["g2_flux"][2]))
    assert np.isfinite(rows["sep", "central"].dmag) or np.isnan(rows["sep", "central"].flux)
    assert np.isnan(rows["sep", "central"].iou) and "masks: truth" not in viewer.layers
    widget.close_inspector()


def test_a_corrupted_shipped_model_is_reported_before_running(tiny, tmp_path, monkeypatch):
    import shutil

    from napari_blendphot.models import manifests as registry

    shipped = tmp_path / "unet-shipped.keras"
    shutil.copy(tiny["paths"]["unet"], shipped)
    registry.write_manifest(shipped, "unet", {"depth": 2, "filters": 2}, {"data": "test"}, {}, backend="tensorflow",
                            default=True)
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    model = InspectorModel(methods=["unet"])
    assert model.check_method("unet") is None
    assert model.weights_description("unet") == "shipped: unet-shipped"
    with open(shipped, "ab") as handle:  # a damaged download
        handle.write(b"\0")
    problem = model.check_method("unet")
    assert "unet: the shipped model is unusable" in problem and "sha256" in problem
    model.set_weights("unet", tiny["paths"]["unet"])  # a user file instead: no shipped check
    assert model.check_method("unet") is None
    model.close()


def test_napari_opens_the_inspector_from_the_plugin_manifest(make_napari_viewer, qtbot, blends):
    """Through npe2 the widget gets napari's proxy of the viewer: the shared blend and layers still work."""
    from napari_blendphot.widgets.deblend_inspector import DeblendInspectorWidget

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-blendphot", "Deblend Inspector")
    assert isinstance(widget, DeblendInspectorWidget) and widget.viewer == viewer
    assert not widget.model.engine_started  # the worker starts with the first blend, not with the dock
    for name in list(widget.method_boxes):
        widget.method_boxes[name].setChecked(name == "sep")
    current_blend_for(viewer).set(BlendState(blends[0].blend, "pair", truth=blends[0], origin="builder"))
    wait_drawn(qtbot, widget, 1)
    assert "masks: sep" in viewer.layers and "masks: truth" in viewer.layers
    widget.close_inspector()


def test_networks_without_weights_start_unticked_and_choosing_a_file_ticks_them(make_napari_viewer, tiny, tmp_path,
                                                                                 monkeypatch):
    from napari_blendphot.models import manifests as registry
    from napari_blendphot.widgets.deblend_inspector import DeblendInspectorWidget

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)  # no shipped models
    viewer = make_napari_viewer()
    widget = DeblendInspectorWidget(viewer)
    assert widget.model.selected == [m for m in available_methods() if m not in NETWORKS and m in default_methods()]
    assert not any(widget.method_boxes[name].isChecked() for name in NETWORKS)
    assert widget.weights_labels["unet"].text() == "no shipped model"
    widget.live_box.setChecked(False)
    widget.set_weights("unet", tiny["paths"]["unet"])
    assert "unet" in widget.model.selected and widget.method_boxes["unet"].isChecked()
    assert widget.weights_labels["unet"].text() == "unet.keras"
    widget.close_inspector()


def test_renamed_and_removed_source_layers(make_napari_viewer, qtbot, engine, tiny, blends):
    viewer, widget = make_widget(make_napari_viewer, engine, tiny, methods=["sep"])
    layer = viewer.add_image(blends[0].blend.copy(), name="stamp")
    widget.select_source("stamp")
    wait_drawn(qtbot, widget, 1)
    layer.name = "renamed stamp"
    assert widget.source_combo.currentText() == "renamed stamp"
    assert widget.source_combo.findText("stamp") == -1
    viewer.layers.remove(layer)
    assert widget.source_combo.currentText().startswith("Current blend")
    widget.close_inspector()


def test_progressive_runs_report_fast_methods_first_and_skip_stale_networks(engine, blends):
    # A stand-in for a slow network: registered as needing the worker, so it runs in the second phase.
    register_method("slownet", "napari_blendphot.testing.stand_ins:SlowDeblender", label="slow network", needs_worker=True)
    try:
        engine.set_method_options("slownet", seconds_per_blend=0.4)
        model = InspectorModel(methods=["sep", "slownet"], engine=engine)
        partials = []
        state = BlendState(blends[0].blend, "first", truth=blends[0])
        final = model.inspect(state, partial=partials.append).result(timeout=60)
        assert [list(p.outputs) for p in partials] == [["sep"]]
        assert list(final.outputs) == ["sep", "slownet"] and final.note == ""
        assert partials[0].rows[2].flux == final.rows[2].flux  # the same SEP numbers in both
        # A newer request arriving while the fast phase runs: the slow phase of the old one is skipped.
        partials.clear()
        old = model.inspect(state, partial=lambda inspection: (partials.append(inspection),
                                                               model.inspect(BlendState(blends[1].blend, "newer"))))
        assert old.result(timeout=60).note == "superseded" and "slownet" not in old.result().outputs
        assert len(partials) == 1
        model.close()
    finally:
        unregister_method("slownet")
        engine.method_options.pop("slownet", None)


def test_widget_draws_fast_overlays_before_slow_networks(make_napari_viewer, qtbot, engine, tiny, blends):
    register_method("slownet", "napari_blendphot.testing.stand_ins:SlowDeblender", label="slow network", needs_worker=True)
    try:
        engine.set_method_options("slownet", seconds_per_blend=0.5)
        viewer, widget = make_widget(make_napari_viewer, engine, tiny, methods=["sep", "slownet"])
        widget._last_seconds = 1.0  # as after a slow run
        current_blend_for(viewer).set(BlendState(blends[0].blend, "pair", truth=blends[0], origin="builder"))
        qtbot.waitUntil(lambda: widget.partial_count == 1, timeout=30000)
        assert widget.drawn_count == 0 and "masks: sep" in viewer.layers
        assert "still running" in widget.status_label.text()
        wait_drawn(qtbot, widget, 1)
        assert {row.method for row in widget.table_rows()} == {"truth", "sep", "slownet"}
        widget.close_inspector()
    finally:
        unregister_method("slownet")
        engine.method_options.pop("slownet", None)


def test_the_symmetries_choice_reaches_the_networks_and_their_layers(make_napari_viewer, qtbot, engine, tiny, blends):
    viewer, widget = make_widget(make_napari_viewer, engine, tiny, methods=["sep", *NETWORKS])
    try:
        assert widget.tta_combo.isVisibleTo(widget) and widget.tta_combo.currentData() == 1
        with pytest.raises(InputError, match="not one of 1, 2, 4, 8"):
            widget.model.set_tta(3)
        widget.set_tta(4)
        assert widget.model.tta == 4
        assert engine.method_options["unet"]["tta"] == 4 and "tta" not in engine.method_options.get("sep", {})
        current_blend_for(viewer).set(BlendState(blends[0].blend, "pair", truth=blends[0], origin="builder"))
        wait_drawn(qtbot, widget, 1)
        outputs = widget.last_inspection.outputs
        assert {name: outputs[name].metadata["tta"] for name in NETWORKS} == dict.fromkeys(NETWORKS, 4)
        assert viewer.layers["masks: unet"].metadata["tta"] == 4 and "tta" not in viewer.layers["masks: sep"].metadata
        # The GUI's numbers are the library's with the same symmetries.
        direct = engine.run(blends[0].blend, truth_context(blends[0]), methods=list(NETWORKS))
        np.testing.assert_allclose(outputs["blend2flux"].fluxes, direct["blend2flux"].fluxes, rtol=1e-6)
        widget.set_tta(1)
        assert "tta" not in engine.method_options["unet"]
    finally:
        widget.set_tta(1)  # the engine is shared with the other tests
        widget.close_inspector()
    assert engine.method_options["unet"] == {"weights": tiny["paths"]["unet"]}
