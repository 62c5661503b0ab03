"""Curation widget: screen the isolated sample galaxy by galaxy, keyboard first.

A thin Qt view over :class:`~napari_blendphot.curation.model.CurationModel`.
The canvas shows, side by side as in Figure 1 of Boucaud et al. 2020, three
layers updated in place: ``original`` (the stamp), ``cleaned`` (neighbours
replaced by noise with a fixed seed) and ``segmentation`` (the stamp's
segmentation map).  Every decision is saved to the sidecar before the next
galaxy appears (:class:`~napari_blendphot.curation.sidecar.DecisionStore`).

Shortcuts (on the canvas and in the widget): A accept, 1-4 reject with a
reason, S skip, U or Ctrl+Z undo, N note, T next type, Left/Right previous /
next galaxy in the filter, G page of thumbnails, PageUp/PageDown previous /
next page.

The page of thumbnails (``curation page``, right of the panels) shows the
cleaned stamps of the page of the filtered list that holds the current
galaxy, each stretched on its own, outlined by decision in the
``curation page tiles`` Shapes layer; a click on a tile opens that galaxy.
The layout, the tile <-> position mapping and the colours are in the Qt-free
:mod:`napari_blendphot.curation.pages`.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtGui import QKeySequence, QShortcut
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_blendphot.constants import GALTYPES, STAMP_SIZE
from napari_blendphot.curation.sidecar import REASONS
from napari_blendphot.display import CENTRAL_LABEL, COMPANION_LABEL, GALAXY_COLORS
from napari_blendphot.widgets._curation_opening import SHORTCUTS, CurationOpeningMixin
from napari_blendphot.widgets._curation_page import (FRAMES_LAYER, LAYER_NAMES, PAGE_LAYER, PAGE_TILES_LAYER,
                                                     PANEL_GAP, CurationPageMixin)

__all__ = ["CurationWidget", "FRAMES_LAYER", "LAYER_NAMES", "PAGE_LAYER", "PAGE_TILES_LAYER", "SHORTCUTS"]
from napari_blendphot.widgets._qt import notify as _notify
from napari_blendphot.widgets._qt import scrolling_layout

#: Titles drawn above the panels.
PANEL_TITLES = ("original", "cleaned", "segmentation")
#: Segmentation panel colours: the central galaxy's segment blue, every other source orange.
SEGMENTATION_COLORS = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0), 1: GALAXY_COLORS[CENTRAL_LABEL],
                       2: GALAXY_COLORS[COMPANION_LABEL]}
_STATUS_ITEMS = {"all galaxies": "all", "undecided (incl. skipped)": "undecided", "accepted": "accepted",
                 "rejected": "rejected", "skipped": "skipped"}

#: The widget's help text (its "?" button, tooltip and What's This).
HELP = ("Screen an isolated galaxy sample galaxy by galaxy, keyboard first: A accept, 1-4 reject with a reason, "
        "S skip, U undo, Left/Right previous/next, G a page of thumbnails. Every decision is saved beside the "
        "sample at once; Export writes the accepted galaxies. See docs/curation.md.")


def segmentation_labels(segmap):
    """Segmentation map -> labels: 1 = the central galaxy's segment, 2 = any other source, 0 = sky."""
    import numpy as np

    from napari_blendphot.sample.galaxy_sample import central_segment

    labels = np.where(segmap > 0, 2, 0).astype(np.uint8)
    labels[central_segment(segmap)] = 1
    return labels


