"""The Field widget's model: field mode driven step by step, with no Qt and no napari.

What the widget (:mod:`napari_blendphot.widgets.field_widget`) shows, as plain
Python that a test or a notebook can drive:

* :meth:`FieldModel.open`: a FITS field (reading, WCS, calibration: see
  :mod:`napari_blendphot.field.image`); :meth:`FieldModel.set_calibration`
  edits the zero point and the pixel scale in use (the detection and the
  measurements made with the old values are dropped);
* :meth:`FieldModel.detect`: SEP detection and blend groups over the whole
  image (the widget works on images that fit in memory; ``blendphot
  measure`` tiles larger ones); :meth:`points` and :meth:`features` are what
  the Points layer shows;
* :meth:`FieldModel.measure`: the methods on some sources (a click, a
  rectangle, every blend), through one :class:`~napari_blendphot.field.run.MethodRunner`
  whose worker process holds every method (nothing heavy runs in the
  caller's process), with progress and cancel; results accumulate per
  source and :meth:`catalog` gives them as the catalogue ``blendphot
  measure`` writes, :meth:`save` writes it;
* :meth:`masks` gives each mask-making method's masks of a measured source
  with where they lie on the image (for a Labels layer's ``translate`` and
  ``scale``).
"""

from __future__ import annotations

import threading

import numpy as np
from psygnal import Signal

from napari_blendphot.errors import InputError
from napari_blendphot.field.detect import DetectionSettings

#: The widget reads the whole image: larger ones are for ``blendphot measure``.
MAX_GUI_PIXELS = 8192 * 8192
#: Masks are kept for this many most recently measured sources.
MASKS_KEPT = 64


