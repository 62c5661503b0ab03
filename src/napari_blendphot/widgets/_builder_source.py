"""The Blend Builder's sample source: a sample layer of the viewer, the embedded mock sample, a file or a folder.

Loading (and the neighbour cleaning that comes with it) runs in a napari
thread worker; mixed into
:class:`~napari_blendphot.widgets.blend_builder.BlendBuilderWidget`, whose
``viewer``, ``model``, combos and buttons it uses.
"""

from __future__ import annotations

from qtpy.QtWidgets import QFileDialog

from napari_blendphot.widgets._qt import notify


def _notify_error(exc: Exception) -> None:
    notify("error", str(exc))


class SampleSourceMixin:
    """Where the Blend Builder's galaxies come from."""

    def sample_layers(self) -> list:
        """Image layers of the viewer that hold a sample of isolated galaxies."""
        return [layer for layer in self.viewer.layers
                if layer.metadata.get("blendphot_kind") == "sample" and layer.metadata.get("sample") is not None]

    def _refresh_sources(self, event=None) -> None:
        current = self.source_combo.currentText()
        self.source_combo.clear()
        names = [layer.name for layer in self.sample_layers()]
        self.source_combo.addItems(names)
        if current in names:
            self.source_combo.setCurrentText(current)
        elif names:
            # Qt 6 keeps index -1 (the placeholder) after addItems: choose the first layer.
            self.source_combo.setCurrentIndex(0)
        has = bool(names)
        self.source_combo.setEnabled(has)
        self.use_layer_button.setEnabled(has)
        if not has:
            self.source_combo.setPlaceholderText("no sample layer open")

    def _use_selected_layer(self) -> None:
        name = self.source_combo.currentText()
        if name and name in self.viewer.layers:
            layer = self.viewer.layers[name]
            self.load_sample(layer.metadata["sample"], name=name)

    def load_embedded(self, background: bool = True) -> None:
        """Use the embedded mock sample (cleaned with the model's seed; cached)."""
        def work():
            from napari_blendphot._sample_data import cleaned_embedded_sample

            return cleaned_embedded_sample(self.model.clean_seed)

        self._run_loading(work, "embedded mock sample", background)

    def load_sample(self, sample, name: str = "sample", background: bool = True) -> None:
        """Use *sample*: its neighbours are cleaned (in a worker thread when *background*)."""
        def work():
            from napari_blendphot.clean.neighbours import clean_sample
            from napari_blendphot.app.builder import is_cleaned

            return sample if is_cleaned(sample) else clean_sample(sample, self.model.clean_seed)

        self._run_loading(work, name, background)

    def load_path(self, path, background: bool = True) -> None:
        """Read a sample file or folder (any reader of :func:`napari_blendphot.sample.io.load_sample`)."""
        from pathlib import Path

        def work():
            from napari_blendphot.clean.neighbours import clean_sample
            from napari_blendphot.sample.io import load_sample

            return clean_sample(load_sample(path), self.model.clean_seed)

        self._run_loading(work, Path(path).name, background)

    def _run_loading(self, work, name: str, background: bool) -> None:
        if not background:
            self._safely(self.model.set_sample, work(), name)
            return
        from napari.qt.threading import create_worker

        if self._worker is not None:
            return  # one load at a time
        self.source_label.setText(f"Reading and cleaning {name}…")
        self.busy.show()
        for button in (self.embedded_button, self.open_button, self.use_layer_button):
            button.setEnabled(False)
        worker = create_worker(work)
        worker.returned.connect(lambda sample: self._safely(self.model.set_sample, sample, name))
        worker.errored.connect(_notify_error)
        worker.finished.connect(self._loading_finished)
        self._worker = worker
        worker.start()

    def _loading_finished(self) -> None:
        self._worker = None
        self.busy.hide()
        self.embedded_button.setEnabled(True)
        self.open_button.setEnabled(True)
        self._refresh_sources()
        if self.model.sample is None:
            self.source_label.setText("No galaxies loaded.")

    def _open_file_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a sample of isolated galaxies", "",
                                              "Sample files (*.fits *.fit *.fits.gz);;All files (*)")
        if path:
            self.load_path(path)

    def _open_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a CANDELS folder or a folder of FITS cutouts")
        if path:
            self.load_path(path)
