"""The failure browser's table: a Qt table model over the filtered, sorted rows of a FailureModel."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt, Signal
from qtpy.QtWidgets import QComboBox, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit

from napari_blendphot.app.failures import COLUMNS, NO_DETECTION, FailureModel

COLUMN_NAMES = list(COLUMNS)
ALL = "all"
DETECTION_TEXT = {NO_DETECTION: "—", -1: "-1 none", 0: "0 central", 1: "1 companion", 2: "2 both", 3: "3 more"}


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
        return 0 if parent.isValid() else len(COLUMN_NAMES)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[COLUMN_NAMES[section]]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or self.failures is None:
            return None
        name = COLUMN_NAMES[index.column()]
        value = self.failures.columns[name][self.failures.view[index.row()]]
        if role == Qt.ItemDataRole.DisplayRole:
            if name == "detection":
                return DETECTION_TEXT.get(int(value), str(value))
            if isinstance(value, (float, np.floating)):
                if not np.isfinite(value):
                    return "undetected" if name in ("dmag", "abs_dmag", "pred_mag") else "—"
                return f"{value:.1f}" if name == "distance" else f"{value:.3f}"
            return str(value)
        if role == Qt.ItemDataRole.TextAlignmentRole and name not in ("method", "galaxy", "morph_pair"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def sort(self, column: int, order=Qt.SortOrder.AscendingOrder) -> None:
        if self.failures is None or not 0 <= column < len(COLUMN_NAMES):
            return
        self.layoutAboutToBeChanged.emit()
        self.failures.sort(COLUMN_NAMES[column], descending=order == Qt.SortOrder.DescendingOrder)
        self.layoutChanged.emit()


class FilterBox(QGroupBox):
    """The failure browser's filters: method, galaxy, detection case, types and three ranges.

    Emits ``changed`` on every edit; :meth:`conditions` gives the keywords of
    :meth:`~napari_blendphot.app.failures.FailureModel.set_filter`.
    """

    changed = Signal()

    def __init__(self, notify, parent=None):
        super().__init__("Filter", parent)
        self._notify = notify
        grid = QGridLayout(self)
        self.method_combo = QComboBox()
        self.galaxy_combo = QComboBox()
        self.galaxy_combo.addItems([ALL, "central", "companion"])
        self.detection_combo = QComboBox()
        self.pair_combo = QComboBox()
        for row, column, label, combo in ((0, 0, "method", self.method_combo), (0, 2, "galaxy", self.galaxy_combo),
                                          (1, 0, "detection", self.detection_combo), (1, 2, "types", self.pair_combo)):
            grid.addWidget(QLabel(label), row, column)
            grid.addWidget(combo, row, column + 1)
            combo.currentIndexChanged.connect(self.changed.emit)
        self.range_edits = {}
        for k, (name, label) in enumerate((("abs_dmag", "|dmag|"), ("distance", "distance"),
                                           ("pair_dmag", "pair dmag"))):
            low, high = QLineEdit(), QLineEdit()
            for edit, text in ((low, "min"), (high, "max")):
                edit.setPlaceholderText(text)
                edit.setMaximumWidth(70)
                edit.editingFinished.connect(self.changed.emit)
            self.range_edits[name] = (low, high)
            box = QHBoxLayout()
            box.addWidget(low)
            box.addWidget(high)
            grid.addWidget(QLabel(label), 2 + k // 2, 2 * (k % 2))
            grid.addLayout(box, 2 + k // 2, 2 * (k % 2) + 1)

    def set_choices(self, failures: FailureModel) -> None:
        """The values of *failures* in the combos (nothing chosen)."""
        for combo, values in ((self.method_combo, failures.methods),
                              (self.detection_combo, [DETECTION_TEXT.get(v, str(v))
                                                      for v in failures.choices("detection")]),
                              (self.pair_combo, failures.choices("morph_pair"))):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([ALL, *map(str, values)])
            combo.blockSignals(False)
        self.detection_combo.setEnabled(failures.detection_column is not None)

    def _range(self, name):
        low, high = self.range_edits[name]
        values = []
        for edit in (low, high):
            text = edit.text().strip()
            try:
                values.append(float(text) if text else None)
            except ValueError:
                self._notify("warning", f"'{text}' is not a number (filter {name})")
                edit.clear()
                values.append(None)
        return None if values == [None, None] else tuple(values)

    def conditions(self) -> dict:
        def chosen(combo, convert=str):
            text = combo.currentText()
            return None if text in ("", ALL) else (convert(text),)

        return {"methods": chosen(self.method_combo), "galaxies": chosen(self.galaxy_combo),
                "detections": chosen(self.detection_combo, lambda t: NO_DETECTION if t == "—" else int(t.split()[0])),
                "morph_pairs": chosen(self.pair_combo), "abs_dmag": self._range("abs_dmag"),
                "distance": self._range("distance"), "pair_dmag": self._range("pair_dmag")}