class FieldModel:
    """State of the Field widget (module docstring).

    Parameters
    ----------
    methods : sequence of str
        Methods run by :meth:`measure` (changeable with :meth:`set_methods`).
    method_options : dict, optional
        ``{method: {option: value}}`` (weights...).
    runner_factory : callable, optional
        ``runner_factory(methods, method_options)`` -> a MethodRunner-like object (tests).
    seed : int
        Seed of the noise that fills cleaned and padded stamp pixels.
    """

    opened = Signal(object)        # the FieldImage
    detected = Signal(int)         # number of sources
    measured = Signal(object)      # indices measured by the last request
    calibration_changed = Signal(object)

    def __init__(self, methods=None, method_options: dict | None = None, runner_factory=None,
                 seed: int = 0, settings: DetectionSettings = DetectionSettings()):
        if methods is None:  # the registry's default set, as everywhere
            from napari_blendphot.deblend.registry import default_methods

            methods = default_methods()
        self.methods = tuple(methods)
        self.method_options = dict(method_options or {})
        self.seed = int(seed)
        self.settings = settings
        self._runner_factory = runner_factory
        self._runner = None
        self._lock = threading.RLock()
        self.image = None
        self.region = None
        self._open_args = None
        self._results: dict = {}
        self._masks: dict = {}
        self._placements: dict = {}

    # ------------------------------------------------------------------ image and calibration
    def open(self, path, hdu=None, plane=None, zero_point=None, pixel_scale=None):
        """Open a field image (replaces the current one); returns its :class:`FieldImage`."""
        import warnings

        from napari_blendphot.field.image import FieldWarning, open_field

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FieldWarning)
            image = open_field(path, hdu=hdu, plane=plane, zero_point=zero_point, pixel_scale=pixel_scale)
        if image.shape[0] * image.shape[1] > MAX_GUI_PIXELS:
            image.close()
            raise InputError(path, f"{image.shape[1]}x{image.shape[0]} pixels is too large for the Field widget",
                             "measure it with 'blendphot measure', which reads it in tiles")
        with self._lock:
            if self.image is not None:
                self.image.close()
            self.image = image
            self._open_args = {"path": path, "hdu": image.hdu_index, "plane": image.plane}
            self._forget_sources()
        self.notes = [str(w.message) for w in caught if issubclass(w.category, FieldWarning)]
        self.opened.emit(image)
        return image

    @property
    def calibration(self):
        return None if self.image is None else self.image.calibration

    def set_calibration(self, zero_point=None, pixel_scale=None):
        """Use another zero point and/or pixel scale (None keeps the current one); drops detection and results."""
        image = self._require_image()
        calibration = image.calibration.with_overrides(zero_point, pixel_scale)
        if (calibration.zero_point, calibration.pixel_scale_yx) == (image.calibration.zero_point,
                                                                     image.calibration.pixel_scale_yx):
            return image.calibration
        with self._lock:
            image.calibration = calibration
            self._forget_sources()
        self.calibration_changed.emit(calibration)
        return calibration

    def set_methods(self, methods, method_options: dict | None = None) -> None:
        """Methods of the next measurements (the worker is restarted with them)."""
        methods = tuple(methods)
        if not methods:
            raise InputError("methods", "no method chosen")
        with self._lock:
            if methods != self.methods or (method_options is not None and method_options != self.method_options):
                self.methods = methods
                if method_options is not None:
                    self.method_options = dict(method_options)
                if self._runner is not None:
                    self._runner.close()
                    self._runner = None

    def _require_image(self):
        if self.image is None:
            raise InputError("Field widget", "no field image is open", "open a FITS image first")
        return self.image

    def _forget_sources(self) -> None:
        self.region = None
        self._results = {}
        self._masks = {}
        self._placements = {}

    # ------------------------------------------------------------------ detection
    def detect(self) -> int:
        """Detect and group the sources of the whole image; returns their number."""
        from napari_blendphot.field.measure import prepare_region

        image = self._require_image()
        region = prepare_region(image, settings=self.settings)
        with self._lock:
            self.region = region
            self._results = {}
            self._masks = {}
            self._placements = {}
        self.detected.emit(len(region))
        return len(region)

    def _require_region(self):
        if self.region is None:
            raise InputError("Field widget", "no sources yet", "press Detect first")
        return self.region

    @property
    def n_sources(self) -> int:
        return 0 if self.region is None else len(self.region)

    def source_ids(self) -> np.ndarray:
        return np.arange(1, self.n_sources + 1, dtype=np.int64)

    def group_ids(self) -> np.ndarray:
        """Per source, the smallest source id of its group."""
        region = self._require_region()
        ids = self.source_ids()
        smallest = {}
        for label, source_id in zip(region.group, ids):
            smallest[label] = min(smallest.get(label, source_id), source_id)
        return np.array([smallest[label] for label in region.group], np.int64)

    def group_sizes(self) -> np.ndarray:
        region = self._require_region()
        return np.bincount(region.group, minlength=len(region))[region.group].astype(np.int64)

    def points(self) -> np.ndarray:
        """(N, 2) [row, column] of the sources (napari's order)."""
        region = self._require_region()
        return np.stack([region.y, region.x], axis=1)

    def features(self) -> dict:
        """Columns of the Points layer: ids, groups, and each measured source's magnitudes and flags."""
        region = self._require_region()
        n = len(region)
        columns = {"source_id": self.source_ids(), "group_id": self.group_ids(), "group_size": self.group_sizes(),
                   "measured": np.zeros(n, bool), "flags": np.zeros(n, np.int64),
                   "mag_total": np.full(n, np.nan)}
        for method in self.methods:
            columns[f"mag_{method}"] = np.full(n, np.nan)
        for index, row in self._results.items():
            columns["measured"][index] = True
            columns["flags"][index] = row["flags"]
            columns["mag_total"][index] = row["mag_total"]
            for method in self.methods:
                if f"mag_{method}" in row:
                    columns[f"mag_{method}"][index] = row[f"mag_{method}"]
        return columns

    def nearest_source(self, y: float, x: float, max_distance: float = 10.0) -> int | None:
        region = self._require_region()
        if not len(region):
            return None
        distance = np.hypot(region.y - y, region.x - x)
        best = int(np.argmin(distance))
        return best if distance[best] <= max_distance else None

    def sources_in_box(self, y0: float, y1: float, x0: float, x1: float) -> np.ndarray:
        region = self._require_region()
        ylo, yhi = sorted((y0, y1))
        xlo, xhi = sorted((x0, x1))
        return np.flatnonzero((region.y >= ylo) & (region.y <= yhi) & (region.x >= xlo) & (region.x <= xhi))

    def blend_members(self) -> np.ndarray:
        """Indices of every source in a blend group (two or more members)."""
        return np.flatnonzero(self.group_sizes() > 1)

    # ------------------------------------------------------------------ measuring
    def _runner_for(self):
        if self._runner is None:
            if self._runner_factory is not None:
                self._runner = self._runner_factory(self.methods, self.method_options)
            else:
                from napari_blendphot.field.run import MethodRunner

                # Everything in the worker: the napari process stays free for drawing.
                self._runner = MethodRunner(self.methods, self.method_options, in_process=False)
        return self._runner

    def measure(self, indices, progress=None, cancel=None) -> np.ndarray:
        """Run the methods on sources *indices*; returns the indices measured (in chunks, so a cancel keeps some).

        Thread-safe: the widget calls it from a worker thread.
        """
        from napari_blendphot.deblend.engine import Cancelled
        from napari_blendphot.field.measure import BATCH, measure_sources

        region = self._require_region()
        image = self.image
        indices = np.unique(np.asarray(indices, np.int64))
        if indices.size and (indices.min() < 0 or indices.max() >= len(region)):
            raise InputError("sources", f"indices outside 0-{len(region) - 1}")
        done = []
        chunk = max(1, min(BATCH, 64 if len(indices) > 64 else len(indices)))
        with self._lock:
            runner = self._runner_for()
            for start in range(0, len(indices), chunk):
                part = indices[start:start + chunk]

                def part_progress(finished, _total, offset=start):
                    if progress is not None:
                        progress(offset + finished, len(indices))

                try:
                    measured = measure_sources(region, image, part, runner, self.seed, progress=part_progress,
                                               cancel=cancel)
                except Cancelled:
                    break
                self._store(part, measured)
                done.extend(part.tolist())
                if progress is not None:
                    progress(start + len(part), len(indices))
        done = np.asarray(done, np.int64)
        self.measured.emit(done)
        return done

    def _store(self, indices, measured) -> None:
        for k, index in enumerate(indices):
            row = {name: (values[k].item() if hasattr(values[k], "item") else values[k])
                   for name, values in measured.columns.items()}
            self._results[int(index)] = row
            self._placements[int(index)] = measured.placements[k]
            masks = {name: np.asarray(output.masks[k]) > 0.5 for name, output in measured.outputs.items()
                     if output.masks is not None}
            self._masks.pop(int(index), None)
            self._masks[int(index)] = masks
            self._results[int(index)]["companion_index"] = int(measured.companions[k])
        while len(self._masks) > MASKS_KEPT:
            self._masks.pop(next(iter(self._masks)))

    @property
    def measured_indices(self) -> np.ndarray:
        return np.array(sorted(self._results), np.int64)

    def result(self, index: int) -> dict | None:
        return self._results.get(int(index))

    def masks(self, index: int) -> dict:
        """``{method: (masks (2, 128, 128) bool, origin_yx, step_yx)}`` of a measured source (recent ones)."""
        index = int(index)
        if index not in self._masks:
            return {}
        origin, step = self._placements[index]
        return {name: (masks, origin, step) for name, masks in self._masks[index].items()}

    def catalog(self):
        """The measured sources as the catalogue ``blendphot measure`` writes (astropy Table)."""
        from napari_blendphot.field.measure import SourceMeasurements, _assemble, _catalog_meta, _part_rows

        region = self._require_region()
        indices = self.measured_indices
        if not len(indices):
            raise InputError("Field widget", "nothing measured yet", "click a source or measure the blends first")
        columns = {}
        names = [name for name in self._results[int(indices[0])] if name != "companion_index"]
        for name in names:
            columns[name] = np.array([self._results[int(i)].get(name, np.nan) for i in indices])
        companions = np.array([self._results[int(i)]["companion_index"] for i in indices], np.int64)

        measured = SourceMeasurements(indices, columns, {}, companions)
        part = _part_rows(region, measured, source_ids=indices + 1)
        table = _assemble([part], list(self.methods), None)
        runner = self._runner_for()
        table.meta.update(_catalog_meta(self.image, list(self.methods), runner, self.settings, self.seed, None,
                                        runner.backend_used, None))
        return table

    def save(self, output, overwrite: bool = False):
        """Write :meth:`catalog` (FITS + CSV + JSON, or ECSV); returns the paths."""
        from napari_blendphot.field.output import write_catalog

        return write_catalog(self.catalog(), output, overwrite=overwrite)

    def close(self) -> None:
        with self._lock:
            if self._runner is not None:
                self._runner.close()
                self._runner = None
            if self.image is not None:
                self.image.close()
