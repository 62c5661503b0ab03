"""Deblend Inspector: run every deblending method on the blend in view and compare them.

A thin Qt view over :class:`~napari_blendphot.widgets._inspector_model.InspectorModel`.

* **Blend**: the shared current blend (set by the Blend Builder and the other
  widgets), a slice of a loaded blend set (following the dims slider, with
  its truth), or any 128x128 image layer (no truth: no dmag or IoU).
* **Methods**: one check box per registered method (a newly registered
  method appears with no GUI code); network methods use the shipped weights
  or a ``.keras`` file chosen with their "…" button.  All methods run in the
  inference engine's worker process, off the GUI thread; with **Live** on,
  every change of the blend re-runs them (debounced; stale results dropped).
* **Layers**: each mask-making method's masks as outlines in a Labels layer
  ``masks: <method>`` (blue central, orange companion, like the truth layer
  ``masks: truth``), updated in place on every run; ``layer.features`` holds
  the table's numbers for labels 1 (central) and 2 (companion).
* **Table**: flux, magnitude (zero point 25.96), dmag and IoU against the
  truth, SEP's detection case; Copy (TSV) and Save as CSV.
* **Blend set**: run the methods over a whole loaded blend set (or a split)
  with progress and Cancel, then the summary statistics, the dmag histograms
  and Save results (CSV + FITS).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject, QSize, Qt, QTimer, Signal
from qtpy.QtGui import QColor, QGuiApplication, QPainter
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_blendphot.errors import InputError
from napari_blendphot.widgets._inspector_model import (
    GALAXIES,
    NO_TRUTH_NOTE,
    InspectorModel,
    format_value,
    layer_features,
    precisions_used,
    rows_as_table,
    rows_as_tsv,
    state_from_blend_set,
    state_from_catalog_row,
    state_from_image,
)
from napari_blendphot.widgets._notify import notify as _notify

#: Combo entry for the shared current blend.
SHARED_SOURCE = "Current blend (Blend Builder, …)"
#: Layer names (stable across blends: re-runs update these layers).
TRUTH_LAYER = "masks: truth"
IMAGE_LAYER = "inspected blend"
#: Debounce of live re-runs while the user drags (ms); single changes run at once.
DRAG_DEBOUNCE_MS = 70
#: When the methods of the last full run computed for longer than this (s, in the worker), the fast
#: methods are drawn before the networks finish.  Not lower: the early drawing costs one more canvas
#: repaint per run, which on a busy machine competes with the networks it is meant to hide.
PROGRESSIVE_ABOVE_S = 0.5
LAYER_KIND = "inspector-masks"
_TABLE_HEADERS = ("Method", "Galaxy", "Flux", "Mag", "Δmag", "IoU", "SEP case")
_SUMMARY_HEADERS = ("Method", "Galaxy", "N", "Undet.", "⟨Δmag⟩", "σ", "Out. %", "IoU")
_SUMMARY_TIPS = ("", "", "galaxies in the selection", "not detected by the method (left out of the statistics)",
                 "mean Δmag (bias)", "standard deviation of Δmag", "outliers: |Δmag| > 0.75",
                 "mean IoU with the true masks")
#: Widest expected text per numeric column of the inspector table (sets its minimum width).
_COLUMN_SAMPLES = {2: "00000.0", 3: "00.000", 4: "+00.000", 5: "0.000"}
_GALAXY_QCOLORS = {"central": QColor(31, 160, 255), "companion": QColor(255, 140, 0)}
_OUTLIER_QCOLOR = QColor(224, 96, 74)


def mask_layer_name(method: str) -> str:
    """Name of the Labels layer holding *method*'s masks."""
    return f"masks: {method}"


def _close_model(model: InspectorModel, *_args) -> None:
    model.close()


def _short_case(detection: str) -> str:
    """``"3: more than two"`` -> ``"3 (>2)"`` for the narrow SEP column (the full text is its tooltip)."""
    if not detection:
        return ""
    case = detection.split(":")[0].strip()
    short = {"-1": "none", "0": "central", "1": "companion", "2": "both", "3": ">2"}.get(case)
    return f"{case} ({short})" if short else detection


def _grouped_errors(errors: dict) -> list[str]:
    """The run's problems as lines, the "no shipped model" ones merged into one."""
    missing = [name for name, message in errors.items() if "no shipped model installed" in message]
    lines = [message for name, message in errors.items() if name not in missing]
    if len(missing) > 1:
        lines.insert(0, f"no shipped models yet for {', '.join(missing)}: choose .keras files with their "
                        "'…' buttons, or untick them")
    elif missing:
        lines.insert(0, errors[missing[0]])
    return lines


