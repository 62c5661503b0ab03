"""Deblend Inspector: run every deblending method on the blend in view and compare them.

A thin Qt view over :class:`~napari_blendphot.app.inspector.InspectorModel`.

* **Blend**: the shared current blend (set by the Blend Builder and the other
  widgets), a slice of a loaded blend set (following the dims slider, with
  its truth), or any 128x128 image layer (no truth: no dmag or IoU).
* **Methods**: one check box per registered method (a newly registered
  method appears with no GUI code); network methods use the shipped weights
  or a ``.keras`` file chosen with their "…" button.  All methods run in the
  inference engine's worker process, off the GUI thread; with **Live** on,
  every change of the blend re-runs them (debounced; stale results dropped).
* **Layers**: each mask-making method's masks as outlines in a Labels layer
  ``masks: <method>`` in the method's colour and line style (the legend; the
  truth once, white/grey), never selected; ``layer.features`` holds the
  table's numbers (flux_err and mag_err included) for labels 1 and 2.
  "Side by side" gives each method its own cell.  Results of an earlier blend
  are flagged out of date; a failed run clears them.
* **Table**: flux ± error, magnitude (zero point 25.96), dmag and IoU against
  the truth, SEP's detection case; Copy (TSV) and Save as CSV.
* **Blend set**: run the methods over a whole loaded blend set (or a split)
  with progress and Cancel, then the summary statistics, the dmag histograms
  and Save results (CSV + FITS).
"""

from __future__ import annotations

import functools
import time

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_blendphot.app.inspector import (NO_TRUTH_NOTE, InspectorModel, grouped_errors, precisions_used,
                                            state_from_layer)
from napari_blendphot.errors import InputError
from napari_blendphot.widgets._inspector_batch import BlendSetPanel
from napari_blendphot.widgets._inspector_layers import IMAGE_LAYER, TRUTH_LAYER, InspectorLayers, mask_layer_name
from napari_blendphot.widgets._inspector_methods import MethodsBox
from napari_blendphot.widgets._inspector_export import TableExport
from napari_blendphot.widgets._inspector_table import InspectionTable
from napari_blendphot.widgets._inspector_view import InspectorView
from napari_blendphot.widgets._side_by_side import SideBySide
from napari_blendphot.widgets._inspector_table import short_case as _short_case  # noqa: F401 (tests use it)
from napari_blendphot.widgets._qt import StatusLine, confirm_replace, scrolling_layout
from napari_blendphot.widgets._qt import notify as _notify

#: Combo entry for the shared current blend.
SHARED_SOURCE = "Current blend (Blend Builder, …)"
__all__ = ["DeblendInspectorWidget", "IMAGE_LAYER", "SHARED_SOURCE", "TRUTH_LAYER", "mask_layer_name"]
#: Debounce of live re-runs while the user drags (ms); single changes run at once.
DRAG_DEBOUNCE_MS = 70
#: When the methods of the last full run computed for longer than this (s, in the worker), the fast
#: methods are drawn before the networks finish.  Not lower: the early drawing costs one more canvas
#: repaint per run, which on a busy machine competes with the networks it is meant to hide.
PROGRESSIVE_ABOVE_S = 0.5
#: Attributes of the widget that live in the blend-set panel: {widget name: panel name}.
_FROM_PANEL = {"_batch_future": "future", "batch_table": "table", "canvas": "canvas", "figure": "figure"}

#: The widget's help text (its "?" button, tooltip and What's This).
HELP = ("Run every ticked deblending method on the current blend and compare them: each method's masks as "
        "outlines in its colour and line style (legend above; truth white/grey), flux ± 1-sigma error, magnitude, "
        "dmag and IoU in the table. Side by side gives each method its own cell. Live re-runs on every change; "
        "with Live off, results of an earlier blend are marked out of date. Blend set: run over a whole loaded set. "
        "See docs/plugin.md.")


def _close_model(model: InspectorModel, session, owner_id, *_args) -> None:
    model.close()
    session.release_engine(owner_id)


class _Bridge(QObject):
    """Carries results from the model's background thread to the GUI thread (queued signals)."""

    inspection_done = Signal(object)
    partial_done = Signal(object)


