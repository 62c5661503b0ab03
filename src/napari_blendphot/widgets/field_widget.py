"""Field widget: measure the blended galaxies of a field image in napari (field mode).

A thin Qt view over :class:`napari_blendphot.field.model.FieldModel`:

* **Image**: a field image layer (opened by this plugin's reader: any 2-D
  FITS image or 3-D cube) or **Open…**; the zero point and pixel scale in
  use are shown with where they came from, and can be edited (**Apply**);
* **Detect**: SEP detection and blend groups into the Points layer
  ``<image> sources`` (``features``: ids, group, size, then each measured
  source's magnitudes and flags; border colour: white isolated, orange pair,
  red larger group);
* **measure**: click a source (the Points layer active), or draw rectangles
  in ``<image> selection`` and press **Measure rectangle**, or **Measure all
  blends**; the methods run in the worker process, off the GUI thread, with
  napari's progress bar and **Cancel**; each mask-making method's masks of
  the last source clicked are drawn where they lie on the field (a Labels
  layer ``masks: <method> (field)`` with its ``translate``/``scale``);
* the **table** lists the measured sources; **Save catalogue…** writes what
  ``blendphot measure`` writes (FITS + CSV + JSON).

The cursor's RA/Dec is added to the status bar for field layers
(:func:`install_sky_status`).
"""

from __future__ import annotations

import concurrent.futures
import threading
import weakref
from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QGridLayout, QGroupBox, QHBoxLayout,
                            QLabel, QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from napari_blendphot.errors import BlendphotError
from napari_blendphot.field.model import FieldModel
from napari_blendphot.widgets._qt import notify
from napari_blendphot.widgets._qt import scrolling_layout

GROUP_COLORS = {1: (1.0, 1.0, 1.0, 1.0), 2: (1.0, 0.55, 0.0, 1.0), 3: (1.0, 0.15, 0.15, 1.0)}
MASK_LAYER = "masks: {} (field)"
TABLE_LIMIT = 2000


# --------------------------------------------------------------------------- RA/Dec in the status bar
_sky_viewers: "weakref.WeakSet" = weakref.WeakSet()

#: The widget's help text (its "?" button, tooltip and What's This).
HELP = ("Measure a FITS field image: detect sources, pick blends (click or rectangle), run the methods on "
        "128x128 cutouts around them and save the catalogue. See docs/field.md.")


def _wcs_of(layer):
    cache = layer.metadata.get("_blendphot_wcs")
    if cache is None:
        from astropy.io import fits
        from astropy.wcs import WCS

        text = (layer.metadata.get("field") or {}).get("wcs_header")
        cache = WCS(fits.Header.fromstring(text, sep="\n")) if text else False
        layer.metadata["_blendphot_wcs"] = cache
    return cache or None


def sky_position_text(layer, world_position) -> str:
    """``"RA 10:00:24.12 Dec +02:12:00.5"`` of a world position over a field layer ("" without a WCS)."""
    wcs = _wcs_of(layer)
    if wcs is None:
        return ""
    y, x = np.asarray(layer.world_to_data(world_position), np.float64)[-2:]
    ra, dec = wcs.wcs_pix2world([[x, y]], 0)[0]
    from astropy.coordinates import Angle

    ra_text = Angle(ra, "deg").to_string(unit="hourangle", sep=":", precision=2, pad=True)
    dec_text = Angle(dec, "deg").to_string(unit="deg", sep=":", precision=1, alwayssign=True, pad=True)
    return f"RA {ra_text} Dec {dec_text} ({ra:.6f}, {dec:+.6f})"


def _field_layer(viewer):
    active = viewer.layers.selection.active
    if active is not None and active.metadata.get("blendphot_kind") == "field":
        return active
    for layer in reversed(list(viewer.layers)):
        if layer.visible and layer.metadata.get("blendphot_kind") == "field":
            return layer
    return None


def install_sky_status(viewer) -> None:
    """Append the cursor's RA/Dec to the status bar of *viewer* over field layers (once per viewer)."""
    if viewer in _sky_viewers:
        return
    _sky_viewers.add(viewer)
    busy = {"on": False}

    def on_status(event):
        status = event.value
        if busy["on"] or not isinstance(status, dict) or "RA " in status.get("coordinates", ""):
            return
        layer = _field_layer(viewer)
        if layer is None:
            return
        try:
            text = sky_position_text(layer, viewer.cursor.position)
        except Exception:  # a position napari cannot map (no layer extent yet)
            return
        if text:
            busy["on"] = True
            try:
                viewer.status = {**status, "coordinates": f"{status.get('coordinates', '')}  {text}"}
            finally:
                busy["on"] = False

    viewer.events.status.connect(on_status)