class CurationWidget(CurationOpeningMixin, CurationPageMixin, QWidget):
    """Dock widget: curate a sample (accept / reject with reason / skip), saved to a sidecar.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.model = None
        self.sample_path = None
        self._worker = None
        self._page_key = None  # what the page mosaic shows (rebuilt only when it changes)
        self._page_selection = None
        self._build()
        self._viewer_keys_bound = False

    # -- layout ----------------------------------------------------------------------------------
    def _build(self) -> None:
        layout = scrolling_layout(self, HELP)

        source = QGroupBox("Sample and decisions")
        form = QFormLayout(source)
        buttons = QHBoxLayout()
        self.embedded_button = QPushButton("Embedded mock")
        self.open_file_button = QPushButton("Sample file…")
        self.open_folder_button = QPushButton("CANDELS folder…")
        self.layer_button = QPushButton("Selected layer")
        self.layer_button.setToolTip("Curate the sample behind the selected layer (opened with File > Open "
                                     "or File > Open Sample)")
        for button in (self.embedded_button, self.open_file_button, self.open_folder_button, self.layer_button):
            buttons.addWidget(button)
        form.addRow(buttons)
        self.reviewer_edit = QLineEdit()
        from napari_blendphot.curation.sidecar import _default_reviewer

        self.reviewer_edit.setText(_default_reviewer())
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setToolTip("Seed of the neighbour cleaning shown in the 'cleaned' panel")
        reviewer_row = QHBoxLayout()
        reviewer_row.addWidget(self.reviewer_edit)
        reviewer_row.addWidget(QLabel("clean seed"))
        reviewer_row.addWidget(self.seed_spin)
        form.addRow("Reviewer", reviewer_row)
        self.source_label = QLabel("No sample open.")
        self.source_label.setWordWrap(True)
        form.addRow(self.source_label)
        layout.addWidget(source)

        galaxy = QGroupBox("Galaxy")
        grid = QVBoxLayout(galaxy)
        self.galaxy_label = QLabel("—")
        self.galaxy_label.setWordWrap(True)
        self.decision_label = QLabel("")
        self.decision_label.setWordWrap(True)
        self.decision_label.setTextFormat(Qt.TextFormat.RichText)
        legend = QLabel("<span style='color:#aaaaaa'>panels: original · cleaned (neighbours replaced by noise) · "
                        "segmentation (<span style='color:#1fa1ff'>this galaxy</span>, "
                        "<span style='color:#ff8c00'>other sources</span>)</span>")
        legend.setWordWrap(True)
        grid.addWidget(self.galaxy_label)
        grid.addWidget(legend)
        grid.addWidget(self.decision_label)
        actions = QGridLayout()
        self.accept_button = QPushButton("Accept  [A]")
        self.accept_button.setStyleSheet("QPushButton { font-weight: bold; }")
        self.skip_button = QPushButton("Skip  [S]")
        self.undo_button = QPushButton("Undo  [U]")
        actions.addWidget(self.accept_button, 0, 0)
        actions.addWidget(self.skip_button, 0, 1)
        actions.addWidget(self.undo_button, 0, 2)
        self.reject_buttons = []
        for k, reason in enumerate(REASONS, start=1):
            button = QPushButton(f"[{k}] {reason}")
            button.setToolTip(f"Reject: {reason}")
            button.setStyleSheet("QPushButton { text-align: left; padding-left: 6px; }")
            actions.addWidget(button, k, 0, 1, 3)
            self.reject_buttons.append(button)
        self.free_reject_button = QPushButton("Reject, other reason…")
        actions.addWidget(self.free_reject_button, len(REASONS) + 1, 0, 1, 3)
        grid.addLayout(actions)
        edit_row = QHBoxLayout()
        self.type_combo = QComboBox()
        self.type_combo.addItems(GALTYPES)
        self.type_combo.setToolTip("Morphological type (T cycles); saved with the decision")
        self.note_button = QPushButton("Note…  [N]")
        self.previous_button = QPushButton("◀  Prev")
        self.next_button = QPushButton("Next  ▶")
        edit_row.addWidget(QLabel("Type"))
        edit_row.addWidget(self.type_combo)
        edit_row.addWidget(self.note_button)
        edit_row.addStretch(1)
        edit_row.addWidget(self.previous_button)
        edit_row.addWidget(self.next_button)
        grid.addLayout(edit_row)
        layout.addWidget(galaxy)

        filters = QGroupBox("Filter")
        filter_form = QFormLayout(filters)
        self.status_combo = QComboBox()
        self.status_combo.addItems(list(_STATUS_ITEMS))
        filter_form.addRow("Show", self.status_combo)
        type_row = QHBoxLayout()
        self.type_checks = {}
        for galtype in GALTYPES:
            check = QCheckBox(galtype)
            check.setChecked(True)
            self.type_checks[galtype] = check
            type_row.addWidget(check)
        filter_form.addRow("Types", type_row)
        mag_row = QHBoxLayout()
        self.mag_min = QDoubleSpinBox()
        self.mag_max = QDoubleSpinBox()
        for spin, value in ((self.mag_min, 10.0), (self.mag_max, 30.0)):
            spin.setRange(10.0, 30.0)
            spin.setDecimals(2)
            spin.setSingleStep(0.25)
            spin.setValue(value)
            mag_row.addWidget(spin)
        filter_form.addRow("F160W mag", mag_row)
        layout.addWidget(filters)

        layout.addWidget(self._build_page_group())

        progress = QGroupBox("Progress")
        progress_layout = QVBoxLayout(progress)
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("%v / %m reviewed")
        self.counts_label = QLabel("")
        progress_layout.addWidget(self.progress_bar)
        progress_layout.addWidget(self.counts_label)
        self.export_button = QPushButton("Export accepted galaxies…")
        progress_layout.addWidget(self.export_button)
        layout.addWidget(progress)

        keys = QLabel("<b>Keys</b> (canvas or this panel): " + " · ".join(
            f"<b>{text.split(' ', 1)[0]}</b> {text.split(' ', 1)[1]}" for _, _, text in SHORTCUTS.values()
            if not text.startswith(("1 ", "2 ", "3 ", "4 "))) + " · <b>1-4</b> reject with the reason shown")
        keys.setWordWrap(True)
        keys.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(keys)
        layout.addStretch(1)

        self.embedded_button.clicked.connect(lambda: self.open_sample("embedded"))
        self.open_file_button.clicked.connect(self._open_file_dialog)
        self.open_folder_button.clicked.connect(self._open_folder_dialog)
        self.layer_button.clicked.connect(self.open_selected_layer)
        self.accept_button.clicked.connect(lambda: self.do("accept"))
        self.skip_button.clicked.connect(lambda: self.do("skip"))
        self.undo_button.clicked.connect(lambda: self.do("undo"))
        for k, button in enumerate(self.reject_buttons, start=1):
            button.clicked.connect(lambda _=False, k=k: self.do(f"reject{k}"))
        self.free_reject_button.clicked.connect(self._free_reject)
        self.note_button.clicked.connect(lambda: self.do("note"))
        self.previous_button.clicked.connect(lambda: self.do("previous"))
        self.next_button.clicked.connect(lambda: self.do("next"))
        self.type_combo.activated.connect(self._on_type_chosen)
        self.status_combo.currentIndexChanged.connect(self._apply_filter)
        for check in self.type_checks.values():
            check.toggled.connect(self._apply_filter)
        self.mag_min.valueChanged.connect(self._apply_filter)
        self.mag_max.valueChanged.connect(self._apply_filter)
        self.export_button.clicked.connect(self._export_dialog)
        # The same keys while the focus is in this panel.
        for name, (_, sequence, _) in SHORTCUTS.items():
            shortcut = QShortcut(QKeySequence(sequence), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(lambda name=name: self.do(name))
        undo = QShortcut(QKeySequence("Ctrl+Z"), self)
        undo.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        undo.activated.connect(lambda: self.do("undo"))
        self._set_enabled(False)

    def _set_enabled(self, enabled: bool) -> None:
        for widget in (self.page_check, self.page_rows_spin, self.page_columns_spin, self.page_previous_button,
                       self.page_next_button, self.accept_button, self.skip_button, self.undo_button,
                       self.free_reject_button,
                       self.note_button, self.previous_button, self.next_button, self.type_combo,
                       self.export_button, *self.reject_buttons):
            widget.setEnabled(enabled)

    # -- actions ---------------------------------------------------------------------------------
    def do(self, name: str) -> None:
        """Run the action of a shortcut (``accept``, ``reject1``..``reject4``, ``skip``, ``undo``,
        ``note``, ``type``, ``previous``, ``next``, ``page``, ``page_previous``, ``page_next``); errors
        become notifications."""
        from napari_blendphot.errors import BlendphotError

        if self.model is None:
            return
        model = self.model
        try:
            if name == "accept":
                model.accept()
            elif name.startswith("reject"):
                model.reject(int(name[-1]))
            elif name == "skip":
                model.skip()
            elif name == "undo":
                if model.undo() is None:
                    _notify("info", "Nothing to undo.")
            elif name == "note":
                self._ask_note()
            elif name == "type":
                model.cycle_type()
            elif name == "previous":
                if not model.previous():
                    _notify("info", "First galaxy of the filter.")
            elif name == "next":
                if not model.next():
                    _notify("info", "Last galaxy of the filter.")
            elif name == "page":
                self.page_check.toggle()
            elif name in ("page_previous", "page_next"):
                self._turn_page(-1 if name == "page_previous" else 1)
            else:
                raise ValueError(f"unknown action {name!r}")
        except (BlendphotError, OSError) as exc:
            _notify("error", f"Curation: {exc}")
        self._refresh_labels()

    def _ask_note(self) -> None:
        text, ok = QInputDialog.getText(self, "Note", f"Note about galaxy {self.model.galaxy_id}:",
                                        QLineEdit.EchoMode.Normal, self.model.note)
        if ok:
            self.model.set_note(text)

    def _free_reject(self) -> None:
        if self.model is None:
            return
        text, ok = QInputDialog.getText(self, "Reject", f"Reason for rejecting galaxy {self.model.galaxy_id}:")
        if ok and text.strip():
            from napari_blendphot.errors import BlendphotError

            try:
                self.model.reject(text.strip())
            except BlendphotError as exc:
                _notify("error", str(exc))

    def _on_type_chosen(self, index: int) -> None:
        if self.model is not None:
            self.model.set_type(GALTYPES[index])
            self._refresh_labels()

    def _apply_filter(self, *_) -> None:
        if self.model is None:
            return
        types = tuple(t for t, check in self.type_checks.items() if check.isChecked())
        self.model.set_filter(_STATUS_ITEMS[self.status_combo.currentText()],
                              galtypes=None if len(types) == len(GALTYPES) else types,
                              mag_min=self.mag_min.value(), mag_max=self.mag_max.value())
        if not self.model.in_filter() and not self.model.next():
            self.model.first()
        self._refresh_labels()

    # -- display ---------------------------------------------------------------------------------
    def _on_current_changed(self, _row) -> None:
        self._show_current()

    def _show_current(self) -> None:
        from napari_blendphot.display import astro_contrast

        model = self.model
        galaxy = model.galaxy
        cleaned, _ = model.cleaned_stamp()
        step = STAMP_SIZE + PANEL_GAP
        data = {"original": galaxy.image, "cleaned": cleaned, "segmentation": segmentation_labels(galaxy.segmap)}
        contrast = astro_contrast(galaxy.image)
        new_layers = False
        for k, name in enumerate(LAYER_NAMES):
            if name in self.viewer.layers:
                layer = self.viewer.layers[name]
                layer.data = data[name]
            else:
                new_layers = True
                if name == "segmentation":
                    layer = self.viewer.add_labels(data[name], name=name, opacity=0.8,
                                                   colormap=SEGMENTATION_COLORS)
                else:
                    layer = self.viewer.add_image(data[name], name=name, colormap="gray", **contrast)
                self._bind_layer_keys(layer)
            layer.translate = (0, k * step)
            if name != "segmentation":
                layer.contrast_limits = contrast["contrast_limits"]
            layer.metadata["blendphot_kind"] = "curation"
            layer.metadata["galaxy_id"] = model.galaxy_id
        self._show_frames(step)
        if new_layers:
            self.viewer.layers.selection.active = self.viewer.layers["original"]
            self.viewer.reset_view()
        self._show_page()
        self._refresh_labels()

    def _show_frames(self, step: int) -> None:
        """A thin frame and a title around each panel (the segmentation panel is mostly empty)."""
        import numpy as np

        corners = [np.array([[-0.5, k * step - 0.5], [STAMP_SIZE - 0.5, k * step + STAMP_SIZE - 0.5]])
                   for k in range(len(LAYER_NAMES))]
        if FRAMES_LAYER in self.viewer.layers:
            return
        layer = self.viewer.add_shapes(
            corners, shape_type="rectangle", name=FRAMES_LAYER, edge_color="#808080", face_color="transparent",
            edge_width=0.6, features={"panel": list(PANEL_TITLES)},
            text={"string": "{panel}", "anchor": "upper_left", "color": "white", "size": 10,
                  "translation": [-7, 0]})
        layer.editable = False
        self._bind_layer_keys(layer)

    def _refresh_labels(self, *_) -> None:
        model = self.model
        if model is None:
            return
        galaxy = model.galaxy
        row = galaxy.row
        galtype = model.galtype
        changed = "" if galtype == str(row["galtype"]) else f" (catalogue: {row['galtype']})"
        self.galaxy_label.setText(
            f"<b>Galaxy {model.galaxy_id}</b> — row {model.index + 1} of {len(model)}<br>"
            f"type <b>{galtype}</b>{changed}, F160W {float(row['mag']):.2f}, R = {float(row['radius']):.1f} px, "
            f"z = {float(row['z']):.2f}")
        record = model.decision
        if record is None:
            text = "<span style='color:#bbbbbb'>undecided</span>"
        else:
            colour = {"accept": "#5fd35f", "reject": "#ff6060", "skip": "#e0c040"}[record.decision]
            text = f"<b style='color:{colour}'>{record.decision.upper()}</b>"
            if record.reason:
                text += f": {record.reason}"
            text += f" <span style='color:#aaaaaa'>({record.reviewer}, {record.time[:16].replace('T', ' ')})</span>"
        note = model.note
        if note:
            text += f"<br>note: <i>{note}</i>"
        if model.pending_galtype or model.pending_note:
            text += "<br><span style='color:#aaaaaa'>type/note saved with the decision</span>"
        if not model.in_filter():
            text += "<br><span style='color:#e0c040'>outside the filter</span>"
        self.decision_label.setText(text)
        self.type_combo.setCurrentIndex(GALTYPES.index(galtype))
        progress = model.progress()
        self.progress_bar.setMaximum(progress["total"])
        self.progress_bar.setValue(progress["reviewed"])
        self.counts_label.setText(
            f"accepted {progress['accept']} · rejected {progress['reject']} · skipped {progress['skip']} · "
            f"never seen {progress['undecided']} · in filter {progress['in_filter']}")
        overlay = self.viewer.canvas.overlays.text
        overlay.visible = True
        overlay.text = (f"galaxy {model.galaxy_id}  [{galtype}]  "
                                         f"{record.decision.upper() if record else 'undecided'}")

    def showEvent(self, event) -> None:  # noqa: N802 (Qt API)
        if self.model is not None:  # shown again after a close: take the keys (and the clicks) back
            self._bind_viewer_keys()
            if self.page_check.isChecked():
                self._hook_page()
                self._show_page()
        super().showEvent(event)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self._release_page_hooks()
        if self._viewer_keys_bound:
            self._restore_viewer_keys()
            self._viewer_keys_bound = False
        super().closeEvent(event)

    # -- export ----------------------------------------------------------------------------------
    def _export_dialog(self) -> None:
        if self.model is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export accepted galaxies", "curated_sample.fits",
                                              "Sample files (*.fits)")
        if path:
            # The file dialog already asked before replacing an existing file.
            self.export(path, overwrite=Path(path).exists())

    def export(self, path, overwrite: bool = False):
        """Write the accepted galaxies as a native sample file; returns its path (None on error)."""
        from napari_blendphot.curation.export import export_accepted
        from napari_blendphot.errors import BlendphotError

        try:
            out = export_accepted(self.model.sample, self.model.store, path, overwrite=overwrite)
        except (BlendphotError, OSError) as exc:
            _notify("error", f"Export: {exc}")
            return None
        _notify("info", f"Wrote {self.model.progress()['accept']} accepted galaxies to {out}")
        return out
