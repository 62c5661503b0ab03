"""The Curation widget's sample opening (in a thread worker, with its sidecar) and its keyboard shortcuts.

A mixin of :class:`~napari_blendphot.widgets.curation.CurationWidget`: viewer
keys are borrowed only while curating and given back afterwards.
"""

from __future__ import annotations

from qtpy.QtWidgets import QFileDialog, QMessageBox

from napari_blendphot.curation.sidecar import REASONS
from napari_blendphot.widgets._qt import notify as _notify

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


class CurationOpeningMixin:
    """Opening a sample and its decisions; the keys that act on them."""

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
