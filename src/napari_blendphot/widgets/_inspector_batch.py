"""The Deblend Inspector's blend-set panel: run the methods over a loaded blend set, then its statistics.

The run is :meth:`~napari_blendphot.app.inspector.InspectorModel.run_blend_set`
(that is :func:`napari_blendphot.predict`) in the model's background thread,
with progress and Cancel; the panel shows the summary statistics and the dmag
histograms and saves the results table.
"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import numpy as np

from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import QComboBox, QGroupBox, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout

from napari_blendphot.errors import InputError
from napari_blendphot.widgets._inspector_table import SummaryTable


class _Bridge(QObject):
    """Carries the run's reports from the model's background thread to the GUI thread (queued signals)."""

    progress = Signal(int, int)
    done = Signal(object)


#: Longest wait after Cancel (s): a chunk holds about this much work.
CANCEL_WITHIN_S = 0.5


def chunk_for(seconds_per_blend: float, largest: int) -> int:
    """Blends per chunk so that one chunk takes about :data:`CANCEL_WITHIN_S` (at most *largest*)."""
    if not (np.isfinite(seconds_per_blend) and seconds_per_blend > 0):
        return max(1, min(largest, 8))  # not measured yet: small chunks
    return int(np.clip(CANCEL_WITHIN_S / seconds_per_blend, 1, largest))


def _has_split(blend_set, name, size) -> bool:
    try:
        return size(blend_set, name) > 0
    except Exception:  # a set without splits
        return False


class BlendSetPanel(QGroupBox):
    """Run the ticked methods on a loaded blend set (or one split); summary, histograms, Save results.

    Parameters
    ----------
    viewer : napari.Viewer
    model : InspectorModel
    notify : callable(kind, message)
        How problems are shown (the inspector's notifications).
    """

    def __init__(self, viewer, model, notify, parent=None, seconds_per_blend=lambda: float("nan")):
        super().__init__("Blend set", parent)
        #: The ticked methods' compute time on one blend (s; the last inspection's), to size the chunks.
        self.seconds_per_blend = seconds_per_blend
        self.max_chunk = model.chunk_size
        self.viewer = viewer
        self.model = model
        self._notify = notify
        self.future = None
        self.table = None
        self.canvas = None
        self.figure = None
        self._progress_bar = None
        self._done = 0
        self._started = 0.0
        self._bridge = _Bridge()
        self._bridge.progress.connect(self.on_progress)
        self._bridge.done.connect(self._on_done)
        # The GUI thread also looks at the running future itself: in long sessions the cross-thread
        # "done" signal was seen not to arrive (the status then stayed at "6 of 6 blends done…").
        self._watch = QTimer(self)
        self._watch.setInterval(250)
        self._watch.timeout.connect(self._check_done)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        row = QHBoxLayout()
        self.set_combo = QComboBox()
        self.set_combo.setToolTip("A loaded blend set (an image stack opened from a blend dataset folder)")
        self.set_combo.currentIndexChanged.connect(self.choose_split)
        row.addWidget(self.set_combo, 1)
        self.split_combo = QComboBox()
        self.split_combo.addItems(["test", "all", "train"])
        self.split_combo.setToolTip("Which blends of the set to run on")
        row.addWidget(self.split_combo)
        layout.addLayout(row)
        buttons = QHBoxLayout()
        self.batch_button = QPushButton("Run on blend set")
        self.batch_button.clicked.connect(self.run)
        buttons.addWidget(self.batch_button)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.cancel_button)
        self.save_results_button = QPushButton("Save results…")
        self.save_results_button.setEnabled(False)
        buttons.addWidget(self.save_results_button)
        layout.addLayout(buttons)
        self.batch_label = QLabel("")
        self.batch_label.setWordWrap(True)
        layout.addWidget(self.batch_label)
        self.summary = SummaryTable()
        layout.addWidget(self.summary)
        self._layout = layout

    # ------------------------------------------------------------------ the sets of the viewer
    def set_layers(self, layers) -> None:
        """Offer *layers* (blend-set image layers), keeping the chosen one."""
        chosen = self.layer()
        self.set_combo.blockSignals(True)
        self.set_combo.clear()
        self.set_combo.addItems([layer.name for layer in layers])
        if chosen is not None and chosen in layers:
            self.set_combo.setCurrentText(chosen.name)
        self.set_combo.blockSignals(False)
        self.batch_button.setEnabled(bool(layers) and self.future is None)
        self.choose_split()

    def choose_split(self, *_args) -> None:
        """Offer only the splits the chosen set has; "test" when it has one, else "all" (the sample-data set)."""
        from napari_blendphot.app.inspector import blend_set_size

        layer = self.layer()
        blend_set = None if layer is None else layer.metadata.get("blend_set")
        if blend_set is None:
            return
        chosen = self.split_combo.currentText()
        splits = ["all"] + [name for name in ("test", "train") if _has_split(blend_set, name, blend_set_size)]
        self.split_combo.blockSignals(True)
        self.split_combo.clear()
        self.split_combo.addItems(splits)
        self.split_combo.setCurrentText(chosen if chosen in splits and chosen != "all"
                                        else ("test" if "test" in splits else "all"))
        self.split_combo.blockSignals(False)

    def layer(self):
        name = self.set_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    # ------------------------------------------------------------------ running
    def run(self, *_args) -> None:
        """Run the ticked methods over the chosen blend set (or split) in the background."""
        from napari.utils import progress

        from napari_blendphot.app.inspector import blend_set_size

        layer = self.layer()
        if layer is None:
            self._notify("warning", "Deblend Inspector: open a blend dataset folder first (File > Open Folder…)")
            return
        blend_set = layer.metadata.get("blend_set")
        if blend_set is None and layer.metadata.get("source"):
            from napari_blendphot.blend.dataset import BlendDataset

            try:
                blend_set = BlendDataset(layer.metadata["source"])
            except InputError as exc:
                self._notify("error", f"Deblend Inspector: {exc}")
                return
        split = self.split_combo.currentText()
        split = None if split == "all" else split
        try:
            total = blend_set_size(blend_set, split)
            if total == 0:
                raise InputError(f"blend set {layer.name!r}", f"has no {split} blends", "choose the split 'all'")
            for name in self.model.selected:
                problem = self.model.check_method(name)
                if problem:
                    raise InputError("methods", problem)
            if not self.model.selected:
                raise InputError("methods", "no method ticked")
        except InputError as exc:
            self._notify("warning", f"Deblend Inspector: {exc}")
            return
        # Chunks of about CANCEL_WITHIN_S of work: Cancel stops between chunks (64 blends took 4-7 s).
        self.model.chunk_size = chunk_for(self.seconds_per_blend(), self.max_chunk)
        self._progress_bar = progress(total=total, desc=f"Deblending {layer.name} ({split or 'all'})")
        self._done = 0
        self._started = time.perf_counter()
        self.batch_label.setText(f"running {', '.join(self.model.selected)} on {total} blends…")
        self.future = self.model.submit_blend_set(blend_set, split, list(self.model.selected),
                                                  progress=self._deliver_progress)
        self.future.add_done_callback(self._deliver_done)
        self._watch.start()
        self.batch_button.setEnabled(False)
        self.cancel_button.setEnabled(True)

    def _deliver_progress(self, done: int, total: int) -> None:  # background thread
        try:
            self._bridge.progress.emit(done, total)
        except RuntimeError:  # the widget is gone
            pass

    def _deliver_done(self, future) -> None:  # background thread
        try:
            self._bridge.done.emit(future)
        except RuntimeError:
            pass

    def on_progress(self, done: int, total: int) -> None:
        if self.future is None or self.future.done():  # a late report of a run finished (or being shown so)
            return
        if self._progress_bar is not None:
            self._progress_bar.update(done - self._done)
        self._done = done
        self.batch_label.setText(f"{done} of {total} blends done…")

    def cancel(self, *_args) -> None:
        """Stop the blend-set run after its current chunk (partial results are kept)."""
        if self.future is not None:
            self.future.cancel_event.set()
            self.batch_label.setText("cancelling after the current chunk…")

    def _check_done(self) -> None:
        if self.future is None:
            self._watch.stop()
        elif self.future.done():
            self._on_done(self.future)

    def _on_done(self, future) -> None:
        from napari_blendphot.deblend.engine import Cancelled

        if future is not self.future:  # already shown (by the signal or by the watch), or an older run
            return
        self._watch.stop()
        if self._progress_bar is not None:
            self._progress_bar.close()
            self._progress_bar = None
        self.future = None
        self.cancel_button.setEnabled(False)
        self.batch_button.setEnabled(self.set_combo.count() > 0)
        seconds = time.perf_counter() - self._started
        try:
            table = future.result()
            note = f"{len(table)} blends in {seconds:.1f} s"
        except Cancelled as exc:
            table = getattr(exc, "partial", None)
            note = f"cancelled after {exc.done} of {exc.total} blends"
            self._notify("info", f"Deblend Inspector: blend-set run {note}")
        except concurrent.futures.CancelledError:  # a BaseException since Python 3.8: never leave the status behind
            self.batch_label.setText("cancelled")
            return
        except Exception as exc:
            self.batch_label.setText(f"failed: {exc}")
            self._notify("error", f"Deblend Inspector: the blend-set run failed: {exc}")
            return
        self.table = table
        self.save_results_button.setEnabled(table is not None)
        if table is None:
            self.batch_label.setText(note + ": nothing to show")
            return
        try:
            self.show_summary(table, note)
        except Exception as exc:
            self.batch_label.setText(f"{note}; cannot summarise: {exc}")
            self._notify("error", f"Deblend Inspector: cannot summarise the results: {exc}")

    def show_summary(self, table, note: str) -> None:
        """The statistics and the dmag histograms of a results table."""
        import matplotlib

        from napari_blendphot.report.evaluate import summary_table
        from napari_blendphot.report.figures import default_selection, plot_dmag_histograms

        selection = default_selection(table)
        self.summary.fill(summary_table(table), selection)
        self.batch_label.setText(f"{note} — selection: {selection} galaxies")
        if self.canvas is None:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure

            self.figure = Figure(figsize=(4.5, 2.8), layout="constrained")
            self.canvas = FigureCanvasQTAgg(self.figure)
            self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            self.canvas.setFixedHeight(260)
            self._layout.addWidget(self.canvas)
        self.figure.clear()
        with matplotlib.rc_context({"font.size": 7, "axes.labelsize": 7, "legend.fontsize": 7}):
            plot_dmag_histograms(self.figure, table, selection=selection)
        self.canvas.draw_idle()

    def save_results(self, ask_path, confirm_replace):
        """Save the results table as CSV + FITS; *ask_path* gives the file name, *confirm_replace* the consent."""
        from napari_blendphot.report.results import write_results

        if self.table is None:
            return None
        path = ask_path("Save the results table (CSV and FITS)", "Results table (*.csv *.fits)")
        if not path:
            return None
        stem = Path(path)
        if stem.suffix.lower() in (".csv", ".fits"):
            stem = stem.with_suffix("")
        targets = [stem.with_suffix(".csv"), stem.with_suffix(".fits")]
        existing = [str(p) for p in targets if p.exists() and str(p) != str(Path(path))]
        if existing and not confirm_replace(existing):
            return None
        try:
            written = write_results(self.table, stem, overwrite=True)
        except Exception as exc:
            self._notify("error", f"Deblend Inspector: cannot save the results: {exc}")
            return None
        self._notify("info", f"Deblend Inspector: wrote {', '.join(str(p) for p in written)}")
        return written