class _StatusLine(QWidget):
    """A gray status text whose changes repaint only itself.

    A QLabel asks for a new layout on every text change; the request climbs
    to napari's main window, which lays out and repaints the whole window,
    once more per run (a full-window composition: tens of ms under software
    OpenGL).  This widget's size never depends on its text: *lines* lines
    high, the text wrapped and clipped to them (the tooltip has all of it).
    """

    def __init__(self, lines: int = 2, parent=None):
        super().__init__(parent)
        self._text = ""
        self._lines = lines
        self.setFixedHeight(self.fontMetrics().lineSpacing() * lines + 2)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def text(self) -> str:
        return self._text

    def setText(self, text: str) -> None:
        if text == self._text:
            return
        self._text = text
        self.setToolTip(text)
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(200, self.height())

    def minimumSizeHint(self) -> QSize:
        return QSize(50, self.height())

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setPen(self.palette().placeholderText().color())
        painter.drawText(self.rect(), int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop
                                          | Qt.TextFlag.TextWordWrap), self._text)
        painter.end()


class _Bridge(QObject):
    """Carries results from the model's background thread to the GUI thread (queued signals)."""

    inspection_done = Signal(object)
    partial_done = Signal(object)
    batch_progress = Signal(int, int)
    batch_done = Signal(object)


