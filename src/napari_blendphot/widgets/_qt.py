"""Small Qt pieces the widgets share: notifications, a status line, file dialogs."""

from __future__ import annotations

from qtpy.QtCore import QSize, Qt
from qtpy.QtGui import QPainter
from qtpy.QtWidgets import QFileDialog, QMessageBox, QSizePolicy, QWidget


def notify(kind: str, message: str) -> None:
    """Show *message* as a napari notification; *kind* is "error", "warning" or "info"."""
    from napari.utils import notifications

    {"error": notifications.show_error, "warning": notifications.show_warning,
     "info": notifications.show_info}[kind](message)


def ask_save_path(parent, caption: str, file_filter: str) -> str:
    """A file name from the save dialog (it asks before replacing a file); "" if cancelled."""
    path, _ = QFileDialog.getSaveFileName(parent, caption, "", file_filter)
    return path


def confirm_replace(parent, paths) -> bool:
    """Ask before replacing *paths*; True when the user agrees."""
    answer = QMessageBox.question(parent, "Replace files?", "These files exist and would be replaced:\n"
                                  + "\n".join(paths))
    return answer == QMessageBox.StandardButton.Yes


class StatusLine(QWidget):
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

    def setText(self, text: str) -> None:  # noqa: N802 (Qt naming)
        if text == self._text:
            return
        self._text = text
        self.setToolTip(text)
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(200, self.height())

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(50, self.height())

    def paintEvent(self, event) -> None:  # noqa: N802
        painter = QPainter(self)
        painter.setPen(self.palette().placeholderText().color())
        painter.drawText(self.rect(), int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop
                                          | Qt.TextFlag.TextWordWrap), self._text)
        painter.end()


def _width_keeping_scroll_area():
    from qtpy.QtWidgets import QScrollArea

    class WidthKeepingScrollArea(QScrollArea):
        """Scrolls vertically only: as wide as its contents need (a dock squeezed sideways cut labels off)."""

        def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt API)
            inner = self.widget()
            width = inner.minimumSizeHint().width() if inner is not None else 0
            return QSize(width + self.verticalScrollBar().sizeHint().width() + 2, 80)

    return WidthKeepingScrollArea


def scrolling_layout(widget: QWidget, help_text: str = ""):
    """A vertical layout for *widget*'s contents inside a scroll area (returns that layout).

    Docked widgets add their minimum heights: two of ours stacked asked 1,430 px
    of a 1,080 px screen, so napari's window grew past it.  Inside a scroll area
    a dock may be as short as the window allows and scrolls instead.
    """
    from qtpy.QtWidgets import QFrame, QVBoxLayout

    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    area = _width_keeping_scroll_area()(widget)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    inner = QWidget()
    area.setWidget(inner)
    outer.addWidget(area)
    widget.scroll_area = area
    layout = QVBoxLayout(inner)
    if help_text:
        layout.addLayout(help_row(widget, help_text))
    return layout


def help_row(widget: QWidget, text: str):
    """A row with a "?" button: its tooltip and What's This hold *text*; a click shows it in a box."""
    from qtpy.QtWidgets import QHBoxLayout, QToolButton

    widget.help_text = " ".join(text.split())
    widget.setWhatsThis(widget.help_text)
    button = QToolButton(widget)
    button.setText("?")
    button.setToolTip(widget.help_text)
    button.clicked.connect(lambda *_: QMessageBox.information(widget, "Help", widget.help_text))
    widget.help_button = button
    row = QHBoxLayout()
    row.setContentsMargins(0, 0, 0, 0)
    row.addStretch(1)
    row.addWidget(button)
    return row
