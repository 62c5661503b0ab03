"""The Deblend Inspector's tables: one blend's numbers per method and galaxy, and a blend set's summary."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from napari_blendphot.app.inspector import GALAXIES, format_value

_TABLE_HEADERS = ("Method", "Galaxy", "Flux ± error", "Mag", "Δmag", "IoU", "SEP case")
_SUMMARY_HEADERS = ("Method", "Galaxy", "N", "Undet.", "⟨Δmag⟩", "σ", "Out. %", "IoU")
_SUMMARY_TIPS = ("", "", "galaxies in the selection", "not detected by the method (left out of the statistics)",
                 "mean Δmag (bias)", "standard deviation of Δmag", "outliers: |Δmag| > 0.75",
                 "mean IoU with the true masks")
#: Widest expected text per numeric column of the inspector table (sets its minimum width).
_COLUMN_SAMPLES = {2: "00000.0 ± 000.0", 3: "00.000", 4: "+00.000", 5: "0.000"}
_GALAXY_QCOLORS = {"central": QColor(31, 160, 255), "companion": QColor(255, 140, 0)}
_OUTLIER_QCOLOR = QColor(224, 96, 74)


def short_case(detection: str) -> str:
    """``"3: more than two"`` -> ``"3 (>2)"`` for the narrow SEP column (the full text is its tooltip)."""
    if not detection:
        return ""
    case = detection.split(":")[0].strip()
    short = {"-1": "none", "0": "central", "1": "companion", "2": "both", "3": ">2"}.get(case)
    return f"{case} ({short})" if short else detection


def flux_text(row) -> str:
    """``"1234 ± 56"`` (1 sigma) where the method gives an error, the flux alone where it gives none."""
    flux = format_value("flux", row.flux)
    error = format_value("flux_err", row.flux_err)
    return f"{flux} ± {error}" if error else flux


def _read_only(table: QTableWidget) -> None:
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)


class InspectionTable(QTableWidget):
    """Flux, magnitude, dmag and IoU of each method and galaxy of one inspection."""

    def __init__(self, parent=None):
        super().__init__(0, len(_TABLE_HEADERS), parent)
        self.setHorizontalHeaderLabels(_TABLE_HEADERS)
        _read_only(self)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        # Interactive, not ResizeToContents: the latter re-measures every cell on every change.
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.horizontalHeader().setStretchLastSection(True)
        self.setMinimumHeight(200)
        self.horizontalHeaderItem(6).setToolTip(
            "SEP's detection case (the paper's flag): 0 only the central found, 1 only the companion, "
            "2 both, 3 more than two sources")
        self._layout = None

    def fill(self, rows) -> None:
        """Show *rows* (:class:`~napari_blendphot.app.inspector.GalaxyRow`).

        Same layout as before (the usual case while moving a companion): only
        texts change, the items are reused; a new layout creates items and
        resizes the columns once.
        """
        layout = [(row.method, row.galaxy) for row in rows]
        relayout = layout != self._layout
        self._layout = layout
        self.setUpdatesEnabled(False)
        try:
            if relayout:
                self.setRowCount(len(rows))
            previous = None
            for i, row in enumerate(rows):
                undetected = row.method != "truth" and not (np.isfinite(row.flux) and row.flux > 0)
                values = (row.method if row.method != previous else "", row.galaxy,
                          "not found" if undetected else flux_text(row), format_value("mag", row.mag),
                          format_value("dmag", row.dmag), format_value("iou", row.iou), short_case(row.detection))
                previous = row.method
                for j, text in enumerate(values):
                    self._set_cell(i, j, text, row, relayout, undetected)
            if relayout:
                self.resizeColumnsToContents()
                metrics = self.fontMetrics()
                for column, sample in _COLUMN_SAMPLES.items():
                    wide_enough = metrics.horizontalAdvance(sample) + 10
                    if self.columnWidth(column) < wide_enough:
                        self.setColumnWidth(column, wide_enough)
        finally:
            self.setUpdatesEnabled(True)

    def _set_cell(self, i: int, j: int, text: str, row, relayout: bool, undetected: bool) -> None:
        item = self.item(i, j)
        if relayout or item is None:
            item = QTableWidgetItem(text)
            if j >= 2:
                item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
            if j == 0:
                item.setToolTip(row.label)
            if j in (0, 1) and row.galaxy in _GALAXY_QCOLORS:
                # The method's colour on the canvas (its companion paler): the table is the legend's twin.
                from napari_blendphot.display import method_style

                item.setForeground(QColor(method_style(row.method).galaxy_hex("central" if j == 0 else row.galaxy)))
            self.setItem(i, j, item)
        elif item.text() != text:
            item.setText(text)
        if j == 4:
            outlier = bool(np.isfinite(row.dmag) and abs(row.dmag) > 0.75)
            item.setForeground(_OUTLIER_QCOLOR if outlier else self.palette().text().color())
            item.setToolTip("outlier: |Δmag| > 0.75 (a factor 2 in flux)" if outlier else "")
        if j == 6:
            item.setToolTip(row.detection)
        if j == 2:
            item.setToolTip("the method assigned no source to this galaxy" if undetected else
                            "flux ± its 1-sigma error (e-/s)" if np.isfinite(row.flux_err) else
                            "this method gives no flux error")


class SummaryTable(QTableWidget):
    """The statistics of a blend-set run per method and galaxy (:func:`~napari_blendphot.report.evaluate.summary_table`)."""

    def __init__(self, parent=None):
        super().__init__(0, len(_SUMMARY_HEADERS), parent)
        self.setHorizontalHeaderLabels(_SUMMARY_HEADERS)
        for column, tip in enumerate(_SUMMARY_TIPS):
            if tip:
                self.horizontalHeaderItem(column).setToolTip(tip)
        _read_only(self)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.setVisible(False)

    def fill(self, summary, selection: str) -> None:
        rows = [row for row in summary if row["selection"] == selection and row["galaxy"] in (*GALAXIES, "both")]
        self.setRowCount(len(rows))
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
                self.setItem(i, j, item)
        self.setVisible(True)
        self.setMinimumHeight(min(60 + 24 * len(rows), 260))
