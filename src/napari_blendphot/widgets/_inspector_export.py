"""The Deblend Inspector's table exports: Copy (TSV) and Save as CSV (a mixin of the widget)."""

from __future__ import annotations

from qtpy.QtGui import QGuiApplication

from napari_blendphot.app.inspector import rows_as_tsv, save_inspection
from napari_blendphot.widgets._qt import ask_save_path


def _widget_module():
    # Notifications go through the widget module's _notify (tests watch it there).
    from napari_blendphot.widgets import deblend_inspector

    return deblend_inspector


class TableExport:
    """Copy and Save of the inspector's table; needs ``last_inspection``."""

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
        return ask_save_path(self, caption, file_filter)

    def save_table(self, *_args):
        """Save the table as CSV through a save dialog (which confirms any replacement)."""
        if not self.table_rows():
            _widget_module()._notify("info", "Deblend Inspector: nothing to save yet: run the methods first")
            return None
        path = self._ask_save_path("Save the inspector table", "CSV (*.csv)")
        if not path:
            return None
        try:  # the dialog has already asked before replacing an existing file
            written = save_inspection(self.last_inspection, path)
        except Exception as exc:
            _widget_module()._notify("error", f"Deblend Inspector: cannot save {path}: {exc}")
            return None
        _widget_module()._notify("info", f"Deblend Inspector: wrote {written}")
        return written

