"""Parts of the Blend Builder: the galaxy pickers and the draggable companion point."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from napari_blendphot.app.builder import BlendBuilderModel
from napari_blendphot.constants import CENTER, GALTYPES

#: Name of the Points layer whose single point is the companion's centre.
POSITION_LAYER = "companion position"
#: Thumbnail side in screen pixels.
_THUMB = 112


def stamp_pixmap(image, side: int = _THUMB) -> QPixmap:
    """An asinh-stretched stamp as a grey pixmap of *side* x *side* screen pixels."""
    from napari_blendphot.display import asinh_stretch

    grey = np.ascontiguousarray((asinh_stretch(image) * 255).astype(np.uint8))
    height, width = grey.shape
    qimage = QImage(grey.data, width, height, width, QImage.Format.Format_Grayscale8).copy()
    return QPixmap.fromImage(qimage).scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio,
                                            Qt.TransformationMode.FastTransformation)


class GalaxyPicker(QWidget):
    """Type filter, magnitude range and a galaxy combo for one role (central or companion)."""

    def __init__(self, role: str, parent=None):
        super().__init__(parent)
        self.role = role
        self.type_combo = QComboBox()
        self.type_combo.addItems(["any type", *GALTYPES])
        self.type_combo.setToolTip(f"Only {role} galaxies of this morphological type")
        self.mag_min = QDoubleSpinBox()
        self.mag_max = QDoubleSpinBox()
        for box, tip in ((self.mag_min, "faintest-first: brightest magnitude allowed"),
                         (self.mag_max, "faintest magnitude allowed")):
            box.setRange(10.0, 35.0)
            box.setDecimals(1)
            box.setSingleStep(0.5)
            box.setToolTip(f"{role}: {tip} (F160W AB)")
        self.mag_min.setToolTip(f"{role}: brightest F160W magnitude allowed")
        self.galaxy_combo = QComboBox()
        self.galaxy_combo.setToolTip(f"The {role} galaxy (type an id to jump to it)")
        self.galaxy_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.galaxy_combo.setMinimumContentsLength(18)
        filters = QHBoxLayout()
        filters.setContentsMargins(0, 0, 0, 0)
        filters.addWidget(self.type_combo)
        filters.addWidget(QLabel("mag"))
        filters.addWidget(self.mag_min)
        filters.addWidget(QLabel("–"))
        filters.addWidget(self.mag_max)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(filters)
        layout.addWidget(self.galaxy_combo)

    def filter_values(self):
        galtype = self.type_combo.currentText()
        return (None if galtype == "any type" else galtype), self.mag_min.value(), self.mag_max.value()

    def reset_range(self, mags) -> None:
        low, high = float(np.floor(np.min(mags) * 2) / 2), float(np.ceil(np.max(mags) * 2) / 2)
        for box, value in ((self.mag_min, low), (self.mag_max, high)):
            box.blockSignals(True)
            box.setValue(value)
            box.blockSignals(False)
        self.type_combo.blockSignals(True)
        self.type_combo.setCurrentIndex(0)
        self.type_combo.blockSignals(False)

    def fill(self, model: BlendBuilderModel, rows, selected: int) -> None:
        """List the galaxies *rows*; keep *selected* listed (even if filtered out) and current."""
        rows = list(int(r) for r in rows)
        if selected not in rows:
            rows = sorted([*rows, selected])
        catalog = model.catalog
        self.galaxy_combo.blockSignals(True)
        self.galaxy_combo.clear()
        for row in rows:
            self.galaxy_combo.addItem(f"{int(catalog['id'][row])}  {str(catalog['galtype'][row]).strip():4s}  "
                                      f"{float(catalog['mag'][row]):.2f} mag", row)
        self.galaxy_combo.setCurrentIndex(rows.index(selected))
        self.galaxy_combo.blockSignals(False)

    def select(self, row: int) -> bool:
        index = self.galaxy_combo.findData(int(row))
        if index < 0:
            return False
        self.galaxy_combo.blockSignals(True)
        self.galaxy_combo.setCurrentIndex(index)
        self.galaxy_combo.blockSignals(False)
        return True


class CompanionPointMixin:
    """The "companion position" Points layer of the Blend Builder, two-way bound to the model.

    Mixed into :class:`~napari_blendphot.widgets.blend_builder.BlendBuilderWidget`;
    uses its ``viewer``, ``model``, ``_points_layer``, ``_syncing``,
    ``_dragging``, ``_safely`` and ``_layer_alive``.
    """

    def _update_point(self, blend) -> None:
        position = np.array([[CENTER + blend.dy, CENTER + blend.dx]], dtype=float)
        if not self._layer_alive(self._points_layer):
            self._points_layer = self.viewer.add_points(
                position, name=POSITION_LAYER, size=5, symbol="cross", face_color="#ff8c00",
                border_color="white", border_width=0.1, metadata={"blendphot_kind": "builder-position"})
            self._points_layer.events.data.connect(self._on_points_data)
            self._points_layer.mode = "select"
            self._points_layer.events.mode.connect(self._keep_drag_callback_last)
            self._keep_drag_callback_last()
            self.viewer.layers.selection.active = self._points_layer
            return
        if self._dragging:
            return  # the user is moving the point: leave it under the cursor
        if self._points_layer.data.shape == position.shape and np.allclose(self._points_layer.data, position):
            return
        self._syncing = True
        try:
            self._points_layer.data = position
        finally:
            self._syncing = False

    def _on_points_data(self, event) -> None:
        """Point moved (drag released), set by code, added or deleted: follow the last point."""
        if self._syncing or self.model.sample is None:
            return
        action = str(getattr(event, "action", "changed"))
        if action in ("changing", "adding", "removing"):
            return
        data = np.asarray(self._points_layer.data)
        if len(data) == 0:
            # The user deleted the point: put it back where the companion is.
            self._update_point(self.model.blend)
            return
        row, column = data[-1][-2:]
        self._dragging = False
        self._safely(self.model.set_companion_position, row, column, False)
        if len(data) != 1:
            self._syncing = True
            try:
                self._points_layer.data = np.array([[CENTER + self.model.dy, CENTER + self.model.dx]], float)
            finally:
                self._syncing = False
        else:
            self._snap_point()

    def _snap_point(self) -> None:
        position = np.array([[CENTER + self.model.dy, CENTER + self.model.dx]], float)
        if not np.allclose(self._points_layer.data, position):
            self._syncing = True
            try:
                self._points_layer.data = position
            finally:
                self._syncing = False

    def _keep_drag_callback_last(self, event=None) -> None:
        # napari appends its mode callback on every mode change; ours must run after it,
        # so that it reads the point where napari has just moved it.
        callbacks = self._points_layer.mouse_drag_callbacks
        if self._on_points_drag in callbacks:
            callbacks.remove(self._on_points_drag)
        callbacks.append(self._on_points_drag)

    def _on_points_drag(self, layer, event):
        """Live update while the point is dragged (napari sends data events only on release)."""
        if self.model.sample is None or layer.mode != "select":
            return
        yield
        last = (self.model.dy, self.model.dx)
        while event.type == "mouse_move":
            if len(layer.selected_data) == 1 and len(layer.data) == 1:
                row, column = layer.data[0][-2:]
                self._dragging = True
                try:
                    self.model.set_companion_position(row, column, interactive=True)
                except Exception:  # noqa: BLE001 - never break a drag in progress
                    pass
                last = (self.model.dy, self.model.dx)
            yield
        if self._dragging:
            self._dragging = False
            # The release's data event rebuilds with interactive=False; make sure it happens
            # even when the last move ended on the same pixel.
            if (self.model.dy, self.model.dx) == last:
                self.model.rebuild(interactive=False)
            self._snap_point()
