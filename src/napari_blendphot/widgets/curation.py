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
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_blendphot.constants import GALTYPES, STAMP_SIZE
from napari_blendphot.curation.sidecar import REASONS
from napari_blendphot.display import CENTRAL_LABEL, COMPANION_LABEL, GALAXY_COLORS
from napari_blendphot.widgets._notify import notify as _notify

#: Layer names (updated in place; never duplicated).
LAYER_NAMES = ("original", "cleaned", "segmentation")
#: Gap between the three panels, in pixels of the stamp.
PANEL_GAP = 8
#: Shortcut of each action: napari key (viewer/layer keymaps), Qt key sequence, text shown.
SHORTCUTS = {
    "accept": (("A",), "A", "A accept"),
    "reject1": (("1",), "1", "1 reject: " + REASONS[0]),
    "reject2": (("2",), "2", "2 reject: " + REASONS[1]),
    "reject3": (("3",), "3", "3 reject: " + REASONS[2]),
    "reject4": (("4",), "4", "4 reject: " + REASONS[3]),
    "skip": (("S",), "S", "S skip (come back later)"),
    "undo": (("U", "Control-Z"), "U", "U / Ctrl+Z undo last decision"),
    "note": (("N",), "N", "N note"),
    "type": (("T",), "T", "T change type (sph, disk, sphd, irr)"),
    "previous": (("Left",), "Left", "← previous"),
    "next": (("Right",), "Right", "→ next (in the filter)"),
    "page": (("G",), "G", "G page of thumbnails on/off"),
    "page_previous": (("PageUp",), "PgUp", "PgUp previous page"),
    "page_next": (("PageDown",), "PgDown", "PgDn next page"),
}
#: Layers of the page of thumbnails (present only while the page is shown).
PAGE_LAYER = "curation page"
PAGE_TILES_LAYER = "curation page tiles"
#: Space between the Figure-1 panels and the page of thumbnails, in stamp pixels.
PAGE_OFFSET = 4 * PANEL_GAP
#: Titles drawn above the panels.
PANEL_TITLES = ("original", "cleaned", "segmentation")
#: Shapes layer holding the panel frames and titles.
FRAMES_LAYER = "curation panels"
#: Segmentation panel colours: the central galaxy's segment blue, every other source orange.
SEGMENTATION_COLORS = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0), 1: GALAXY_COLORS[CENTRAL_LABEL],
                       2: GALAXY_COLORS[COMPANION_LABEL]}
_STATUS_ITEMS = {"all galaxies": "all", "undecided (incl. skipped)": "undecided", "accepted": "accepted",
                 "rejected": "rejected", "skipped": "skipped"}


def segmentation_labels(segmap):
    """Segmentation map -> labels: 1 = the central galaxy's segment, 2 = any other source, 0 = sky."""
    import numpy as np

    from napari_blendphot.sample.galaxy_sample import central_segment

    labels = np.where(segmap > 0, 2, 0).astype(np.uint8)
    labels[central_segment(segmap)] = 1
    return labels