class DeblendInspectorWidget(TableExport, QWidget):
    """Dock widget comparing the deblending methods on one blend and on blend sets.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    model : InspectorModel, optional
        For tests and embedding (default: a new one running in the viewer's
        shared engine; every registered method ticked except those that take
        weights and have no shipped model yet).
    """

    def __init__(self, napari_viewer, model: InspectorModel | None = None, parent=None):
        super().__init__(parent)
        from napari_blendphot.app.session import current_blend_for

        self.viewer = napari_viewer
        self.session = current_blend_for(napari_viewer)
        self.model = model if model is not None else InspectorModel(engine=self.session.engine(id(self)))
        self.last_inspection = None
        self._source_ref = None
        self._source_state = None
        self._reported: set[str] = set()
        self.layers = InspectorLayers(napari_viewer)
        self.side_by_side = SideBySide(napari_viewer)
        self._pending_interactive = False
        self._requested_at: dict[int, float] = {}
        self.drawn_count = 0
        self.partial_count = 0
        self._last_seconds = 0.0

        self._bridge = _Bridge()
        self._bridge.inspection_done.connect(self._on_inspection_done)
        self._bridge.partial_done.connect(self._on_partial)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.run_now)

        self._build_ui()
        self.model.methods_changed.connect(self._sync_method_boxes)
        self._refresh_sources()
        self.session.changed.connect(self._on_shared_blend)
        self.viewer.layers.events.inserted.connect(self._refresh_sources)
        self.viewer.layers.events.inserted.connect(self.layers.keep_masks_on_top)
        self.viewer.layers.events.removed.connect(self._refresh_sources)
        self.viewer.dims.events.current_step.connect(self._on_dims)
        self.destroyed.connect(functools.partial(_close_model, self.model, self.session, id(self)))
        if self.session.state is not None:
            self.schedule()

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        layout = scrolling_layout(self, HELP)
        layout.setContentsMargins(6, 6, 6, 6)

        source_row = QHBoxLayout()
        source_row.addWidget(QLabel("Blend:"))
        self.source_combo = QComboBox()
        self.source_combo.setToolTip("What to deblend: the shared current blend (set by the Blend Builder), a slice "
                                     "of a loaded blend set (follows the slider, with truth), or any 128x128 image "
                                     "layer (no truth).")
        self.source_combo.currentIndexChanged.connect(self._on_source_changed)
        source_row.addWidget(self.source_combo, 1)
        layout.addLayout(source_row)
        self.blend_label = QLabel("no blend yet: build one with the Blend Builder or choose an image layer")
        self.blend_label.setWordWrap(True)
        layout.addWidget(self.blend_label)
        self.methods = MethodsBox(self.model, lambda kind, message: _notify(kind, message), self._on_methods_changed)
        self.method_boxes, self.weights_labels = self.methods.method_boxes, self.methods.weights_labels
        self.precision_combo, self.tta_combo = self.methods.precision_combo, self.methods.tta_combo
        layout.addWidget(self.methods)
        self.view = InspectorView(self.viewer, self._on_side_by_side)
        layout.addWidget(self.view)

        run_row = QHBoxLayout()
        self.live_box = QCheckBox("Live")
        self.live_box.setChecked(self.model.live)
        self.live_box.setToolTip("Re-run the methods whenever the blend changes")
        self.live_box.toggled.connect(self._on_live_toggled)
        run_row.addWidget(self.live_box)
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Run the ticked methods on the blend now")
        self.run_button.clicked.connect(self.run_now)
        run_row.addWidget(self.run_button)
        run_row.addStretch(1)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the table to the clipboard (tab-separated)")
        self.copy_button.clicked.connect(self.copy_table)
        run_row.addWidget(self.copy_button)
        self.save_button = QPushButton("Save as CSV…")
        self.save_button.clicked.connect(self.save_table)
        run_row.addWidget(self.save_button)
        layout.addLayout(run_row)

        self.table = InspectionTable()
        layout.addWidget(self.table, 1)
        self.status_label = StatusLine()
        layout.addWidget(self.status_label)
        self.error_label = QLabel("")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #e0604a")
        self.error_label.setVisible(False)
        layout.addWidget(self.error_label)

        # The notifications go through this module's _notify (tests watch it).
        self.batch = BlendSetPanel(self.viewer, self.model, lambda kind, message: _notify(kind, message),
                                   seconds_per_blend=lambda: self._last_seconds or float("nan"))
        self.batch.save_results_button.clicked.connect(self.save_results)
        for name in ("set_combo", "split_combo", "batch_button", "cancel_button", "save_results_button",
                     "batch_label", "summary"):
            setattr(self, name, getattr(self.batch, name))
        layout.addWidget(self.batch)
        self.setMinimumWidth(480)

    def _sync_method_boxes(self) -> None:
        self.methods.sync()

    def _update_weights_labels(self) -> None:
        self.methods.update_weights_labels()

    # ------------------------------------------------------------------ sources
    def _image_layers(self):
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)
                and layer.metadata.get("blendphot_kind") != "inspector"]

    def _refresh_sources(self, *_args) -> None:
        """Rebuild both combos from the viewer's image layers, keeping the chosen layers (by object, so renames
        follow)."""
        source = self._source_ref
        images = self._image_layers()
        for layer in images:
            layer.events.name.connect(self._refresh_sources)  # napari ignores a callback already connected
        names = [layer.name for layer in images]
        self.source_combo.blockSignals(True)
        self.source_combo.clear()
        self.source_combo.addItem(SHARED_SOURCE)
        self.source_combo.addItems(names)
        if source is not None and source in images:
            self.source_combo.setCurrentText(source.name)
        self.source_combo.blockSignals(False)
        self.batch.set_layers([layer for layer in images if layer.metadata.get("blendphot_kind") == "blends"])
        if source is not None and source not in images:  # the inspected layer was removed
            self._on_source_changed()

    def _set_layer(self, name: str):
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def select_source(self, name: str) -> None:
        """Inspect the image layer *name* (or :data:`SHARED_SOURCE`)."""
        index = self.source_combo.findText(name)
        if index < 0:
            raise InputError(f"layer {name!r}", "is not an image layer of this viewer")
        self.source_combo.setCurrentIndex(index)
        self._on_source_changed()

    def _source_layer(self):
        layer = self._source_ref
        return layer if layer is not None and layer in self.viewer.layers else None

    def _on_source_changed(self, *_args) -> None:
        name = self.source_combo.currentText()
        self._source_ref = self._set_layer(name) if name != SHARED_SOURCE else None
        layer = self._source_layer()
        if layer is not None and layer.metadata.get("blendphot_kind") == "blends":
            self.set_combo.setCurrentText(layer.name)
        self.schedule()

    def _mark_out_of_date(self) -> None:
        """The blend moved and nothing re-runs: the shown results are an earlier blend's."""
        if self.last_inspection is not None:
            self.view.set_out_of_date(True)
            self.layers.set_out_of_date(True)

    def _on_shared_blend(self, state) -> None:
        if self._source_layer() is not None:
            return
        if not self.model.live:
            self._mark_out_of_date()
            return
        if getattr(state, "interactive", False):
            self.schedule(interactive=True)
        else:
            # At once, not at the next event-loop turn: the worker then computes while
            # the canvas repaints the sender's own layer updates (measured: ~0.2 s saved).
            self.run_now()

    def _on_dims(self, *_args) -> None:
        layer = self._source_layer()
        if layer is not None and layer.ndim > 2:
            self.schedule() if self.model.live else self._mark_out_of_date()

    def current_state(self):
        """The :class:`BlendState` to inspect now (raises InputError for unusable layers)."""
        layer = self._source_layer()
        if layer is None:
            return self.session.state
        return state_from_layer(layer, tuple(int(s) for s in self.viewer.dims.current_step))

    # ------------------------------------------------------------------ running
    def schedule(self, interactive: bool = False) -> None:
        """Run soon: after a short pause while the user drags, at the next event-loop turn otherwise."""
        self._timer.start(DRAG_DEBOUNCE_MS if interactive else 0)

    def _on_live_toggled(self, on: bool) -> None:
        self.model.live = bool(on)
        if on:
            self.schedule()

    def set_precision(self, precision: str) -> None:
        """Compute the networks in *precision* ("float32", "bfloat16" or "auto") and re-run."""
        self.methods.set_precision(precision)

    def set_tta(self, tta: int) -> None:
        """Average the networks over *tta* (1, 2, 4, 8) symmetries of the blend and re-run."""
        index = self.tta_combo.findData(tta)
        if index < 0:
            _notify("error", f"Deblend Inspector: {tta!r} is not a number of symmetries (1, 2, 4 or 8)")
            return
        self.tta_combo.setCurrentIndex(index)  # -> MethodsBox._on_tta_changed

    def set_weights(self, name: str, path, *_args) -> None:
        """Use *path* (a ``.keras`` file; None = shipped) for network *name* and re-run."""
        self.methods.set_weights(name, path)

    def _on_methods_changed(self, weights_of: str | None = None) -> None:
        """The methods box changed the model (a method, its weights or the precision)."""
        if weights_of is not None:  # its old problems may be solved
            self._reported = {m for m in self._reported if not m.startswith(f"{weights_of}:")}
        if self.model.live:
            self.schedule()

    def run_now(self, *_args) -> None:
        """Run the ticked methods on the current blend (in the background)."""
        self._timer.stop()
        try:
            state = self.current_state()
        except Exception as exc:  # a layer we cannot read: say so, never crash the viewer
            text = exc if isinstance(exc, InputError) else f"cannot read the chosen blend: {exc}"
            self._show_problem(f"Deblend Inspector: {text}", clear=True)
            return
        if state is None:
            self.blend_label.setText("no blend yet: build one with the Blend Builder or choose an image layer")
            return
        if not self.model.selected:
            self.status_label.setText("no method ticked")
            return
        self._source_state = state
        if not self.model.engine_started:
            self.status_label.setText("starting the inference worker (the first run also loads the models)…")
            self.view.start_busy("first run: starting the worker and loading the models…")
        # Slow methods (paper-size networks on a CPU): show the fast ones (SEP) first.
        partial = self._deliver_partial if self._last_seconds > PROGRESSIVE_ABOVE_S else None
        try:
            future = self.model.inspect(state, partial=partial)
        except Exception as exc:
            self._show_problem(f"Deblend Inspector: {exc}")
            return
        self._requested_at[future.request_id] = time.perf_counter()
        future.add_done_callback(self._deliver_inspection)

    def _deliver_partial(self, inspection) -> None:  # background thread
        try:
            self._bridge.partial_done.emit(inspection)
        except RuntimeError:  # the widget is gone
            pass

    def _on_partial(self, inspection) -> None:
        """The fast methods' overlays while the networks still run (the table waits for all)."""
        if not self.model.is_latest(inspection):
            return
        try:
            self._update_image(inspection.state)
            self._update_layers(inspection)
        except Exception as exc:
            self._show_problem(f"Deblend Inspector: cannot show the results: {exc}", "error")
            return
        self.status_label.setText(f"{', '.join(inspection.outputs)} in {inspection.seconds * 1000:.0f} ms; "
                                  "the networks are still running…")
        self.partial_count += 1

    def _deliver_inspection(self, future) -> None:  # background thread
        try:
            self._bridge.inspection_done.emit(future)
        except RuntimeError:  # the widget is gone
            pass

    def _show_problem(self, message: str, kind: str = "warning", clear: bool = False) -> None:
        if clear:  # an old blend's masks would pass for this one's (a detection in a field's corner)
            self.layers.clear()
            self.side_by_side.clear()
            self.table.fill([])
            self.last_inspection = None
            self.view.set_out_of_date(False)
        self.error_label.setText(message)
        self.error_label.setVisible(True)
        if message not in self._reported:
            self._reported.add(message)
            _notify(kind, message)

    @property
    def inspection_done(self):
        """Qt signal emitted on the GUI thread after each finished inspection (once it is drawn)."""
        return self._bridge.inspection_done

    def _on_inspection_done(self, future) -> None:
        requested = self._requested_at.pop(getattr(future, "request_id", -1), None)
        self.view.stop_busy()
        try:
            inspection = future.result()
        except Exception as exc:
            self._show_problem(f"Deblend Inspector: the run failed: {exc}", "error", clear=True)
            return
        if inspection.note == "superseded" or not self.model.is_latest(inspection):
            return
        try:
            self._draw(inspection)
        except Exception as exc:  # drawing must never take the viewer down
            self._show_problem(f"Deblend Inspector: cannot show the results: {exc}", "error")
            return
        self.drawn_count += 1
        compute = inspection.timings.get("compute", float("nan"))
        # The methods' own time, not the wall time: that grows with the machine's load and the repaints.
        self._last_seconds = compute if np.isfinite(compute) else inspection.seconds
        if requested is not None:
            self.last_latency = time.perf_counter() - requested

    # ------------------------------------------------------------------ drawing
    def _draw(self, inspection) -> None:
        state = inspection.state
        self.last_inspection = inspection
        origins = {"builder": "Blend Builder", "dataset": "blend set", "layer": "image layer"}
        origin = origins.get(state.origin, state.origin)
        truth_text = "" if inspection.note != NO_TRUTH_NOTE else f" — <i>{NO_TRUTH_NOTE}</i>"
        self.blend_label.setText(f"<b>{state.name}</b> ({origin}){truth_text}")
        errors = grouped_errors(inspection.errors)
        if errors:
            self.error_label.setText("\n".join(errors))
            self.error_label.setVisible(True)
            for message in errors:
                if message not in self._reported:
                    self._reported.add(message)
                    _notify("error" if "worker" in message else "warning", f"Deblend Inspector: {message}")
        else:
            self.error_label.setVisible(False)
        timing = (f"{', '.join(inspection.outputs)} in {inspection.seconds * 1000:.0f} ms" if inspection.outputs
                  else "no method gave results")
        precisions = set(precisions_used(inspection.outputs).values())
        if precisions:
            timing += f"; networks in {', '.join(sorted(precisions))}"
        self.status_label.setText(timing)
        self._update_image(state)
        self._update_layers(inspection)
        self._fill_table(inspection.rows)
        self.view.set_out_of_date(False)
        self.layers.set_out_of_date(False)
        self.view.set_legend(self.layers.mask_layers)
        if self.view.side_by_side_box.isChecked():
            self.side_by_side.update(state.image, self.layers.mask_layers)

    def _on_side_by_side(self, on: bool) -> None:
        if on and self.last_inspection is not None:
            self.side_by_side.update(self.last_inspection.state.image, self.layers.mask_layers)
            self.viewer.reset_view()
        elif not on:
            self.side_by_side.clear()

    def _update_image(self, state) -> None:
        self.layers.update_image(state, shown_elsewhere=self._source_layer() is not None)
        self.layers.put_under_masks(self._source_layer())

    def _update_layers(self, inspection) -> None:
        self.layers.update_masks(inspection, self.model.selected)

    def _fill_table(self, rows) -> None:
        self.table.fill(rows)

    # ------------------------------------------------------------------ blend sets (the panel)
    def run_blend_set(self, *_args) -> None:
        """Run the ticked methods over the chosen blend set (or split) in the background."""
        self.batch.run()

    def cancel_blend_set(self, *_args) -> None:
        """Stop the blend-set run after its current chunk (partial results are kept)."""
        self.batch.cancel()

    def _on_batch_progress(self, done: int, total: int) -> None:
        self.batch.on_progress(done, total)

    def __getattr__(self, name):
        # The blend-set panel's state, under the names the widget has always had.
        if name in _FROM_PANEL and "batch" in self.__dict__:
            return getattr(self.__dict__["batch"], _FROM_PANEL[name])
        raise AttributeError(name)

    def save_results(self, *_args):
        """Save the blend-set results table as CSV + FITS (asks before replacing either)."""
        return self.batch.save_results(lambda *args: self._ask_save_path(*args),
                                       lambda paths: self._confirm_replace(paths))

    def _confirm_replace(self, paths) -> bool:
        return confirm_replace(self, paths)

    # ------------------------------------------------------------------ teardown
    def close_inspector(self) -> None:
        """Stop the worker process and disconnect from the viewer (also done when the widget is destroyed)."""
        self._timer.stop()
        self.batch.cancel()
        for signal, slot in ((self.session.changed, self._on_shared_blend),
                             (self.viewer.layers.events.inserted, self._refresh_sources),
                             (self.viewer.layers.events.inserted, self.layers.keep_masks_on_top),
                             (self.viewer.layers.events.removed, self._refresh_sources),
                             (self.viewer.dims.events.current_step, self._on_dims),
                             (self.model.methods_changed, self._sync_method_boxes)):
            try:
                signal.disconnect(slot)
            except Exception:
                pass
        self.model.close()
        self.session.release_engine(id(self))

    def closeEvent(self, event) -> None:
        self.close_inspector()
        super().closeEvent(event)
