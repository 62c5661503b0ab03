"""Failure browser: find the blends a method gets wrong, and look at them.

A thin Qt view over :class:`~napari_blendphot.app.failures.FailureModel`:

* **Table** (``QTableView`` over a ``QAbstractTableModel``, so 40,000 rows stay
  fast): one row per (blend, method, galaxy) with |dmag|, detection case,
  morphology pair, distance, pair magnitude difference and IoU.  Click a
  header to sort; filters above it.
* **Viewer**: selecting a row shows the blend (``failures: blend``), its true
  masks as outlines (``failures: truth``) and, for methods that make masks
  and can run here (SEP, and the networks that have shipped weights), their
  masks re-computed for that one blend in the inference engine's worker
  process (``failures: <method> masks``; networks with the shipped weights,
  which may differ from the weights that made the results table); layers
  are updated in place.  The blend becomes the viewer's current blend, so the
  Deblend Inspector follows.  J / K (or the arrow keys in the table) walk the
  filtered list.
* **Scatter** of dmag against pair magnitude difference or distance, one
  colour per method (paper Figure 7); clicking a point opens that blend.
* **Export** the filtered rows to CSV, and the first 16 shown blends as a PNG
  montage for a talk.

Results without the blend dataset (e.g. the paper's catalogue, whose blends
were not published) can still be browsed as a table and a scatter plot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QKeySequence, QShortcut
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from napari_blendphot.app.failures import FailureModel, can_rerun_masks
from napari_blendphot.widgets._failures_scatter import FailureScatter
from napari_blendphot.widgets._failures_table import COLUMN_NAMES, DETECTION_TEXT, FailureTableModel, FilterBox
from napari_blendphot.widgets._qt import notify as _notify
from napari_blendphot.widgets._qt import scrolling_layout

__all__ = ["FailureBrowserWidget", "can_rerun_masks"]

#: Layer names (updated in place).
BLEND_LAYER = "failures: blend"
TRUTH_LAYER = "failures: truth"
#: Viewer keys: next / previous row of the filtered table.
NEXT_KEY, PREVIOUS_KEY = "J", "K"

#: The widget's help text (its "?" button, tooltip and What's This).
HELP = ("Browse a results table galaxy by galaxy, worst first: filter by method, galaxy, |dmag|, distance; "
        "sort by any column (|z| = |flux - true| / error puts confident failures first). The selected blend is "
        "shown with its true outlines and the methods' re-run masks. See docs/curation.md.")


class FailureBrowserWidget(QWidget):
    """Dock widget: sortable, filterable per-galaxy errors; the selected blend in the viewer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.failures: FailureModel | None = None
        self._engine = None
        self._mask_request = 0
        self._mask_worker = None
        self._scatter_filter = None
        self._build()
        self.setMinimumWidth(560)
        viewer = self.viewer
        previous = {NEXT_KEY: viewer.bind_key(NEXT_KEY, lambda _viewer: self.step(+1), overwrite=True),
                    PREVIOUS_KEY: viewer.bind_key(PREVIOUS_KEY, lambda _viewer: self.step(-1), overwrite=True)}

        def release(*_):
            for key, function in previous.items():
                viewer.bind_key(key, function, overwrite=True)

        self._release_keys = release
        self.destroyed.connect(release)
        self.destroyed.connect(lambda *_: self._close_engine())

    # -- layout ----------------------------------------------------------------------------------
    def _build(self) -> None:
        layout = scrolling_layout(self, HELP)
        source = QGroupBox("Results")
        source_layout = QVBoxLayout(source)
        row = QHBoxLayout()
        self.results_button = QPushButton("Results table…")
        self.dataset_button = QPushButton("Blend dataset…")
        self.rerun_check = QCheckBox("re-run masks")
        self.rerun_check.setChecked(True)
        self.rerun_check.setToolTip("Masks are not stored in results tables: re-compute them for the shown blend "
                                    "in the inference worker process (SEP, and the networks with their "
                                    "shipped weights)")
        row.addWidget(self.results_button)
        row.addWidget(self.dataset_button)
        row.addWidget(self.rerun_check)
        source_layout.addLayout(row)
        self.source_label = QLabel("Open a results table (blendphot predict output or the paper's catalogue).")
        self.source_label.setWordWrap(True)
        source_layout.addWidget(self.source_label)
        layout.addWidget(source)

        self.filters = FilterBox(_notify)
        self.filters.changed.connect(self._apply_filter)
        for name in ("method_combo", "galaxy_combo", "detection_combo", "pair_combo", "range_edits"):
            setattr(self, name, getattr(self.filters, name))
        layout.addWidget(self.filters)

        splitter = QSplitter(Qt.Orientation.Vertical)
        self.table_model = FailureTableModel()
        self.table = QTableView()
        self.table.setModel(self.table_model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setDefaultSectionSize(64)
        self.table.setMinimumHeight(150)
        self.table.horizontalHeader().setSortIndicator(COLUMN_NAMES.index("abs_dmag"), Qt.SortOrder.DescendingOrder)
        self.table.setSortingEnabled(True)
        self.table.selectionModel().currentRowChanged.connect(self._on_table_row)
        splitter.addWidget(self.table)

        lower = QWidget()
        lower_layout = QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        self.numbers_label = QLabel("")
        self.numbers_label.setTextFormat(Qt.TextFormat.RichText)
        self.numbers_label.setWordWrap(True)
        lower_layout.addWidget(self.numbers_label)
        axis_row = QHBoxLayout()
        axis_row.addWidget(QLabel("scatter x:"))
        self.x_combo = QComboBox()
        self.x_combo.addItems(["pair magnitude difference", "distance (px)"])
        self.x_combo.currentIndexChanged.connect(self._draw_scatter)
        axis_row.addWidget(self.x_combo)
        axis_row.addStretch(1)
        lower_layout.addLayout(axis_row)
        self.scatter = FailureScatter(lambda long_row: self.failures.select_row(long_row))
        self.canvas, self.figure = self.scatter.canvas, self.scatter.figure
        lower_layout.addWidget(self.canvas, 1)
        splitter.addWidget(lower)
        splitter.setSizes([420, 360])
        layout.addWidget(splitter, 1)

        buttons = QHBoxLayout()
        self.previous_button = QPushButton(f"◀ previous [{PREVIOUS_KEY}]")
        self.next_button = QPushButton(f"next [{NEXT_KEY}] ▶")
        self.csv_button = QPushButton("Export rows (CSV)…")
        self.montage_button = QPushButton("Montage (PNG)…")
        for button in (self.previous_button, self.next_button, self.csv_button, self.montage_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        keys = QLabel(f"<b>Keys</b>: <b>{NEXT_KEY}</b>/<b>{PREVIOUS_KEY}</b> next/previous row (canvas or panel), "
                      "arrows in the table; click a header to sort, a point of the scatter to open its blend.")
        keys.setWordWrap(True)
        layout.addWidget(keys)

        self.results_button.clicked.connect(self._open_results_dialog)
        self.dataset_button.clicked.connect(self._open_dataset_dialog)
        self.previous_button.clicked.connect(lambda: self.step(-1))
        self.next_button.clicked.connect(lambda: self.step(+1))
        self.csv_button.clicked.connect(self._csv_dialog)
        self.montage_button.clicked.connect(self._montage_dialog)
        for key, step in ((NEXT_KEY, +1), (PREVIOUS_KEY, -1)):
            shortcut = QShortcut(QKeySequence(key), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(lambda step=step: self.step(step))
        self._set_enabled(False)

    def _set_enabled(self, enabled: bool) -> None:
        for widget in (self.previous_button, self.next_button, self.csv_button, self.method_combo,
                       self.galaxy_combo, self.detection_combo, self.pair_combo, self.dataset_button):
            widget.setEnabled(enabled)
        self.montage_button.setEnabled(enabled and self.failures is not None and self.failures.has_images)

    # -- opening ---------------------------------------------------------------------------------
    def _open_results_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Results table", "",
                                              "Results (*.csv *.fits);;All files (*)")
        if path:
            self.open_results(path)

    def _open_dataset_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Blend dataset folder the results came from")
        if path:
            self.attach_dataset(path)

    def open_results(self, results, dataset=None) -> bool:
        """Open a results table (path or Table) and optionally its blend dataset; False on error (shown)."""
        from napari_blendphot.errors import BlendphotError

        try:
            failures = FailureModel(results, dataset)
        except (BlendphotError, OSError) as exc:
            _notify("error", f"Failure browser: {exc}")
            return False
        self._set_failures(failures)
        return True

    def attach_dataset(self, dataset) -> bool:
        from napari_blendphot.errors import BlendphotError

        if self.failures is None:
            return False
        try:
            self.failures.attach_dataset(dataset)
        except (BlendphotError, OSError) as exc:
            _notify("error", f"Failure browser: {exc}")
            return False
        self._describe_source()
        self._set_enabled(True)
        self._show_current()
        return True

    def _set_failures(self, failures: FailureModel) -> None:
        if self.failures is not None:
            self.failures.current_changed.disconnect(self._on_model_current)
            self.failures.view_changed.disconnect(self._on_view_changed)
        self.failures = failures
        self._scatter_filter = None  # new points: redraw even if the filter looks the same
        self.filters.set_choices(failures)
        failures.sort("abs_dmag", descending=True)
        self.table_model.set_failures(failures)
        self.table.horizontalHeader().setSortIndicator(COLUMN_NAMES.index("abs_dmag"), Qt.SortOrder.DescendingOrder)
        failures.current_changed.connect(self._on_model_current)
        failures.view_changed.connect(self._on_view_changed)
        self._describe_source()
        self._set_enabled(True)
        self._apply_filter()
        if len(failures.view):
            failures.select(0)
        self.table.resizeColumnsToContents()

    def _describe_source(self) -> None:
        self.source_label.setText(self.failures.describe_source())

    # -- filter ----------------------------------------------------------------------------------
    def _apply_filter(self, *_) -> None:
        if self.failures is None:
            return
        self.failures.set_filter(**self.filters.conditions())
        if self.failures.current == -1 and len(self.failures.view):
            self.failures.select(0)

    def _on_view_changed(self) -> None:
        self.table_model.refresh()
        if self.failures.filter != self._scatter_filter:  # a new sort order shows the same points
            self._draw_scatter()

    # -- current row -----------------------------------------------------------------------------
    def step(self, delta: int) -> None:
        """Next (+1) or previous (-1) row of the filtered table."""
        if self.failures is None:
            return
        moved = self.failures.next() if delta > 0 else self.failures.previous()
        if not moved:
            _notify("info", "End of the filtered list.")

    def select_position(self, position: int) -> None:
        """Select the *position*-th shown row (as a click in the table would)."""
        self.failures.select(position)

    def _on_table_row(self, current, _previous) -> None:
        if self.failures is not None and current.isValid() and current.row() != self.failures.current:
            self.failures.select(current.row())

    def _on_model_current(self, position: int) -> None:
        if position >= 0:
            index = self.table_model.index(position, 0)
            if self.table.selectionModel().currentIndex().row() != position:
                self.table.selectionModel().setCurrentIndex(
                    index, self.table.selectionModel().SelectionFlag.ClearAndSelect
                    | self.table.selectionModel().SelectionFlag.Rows)
            self.table.scrollTo(index)
        self._show_current()

    def _show_current(self) -> None:
        failures = self.failures
        if failures is None or failures.current_row is None:
            self.numbers_label.setText("")
            self._mark_scatter(None)
            return
        record = failures.record()
        self._show_numbers(record)
        self._mark_scatter(failures.current_row)
        if failures.has_images:
            self._show_blend(record)

    def _show_numbers(self, record: dict) -> None:
        self.numbers_label.setText(self.failures.describe_record(record, DETECTION_TEXT))

    def _show_blend(self, record: dict) -> None:
        from napari_blendphot._reader import show_masks
        from napari_blendphot.display import astro_contrast
        from napari_blendphot.app.session import current_blend_for

        failures = self.failures
        results_row = int(record["row"])
        blend = failures.blend(results_row)
        meta = {"blendphot_kind": "failure-browser", "blend_id": int(record["blend_id"])}
        from napari_blendphot.widgets._inspector_layers import keeping_selection

        with keeping_selection(self.viewer):  # the shown blend and truth never take the active layer
            if BLEND_LAYER in self.viewer.layers:
                layer = self.viewer.layers[BLEND_LAYER]
                layer.data = blend.blend
                layer.contrast_limits = astro_contrast(blend.blend)["contrast_limits"]
                layer.metadata.update(meta)
            else:
                self.viewer.add_image(blend.blend, name=BLEND_LAYER, colormap="gray", metadata=meta,
                                      **astro_contrast(blend.blend))
                self.viewer.reset_view()
            show_masks(self.viewer, TRUTH_LAYER, blend.masks, meta)
        overlay = self.viewer.canvas.overlays.text
        overlay.visible = True
        overlay.text = (f"blend {record['blend_id']}   {record['method']} {record['galaxy']}: "
                        f"dmag {record['dmag']:+.2f}" if np.isfinite(record["dmag"]) else
                        f"blend {record['blend_id']}   {record['method']} {record['galaxy']}: undetected")
        current_blend_for(self.viewer).set(failures.blend_state(results_row))
        self._rerun_masks(results_row, record["blend_id"])

    # -- masks re-computed in the worker process ---------------------------------------------------
    def mask_methods(self) -> list[str]:
        """Methods of the results whose masks are re-computed here (registered, make masks, runnable)."""
        if self.failures is None or not self.rerun_check.isChecked():
            return []
        return self.failures.rerunnable_methods()

    def _rerun_masks(self, results_row: int, blend_id) -> None:
        methods = self.mask_methods()
        stale = [layer.name for layer in self.viewer.layers
                 if layer.name.startswith("failures: ") and layer.name.endswith(" masks")]
        for name in stale:  # never show another blend's masks
            self.viewer.layers[name].visible = False
        if not methods:
            return
        from napari.qt.threading import create_worker

        from napari_blendphot.app.session import current_blend_for

        failures = self.failures
        if self._engine is None:
            self._engine = current_blend_for(self.viewer).engine(id(self))
        engine = self._engine
        self._mask_request += 1
        request = self._mask_request

        def done(outputs):
            if request == self._mask_request:  # else the user moved on; a newer request will draw
                self._draw_masks(outputs, blend_id)

        worker = create_worker(failures.rerun_masks, engine, results_row, methods)
        worker.returned.connect(done)
        worker.errored.connect(lambda exc: _notify("warning", f"Masks not re-computed: {exc}"))
        self._mask_worker = worker
        worker.start()

    def _draw_masks(self, outputs, blend_id) -> None:
        from napari_blendphot._reader import mask_label_kwargs
        from napari_blendphot.display import method_style, styled_outlines

        for name, output in outputs.items():
            if output.masks is None:
                continue
            # Outlines in the method's colour and line style, as in the Inspector (filled masks at
            # partial opacity mixed into one unreadable colour); the truth keeps its white/grey.
            style = method_style(name)
            labels = styled_outlines(output.masks[0], style.line_style)
            meta = {"blendphot_kind": "failure-browser", "blend_id": int(blend_id), "method": name}
            layer_name = f"failures: {name} masks"
            if layer_name in self.viewer.layers:
                layer = self.viewer.layers[layer_name]
                layer.data = labels
                layer.metadata.update(meta)
            else:
                from napari_blendphot.widgets._inspector_layers import keeping_selection

                with keeping_selection(self.viewer):  # results never take the active layer
                    layer = self.viewer.add_labels(labels, **mask_label_kwargs(layer_name, meta, style=style))
                layer.editable = False
                # keep the truth outlines on top
                self.viewer.layers.move(self.viewer.layers.index(layer), self.viewer.layers.index(TRUTH_LAYER))
            layer.visible = True

    def _close_engine(self) -> None:
        if self._engine is not None:
            from napari_blendphot.app.session import current_blend_for

            self._engine = None
            current_blend_for(self.viewer).release_engine(id(self))

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self._release_keys()
        self._close_engine()
        super().closeEvent(event)

    # -- scatter ---------------------------------------------------------------------------------
    def _x_column(self) -> str:
        return "pair_dmag" if self.x_combo.currentIndex() == 0 else "distance"

    def _draw_scatter(self, *_) -> None:
        self._scatter_filter = None if self.failures is None else self.failures.filter
        self.scatter.draw(self.failures, self._x_column())

    def _mark_scatter(self, long_row, draw: bool = True) -> None:
        self.scatter.mark(self.failures, long_row, draw)

    @property
    def _axis(self):
        return self.scatter.axis

    # -- exports ---------------------------------------------------------------------------------
    def _csv_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export the filtered rows", "failures.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path, overwrite=Path(path).exists())  # the dialog asked before replacing

    def _montage_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Montage of the first 16 shown blends", "failures.png",
                                              "PNG (*.png)")
        if path:
            self.export_montage(path, overwrite=Path(path).exists())

    def export_csv(self, path, overwrite: bool = False):
        """Write the filtered rows to CSV; returns the path (None on error, shown)."""
        return self._export(lambda: self.failures.export_csv(path, overwrite=overwrite), "rows")

    def export_montage(self, path, limit: int = 16, overwrite: bool = False):
        """Write the first *limit* shown blends as a PNG montage; returns the path (None on error, shown)."""
        return self._export(lambda: self.failures.montage(path, limit=limit, overwrite=overwrite), "montage")

    def _export(self, action, what: str):
        from napari_blendphot.errors import BlendphotError

        if self.failures is None:
            return None
        try:
            out = action()
        except (BlendphotError, OSError) as exc:
            _notify("error", f"Export {what}: {exc}")
            return None
        _notify("info", f"Wrote {out}")
        return out