# --------------------------------------------------------------------------- the widget
class _NumberItem(QTableWidgetItem):
    """A table cell that sorts by its number (NaN last)."""

    def __init__(self, text: str, value: float):
        super().__init__(text)
        self.value = value if np.isfinite(value) else np.inf

    def __lt__(self, other) -> bool:
        return self.value < getattr(other, "value", np.inf)


class _Bridge(QObject):
    progress = Signal(int, int)
    finished = Signal(object, object)  # (indices measured or None, error or None)


class FieldWidget(QWidget):
    """Dock widget of field mode (module docstring)."""

    def __init__(self, napari_viewer, model: FieldModel | None = None, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.model = model or FieldModel()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="blendphot-field")
        self._cancel = threading.Event()
        self._progress = None
        self._last_clicked = None
        self._current_layer = None
        self._bridge = _Bridge()
        self._bridge.progress.connect(self._on_progress)
        self._bridge.finished.connect(self._on_finished)
        self._build()
        install_sky_status(napari_viewer)
        napari_viewer.layers.events.inserted.connect(self._refresh_layers)
        napari_viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        layout = scrolling_layout(self, HELP)
        row = QHBoxLayout()
        self.layer_box = QComboBox()
        self.layer_box.currentTextChanged.connect(self._on_layer_chosen)
        open_button = QPushButton("Open…")
        open_button.clicked.connect(self._choose_file)
        row.addWidget(QLabel("Image"))
        row.addWidget(self.layer_box, 1)
        row.addWidget(open_button)
        layout.addLayout(row)

        calibration = QGroupBox("Calibration in use")
        grid = QGridLayout(calibration)
        self.zero_point = QDoubleSpinBox(decimals=4, minimum=-10.0, maximum=60.0, singleStep=0.01)
        self.pixel_scale = QDoubleSpinBox(decimals=5, minimum=0.0001, maximum=3600.0, singleStep=0.001)
        self.zero_point_source = QLabel("")
        self.pixel_scale_source = QLabel("")
        apply = QPushButton("Apply")
        apply.clicked.connect(self.apply_calibration)
        grid.addWidget(QLabel("AB zero point"), 0, 0)
        grid.addWidget(self.zero_point, 0, 1)
        grid.addWidget(self.zero_point_source, 0, 2)
        grid.addWidget(QLabel('pixel scale (")'), 1, 0)
        grid.addWidget(self.pixel_scale, 1, 1)
        grid.addWidget(self.pixel_scale_source, 1, 2)
        grid.addWidget(apply, 2, 1)
        layout.addWidget(calibration)

        methods = QGroupBox("Methods")
        method_row = QHBoxLayout(methods)
        from napari_blendphot.deblend.registry import available_methods

        self.method_boxes = {}
        for name in available_methods():
            box = QCheckBox(name)
            box.setChecked(name in self.model.methods)
            box.toggled.connect(self._on_methods)
            self.method_boxes[name] = box
            method_row.addWidget(box)
        layout.addWidget(methods)

        buttons = QGridLayout()
        self.detect_button = QPushButton("Detect")
        self.rectangle_button = QPushButton("Measure rectangle")
        self.blends_button = QPushButton("Measure all blends")
        self.cancel_button = QPushButton("Cancel")
        self.save_button = QPushButton("Save catalogue…")
        self.detect_button.clicked.connect(self.detect)
        self.rectangle_button.clicked.connect(self.measure_rectangle)
        self.blends_button.clicked.connect(self.measure_blends)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button.clicked.connect(self._choose_save)
        self.cancel_button.setEnabled(False)
        for i, button in enumerate((self.detect_button, self.rectangle_button, self.blends_button,
                                    self.cancel_button, self.save_button)):
            buttons.addWidget(button, i // 3, i % 3)
        layout.addLayout(buttons)
        self.status = QLabel("Open a field image (File > Open, or Open…), then Detect.")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.setSortingEnabled(True)
        self.table.verticalHeader().setVisible(False)
        layout.addWidget(self.table, 1)
        self.setMinimumWidth(520)

    # ------------------------------------------------------------------ image and calibration
    def _field_layers(self):
        return [layer for layer in self.viewer.layers if layer.metadata.get("blendphot_kind") == "field"]

    def _refresh_layers(self, *_args) -> None:
        names = [layer.name for layer in self._field_layers()]
        current = self.layer_box.currentText()
        self.layer_box.blockSignals(True)
        self.layer_box.clear()
        self.layer_box.addItems(names)
        self.layer_box.blockSignals(False)
        if current in names:
            self.layer_box.setCurrentText(current)
        elif names:
            self._on_layer_chosen(names[-1])

    def _on_layer_chosen(self, name: str) -> None:
        if not name or name not in self.viewer.layers or name == self._current_layer:
            return
        layer = self.viewer.layers[name]
        try:
            self.model.open(layer.metadata["source"], hdu=layer.metadata.get("hdu"), plane=layer.metadata.get("plane"))
        except BlendphotError as exc:
            notify("error", f"Field: {exc}")
            return
        self._current_layer = name
        self.layer_box.setCurrentText(name)
        self._show_calibration()
        self.status.setText("\n".join(self.model.notes) or "Press Detect.")

    def open_path(self, path) -> None:
        """Open *path* with this plugin's reader into the viewer and use it."""
        layers = self.viewer.open(str(path), plugin="napari-blendphot")
        if layers:
            self._on_layer_chosen(layers[0].name)

    def _choose_file(self, *_args) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a field image", "", "FITS (*.fits *.fit *.fts *.fits.gz)")
        if path:
            self.open_path(path)

    def _show_calibration(self) -> None:
        calibration = self.model.calibration
        self.zero_point.setValue(calibration.zero_point)
        self.pixel_scale.setValue(calibration.pixel_scale)
        self.zero_point_source.setText(calibration.zero_point_source)
        self.pixel_scale_source.setText(calibration.pixel_scale_source)

    def apply_calibration(self, *_args) -> None:
        if self.model.image is None:
            return
        calibration = self.model.calibration
        zero_point = self.zero_point.value()
        pixel_scale = self.pixel_scale.value()
        try:
            self.model.set_calibration(None if abs(zero_point - calibration.zero_point) < 5e-5 else zero_point,
                                       None if abs(pixel_scale - calibration.pixel_scale) < 5e-6 else pixel_scale)
        except BlendphotError as exc:
            notify("error", f"Field: {exc}")
        self._show_calibration()
        self._update_points()
        self.status.setText("Calibration changed: detect again.")

    def _on_methods(self, *_args) -> None:
        chosen = [name for name, box in self.method_boxes.items() if box.isChecked()]
        if chosen:
            self.model.set_methods(chosen)

    # ------------------------------------------------------------------ detection and layers
    def _base(self) -> str:
        return self.layer_box.currentText() or "field"

    def detect(self, *_args) -> None:
        try:
            n = self.model.detect()
        except BlendphotError as exc:
            notify("error", f"Field: {exc}")
            return
        self._update_points()
        self._fill_table()
        blends = len(self.model.blend_members())
        self.status.setText(f"{n} sources, {blends} in blend groups. Click a source (sources layer active), "
                            "draw rectangles in the selection layer, or measure all blends.")

    def _points_layer(self):
        name = f"{self._base()} sources"
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _update_points(self) -> None:
        layer = self._points_layer()
        if self.model.region is None:
            if layer is not None:
                self.viewer.layers.remove(layer)
            return
        features = self.model.features()
        sizes = np.minimum(features["group_size"], 3)
        colors = np.array([GROUP_COLORS[int(s)] for s in sizes]) if len(sizes) else np.zeros((0, 4))
        if layer is None:
            layer = self.viewer.add_points(self.model.points(), name=f"{self._base()} sources", size=16,
                                           face_color="transparent", border_color=colors, border_width=0.08,
                                           features=features)
            layer.mouse_drag_callbacks.append(self._on_click)
        else:
            layer.data = self.model.points()
            layer.features = features
            layer.border_color = colors
        self.viewer.layers.selection.active = layer

    def _on_click(self, layer, event):
        start = np.asarray(event.position)
        yield
        while event.type == "mouse_move":
            yield
        if np.hypot(*(np.asarray(event.position) - start)[-2:]) > 3:
            return  # a drag (pan or box selection), not a click
        y, x = np.asarray(layer.world_to_data(event.position))[-2:]
        index = self.model.nearest_source(y, x, max_distance=12.0)
        if index is not None:
            self._last_clicked = index
            self._run([index], f"Measuring source {index + 1}")

    def measure_rectangle(self, *_args) -> None:
        name = f"{self._base()} selection"
        if name not in self.viewer.layers:
            layer = self.viewer.add_shapes(name=name, edge_color="cyan", face_color="transparent", edge_width=3)
            layer.mode = "add_rectangle"
            self.status.setText("Draw one or more rectangles, then press Measure rectangle again.")
            return
        indices = []
        for shape in self.viewer.layers[name].data:
            shape = np.asarray(shape)[:, -2:]
            indices.extend(self.model.sources_in_box(shape[:, 0].min(), shape[:, 0].max(),
                                                     shape[:, 1].min(), shape[:, 1].max()).tolist())
        if not indices:
            notify("info", "Field: no source inside the rectangles")
            return
        self._run(indices, f"Measuring {len(set(indices))} sources")

    def measure_blends(self, *_args) -> None:
        try:
            indices = self.model.blend_members()
        except BlendphotError as exc:
            notify("error", f"Field: {exc}")
            return
        if not len(indices):
            notify("info", "Field: no blend groups")
            return
        self._run(indices, f"Measuring {len(indices)} blend members")

    # ------------------------------------------------------------------ background runs
    def _run(self, indices, label: str) -> None:
        from napari.utils import progress

        if self.cancel_button.isEnabled():
            notify("info", "Field: a measurement is running (Cancel it first)")
            return
        self._cancel.clear()
        self.cancel_button.setEnabled(True)
        self._progress = progress(total=len(indices), desc=label)
        self._progress_done = 0
        self.status.setText(f"{label}…")
        future = self._executor.submit(self.model.measure, indices,
                                       lambda done, total: self._bridge.progress.emit(done, total), self._cancel)
        future.add_done_callback(self._deliver)

    def _deliver(self, future) -> None:  # worker thread
        try:
            self._bridge.finished.emit(future.result(), None)
        except BaseException as exc:
            self._bridge.finished.emit(None, exc)

    def _on_progress(self, done: int, total: int) -> None:
        if self._progress is not None and done > self._progress_done:
            self._progress.update(done - self._progress_done)
            self._progress_done = done

    def cancel(self, *_args) -> None:
        self._cancel.set()
        self.status.setText("Cancelling after the current chunk…")

    def _on_finished(self, indices, error) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self.cancel_button.setEnabled(False)
        if error is not None:
            notify("error", f"Field: {error}")
            self.status.setText(f"Failed: {error}")
            return
        self._update_points()
        self._fill_table()
        cancelled = " (cancelled: the sources measured before are kept)" if self._cancel.is_set() else ""
        self.status.setText(f"Measured {len(indices)} source{'s' * (len(indices) != 1)}{cancelled}; "
                            f"{len(self.model.measured_indices)} so far.")
        if self._last_clicked is not None and self._last_clicked in set(indices.tolist()):
            self._draw_masks(self._last_clicked)

    def _draw_masks(self, index: int) -> None:
        from napari_blendphot._reader import mask_label_kwargs, mask_outlines

        for method, (masks, origin, step) in self.model.masks(index).items():
            name = MASK_LAYER.format(method)
            outlines = mask_outlines(masks)
            if name in self.viewer.layers:
                layer = self.viewer.layers[name]
                layer.data = outlines
                layer.translate, layer.scale = origin, step
            else:
                layer = self.viewer.add_labels(outlines, **mask_label_kwargs(name, {"blendphot_kind": "field-masks"}),
                                               translate=origin, scale=step)
            layer.metadata["source_id"] = index + 1
        points = self._points_layer()
        if points is not None:
            self.viewer.layers.selection.active = points

    # ------------------------------------------------------------------ table and saving
    def table_columns(self) -> list[str]:
        return ["source_id", "group_id", "group_size"] + [f"mag_{m}" for m in self.model.methods] + \
            ["mag_total", "flags"]

    def _fill_table(self) -> None:
        columns = self.table_columns()
        indices = self.model.measured_indices[:TABLE_LIMIT]
        features = self.model.features() if self.model.region is not None else {}
        self.table.setSortingEnabled(False)
        self.table.clear()
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels(columns)
        self.table.setRowCount(len(indices))
        for row, index in enumerate(indices):
            for column, name in enumerate(columns):
                value = features[name][index] if name in features else np.nan
                text = "" if isinstance(value, float) and not np.isfinite(value) else (
                    f"{value:.3f}" if isinstance(value, (float, np.floating)) else str(value))
                self.table.setItem(row, column, _NumberItem(text, float(value)))
        self.table.setSortingEnabled(True)
        self.table.resizeColumnsToContents()

    def _choose_save(self, *_args) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the catalogue", f"{self._base()}_catalog.fits",
                                              "FITS + CSV + JSON (*.fits);;ECSV (*.ecsv)")
        if path:
            self.save(path, overwrite=Path(path).exists())

    def save(self, path, overwrite: bool = False):
        try:
            written = self.model.save(path, overwrite=overwrite)
        except BlendphotError as exc:
            notify("error", f"Field: {exc}")
            return None
        notify("info", f"Field: wrote {', '.join(str(p) for p in written)}")
        return written

    def closeEvent(self, event) -> None:
        self._cancel.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.model.close()
        super().closeEvent(event)
