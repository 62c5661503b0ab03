"""Failure browser: find the blends a method gets wrong, and look at them.

A thin Qt view over :class:`~napari_blendphot.widgets._failure_model.FailureModel`:

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
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt
from qtpy.QtGui import QKeySequence, QShortcut
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
    QLineEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from napari_blendphot.widgets._failure_model import COLUMNS, NO_DETECTION, FailureModel
from napari_blendphot.widgets._notify import notify as _notify

#: Layer names (updated in place).
BLEND_LAYER = "failures: blend"
TRUTH_LAYER = "failures: truth"
#: Viewer keys: next / previous row of the filtered table.
NEXT_KEY, PREVIOUS_KEY = "J", "K"
#: Methods whose masks are re-computed for the shown blend when they are in the results.
def can_rerun_masks(method: str) -> bool:
    """Whether *method*'s masks can be re-computed here: it makes masks and, if it is a
    network, a shipped model exists for it (results tables do not store masks)."""
    from napari_blendphot.deblend.registry import method_info

    info = method_info(method)
    if not info.makes_masks:
        return False
    if not info.needs_worker:
        return True
    from napari_blendphot.models.registry import METHODS, default_model

    return method in METHODS and default_model(method) is not None
_COLUMN_NAMES = list(COLUMNS)
_DETECTION_TEXT = {NO_DETECTION: "—", -1: "-1 none", 0: "0 central", 1: "1 companion", 2: "2 both", 3: "3 more"}
_ALL = "all"


class FailureTableModel(QAbstractTableModel):
    """Qt table model over the view of a :class:`FailureModel` (formats cells on demand)."""

    def __init__(self, failures: FailureModel | None = None, parent=None):
        super().__init__(parent)
        self.failures = failures

    def set_failures(self, failures: FailureModel | None) -> None:
        self.beginResetModel()
        self.failures = failures
        self.endResetModel()

    def refresh(self) -> None:
        self.beginResetModel()
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 (Qt API)
        return 0 if (self.failures is None or parent.isValid()) else len(self.failures.view)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(_COLUMN_NAMES)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[_COLUMN_NAMES[section]]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or self.failures is None:
            return None
        name = _COLUMN_NAMES[index.column()]
        value = self.failures.columns[name][self.failures.view[index.row()]]
        if role == Qt.ItemDataRole.DisplayRole:
            if name == "detection":
                return _DETECTION_TEXT.get(int(value), str(value))
            if isinstance(value, (float, np.floating)):
                if not np.isfinite(value):
                    return "undetected" if name in ("dmag", "abs_dmag", "pred_mag") else "—"
                return f"{value:.1f}" if name == "distance" else f"{value:.3f}"
            return str(value)
        if role == Qt.ItemDataRole.TextAlignmentRole and name not in ("method", "galaxy", "morph_pair"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def sort(self, column: int, order=Qt.SortOrder.AscendingOrder) -> None:
        if self.failures is None or not 0 <= column < len(_COLUMN_NAMES):
            return
        self.layoutAboutToBeChanged.emit()
        self.failures.sort(_COLUMN_NAMES[column], descending=order == Qt.SortOrder.DescendingOrder)
        self.layoutChanged.emit()


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
        self._scatter_artists: dict = {}
        self._highlight = None
        self._background = None
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
        layout = QVBoxLayout(self)
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

        filters = QGroupBox("Filter")
        grid = QGridLayout(filters)
        self.method_combo = QComboBox()
        self.galaxy_combo = QComboBox()
        self.galaxy_combo.addItems([_ALL, "central", "companion"])
        self.detection_combo = QComboBox()
        self.pair_combo = QComboBox()
        grid.addWidget(QLabel("method"), 0, 0)
        grid.addWidget(self.method_combo, 0, 1)
        grid.addWidget(QLabel("galaxy"), 0, 2)
        grid.addWidget(self.galaxy_combo, 0, 3)
        grid.addWidget(QLabel("detection"), 1, 0)
        grid.addWidget(self.detection_combo, 1, 1)
        grid.addWidget(QLabel("types"), 1, 2)
        grid.addWidget(self.pair_combo, 1, 3)
        self.range_edits = {}
        for k, (name, label) in enumerate((("abs_dmag", "|dmag|"), ("distance", "distance"),
                                           ("pair_dmag", "pair dmag"))):
            low, high = QLineEdit(), QLineEdit()
            for edit, text in ((low, "min"), (high, "max")):
                edit.setPlaceholderText(text)
                edit.setMaximumWidth(70)
                edit.editingFinished.connect(self._apply_filter)
            self.range_edits[name] = (low, high)
            box = QHBoxLayout()
            box.addWidget(low)
            box.addWidget(high)
            grid.addWidget(QLabel(label), 2 + k // 2, 2 * (k % 2))
            grid.addLayout(box, 2 + k // 2, 2 * (k % 2) + 1)
        for combo in (self.method_combo, self.galaxy_combo, self.detection_combo, self.pair_combo):
            combo.currentIndexChanged.connect(self._apply_filter)
        layout.addWidget(filters)

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
        self.table.horizontalHeader().setSortIndicator(_COLUMN_NAMES.index("abs_dmag"), Qt.SortOrder.DescendingOrder)
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
        self.canvas, self.figure = self._make_canvas()
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

    def _make_canvas(self):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(4, 3), dpi=90, facecolor="#262930", layout="constrained")  # re-laid out on resize
        canvas = FigureCanvasQTAgg(figure)
        canvas.setMinimumHeight(170)
        canvas.mpl_connect("pick_event", self._on_pick)
        canvas.mpl_connect("draw_event", self._on_draw)
        return canvas, figure

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
        for combo, values in ((self.method_combo, failures.methods),
                              (self.detection_combo, [_DETECTION_TEXT.get(v, str(v))
                                                      for v in failures.choices("detection")]),
                              (self.pair_combo, failures.choices("morph_pair"))):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([_ALL, *map(str, values)])
            combo.blockSignals(False)
        self.detection_combo.setEnabled(failures.detection_column is not None)
        failures.sort("abs_dmag", descending=True)
        self.table_model.set_failures(failures)
        self.table.horizontalHeader().setSortIndicator(_COLUMN_NAMES.index("abs_dmag"), Qt.SortOrder.DescendingOrder)
        failures.current_changed.connect(self._on_model_current)
        failures.view_changed.connect(self._on_view_changed)
        self._describe_source()
        self._set_enabled(True)
        self._apply_filter()
        if len(failures.view):
            failures.select(0)
        self.table.resizeColumnsToContents()

    def _describe_source(self) -> None:
        failures = self.failures
        n_blends = len(failures.results)
        text = (f"<b>{n_blends}</b> blends × {len(failures.methods)} methods ({', '.join(failures.methods)}) "
                f"× 2 galaxies = {len(failures)} rows, from {Path(failures.source).name}.")
        if failures.has_images:
            text += f"<br>Images: {failures.dataset.path}"
        else:
            text += ("<br><span style='color:#e0c040'>No blend images: open the blend dataset the results came "
                     "from (the paper's blends were not published; its catalogue is table and scatter only).</span>")
        self.source_label.setText(text)

    # -- filter ----------------------------------------------------------------------------------
    def _range(self, name):
        low, high = self.range_edits[name]
        values = []
        for edit in (low, high):
            text = edit.text().strip()
            try:
                values.append(float(text) if text else None)
            except ValueError:
                _notify("warning", f"'{text}' is not a number (filter {name})")
                edit.clear()
                values.append(None)
        return None if values == [None, None] else tuple(values)

    def _apply_filter(self, *_) -> None:
        if self.failures is None:
            return

        def chosen(combo, convert=str):
            text = combo.currentText()
            return None if text in ("", _ALL) else (convert(text),)

        self.failures.set_filter(
            methods=chosen(self.method_combo),
            galaxies=chosen(self.galaxy_combo),
            detections=chosen(self.detection_combo, lambda t: NO_DETECTION if t == "—" else int(t.split()[0])),
            morph_pairs=chosen(self.pair_combo),
            abs_dmag=self._range("abs_dmag"),
            distance=self._range("distance"),
            pair_dmag=self._range("pair_dmag"),
        )
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
        numbers = self.failures.blend_numbers(record["row"])
        cells = []
        for method in self.failures.methods:
            row = {r["galaxy"]: r for r in numbers if r["method"] == method}
            parts = []
            for galaxy in ("central", "companion"):
                entry = row[galaxy]
                dmag = "undetected" if not np.isfinite(entry["dmag"]) else f"{entry['dmag']:+.3f}"
                iou = "" if not np.isfinite(entry["iou"]) else f" (IoU {entry['iou']:.2f})"
                bold = method == record["method"] and galaxy == record["galaxy"]
                text = f"{dmag}{iou}"
                parts.append(f"<td><b>{text}</b></td>" if bold else f"<td>{text}</td>")
            cells.append(f"<tr><td>{method}</td>{''.join(parts)}</tr>")
        detection = _DETECTION_TEXT.get(int(record["detection"]), str(record["detection"]))
        self.numbers_label.setText(
            f"<b>blend {record['blend_id']}</b>: distance {record['distance']:.1f} px, types {record['morph_pair']}, "
            f"detection {detection}<table cellspacing='6'><tr><th></th><th>central dmag</th>"
            f"<th>companion dmag</th></tr>{''.join(cells)}</table>")

    def _show_blend(self, record: dict) -> None:
        from napari_blendphot._reader import show_masks
        from napari_blendphot.display import astro_contrast
        from napari_blendphot.widgets._session import current_blend_for

        failures = self.failures
        results_row = int(record["row"])
        blend = failures.blend(results_row)
        meta = {"blendphot_kind": "failure-browser", "blend_id": int(record["blend_id"])}
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
        from napari_blendphot.deblend.registry import available_methods

        if self.failures is None or not self.rerun_check.isChecked():
            return []
        names = set(available_methods())
        return [m for m in self.failures.methods if m in names and can_rerun_masks(m)]

    def _rerun_masks(self, results_row: int, blend_id) -> None:
        methods = self.mask_methods()
        stale = [layer.name for layer in self.viewer.layers
                 if layer.name.startswith("failures: ") and layer.name.endswith(" masks")]
        for name in stale:  # never show another blend's masks
            self.viewer.layers[name].visible = False
        if not methods:
            return
        from napari.qt.threading import create_worker

        from napari_blendphot.deblend.engine import InferenceEngine

        failures = self.failures
        dataset_row = failures.dataset_row(results_row)
        view = failures.dataset.select(index=[dataset_row])
        blends, context = view.blends, view.context()
        if self._engine is None:
            self._engine = InferenceEngine(methods=tuple(methods))
        engine = self._engine
        self._mask_request += 1
        request = self._mask_request

        def work():
            return engine.run(blends, context, methods=methods)

        def done(outputs):
            if request != self._mask_request:
                return  # the user moved on; a newer request will draw
            from napari_blendphot._reader import mask_label_kwargs
            from napari_blendphot.display import masks_to_labels

            for name, output in outputs.items():
                if output.masks is None:
                    continue
                # Filled (the method's masks) under outlines (the truth): same colours, told apart by style.
                labels = masks_to_labels(output.masks[0])
                meta = {"blendphot_kind": "failure-browser", "blend_id": int(blend_id), "method": name}
                layer_name = f"failures: {name} masks"
                if layer_name in self.viewer.layers:
                    layer = self.viewer.layers[layer_name]
                    layer.data = labels
                    layer.metadata.update(meta)
                else:
                    layer = self.viewer.add_labels(labels, **{**mask_label_kwargs(layer_name, meta), "opacity": 0.35})
                    # keep the truth outlines on top
                    self.viewer.layers.move(self.viewer.layers.index(layer),
                                            self.viewer.layers.index(TRUTH_LAYER))
                layer.visible = True

        worker = create_worker(work)
        worker.returned.connect(done)
        worker.errored.connect(lambda exc: _notify("warning", f"Masks not re-computed: {exc}"))
        self._mask_worker = worker
        worker.start()

    def _close_engine(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self._release_keys()
        self._close_engine()
        super().closeEvent(event)

    # -- scatter ---------------------------------------------------------------------------------
    def _x_column(self) -> str:
        return "pair_dmag" if self.x_combo.currentIndex() == 0 else "distance"

    def _draw_scatter(self, *_) -> None:
        figure = self.figure
        figure.clear()
        self._scatter_artists = {}
        self._highlight = None
        self._background = None
        if self.failures is None:
            self.canvas.draw_idle()
            return
        axis = figure.add_subplot(111)
        axis.set_facecolor("#1b1d22")
        for spine in axis.spines.values():
            spine.set_color("#888888")
        axis.tick_params(colors="#dddddd", labelsize=8)
        x_name = self._x_column()
        self._scatter_filter = self.failures.filter
        points = self.failures.scatter_points(x_name)
        colours = ("#1f9bff", "#ff8c00", "#5fd35f", "#e377c2", "#bcbd22", "#17becf")
        n_points = sum(len(v[0]) for v in points.values())
        size = 12 if n_points < 2000 else 3
        for k, (method, (x, dmag, rows)) in enumerate(points.items()):
            # the first methods on top: later ones (often the wide-scatter baseline) must not hide them
            artist = axis.scatter(x, dmag, s=size, color=colours[k % len(colours)], alpha=0.6, linewidths=0,
                                  label=f"{method} ({len(x)})", picker=True, pickradius=4,
                                  zorder=3 + len(points) - k)
            self._scatter_artists[artist] = rows
        all_dmag = np.concatenate([v[1] for v in points.values()]) if points else np.array([])
        if all_dmag.size > 20:
            # a few wild outliers must not squash the bulk: clip the view, not the data
            low, high = np.percentile(all_dmag, [0.5, 99.5])
            pad = 0.1 * max(high - low, 0.5)
            axis.set_ylim(min(low, -0.8) - pad, max(high, 0.8) + pad)
        axis.axhline(0, color="#aaaaaa", lw=0.6)
        for level in (-0.75, 0.75):
            axis.axhline(level, color="#777777", lw=0.5, ls=":")
        axis.set_xlabel("pair magnitude difference (galaxy - neighbour)" if x_name == "pair_dmag"
                        else "distance (px)", color="#dddddd", fontsize=8)
        axis.set_ylabel("dmag (pred - true)", color="#dddddd", fontsize=8)
        if points:
            axis.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(points),
                        markerscale=3 if size < 10 else 1, frameon=False, labelcolor="#dddddd",
                        handletextpad=0.2, columnspacing=1.0)
        self._axis = axis
        self._mark_scatter(self.failures.current_row, draw=False)
        self.canvas.draw_idle()

    def _mark_scatter(self, long_row, draw: bool = True) -> None:
        """Ring the current row's point; blitted over the cached plot (a full redraw of 40k points is slow)."""
        if not self._scatter_artists or self.failures is None:
            return
        if self._highlight is None:
            (self._highlight,) = self._axis.plot([], [], marker="o", ms=11, mfc="none", mec="white", mew=1.5,
                                                 animated=True, zorder=10)
        point = ([], [])
        if long_row is not None:
            x = self.failures.columns[self._x_column()][long_row]
            y = self.failures.columns["dmag"][long_row]
            if np.isfinite(x) and np.isfinite(y):
                point = ([x], [y])
        # a point beyond the clipped y range is marked by a triangle on the edge, pointing to it
        marker, face = "o", "none"
        if point[1]:
            low, high = self._axis.get_ylim()
            if point[1][0] > high:
                point, marker, face = (point[0], [high]), "^", "white"
            elif point[1][0] < low:
                point, marker, face = (point[0], [low]), "v", "white"
        self._highlight.set_marker(marker)
        self._highlight.set_markerfacecolor(face)
        self._highlight.set_clip_on(False)
        self._highlight.set_data(*point)
        if not draw:
            return
        if self._background is None:
            self.canvas.draw_idle()  # the draw event caches the background and blits the ring
            return
        self.canvas.restore_region(self._background)
        self._axis.draw_artist(self._highlight)
        self.canvas.blit(self.figure.bbox)

    def _on_draw(self, _event) -> None:
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        if self._highlight is not None:
            self._axis.draw_artist(self._highlight)

    def _on_pick(self, event) -> None:
        rows = self._scatter_artists.get(event.artist)
        if rows is None or not len(event.ind):
            return
        # the nearest of the picked points to the click
        offsets = event.artist.get_offsets()[event.ind]
        mouse = np.array([event.mouseevent.xdata, event.mouseevent.ydata], float)
        scale = np.array(np.diff(self._axis.get_xlim()).tolist() + np.diff(self._axis.get_ylim()).tolist())
        nearest = event.ind[int(np.argmin((((offsets - mouse) / scale) ** 2).sum(axis=1)))]
        self.failures.select_row(int(rows[nearest]))

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
