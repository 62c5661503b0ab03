"""The Deblend Inspector's view row: the legend, the busy indicator, the out-of-date flag, side by side."""

from __future__ import annotations

import time

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QProgressBar, QVBoxLayout, QWidget

#: Unicode strokes that show a line style in the legend.
_STROKES = {"solid": "━━━", "dashed": "╍╍╍", "dotted": "┅┅┅", "dashdot": "━ ┅ ━"}
OUT_OF_DATE_TEXT = "out of date: the shown masks and table belong to an earlier blend — press Run (or tick Live)"


def legend_html(keys) -> str:
    """One coloured stroke (in the method's line style) and short label per method, the truth first."""
    from napari_blendphot.display import method_style

    parts = []
    for key in keys:
        style = method_style(key)
        stroke = _STROKES.get(style.line_style, _STROKES["solid"])
        parts.append(f'<span style="color:{style.galaxy_hex("central")}">{stroke}</span>'
                     f'<span style="color:{style.galaxy_hex("companion")}">{stroke[:1]}</span> {style.label}')
    return "&nbsp;&nbsp; ".join(parts)


class InspectorView(QWidget):
    """Legend, busy bar (first inspection), out-of-date line and the side-by-side switch."""

    def __init__(self, viewer, on_side_by_side, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.legend = QLabel("")
        self.legend.setWordWrap(True)
        self.legend.setToolTip("How each method is drawn on the canvas: its colour (the companion paler) and line "
                               "style; the truth is white (central) and grey (companion)")
        row.addWidget(self.legend, 1)
        self.side_by_side_box = QCheckBox("Side by side")
        self.side_by_side_box.setToolTip("Show each method in its own cell to the right of the blend, the image "
                                         "under it and its name above it (one camera: pan and zoom move them all)")
        self.side_by_side_box.toggled.connect(on_side_by_side)
        row.addWidget(self.side_by_side_box)
        layout.addLayout(row)
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)  # busy: the first run's length is unknown (worker start, model loading)
        self.busy.setVisible(False)
        layout.addWidget(self.busy)
        self.out_of_date = QLabel(OUT_OF_DATE_TEXT)
        self.out_of_date.setWordWrap(True)
        self.out_of_date.setStyleSheet("color: #e0b040")
        self.out_of_date.setVisible(False)
        layout.addWidget(self.out_of_date)
        self._busy_since = 0.0
        self._busy_text = ""
        self._tick = QTimer(self)
        self._tick.setInterval(250)
        self._tick.timeout.connect(self._show_elapsed)

    def set_legend(self, keys) -> None:
        self.legend.setText(legend_html(keys))

    def start_busy(self, text: str) -> None:
        """Show the busy bar with *text* and the seconds elapsed (the cold first inspection takes 10-30 s)."""
        self._busy_since, self._busy_text = time.perf_counter(), text
        self._show_elapsed()
        self.busy.setVisible(True)
        self._tick.start()

    def stop_busy(self) -> None:
        self._tick.stop()
        self.busy.setVisible(False)

    def _show_elapsed(self) -> None:
        self.busy.setFormat(f"{self._busy_text} {time.perf_counter() - self._busy_since:.0f} s")
        self.busy.setTextVisible(True)

    def set_out_of_date(self, stale: bool) -> None:
        self.out_of_date.setVisible(stale)