class DeblendInspectorWidget(QWidget):
    """Dock widget comparing the deblending methods on one blend and on blend sets.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    model : InspectorModel, optional
        For tests and embedding (default: a new one; every registered method ticked except networks
        that have no shipped model yet).
    """

    def __init__(self, napari_viewer, model: InspectorModel | None = None, parent=None):
        super().__init__(parent)
        from napari_blendphot.widgets._session import current_blend_for

        self.viewer = napari_viewer
        self.model = model if model is not None else InspectorModel()
        self.session = current_blend_for(napari_viewer)
        self.last_inspection = None
        self._source_ref = None
        self._source_state = None
        self._reported: set[str] = set()
        self._mask_layers: dict = {}
        self._batch_future = None
        self._batch_progress = None
        self.batch_table = None
        self._pending_interactive = False
        self._requested_at: dict[int, float] = {}
        self.drawn_count = 0
        self.partial_count = 0
        self._last_seconds = 0.0

        self._bridge = _Bridge()
        self._bridge.inspection_done.connect(self._on_inspection_done)
        self._bridge.partial_done.connect(self._on_partial)
        self._bridge.batch_progress.connect(self._on_batch_progress)
        self._bridge.batch_done.connect(self._on_batch_done)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.run_now)

        self._build_ui()
        self.model.methods_changed.connect(self._sync_method_boxes)
        self._refresh_sources()
        self.session.changed.connect(self._on_shared_blend)
        self.viewer.layers.events.inserted.connect(self._refresh_sources)
        self.viewer.layers.events.inserted.connect(self._keep_masks_on_top)
        self.viewer.layers.events.removed.connect(self._refresh_sources)
        self.viewer.dims.events.current_step.connect(self._on_dims)
        self.destroyed.connect(functools.partial(_close_model, self.model))
        if self.session.state is not None:
            self.schedule()

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
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

        methods_box = QGroupBox("Methods")
        grid = QGridLayout(methods_box)
        grid.setContentsMargins(6, 4, 6, 4)
        self.method_boxes: dict[str, QCheckBox] = {}
        self.weights_labels: dict[str, QLabel] = {}
        from napari_blendphot.deblend.registry import method_info, unavailable_reason

        for row, name in enumerate(self.model.available):
            missing = None
            try:
                info = method_info(name)
                label, tip = info.label, info.description
                missing = unavailable_reason(name)
            except InputError as exc:
                label, tip = name, str(exc)
            box = QCheckBox(label)
            box.setToolTip(tip)
            box.setChecked(name in self.model.selected)
            if missing:  # listed, with the install hint, but cannot be ticked
                box.setChecked(False)
                box.setEnabled(False)
                box.setText(f"{label} (not available)")
                box.setToolTip(f"{tip}\nNot available here: {missing}")
            box.toggled.connect(functools.partial(self._on_method_toggled, name))
            grid.addWidget(box, row, 0)
            self.method_boxes[name] = box
            if name in ("blend2flux", "unet", "blend2mask2flux"):
                weights = QLabel()
                weights.setStyleSheet("color: gray")
                grid.addWidget(weights, row, 1)
                self.weights_labels[name] = weights
                choose = QToolButton()
                choose.setText("…")
                choose.setToolTip(f"Use a .keras file for {name} instead of the shipped model")
                choose.clicked.connect(functools.partial(self._choose_weights, name))
                grid.addWidget(choose, row, 2)
                reset = QToolButton()
                reset.setText("↺")
                reset.setToolTip(f"Back to the shipped {name} model")
                reset.clicked.connect(functools.partial(self.set_weights, name, None))
                grid.addWidget(reset, row, 3)
        precision_row = len(self.model.available)
        precision_label = QLabel("Network precision:")
        grid.addWidget(precision_label, precision_row, 0)
        self.precision_combo = QComboBox()
        from napari_blendphot.models.precision import resolve_precision

        for value, text in (("float32", "float32 (the published metrics)"), ("bfloat16", "bfloat16 (faster)"),
                            ("auto", f"auto ({resolve_precision('auto')} on this CPU)")):
            self.precision_combo.addItem(text, value)
        self.precision_combo.setCurrentIndex(self.precision_combo.findData(self.model.precision))
        tip = ("Compute precision of the networks.  bfloat16 is about twice as fast on CPUs with native "
               "bfloat16 (AVX512-BF16, AMX) and changes fluxes by a few thousandths of a magnitude; on other "
               "CPUs it is emulated and slower.  'auto' picks bfloat16 only where it is native.  What a run "
               "used is in the status line, the mask layers' metadata and the saved table.")
        self.precision_combo.setToolTip(tip)
        precision_label.setToolTip(tip)
        self.precision_combo.currentIndexChanged.connect(self._on_precision_changed)
        grid.addWidget(self.precision_combo, precision_row, 1, 1, 3)
        grid.setColumnStretch(1, 1)
        layout.addWidget(methods_box)
        self._update_weights_labels()

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

        self.table = QTableWidget(0, len(_TABLE_HEADERS))
        self.table.setHorizontalHeaderLabels(_TABLE_HEADERS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        # Interactive, not ResizeToContents: the latter re-measures every cell on every change.
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setMinimumHeight(200)
        self.table.horizontalHeaderItem(6).setToolTip(
            "SEP's detection case (the paper's flag): 0 only the central found, 1 only the companion, "
            "2 both, 3 more than two sources")
        layout.addWidget(self.table, 1)
        self.status_label = _StatusLine()
        layout.addWidget(self.status_label)
        self.error_label = QLabel("")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #e0604a")
        self.error_label.setVisible(False)
        layout.addWidget(self.error_label)

        batch_box = QGroupBox("Blend set")
        batch = QVBoxLayout(batch_box)
        batch.setContentsMargins(6, 4, 6, 4)
        batch_row = QHBoxLayout()
        self.set_combo = QComboBox()
        self.set_combo.setToolTip("A loaded blend set (an image stack opened from a blend dataset folder)")
        batch_row.addWidget(self.set_combo, 1)
        self.split_combo = QComboBox()
        self.split_combo.addItems(["test", "all", "train"])
        self.split_combo.setToolTip("Which blends of the set to run on")
        batch_row.addWidget(self.split_combo)
        batch.addLayout(batch_row)
        batch_buttons = QHBoxLayout()
        self.batch_button = QPushButton("Run on blend set")
        self.batch_button.clicked.connect(self.run_blend_set)
        batch_buttons.addWidget(self.batch_button)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_blend_set)
        batch_buttons.addWidget(self.cancel_button)
        self.save_results_button = QPushButton("Save results…")
        self.save_results_button.setEnabled(False)
        self.save_results_button.clicked.connect(self.save_results)
        batch_buttons.addWidget(self.save_results_button)
        batch.addLayout(batch_buttons)
        self.batch_label = QLabel("")
        self.batch_label.setWordWrap(True)
        batch.addWidget(self.batch_label)
        self.summary = QTableWidget(0, len(_SUMMARY_HEADERS))
        self.summary.setHorizontalHeaderLabels(_SUMMARY_HEADERS)
        for column, tip in enumerate(_SUMMARY_TIPS):
            if tip:
                self.summary.horizontalHeaderItem(column).setToolTip(tip)
        self.summary.verticalHeader().setVisible(False)
        self.summary.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.summary.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.summary.setVisible(False)
        batch.addWidget(self.summary)
        self.canvas = None
        self._batch_layout = batch
        layout.addWidget(batch_box)
        self.setMinimumWidth(480)

    def _sync_method_boxes(self) -> None:
        for name, box in self.method_boxes.items():
            if box.isChecked() != (name in self.model.selected):
                box.blockSignals(True)
                box.setChecked(name in self.model.selected)
                box.blockSignals(False)
        index = self.precision_combo.findData(self.model.precision)
        if index >= 0 and index != self.precision_combo.currentIndex():
            self.precision_combo.blockSignals(True)
            self.precision_combo.setCurrentIndex(index)
            self.precision_combo.blockSignals(False)

    def _update_weights_labels(self) -> None:
        for name, label in self.weights_labels.items():
            text = self.model.weights_description(name)
            label.setText(text)
            label.setToolTip(self.model.weights.get(name) or text)

    # ------------------------------------------------------------------ sources
    def _image_layers(self):
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)
                and layer.metadata.get("blendphot_kind") != "inspector"]

    def _refresh_sources(self, *_args) -> None:
        """Rebuild both combos from the viewer's image layers, keeping the chosen layers (by object, so renames
        follow)."""
        source = self._source_ref
        chosen_set = self._set_layer(self.set_combo.currentText())
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
        sets = [layer for layer in images if layer.metadata.get("blendphot_kind") == "blends"]
        self.set_combo.blockSignals(True)
        self.set_combo.clear()
        self.set_combo.addItems([layer.name for layer in sets])
        if chosen_set is not None and chosen_set in sets:
            self.set_combo.setCurrentText(chosen_set.name)
        self.set_combo.blockSignals(False)
        self.batch_button.setEnabled(bool(sets) and self._batch_future is None)
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

    def _on_shared_blend(self, state) -> None:
        if self._source_layer() is not None or not self.model.live:
            return
        if getattr(state, "interactive", False):
            self.schedule(interactive=True)
        else:
            # At once, not at the next event-loop turn: the worker then computes while
            # the canvas repaints the sender's own layer updates (measured: ~0.2 s saved).
            self.run_now()

    def _on_dims(self, *_args) -> None:
        layer = self._source_layer()
        if layer is not None and layer.ndim > 2 and self.model.live:
            self.schedule()

    def current_state(self):
        """The :class:`BlendState` to inspect now (raises InputError for unusable layers)."""
        layer = self._source_layer()
        if layer is None:
            return self.session.state
        step = tuple(int(s) for s in self.viewer.dims.current_step)
        data = layer.data
        if getattr(layer, "multiscale", False):
            data = data[0]
        ndim = len(data.shape)
        index = tuple(step[len(step) - ndim:len(step) - 2]) if ndim > 2 else ()
        if ndim > 2:
            index = tuple(min(max(i, 0), n - 1) for i, n in zip(index, data.shape[:-2]))
        blend_set = layer.metadata.get("blend_set")
        if layer.metadata.get("blendphot_kind") == "blends" and ndim == 3:
            source = layer.metadata.get("source")
            if blend_set is None and source and Path(str(source)).is_dir():
                from napari_blendphot.blend.dataset import BlendDataset

                blend_set = layer.metadata["blend_set"] = BlendDataset(source)
            if blend_set is not None and len(blend_set) == data.shape[0]:
                return state_from_blend_set(blend_set, index[0], layer.name)
            catalog = layer.metadata.get("catalog")
            if catalog is not None and len(catalog) == data.shape[0] and "g1_flux" in catalog.colnames:
                # The blend set itself is gone (e.g. a restored session): fluxes from the catalogue, no masks.
                return state_from_catalog_row(np.asarray(data[index]), catalog, index[0], layer.name)
        where = f"image layer {layer.name!r}" + (f" at slice {index}" if index else "")
        return state_from_image(np.asarray(data[index] if index else data), layer.name, where)

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
        index = self.precision_combo.findData(precision)
        if index < 0:
            _notify("error", f"Deblend Inspector: {precision!r} is not a network precision")
            return
        self.precision_combo.setCurrentIndex(index)  # -> _on_precision_changed

    def _on_precision_changed(self, *_args) -> None:
        precision = self.precision_combo.currentData()
        if precision == self.model.precision:
            return
        try:
            self.model.set_precision(precision)
        except InputError as exc:
            _notify("error", f"Deblend Inspector: {exc}")
            return
        if self.model.live:
            self.schedule()

    def _on_method_toggled(self, name: str, on: bool) -> None:
        self.model.set_selected(name, on)
        if self.model.live:
            self.schedule()

    def _choose_weights(self, name: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, f"Weights for {name}", "", "Keras models (*.keras)")
        if path:
            self.set_weights(name, path)

    def set_weights(self, name: str, path, *_args) -> None:
        """Use *path* (a ``.keras`` file; None = shipped) for network *name* and re-run."""
        try:
            self.model.set_weights(name, None if not path else str(path))
        except InputError as exc:
            _notify("error", f"Deblend Inspector: {exc}")
            return
        self._reported = {m for m in self._reported if not m.startswith(f"{name}:")}
        self._update_weights_labels()
        if self.model.live:
            self.schedule()

    def run_now(self, *_args) -> None:
        """Run the ticked methods on the current blend (in the background)."""
        self._timer.stop()
        try:
            state = self.current_state()
        except InputError as exc:
            self._show_problem(f"Deblend Inspector: {exc}")
            return
        except Exception as exc:  # a layer we cannot read: say so, never crash the viewer
            self._show_problem(f"Deblend Inspector: cannot read the chosen blend: {exc}")
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

    def _show_problem(self, message: str, kind: str = "warning") -> None:
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
        try:
            inspection = future.result()
        except Exception as exc:
            self._show_problem(f"Deblend Inspector: the run failed: {exc}", "error")
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
        errors = _grouped_errors(inspection.errors)
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

    def _update_image(self, state) -> None:
        """Show the blend itself when nothing else in the viewer does (a blend set from code, say)."""
        shown_by_others = self._source_layer() is not None or any(
            layer.metadata.get("blendphot_kind") == "builder" for layer in self.viewer.layers
            if layer.name != IMAGE_LAYER)
        if shown_by_others:
            if IMAGE_LAYER in self.viewer.layers and self.viewer.layers[IMAGE_LAYER].visible:
                self.viewer.layers[IMAGE_LAYER].visible = False  # an older blend: not what is inspected now
            return
        from napari_blendphot.display import astro_contrast

        if IMAGE_LAYER in self.viewer.layers:
            layer = self.viewer.layers[IMAGE_LAYER]
            layer.visible = True
            if layer.data.shape == state.image.shape and np.array_equal(layer.data, state.image):
                return
            layer.data = state.image
            layer.metadata["blend"] = state.name
        else:
            layer = self.viewer.add_image(state.image, name=IMAGE_LAYER, colormap="gray",
                                          metadata={"blendphot_kind": "inspector", "blend": state.name},
                                          **astro_contrast(state.image))
            self.viewer.layers.move(self.viewer.layers.index(layer), 0)

    def _set_mask_layer(self, key: str, name: str, masks, features, metadata) -> bool:
        from napari_blendphot._reader import mask_label_kwargs, mask_outlines

        outlines = mask_outlines(masks)
        layer = self._mask_layers.get(key)
        if layer is None or layer not in self.viewer.layers:
            layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if layer is None:
            kwargs = mask_label_kwargs(name, metadata)
            kwargs["features"] = features
            if key == "truth":
                kwargs["opacity"] = 0.5  # the reference: drawn fainter so the methods' outlines stand out
            layer = self.viewer.add_labels(outlines, **kwargs)
            self._mask_layers[key] = layer
            return True
        data = layer.data
        if isinstance(data, np.ndarray) and data.shape == outlines.shape and data.dtype == outlines.dtype \
                and data.flags.writeable:
            if not np.array_equal(data, outlines):
                # In place + refresh: a third of the cost of assigning layer.data (no dims or
                # extent recomputation: the shape is the same; the highlight does not depend on the data).
                data[...] = outlines
                layer.refresh(extent=False, highlight=False)
        else:
            layer.data = outlines
        current = layer.features
        if list(current.columns) == list(features) and len(current) == len(features["index"]):
            # Same columns and rows: write the values in place (setting layer.features
            # rebuilds the table and its events, ~8 ms a layer while dragging).
            for column, values in features.items():
                current[column] = values
        else:
            layer.features = features
        layer.metadata.update(metadata)
        self._mask_layers[key] = layer
        return False

    def _keep_masks_on_top(self, *_args) -> None:
        """Outlines under an image are invisible: keep the inspector's mask layers above every image."""
        from napari.layers import Image

        layers = self.viewer.layers
        ours = [layer for layer in self._mask_layers.values() if layer in layers]
        if not ours:
            return
        top_image = max((i for i, layer in enumerate(layers) if isinstance(layer, Image)), default=-1)
        if min(layers.index(layer) for layer in ours) > top_image:
            return
        # Truth first (lowest), then the methods in their order.
        for layer in ours:
            layers.move(layers.index(layer), len(layers))

    def _update_layers(self, inspection) -> None:
        state = inspection.state
        drawn = set()
        added = False
        truth = state.truth
        if truth is not None and getattr(truth, "masks", None) is not None and np.any(truth.masks):
            added |= self._set_mask_layer("truth", TRUTH_LAYER, np.asarray(truth.masks),
                                          layer_features(inspection.rows, "truth"),
                                 {"blendphot_kind": LAYER_KIND, "method": "truth", "blend": state.name})
            drawn.add("truth")
        for name, output in inspection.outputs.items():
            if output.masks is None:
                continue
            added |= self._set_mask_layer(name, mask_layer_name(name), np.asarray(output.masks)[0],
                                 layer_features(inspection.rows, name),
                                 {"blendphot_kind": LAYER_KIND, "method": name, "blend": state.name,
                                  "label": output.metadata.get("label", name),
                                  **({"precision": output.metadata["precision"]}
                                     if "precision" in output.metadata else {})})
            drawn.add(name)
        if added:
            self._keep_masks_on_top()
        # Masks of unticked methods, or a truth this blend lacks, would be stale: remove them.
        # (A ticked method that failed this time keeps its layer; the error says why it is old.)
        for key in list(self._mask_layers):
            if key not in drawn and (key == "truth" or key not in self.model.selected):
                layer = self._mask_layers.pop(key)
                if layer in self.viewer.layers:
                    self.viewer.layers.remove(layer)

    def _fill_table(self, rows) -> None:
        # Same layout as before (the usual case while moving a companion): only texts change,
        # the items are reused; a new layout creates items and resizes the columns once.
        layout = [(row.method, row.galaxy) for row in rows]
        relayout = layout != getattr(self, "_table_layout", None)
        self._table_layout = layout
        self.table.setUpdatesEnabled(False)
        try:
            if relayout:
                self.table.setRowCount(len(rows))
            previous = None
            for i, row in enumerate(rows):
                undetected = row.method != "truth" and not (np.isfinite(row.flux) and row.flux > 0)
                values = (row.method if row.method != previous else "", row.galaxy,
                          "not found" if undetected else format_value("flux", row.flux), format_value("mag", row.mag),
                          format_value("dmag", row.dmag), format_value("iou", row.iou),
                          _short_case(row.detection))
                previous = row.method
                for j, text in enumerate(values):
                    item = self.table.item(i, j)
                    if relayout or item is None:
                        item = QTableWidgetItem(text)
                        if j >= 2:
                            item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
                        if j == 0:
                            item.setToolTip(row.label)
                        if j == 1 and row.galaxy in _GALAXY_QCOLORS:
                            item.setForeground(_GALAXY_QCOLORS[row.galaxy])
                        self.table.setItem(i, j, item)
                    elif item.text() != text:
                        item.setText(text)
                    if j == 4:
                        outlier = bool(np.isfinite(row.dmag) and abs(row.dmag) > 0.75)
                        item.setForeground(_OUTLIER_QCOLOR if outlier else self.table.palette().text().color())
                        item.setToolTip("outlier: |Δmag| > 0.75 (a factor 2 in flux)" if outlier else "")
                    if j == 6:
                        item.setToolTip(row.detection)
                    if j == 2:
                        item.setToolTip("the method assigned no source to this galaxy" if undetected else "")
            if relayout:
                self.table.resizeColumnsToContents()
                metrics = self.table.fontMetrics()
                for column, sample in _COLUMN_SAMPLES.items():
                    wide_enough = metrics.horizontalAdvance(sample) + 10
                    if self.table.columnWidth(column) < wide_enough:
                        self.table.setColumnWidth(column, wide_enough)
        finally:
            self.table.setUpdatesEnabled(True)

    # ------------------------------------------------------------------ table export
    def table_rows(self) -> list:
        return [] if self.last_inspection is None else list(self.last_inspection.rows)

    def copy_table(self, *_args) -> str:
        """Put the table on the clipboard as tab-separated text; returns the text."""
        text = rows_as_tsv(self.table_rows())
        QGuiApplication.clipboard().setText(text)
        return text

    def _ask_save_path(self, caption: str, file_filter: str) -> str:
        """A file name from the save dialog (it asks before replacing a file); "" if cancelled."""
        path, _ = QFileDialog.getSaveFileName(self, caption, "", file_filter)
        return path

    def save_table(self, *_args):
        """Save the table as CSV through a save dialog (which confirms any replacement)."""
        from napari_blendphot.tables import write_table

        if not self.table_rows():
            _notify("info", "Deblend Inspector: nothing to save yet: run the methods first")
            return None
        path = self._ask_save_path("Save the inspector table", "CSV (*.csv)")
        if not path:
            return None
        path = Path(path)
        if path.suffix.lower() != ".csv":
            path = path.with_suffix(".csv")
        name = self.last_inspection.state.name
        try:
            # The dialog has already asked before replacing an existing file.
            table = rows_as_table(self.table_rows(), name, precisions_used(self.last_inspection.outputs))
            written = write_table(table, path, overwrite=True)
        except Exception as exc:
            _notify("error", f"Deblend Inspector: cannot save {path}: {exc}")
            return None
        _notify("info", f"Deblend Inspector: wrote {written}")
        return written

    # ------------------------------------------------------------------ blend sets
    def _blend_set_layer(self):
        return self._set_layer(self.set_combo.currentText())

    def run_blend_set(self, *_args) -> None:
        """Run the ticked methods over the chosen blend set (or split) in the background."""
        from napari.utils import progress

        layer = self._blend_set_layer()
        if layer is None:
            _notify("warning", "Deblend Inspector: open a blend dataset folder first (File > Open Folder…)")
            return
        blend_set = layer.metadata.get("blend_set")
        if blend_set is None and layer.metadata.get("source"):
            from napari_blendphot.blend.dataset import BlendDataset

            try:
                blend_set = BlendDataset(layer.metadata["source"])
            except InputError as exc:
                _notify("error", f"Deblend Inspector: {exc}")
                return
        split = self.split_combo.currentText()
        split = None if split == "all" else split
        try:
            from napari_blendphot.widgets._inspector_model import blend_set_size

            total = blend_set_size(blend_set, split)
            if total == 0:
                raise InputError(f"blend set {layer.name!r}", f"has no {split} blends", "choose the split 'all'")
            for name in self.model.selected:
                problem = self.model.check_method(name)
                if problem:
                    raise InputError("methods", problem)
            if not self.model.selected:
                raise InputError("methods", "no method ticked")
        except InputError as exc:
            _notify("warning", f"Deblend Inspector: {exc}")
            return
        self._batch_progress = progress(total=total, desc=f"Deblending {layer.name} ({split or 'all'})")
        self._batch_done = 0
        self._batch_started = time.perf_counter()
        self.batch_label.setText(f"running {', '.join(self.model.selected)} on {total} blends…")
        self._batch_future = self.model.submit_blend_set(blend_set, split, list(self.model.selected),
                                                         progress=self._deliver_batch_progress)
        self._batch_future.add_done_callback(self._deliver_batch_done)
        self.batch_button.setEnabled(False)
        self.cancel_button.setEnabled(True)

    def _deliver_batch_progress(self, done: int, total: int) -> None:  # background thread
        try:
            self._bridge.batch_progress.emit(done, total)
        except RuntimeError:
            pass

    def _deliver_batch_done(self, future) -> None:  # background thread
        try:
            self._bridge.batch_done.emit(future)
        except RuntimeError:
            pass

    def _on_batch_progress(self, done: int, total: int) -> None:
        if self._batch_future is None:  # a late report of a run already shown as finished
            return
        if self._batch_progress is not None:
            self._batch_progress.update(done - self._batch_done)
        self._batch_done = done
        self.batch_label.setText(f"{done} of {total} blends done…")

    def cancel_blend_set(self, *_args) -> None:
        """Stop the blend-set run after its current chunk (partial results are kept)."""
        if self._batch_future is not None:
            self._batch_future.cancel_event.set()
            self.batch_label.setText("cancelling after the current chunk…")

    def _on_batch_done(self, future) -> None:
        from napari_blendphot.deblend.engine import Cancelled

        if self._batch_progress is not None:
            self._batch_progress.close()
            self._batch_progress = None
        self._batch_future = None
        self.cancel_button.setEnabled(False)
        self.batch_button.setEnabled(self.set_combo.count() > 0)
        seconds = time.perf_counter() - self._batch_started
        try:
            table = future.result()
            note = f"{len(table)} blends in {seconds:.1f} s"
        except Cancelled as exc:
            table = getattr(exc, "partial", None)
            note = f"cancelled after {exc.done} of {exc.total} blends"
            _notify("info", f"Deblend Inspector: blend-set run {note}")
        except Exception as exc:
            self.batch_label.setText(f"failed: {exc}")
            _notify("error", f"Deblend Inspector: the blend-set run failed: {exc}")
            return
        self.batch_table = table
        self.save_results_button.setEnabled(table is not None)
        if table is None:
            self.batch_label.setText(note + ": nothing to show")
            return
        try:
            self._show_summary(table, note)
        except Exception as exc:
            self.batch_label.setText(f"{note}; cannot summarise: {exc}")
            _notify("error", f"Deblend Inspector: cannot summarise the results: {exc}")

    def _show_summary(self, table, note: str) -> None:
        from napari_blendphot.report.evaluate import summary_table
        from napari_blendphot.report.figures import default_selection, plot_dmag_histograms

        summary = summary_table(table)
        selection = default_selection(table)
        rows = [row for row in summary if row["selection"] == selection and row["galaxy"] in (*GALAXIES, "both")]
        self.summary.setRowCount(len(rows))
        previous = None
        for i, row in enumerate(rows):
            values = (row["method"] if row["method"] != previous else "", row["galaxy"], str(int(row["n"])),
                      str(int(row["n_undetected"])), format_value("dmag", float(row["mean_dmag"])),
                      format_value("mag", float(row["sigma"])), f"{float(row['outliers_percent']):.1f}",
                      format_value("iou", float(row["mean_iou"])))
            previous = row["method"]
            for j, text in enumerate(values):
                item = QTableWidgetItem(text)
                if j >= 2:
                    item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
                self.summary.setItem(i, j, item)
        self.summary.setVisible(True)
        self.summary.setMinimumHeight(min(60 + 24 * len(rows), 260))
        self.batch_label.setText(f"{note} — selection: {selection} galaxies")
        if self.canvas is None:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure

            self.figure = Figure(figsize=(4.5, 2.8), layout="constrained")
            self.canvas = FigureCanvasQTAgg(self.figure)
            self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            self.canvas.setFixedHeight(260)
            self._batch_layout.addWidget(self.canvas)
        self.figure.clear()
        import matplotlib

        with matplotlib.rc_context({"font.size": 7, "axes.labelsize": 7, "legend.fontsize": 7}):
            plot_dmag_histograms(self.figure, table, selection=selection)
        self.canvas.draw_idle()

    def save_results(self, *_args):
        """Save the blend-set results table as CSV + FITS (asks before replacing either)."""
        from napari_blendphot.report.results import write_results

        if self.batch_table is None:
            return None
        path = self._ask_save_path("Save the results table (CSV and FITS)", "Results table (*.csv *.fits)")
        if not path:
            return None
        stem = Path(path)
        if stem.suffix.lower() in (".csv", ".fits"):
            stem = stem.with_suffix("")
        targets = [stem.with_suffix(".csv"), stem.with_suffix(".fits")]
        existing = [str(p) for p in targets if p.exists() and str(p) != str(Path(path))]
        if existing and not self._confirm_replace(existing):
            return None
        try:
            written = write_results(self.batch_table, stem, overwrite=True)
        except Exception as exc:
            _notify("error", f"Deblend Inspector: cannot save the results: {exc}")
            return None
        _notify("info", f"Deblend Inspector: wrote {', '.join(str(p) for p in written)}")
        return written

    def _confirm_replace(self, paths) -> bool:
        answer = QMessageBox.question(self, "Replace files?", "These files exist and would be replaced:\n"
                                      + "\n".join(paths))
        return answer == QMessageBox.StandardButton.Yes

    # ------------------------------------------------------------------ teardown
    def close_inspector(self) -> None:
        """Stop the worker process and disconnect from the viewer (also done when the widget is destroyed)."""
        self._timer.stop()
        if self._batch_future is not None:
            self._batch_future.cancel_event.set()
        for signal, slot in ((self.session.changed, self._on_shared_blend),
                             (self.viewer.layers.events.inserted, self._refresh_sources),
                             (self.viewer.layers.events.inserted, self._keep_masks_on_top),
                             (self.viewer.layers.events.removed, self._refresh_sources),
                             (self.viewer.dims.events.current_step, self._on_dims),
                             (self.model.methods_changed, self._sync_method_boxes)):
            try:
                signal.disconnect(slot)
            except Exception:
                pass
        self.model.close()

    def closeEvent(self, event) -> None:
        self.close_inspector()
        super().closeEvent(event)