class CurationWidget(QWidget):
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
        layout = QVBoxLayout(self)

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

    def _build_page_group(self) -> QGroupBox:
        from napari_blendphot.curation.pages import CURRENT_COLOR, DECISION_COLORS, MAX_GRID_SIDE

        group = QGroupBox("Page of thumbnails")
        box = QVBoxLayout(group)
        row = QHBoxLayout()
        self.page_check = QCheckBox("Show page  [G]")
        self.page_check.setToolTip("A grid of the cleaned stamps of the filtered galaxies: the page that holds "
                                   "the current galaxy, right of the panels. Click a tile to open it.")
        self.page_rows_spin = QSpinBox()
        self.page_columns_spin = QSpinBox()
        for spin, tip in ((self.page_rows_spin, "rows"), (self.page_columns_spin, "columns")):
            spin.setRange(1, MAX_GRID_SIDE)
            spin.setValue(6)
            spin.setToolTip(f"Thumbnail {tip} per page")
        row.addWidget(self.page_check)
        row.addStretch(1)
        row.addWidget(self.page_rows_spin)
        row.addWidget(QLabel("×"))
        row.addWidget(self.page_columns_spin)
        box.addLayout(row)
        nav = QHBoxLayout()
        self.page_previous_button = QPushButton("◀  Page  [PgUp]")
        self.page_next_button = QPushButton("Page  ▶  [PgDn]")
        self.page_label = QLabel("")
        nav.addWidget(self.page_previous_button)
        nav.addWidget(self.page_label, 1, Qt.AlignmentFlag.AlignCenter)
        nav.addWidget(self.page_next_button)
        box.addLayout(nav)
        names = (("accept", "accepted"), ("reject", "rejected"), ("skip", "skipped"), (None, "undecided"))
        legend = QLabel("outline: " + " · ".join(
            f"<b style='color:{DECISION_COLORS[key]}'>■ {text}</b>" for key, text in names)
            + f" · <b style='color:{CURRENT_COLOR}'>□ current</b> (outer white frame)")
        legend.setWordWrap(True)
        legend.setTextFormat(Qt.TextFormat.RichText)
        legend.setToolTip("Okabe-Ito colours, distinguishable with the common colour-vision deficiencies; "
                          "the tile text repeats the decision: 'ok', 'rej N' (reason N), 'skip'.")
        box.addWidget(legend)
        self.page_check.toggled.connect(self._set_page_shown)
        self.page_rows_spin.valueChanged.connect(self._show_page)
        self.page_columns_spin.valueChanged.connect(self._show_page)
        self.page_previous_button.clicked.connect(lambda: self.do("page_previous"))
        self.page_next_button.clicked.connect(lambda: self.do("page_next"))
        return group

    def _set_enabled(self, enabled: bool) -> None:
        for widget in (self.page_check, self.page_rows_spin, self.page_columns_spin, self.page_previous_button,
                       self.page_next_button, self.accept_button, self.skip_button, self.undo_button,
                       self.free_reject_button,
                       self.note_button, self.previous_button, self.next_button, self.type_combo,
                       self.export_button, *self.reject_buttons):
            widget.setEnabled(enabled)

    # -- keys ------------------------------------------------------------------------------------
    def _key_callback(self, name):
        def callback(_provider):
            if self.model is not None:
                self.do(name)
        return callback

    def _bind_viewer_keys(self) -> None:
        """Take the curation keys on the viewer once a sample is open; give them back when the widget goes.

        (Left/Right step napari's sliders otherwise: they are only borrowed while curating.)
        """
        if self._viewer_keys_bound:
            return
        previous = {}
        for name, (keys, _, _) in SHORTCUTS.items():
            for key in keys:
                previous[key] = self.viewer.bind_key(key, self._key_callback(name), overwrite=True)
        self._viewer_keys_bound = True
        viewer = self.viewer

        def restore(*_):
            for key, function in previous.items():
                viewer.bind_key(key, function, overwrite=True)

        self.destroyed.connect(restore)
        self._restore_viewer_keys = restore

    def _bind_layer_keys(self, layer) -> None:
        # An active layer's keymap is asked before the viewer's (Labels uses 1-4 for its tools):
        # our own panels answer the curation keys themselves.
        for name, (keys, _, _) in SHORTCUTS.items():
            for key in keys:
                layer.bind_key(key, self._key_callback(name), overwrite=True)

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

    # -- opening ---------------------------------------------------------------------------------
    def _open_file_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Sample to curate", "",
                                              "Sample files (*.fits *.fit *.fits.gz);;All files (*)")
        if path:
            self.open_sample(path)

    def _open_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "CANDELS folder (candels_img.npy) or FITS cutouts")
        if path:
            self.open_sample(path)

    def open_selected_layer(self) -> None:
        """Curate the :class:`GalaxySample` behind the selected layer (``metadata["sample"]``)."""
        layer = self.viewer.layers.selection.active
        sample = None if layer is None else layer.metadata.get("sample")
        if sample is None:
            _notify("warning", "Select a layer holding a sample of isolated galaxies (File > Open a sample "
                               "file or File > Open Sample > napari-blendphot).")
            return
        self.open_sample(sample)

    def open_sample(self, source, sidecar=None, background: bool = True, repair: bool = False) -> None:
        """Open *source* (``"embedded"``, a sample file, a CANDELS/cutout folder, or a GalaxySample)
        and its sidecar (default: :func:`~napari_blendphot.curation.sidecar.default_sidecar_path`).

        Reading and hashing the sample runs in a worker thread when *background*.
        A damaged sidecar asks whether to repair it (after a backup).
        """
        from napari_blendphot.curation.sidecar import default_sidecar_path

        reviewer = self.reviewer_edit.text().strip() or None

        def work():
            from napari_blendphot.curation.sidecar import DecisionStore
            from napari_blendphot.sample.io import load_sample

            sample = source if hasattr(source, "images") else load_sample(source)
            path = sidecar
            if path is None:
                path = default_sidecar_path(sample.source if hasattr(source, "images") else source)
            return sample, DecisionStore(path, sample, reviewer=reviewer, repair=repair)

        def failed(exc):
            from napari_blendphot.curation.sidecar import CorruptSidecarError

            if isinstance(exc, CorruptSidecarError) and not repair:
                answer = QMessageBox.question(
                    self, "Damaged curation sidecar",
                    f"{exc}\n\nRepair it? The damaged file is first copied to a timestamped .bak file, "
                    f"then rewritten with the {exc.readable} readable decision(s).")
                if answer == QMessageBox.StandardButton.Yes:
                    self.open_sample(source, sidecar, background=False, repair=True)
                return
            _notify("error", f"Curation: {exc}")

        if not background:
            try:
                self._set_session(*work())
            except Exception as exc:  # shown, never raised into Qt
                failed(exc)
            return
        if self._worker is not None:
            return
        from napari.qt.threading import create_worker

        self.source_label.setText(f"Opening {getattr(source, 'source', source)}…")
        worker = create_worker(work)
        worker.returned.connect(lambda result: self._set_session(*result))
        worker.errored.connect(failed)
        worker.finished.connect(self._opening_finished)
        self._worker = worker
        worker.start()

    def _opening_finished(self) -> None:
        self._worker = None
        if self.model is None:
            self.source_label.setText("No sample open.")

    def _set_session(self, sample, store) -> None:
        from napari_blendphot.curation.model import CurationModel

        if self.model is not None:
            self.model.current_changed.disconnect(self._on_current_changed)
            self.model.decisions_changed.disconnect(self._refresh_labels)
            self.model.pending_changed.disconnect(self._refresh_labels)
            self.model.decisions_changed.disconnect(self._show_page)
            self.model.filter_changed.disconnect(self._show_page)
        self.model = CurationModel(sample, store, clean_seed=self.seed_spin.value())
        self._bind_viewer_keys()
        self.model.current_changed.connect(self._on_current_changed)
        self.model.decisions_changed.connect(self._refresh_labels)
        self.model.pending_changed.connect(self._refresh_labels)
        self.model.decisions_changed.connect(self._show_page)
        self.model.filter_changed.connect(self._show_page)
        self._page_key = None
        if store.backup_path is not None:
            _notify("warning", f"Repaired {store.path.name}: {len(store.repair_problems)} damaged line(s) dropped; "
                               f"the damaged file was kept as {store.backup_path.name}")
        self.source_label.setText(f"<b>{len(sample)}</b> galaxies from {sample.source}<br>"
                                  f"decisions: {store.path}")
        self._set_enabled(True)
        self._apply_filter()
        self._show_current()
        if self.model.index:
            _notify("info", f"Resuming at galaxy {self.model.galaxy_id} (row {self.model.index + 1}).")

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

    # -- page of thumbnails ----------------------------------------------------------------------
    def page_layout(self):
        """The :class:`~napari_blendphot.curation.pages.PageLayout` of the spin boxes."""
        from napari_blendphot.curation.pages import PageLayout

        return PageLayout(rows=self.page_rows_spin.value(), columns=self.page_columns_spin.value(),
                          stamp_size=STAMP_SIZE)

    def page_selection(self):
        """The :class:`~napari_blendphot.curation.pages.PageSelection` holding the current galaxy."""
        from napari_blendphot.curation.pages import page_of

        return page_of(self.model.filtered_rows(), self.model.index, self.page_layout().per_page)

    def _set_page_shown(self, shown: bool) -> None:
        if shown:
            had_page = PAGE_LAYER in self.viewer.layers
            self._show_page()
            if not had_page and PAGE_LAYER in self.viewer.layers:
                self.viewer.reset_view()
            self._hook_page()
            return
        self._release_page_hooks()
        for name in (PAGE_TILES_LAYER, PAGE_LAYER):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        self._page_key = None
        self.page_label.setText("")
        if "original" in self.viewer.layers:
            self.viewer.reset_view()

    def _hook_page(self) -> None:
        if self._on_page_click not in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.append(self._on_page_click)
            self.viewer.layers.events.removed.connect(self._on_layer_removed)

    def _release_page_hooks(self) -> None:
        if self._on_page_click in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self._on_page_click)
            self.viewer.layers.events.removed.disconnect(self._on_layer_removed)

    def _on_layer_removed(self, event) -> None:
        # The reviewer deleted a page layer from the layer list: that means "page off".
        if event.value.name in (PAGE_LAYER, PAGE_TILES_LAYER) and self.page_check.isChecked():
            self.page_check.setChecked(False)

    def _show_page(self, *_) -> None:
        """Draw (or update in place) the mosaic and the tile outlines of the current page."""
        from napari_blendphot.curation.pages import build_mosaic, tile_outlines

        if self.model is None or not self.page_check.isChecked():
            return
        model = self.model
        layout = self.page_layout()
        selection = self.page_selection()
        translate = (0, len(LAYER_NAMES) * (STAMP_SIZE + PANEL_GAP) + PAGE_OFFSET)
        key = (selection.rows, layout, model.clean_seed, id(model))
        if key != self._page_key or PAGE_LAYER not in self.viewer.layers:  # new thumbnails, not just decisions
            mosaic = build_mosaic([model.cleaned_stamp(row)[0] for row in selection.rows], layout)
            if PAGE_LAYER in self.viewer.layers:
                self.viewer.layers[PAGE_LAYER].data = mosaic
            else:
                layer = self.viewer.add_image(mosaic, name=PAGE_LAYER, colormap="gray", contrast_limits=(0, 1),
                                              translate=translate)
                layer.metadata["blendphot_kind"] = "curation"
                self._bind_layer_keys(layer)
                # Keep the reviewer's selected layer: a new layer would take the selection.
                if "original" in self.viewer.layers:
                    self.viewer.layers.selection.active = self.viewer.layers["original"]
            self._page_key = key
        self.viewer.layers[PAGE_LAYER].metadata["page_rows"] = list(selection.rows)
        outlines = tile_outlines(selection, model.sample.ids, model.store.current, layout)
        self._draw_tiles(outlines, translate, (selection.rows, layout))
        self._page_selection = selection
        shown = len(selection.rows)
        first = selection.page * layout.per_page
        self.page_label.setText(f"page {selection.page + 1} / {selection.n_pages}"
                                + (f" · {first + 1}-{first + shown} of the filter" if shown else " · empty filter"))
        self.page_previous_button.setEnabled(selection.page > 0)
        self.page_next_button.setEnabled(selection.page + 1 < selection.n_pages)

    def _draw_tiles(self, outlines, translate, page_key) -> None:
        import pandas as pd

        features = pd.DataFrame({"label": outlines.labels, "kind": outlines.kinds, "row": outlines.rows})
        text = {"string": "{label}", "anchor": "upper_left", "color": "white", "size": 7,
                "translation": [22, 6]}  # inside the tile corner (text hangs up from its anchor)
        corners = list(outlines.corners)
        if PAGE_TILES_LAYER not in self.viewer.layers:
            layer = self.viewer.add_shapes(
                corners, shape_type="rectangle", name=PAGE_TILES_LAYER, face_color="transparent",
                edge_color=outlines.edge_colors or "white", edge_width=outlines.edge_widths or 1,
                features=features, text=text, translate=translate)
            layer.editable = False
            layer.metadata["blendphot_kind"] = "curation"
            self._bind_layer_keys(layer)
            if "original" in self.viewer.layers:
                self.viewer.layers.selection.active = self.viewer.layers["original"]
        else:
            layer = self.viewer.layers[PAGE_TILES_LAYER]
            if layer.metadata.get("page_key") != page_key:
                # Another page: new rectangles, in the same layer (it keeps its place in the list).
                layer.data = corners
                layer.shape_type = ["rectangle"] * len(corners)
                if corners:
                    layer.edge_width = outlines.edge_widths
                    layer.face_color = "transparent"
            # Same page: only colours and text change (the rectangles stay; see tile_outlines).
            layer.features = features
            if corners:
                layer.edge_color = outlines.edge_colors
            layer.text = text
        layer.metadata["page_key"] = page_key

    def _slot_under(self, world_position):
        """Tile of the page under a canvas (world) position, or None."""
        if PAGE_LAYER not in self.viewer.layers:
            return None
        position = self.viewer.layers[PAGE_LAYER].world_to_data(world_position)
        return self.page_layout().slot_at(position[-2], position[-1])

    def _on_page_click(self, _viewer, event):
        """Left click (press and release on the same tile, so a pan does not count) opens that tile."""
        if self.model is None or event.button != 1 or event.modifiers:
            return
        slot = self._slot_under(event.position)
        if slot is None:
            return
        yield
        while event.type == "mouse_move":
            yield
        if self._slot_under(event.position) == slot:
            self.open_tile(slot)

    def open_tile(self, slot: int) -> None:
        """Make the galaxy of tile *slot* of the page shown the current one."""
        selection = self._page_selection
        if self.model is None or selection is None or not 0 <= slot < len(selection.rows):
            return
        self.model.go_to(selection.rows[slot])

    def _turn_page(self, step: int) -> None:
        """Go to the first galaxy of the next (+1) or previous (-1) page of the filter."""
        per_page = self.page_layout().per_page
        rows = self.model.filtered_rows()
        selection = self.page_selection()
        target = selection.page + step
        if not 0 <= target < selection.n_pages or rows.size == 0:
            _notify("info", "First page." if step < 0 else "Last page.")
            return
        self.model.go_to(int(rows[target * per_page]))

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
