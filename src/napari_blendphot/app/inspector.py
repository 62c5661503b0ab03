"""The Deblend Inspector's state and logic: no Qt, no napari, no Keras.

What the inspector does, as plain Python that a test (or a notebook) can
drive without a viewer:

* turn what the user looks at into a :class:`~napari_blendphot.app.session.BlendState`
  (:func:`state_from_image`, :func:`state_from_blend_set`), refusing stamps
  that are not 2-D 128x128 or hold NaN pixels with an ``InputError``;
* run the selected deblending methods on it through ONE long-lived
  :class:`~napari_blendphot.deblend.engine.InferenceEngine` (so Keras only
  ever loads in the worker process), off the caller's thread, dropping the
  results of requests that a newer one has superseded
  (:meth:`InspectorModel.inspect`);
* isolate failures: a method whose weights are missing or corrupted is
  reported and skipped, the other methods still give their numbers; a dead
  worker is reported and replaced on the next request;
* compute the per-galaxy numbers (flux, magnitude, dmag, IoU, SEP's detection
  case) with the library (:func:`napari_blendphot.report.results.build_results_table`
  and :func:`napari_blendphot.metrics.binned.galaxy_measurements`), never with
  metrics of its own (:func:`measure`);
* run the methods over a whole blend set in chunks, with progress and cancel,
  into a results table (:meth:`InspectorModel.run_blend_set`, which is
  :func:`napari_blendphot.predict` in the model's engine).

What a method offers (a weights file, a precision) comes from its
capabilities in the registry (:mod:`napari_blendphot.deblend.registry`), so a
third-party Keras method gets the same choices as the built-in networks.

The Qt view is :mod:`napari_blendphot.widgets.deblend_inspector`.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
from dataclasses import dataclass, field

import numpy as np
from psygnal import Signal

from napari_blendphot.constants import STAMP_SIZE, ZERO_POINT
from napari_blendphot.errors import InputError, WorkerError
from napari_blendphot.app.session import BlendState

GALAXIES = ("central", "companion")
#: Columns of the inspector table (and of :func:`rows_as_table`).
ROW_COLUMNS = ("method", "label", "galaxy", "flux", "mag", "dmag", "iou", "flux_err", "mag_err", "detection")
NO_TRUTH_NOTE = "no truth: dmag and IoU unavailable"


def _info(name: str):
    from napari_blendphot.deblend.registry import method_info

    return method_info(name)


def _unavailable(name: str) -> str | None:
    from napari_blendphot.deblend.registry import unavailable_reason

    try:
        return unavailable_reason(name)
    except InputError as exc:
        return str(exc)


# --------------------------------------------------------------------------- blend states
def check_stamp(image, source: str) -> np.ndarray:
    """A (128, 128) finite stamp as native float32, or an :class:`InputError` naming *source*.

    The messages speak of one image (a layer); the checks and the conversion
    are :func:`~napari_blendphot.deblend.base.check_blends`'.
    """
    from napari_blendphot.deblend.base import check_blends

    array = np.asarray(image)
    if array.ndim != 2 or array.shape != (STAMP_SIZE, STAMP_SIZE):
        raise InputError(source, f"the image is {array.ndim}-D of shape {array.shape}, expected one "
                                 f"{STAMP_SIZE}x{STAMP_SIZE} stamp",
                         "choose a 128x128 image layer, or a slice of a 128x128 stack")
    if array.dtype.kind in "fc":
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise InputError(source, f"{bad} pixel(s) are NaN or infinite",
                             "the methods need finite pixels: replace them (e.g. by the sky level) first")
    return check_blends(array, source=source)[0]


def state_from_image(image, name: str, source: str | None = None) -> BlendState:
    """A :class:`BlendState` without truth for an arbitrary stamp (checked)."""
    return BlendState(image=check_stamp(image, source or name), name=name, truth=None, origin="layer")


def state_from_blend_set(blend_set, index: int, name: str) -> BlendState:
    """The blend *index* of a blend set (``BlendDataset`` or in-memory ``BlendBatch``) with its truth."""
    n = len(blend_set)
    if not 0 <= int(index) < n:
        raise InputError(name, f"slice {index} is outside the {n} blends of the set")
    truth = blend_set[int(index)]
    image = check_stamp(truth.blend, f"{name}, blend {index}")
    return BlendState(image=image, name=f"{name} #{int(index)}", truth=truth, origin="dataset")


def state_from_catalog_row(image, catalog, index: int, name: str) -> BlendState:
    """A blend-set slice known only by its pixels and its catalogue row: fluxes, no masks (dmag, no IoU)."""
    from napari_blendphot.blend.assemble import Blend

    image = check_stamp(image, f"{name}, blend {index}")
    row = {column: catalog[column][int(index)] for column in catalog.colnames}
    row = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
    truth = Blend(image, None, None, None, int(row.get("dy", 0)), int(row.get("dx", 0)),
                  float(row.get("distance", np.hypot(row.get("dy", 0), row.get("dx", 0)))), row)
    return BlendState(image=image, name=f"{name} #{int(index)}", truth=truth, origin="dataset")


def state_from_layer(layer, step: tuple) -> BlendState:
    """The blend a viewer shows in image *layer* at dims *step* (any object with napari's layer attributes).

    A blend-set stack (``metadata["blendphot_kind"] == "blends"``) gives the
    slice's blend with its truth (the dataset opened from ``metadata["source"]``
    if needed; the catalogue alone when the set is gone, e.g. a restored
    session: fluxes, no masks); any other image a stamp without truth.
    """
    from pathlib import Path

    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    ndim = len(data.shape)
    index = tuple(step[len(step) - ndim:len(step) - 2]) if ndim > 2 else ()
    if ndim > 2:
        index = tuple(min(max(i, 0), n - 1) for i, n in zip(index, data.shape[:-2]))
    blend_set = layer.metadata.get("blend_set")
    if layer.metadata.get("blendphot_kind") == "blends" and ndim == 3:
        source = layer.metadata.get("source")
        if blend_set is None and source and Path(str(source)).is_dir():
            from napari_blendphot.blend.dataset import BlendDataset

            blend_set = layer.metadata["blend_set"] = BlendDataset(source)
        if blend_set is not None and len(blend_set) == data.shape[0]:
            return state_from_blend_set(blend_set, index[0], layer.name)
        catalog = layer.metadata.get("catalog")
        if catalog is not None and len(catalog) == data.shape[0] and "g1_flux" in catalog.colnames:
            return state_from_catalog_row(np.asarray(data[index]), catalog, index[0], layer.name)
    where = f"image layer {layer.name!r}" + (f" at slice {index}" if index else "")
    return state_from_image(np.asarray(data[index] if index else data), layer.name, where)


def grouped_errors(errors: dict) -> list[str]:
    """A run's problems as lines, the "no shipped model" ones merged into one."""
    missing = [name for name, message in errors.items() if "no shipped model installed" in message]
    lines = [message for name, message in errors.items() if name not in missing]
    if len(missing) > 1:
        lines.insert(0, f"no shipped models yet for {', '.join(missing)}: choose .keras files with their "
                        "'…' buttons, or untick them")
    elif missing:
        lines.insert(0, errors[missing[0]])
    return lines


def truth_catalog(truth):
    """One-row blend catalogue (astropy Table) of a :class:`~napari_blendphot.blend.assemble.Blend`."""
    return truth.as_catalog()


def truth_context(truth):
    """The :class:`~napari_blendphot.deblend.base.BlendContext` SEP uses to assign its detections."""
    return truth.context()


def has_usable_truth(truth) -> bool:
    """True when the truth has positive finite fluxes for both galaxies (dmag computable)."""
    if truth is None:
        return False
    fluxes = np.asarray(truth.fluxes, np.float64)
    return bool(np.all(np.isfinite(fluxes) & (fluxes > 0)))


# --------------------------------------------------------------------------- measurements
@dataclass
class GalaxyRow:
    """One line of the inspector table: a method's numbers for one galaxy."""

    method: str
    label: str
    galaxy: str
    flux: float
    mag: float
    dmag: float = float("nan")
    iou: float = float("nan")
    flux_err: float = float("nan")
    mag_err: float = float("nan")
    detection: str = ""

    def as_tuple(self) -> tuple:
        return tuple(getattr(self, name) for name in ROW_COLUMNS)


@dataclass
class Inspection:
    """The result of one request.

    ``outputs``: ``{method: DeblendOutput}`` of the methods that ran;
    ``rows``: the table lines (truth first when known);
    ``table``: the one-row results table (None without truth);
    ``errors``: ``{method or "worker": message}``; ``note``: a line for the user;
    ``seconds``: wall time of the whole request (methods and measurements);
    ``timings``: its parts in seconds: ``"request"`` (the engine requests, IPC
    included), ``"compute"`` (the methods' own time in the worker) and
    ``"measure"`` (the table's numbers).
    """

    request_id: int
    state: BlendState
    outputs: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)
    table: object = None
    errors: dict = field(default_factory=dict)
    note: str = ""
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)


def _label(name: str) -> str:
    from napari_blendphot.deblend.registry import method_info

    try:
        return method_info(name).label
    except InputError:
        return name


def measure(state: BlendState, outputs: dict, zero_points: dict | None = None) -> tuple[list, object]:
    """Table lines (and the one-row results table) for the *outputs* of the methods on *state*.

    With a usable truth the numbers come from
    :func:`~napari_blendphot.report.results.build_results_table` (IoU against
    the true masks, SEP's detection column) and
    :func:`~napari_blendphot.metrics.binned.galaxy_measurements` (magnitudes and
    dmag with each method's zero point).  Without truth, magnitudes only.
    """
    return measure_truth(outputs, state.truth, zero_points)


def timed_measure(outputs: dict, truth) -> tuple[list, object, float]:
    """:func:`measure_truth` and the seconds it took (what the inspector runs in the worker)."""
    import time

    start = time.perf_counter()
    rows, table = measure_truth(outputs, truth)
    return rows, table, time.perf_counter() - start


def measure_truth(outputs: dict, truth, zero_points: dict | None = None) -> tuple[list, object]:
    """:func:`measure` for a :class:`~napari_blendphot.blend.assemble.Blend` truth (or None).

    Needs no Qt: the inspector runs it in the inference worker, straight after
    the methods (:meth:`~napari_blendphot.deblend.engine.InferenceEngine.run_then`).
    """
    from napari_blendphot.metrics.binned import galaxy_measurements, zero_point_of
    from napari_blendphot.metrics.selection import detection_case_name
    from napari_blendphot.report.results import build_results_table
    from napari_blendphot.sample.galaxy_sample import flux_to_mag

    zero_points = {name: zp for name, zp in (zero_points or {}).items() if name in outputs}
    rows: list[GalaxyRow] = []
    table = None
    if has_usable_truth(truth):
        true_masks = None if getattr(truth, "masks", None) is None else np.asarray(truth.masks)[None]
        table = build_results_table(truth_catalog(truth), outputs, true_masks=true_masks, zero_points=zero_points)
        true_mags = flux_to_mag(truth.fluxes, zero_point_of(table, None))
        for galaxy, flux, mag in zip(GALAXIES, truth.fluxes, true_mags):
            rows.append(GalaxyRow("truth", "truth", galaxy, float(flux), float(mag)))
        for name in outputs:
            for galaxy in GALAXIES:
                values = galaxy_measurements(table, name, galaxy, selection="all")[0]
                detection = ""
                if f"detection_{name}" in table.colnames:
                    case = int(table[f"detection_{name}"][0])
                    detection = f"{case}: {detection_case_name(case)}"
                iou = float(values["iou"]) if "iou" in values.colnames else float("nan")
                flux_err, mag_err = _errors_of(table, name, galaxy)
                rows.append(GalaxyRow(name, _label(name), galaxy, float(values["pred_flux"]),
                                      float(values["pred_mag"]), float(values["dmag"]), iou, flux_err, mag_err,
                                      detection))
        return rows, table
    for name, output in outputs.items():
        zp = float(zero_points.get(name, ZERO_POINT))
        fluxes = np.asarray(output.fluxes, np.float64)[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            mags = flux_to_mag(np.where(fluxes > 0, fluxes, np.nan), zp)
        detection = ""
        if "detection" in output.extra:
            from napari_blendphot.metrics.selection import detection_case_name

            case = int(np.asarray(output.extra["detection"])[0])
            detection = f"{case}: {detection_case_name(case)}"
        from napari_blendphot.report.results import MAG_PER_RELATIVE_FLUX

        errors = getattr(output, "flux_errors", None)
        errors = (np.full(2, np.nan) if errors is None else np.asarray(errors, np.float64)[0])
        with np.errstate(divide="ignore", invalid="ignore"):
            mag_errors = np.where(fluxes > 0, MAG_PER_RELATIVE_FLUX * errors / fluxes, np.nan)
        for galaxy, flux, mag, flux_err, mag_err in zip(GALAXIES, fluxes, mags, errors, mag_errors):
            rows.append(GalaxyRow(name, _label(name), galaxy, float(flux), float(mag), flux_err=float(flux_err),
                                  mag_err=float(mag_err), detection=detection))
    return rows, None


def _errors_of(table, method: str, galaxy: str) -> tuple[float, float]:
    """(flux_err, mag_err) of *galaxy* by *method* in a one-row results table (NaN without errors)."""
    prefix = "g1" if galaxy == GALAXIES[0] else "g2"
    values = []
    for kind in ("flux_err", "mag_err"):
        column = f"{prefix}_{kind}_{method}"
        values.append(float(table[column][0]) if column in table.colnames else float("nan"))
    return values[0], values[1]


def layer_features(rows, method: str) -> dict:
    """``features`` of a mask Labels layer: one row per label value (0 background, 1 central, 2 companion, 3 both)."""
    from napari_blendphot.display import CENTRAL_LABEL, COMPANION_LABEL, OVERLAP_LABEL

    by_galaxy = {row.galaxy: row for row in rows if row.method == method}
    features = {"index": [0, CENTRAL_LABEL, COMPANION_LABEL, OVERLAP_LABEL],
                "galaxy": ["background", "central", "companion", "both"]}
    for column in ("flux", "flux_err", "mag", "mag_err", "dmag", "iou"):
        features[column] = [np.nan] + [float(getattr(by_galaxy[g], column)) if g in by_galaxy else np.nan
                                       for g in GALAXIES] + [np.nan]
    features["detection"] = [""] + [by_galaxy[g].detection if g in by_galaxy else "" for g in GALAXIES] + [""]
    return features


def rows_as_table(rows, blend_name: str = "", precisions: dict | None = None):
    """The table lines as an astropy Table (for CSV export); *precisions*: ``{method: precision}`` used."""
    from astropy.table import Table

    table = Table(rows=[row.as_tuple() for row in rows] or None, names=ROW_COLUMNS,
                  dtype=(str, str, str, float, float, float, float, float, float, str))
    table.meta["blend"] = blend_name
    table.meta["zero_point"] = ZERO_POINT
    if precisions:
        table.meta["precision"] = dict(precisions)
    return table


def save_inspection(inspection: "Inspection", path):
    """Write an inspection's table lines as CSV at *path* (``.csv`` added if missing; replaces the file)."""
    from pathlib import Path

    from napari_blendphot.tables import write_table

    path = Path(path)
    if path.suffix.lower() != ".csv":
        path = path.with_suffix(".csv")
    table = rows_as_table(inspection.rows, inspection.state.name, precisions_used(inspection.outputs))
    return write_table(table, path, overwrite=True)


def precisions_used(outputs: dict) -> dict:
    """``{method: precision}`` of the outputs that record one (the network methods)."""
    return {name: str(output.metadata["precision"]) for name, output in outputs.items()
            if "precision" in (output.metadata or {})}


def format_value(column: str, value) -> str:
    """How a number shows in the table and the clipboard ("" for NaN)."""
    if isinstance(value, str):
        return value
    if value is None or not np.isfinite(value):
        return ""
    if column in ("flux", "flux_err"):
        return f"{value:.4g}"
    if column == "dmag":
        return f"{value:+.3f}"
    return f"{value:.3f}"


def rows_as_tsv(rows) -> str:
    """Tab-separated text of the table lines with a header (what "Copy" puts on the clipboard)."""
    lines = ["\t".join(ROW_COLUMNS)]
    for row in rows:
        lines.append("\t".join(format_value(column, value) for column, value in zip(ROW_COLUMNS, row.as_tuple())))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- blend sets
def blend_set_size(blend_set, split: str | None = None) -> int:
    if split is None:
        return len(blend_set)
    if hasattr(blend_set, "indices"):
        return len(blend_set.indices(split))
    splits = np.char.strip(np.asarray(blend_set.catalog["split"]).astype(str))
    return int(np.sum(splits == split))


# --------------------------------------------------------------------------- the model
class InspectorModel:
    """Selected methods, their weights, and the engine that runs them.

    Signals (psygnal; emitted from the model's background thread):
    ``methods_changed()``, ``status(str)``.

    Parameters
    ----------
    methods : sequence of str, optional
        Initially selected methods (default: all registered ones).
    engine : InferenceEngine, optional
        Use this engine (it is borrowed: :meth:`close` leaves it running);
        default: the model creates one on first use and owns it.
    chunk_size : int
        Blends per request of a blend-set run (progress and cancel granularity).
    precision : {"float32", "bfloat16", "auto"}
        Compute precision of the network methods (their ``precision`` option,
        :mod:`napari_blendphot.models.precision`); what each run used is in its
        outputs' metadata, the layers' metadata and the exported table.
    tta : {1, 2, 4, 8}
        Test-time symmetries of the methods that take them (the networks'
        ``tta`` option: outputs averaged over the blend turned and mirrored;
        ``tta`` times the network cost).
    """

    methods_changed = Signal()
    status = Signal(str)
    #: Compute the table lines in the worker, straight after the methods (single-phase runs).
    measure_in_worker = True

    def __init__(self, methods=None, engine=None, chunk_size: int = 64, precision: str = "float32", tta: int = 1):
        from napari_blendphot.deblend.registry import available_methods
        from napari_blendphot.models.precision import resolve_precision

        resolve_precision(precision, source="precision")  # refuse a bad value now, not in the worker
        self.precision = precision.lower()
        self.tta = self._checked_tta(tta)

        self.available = tuple(available_methods())
        self.weights: dict[str, str | None] = {}
        if methods is None:
            # Networks without a shipped model start unticked (choosing a file ticks them), and so
            # do the opt-in comparison methods.
            methods = [name for name in self.available
                       if _info(name).default_run and self._has_default_weights(name)
                       and not _unavailable(name)]
        self.selected = list(methods)
        self.live = True
        self.chunk_size = int(chunk_size)
        self._engine = engine
        self._owns_engine = engine is None
        self._engine_lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="blendphot-inspector")
        self._counter = itertools.count(1)
        self.latest_request = 0
        self._checked_weights: dict = {}
        self._closed = False
        self._last_compute = float("nan")
        self._premeasured = None

    # -- configuration ----------------------------------------------------------------------
    def set_selected(self, name: str, on: bool) -> None:
        if on and name not in self.selected:
            self.selected = [m for m in self.available if m in self.selected or m == name]
        elif not on and name in self.selected:
            self.selected.remove(name)
        self.methods_changed.emit()

    @staticmethod
    def _has_default_weights(name: str) -> bool:
        """False for a method that takes weights and has no shipped model installed (a cheap check: no hashing)."""
        info = _info(name)
        if not info.accepts_weights:
            return True
        if info.network is None:
            return False
        from napari_blendphot.deblend.registry import shipped_model_of

        try:
            return shipped_model_of(name) is not None
        except InputError:
            return True  # present but unreadable: keep it ticked so that the problem gets reported

    def takes_weights(self, name: str) -> bool:
        """Whether *name* takes a weights file (its row gets a weights button)."""
        return _info(name).accepts_weights

    def precision_methods(self) -> list[str]:
        """The available methods that accept a compute precision."""
        return [name for name in self.available if _info(name).precisions]

    def set_weights(self, name: str, path: str | None) -> None:
        """Use the ``.keras`` file *path* for network *name* (None: the shipped default); ticks it."""
        if path is not None:
            from pathlib import Path

            if not Path(path).is_file():
                raise InputError(path, "model file not found")
        self.weights[name] = path
        if self._engine is not None:
            self._engine.set_method_options(name, **self._options(name))
        if path is not None and name not in self.selected:
            self.selected = [m for m in self.available if m in self.selected or m == name]
        self.methods_changed.emit()

    def set_precision(self, precision: str) -> None:
        """Compute the networks in *precision* ("float32", "bfloat16" or "auto") from the next run on."""
        from napari_blendphot.models.precision import resolve_precision

        resolve_precision(precision, source="network precision")
        self.precision = precision.lower()
        self._set_engine_option(self.precision_methods(), "precision", self.precision, default="float32")
        self.methods_changed.emit()

    def tta_methods(self) -> list[str]:
        """The available methods that average over test-time symmetries (the registry's ``tta``)."""
        return [name for name in self.available if _info(name).tta]

    @staticmethod
    def _checked_tta(tta) -> int:
        from napari_blendphot.deblend.keras_methods import check_tta

        return check_tta(tta, "test-time symmetries")

    def set_tta(self, tta: int) -> None:
        """Average the networks over *tta* symmetries of the blend (1: run once) from the next run on."""
        self.tta = self._checked_tta(tta)
        self._set_engine_option(self.tta_methods(), "tta", self.tta, default=1)
        self.methods_changed.emit()

    def _set_engine_option(self, names, key: str, value, default) -> None:
        """Option *key* of the engine's methods *names*: *value*, left out when it is the methods' *default*.

        The engine's other options (weights set on a borrowed engine, say) are kept.
        """
        if self._engine is None:
            return
        for name in names:
            options = dict(self._engine.method_options.get(name, {}))
            options.pop(key, None)
            if value != default:
                options[key] = value
            self._engine.set_method_options(name, **options)

    def _resolved_precision(self) -> str:
        from napari_blendphot.models.precision import resolve_precision

        return resolve_precision(self.precision)

    def precision_description(self) -> str:
        """The precision the networks will use, in words ("auto" says what it resolves to here)."""
        from napari_blendphot.models.precision import resolve_precision

        if self.precision == "auto":
            return f"auto: {resolve_precision('auto')} on this CPU"
        return self.precision

    def weights_description(self, name: str) -> str:
        """What weights *name* will use, in words (for the view)."""
        from pathlib import Path

        if self.weights.get(name):
            return Path(self.weights[name]).name
        info = _info(name)
        if not info.accepts_weights:
            return ""
        if info.network is None:
            return "no shipped model"
        try:
            from napari_blendphot.deblend.registry import shipped_model_of

            manifest = shipped_model_of(name)
        except InputError as exc:
            return f"shipped model unreadable: {exc.problem}"
        return f"shipped: {manifest.name}" if manifest is not None else "no shipped model"

    def _options(self, name: str) -> dict:
        options = {}
        if self.weights.get(name):
            options["weights"] = str(self.weights[name])
        if _info(name).precisions and self.precision != "float32":
            # float32 is the networks' default: left out, the options stay those of a plain engine.
            options["precision"] = self.precision
        if _info(name).tta and self.tta != 1:
            options["tta"] = self.tta
        return options

    def check_method(self, name: str) -> str | None:
        """Why *name* cannot run now (None if it can): a missing program or package, a network without weights."""
        from napari_blendphot.deblend.registry import unavailable_reason

        try:
            reason = unavailable_reason(name)
        except InputError as exc:
            return str(exc)
        if reason:
            return f"{name}: {reason}"
        info = _info(name)
        if not info.accepts_weights or self.weights.get(name):
            return None
        if info.network is None:
            return f"{name}: no weights chosen — choose a .keras file with its '…' button"
        from napari_blendphot.deblend.registry import shipped_model_of
        from napari_blendphot.models import manifests
        from napari_blendphot.models.manifests import WEIGHTS_DIR

        try:
            manifest = shipped_model_of(name)
        except InputError as exc:
            return (f"{name}: the shipped model's manifest cannot be read ({exc}); "
                    "reinstall napari-blendphot or choose a .keras file for it")
        if manifest is None:
            return (f"{name}: no shipped model installed (in {WEIGHTS_DIR}) — "
                    "choose a .keras file with its '…' button")
        # The model's file, and those of the shipped members an ensemble shares (verify checks them too).
        paths = [manifest.path] + [manifest.path.parent / str(entry.get("file", ""))
                                   for entry in (manifest.architecture.get("shared_members") or [])
                                   if isinstance(entry, dict)]
        key = tuple((str(path), path.stat().st_size if path.is_file() else -1,
                     path.stat().st_mtime_ns if path.is_file() else -1) for path in paths)
        if key not in self._checked_weights:
            try:
                manifests.verify(manifest)
                self._checked_weights[key] = None
            except InputError as exc:
                self._checked_weights[key] = (f"{name}: the shipped model is unusable: {exc}; "
                                              "or choose a .keras file for it")
        return self._checked_weights[key]

    # -- engine -------------------------------------------------------------------------------
    @property
    def engine(self):
        """The inference engine (created on first use; its worker starts on the first request)."""
        with self._engine_lock:
            if self._closed:
                raise WorkerError("the Deblend Inspector is closed")
            if self._engine is None:
                from napari_blendphot.deblend.engine import InferenceEngine

                self._engine = InferenceEngine(chunk_size=self.chunk_size)
                for name in self.available:
                    options = self._options(name)
                    if options:
                        self._engine.set_method_options(name, **options)
            return self._engine

    @property
    def engine_started(self) -> bool:
        return self._engine is not None and self._engine.worker_pid is not None

    def close(self) -> None:
        """Stop the background thread and the worker process."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._engine_lock:
            engine, self._engine = self._engine, None
        if engine is not None and self._owns_engine:
            engine.close()

    # -- one blend ----------------------------------------------------------------------------
    def inspect(self, state: BlendState, methods=None, partial=None) -> concurrent.futures.Future:
        """Run the methods on *state* in the background; returns a Future of :class:`Inspection`.

        Every call gets a new request id (``future.request_id``); a request
        that is still queued when a newer one arrives is skipped (its future
        gives an Inspection with ``note == "superseded"`` and no outputs), so
        a burst of changes costs one run, not one per change.

        With *partial* (``partial(Inspection)``, called from the background
        thread), the methods that need no worker-only library (SEP) run first
        and are reported at once; the networks follow, unless a newer request
        has arrived meanwhile (then the result is "superseded").  With slow
        networks the fast overlays then keep up with the user.
        """
        request_id = next(self._counter)
        self.latest_request = request_id
        methods = list(self.selected if methods is None else methods)
        future = self._executor.submit(self._inspect, request_id, state, methods, partial)
        future.request_id = request_id
        return future

    def is_latest(self, inspection: Inspection) -> bool:
        return inspection.request_id == self.latest_request

    def _inspect(self, request_id: int, state: BlendState, methods, partial=None) -> Inspection:
        import time

        from napari_blendphot.deblend.registry import method_info

        result = Inspection(request_id, state)
        if request_id != self.latest_request:
            result.note = "superseded"
            return result
        start = time.perf_counter()
        runnable = []
        for name in methods:
            problem = self.check_method(name)
            if problem:
                result.errors[name] = problem
            else:
                runnable.append(name)
        context = truth_context(state.truth) if state.truth is not None else None
        fast = [name for name in runnable if not method_info(name).needs_worker]
        phases = [fast, [name for name in runnable if name not in fast]] if partial and fast else [runnable]
        phases = [phase for phase in phases if phase]
        for number, phase in enumerate(phases):
            if number > 0:
                if "worker" in result.errors:  # it died: the next request starts a new one
                    break
                self._finish(result, methods, start)
                partial(result)
                if request_id != self.latest_request:  # the user moved on: skip the slow methods
                    return Inspection(request_id, state, note="superseded")
                result = Inspection(request_id, state, dict(result.outputs), errors=dict(result.errors),
                                    timings=dict(result.timings))
            request_start = time.perf_counter()
            self._last_compute = float("nan")
            self._premeasured = None
            # One phase: the worker measures too, straight after the methods (no GUI-process CPU or GIL).
            result.outputs.update(self._run_methods(state, context, phase, result.errors,
                                                    measure_in_worker=self.measure_in_worker and len(phases) == 1))
            result.timings["request"] = result.timings.get("request", 0.0) + time.perf_counter() - request_start
            result.timings["compute"] = result.timings.get("compute", 0.0) + self._last_compute
        self._finish(result, methods, start, self._premeasured)
        self._premeasured = None
        return result

    @staticmethod
    def _finish(result: Inspection, methods, start: float, premeasured=None) -> None:
        import time

        result.outputs = {name: result.outputs[name] for name in methods if name in result.outputs}
        if premeasured is not None and premeasured[0] == tuple(result.outputs):
            result.rows, result.table, result.timings["measure"] = premeasured[1]
        elif result.outputs:
            measure_start = time.perf_counter()
            try:
                result.rows, result.table = measure(result.state, result.outputs)
            except InputError as exc:
                result.errors["measurements"] = str(exc)
            result.timings["measure"] = time.perf_counter() - measure_start
        if result.state.truth is None or not has_usable_truth(result.state.truth):
            result.note = NO_TRUTH_NOTE
        result.seconds = time.perf_counter() - start

    def _run_methods(self, state, context, names, errors, measure_in_worker: bool = False) -> dict:
        """Outputs of *names* on *state*; a failing method is recorded in *errors*, the others still run.

        With *measure_in_worker*, the worker also computes the table lines
        (:func:`timed_measure`), kept in ``self._premeasured``.
        """
        engine = self.engine
        try:
            if measure_in_worker:
                outputs, measured = engine.run_then(state.image, context, names, timed_measure, state.truth)
                self._premeasured = (tuple(outputs), measured)
            else:
                outputs = engine.run(state.image, context, methods=names)
            self._last_compute = sum(engine.last_compute_seconds.values())
            return outputs
        except Exception as exc:
            if getattr(exc, "in_post", False):  # the methods ran; measuring here reports the problem
                self._last_compute = sum(engine.last_compute_seconds.values())
                return exc.partial
            worker_gone = getattr(exc, "exitcode", None) is not None or not engine.worker_pid
            if isinstance(exc, WorkerError) and worker_gone:
                errors["worker"] = f"{exc}. The inspector will use a new worker on the next change or 'Run'."
                return {}
            # A method refused (or the worker failed one): find which, keep the others.
            return self._one_by_one(engine, state, context, names, errors)

    @staticmethod
    def _one_by_one(engine, state, context, methods, errors) -> dict:
        outputs = {}
        for name in methods:
            try:
                outputs.update(engine.run(state.image, context, methods=[name]))
            except WorkerError as exc:
                hint = "; the next request starts a new worker" if getattr(exc, "exitcode", None) is not None else ""
                errors[name] = f"{name}: {exc}{hint}"
            except Exception as exc:  # reported to the user, the other methods go on
                errors[name] = f"{name}: {exc}"
        return outputs

    # -- a blend set --------------------------------------------------------------------------
    def run_blend_set(self, blend_set, split: str | None = None, methods=None, progress=None,
                      cancel: threading.Event | None = None):
        """Run the methods over *blend_set* (or its *split*) chunk by chunk; returns a results table.

        The run is :func:`napari_blendphot.predict` in this model's engine.
        *progress(done, total)* is called after each chunk; when *cancel* is
        set the run stops after the current chunk and raises
        :class:`~napari_blendphot.deblend.engine.Cancelled` with ``.partial``
        (the results table of the chunks done, or None).  Methods that
        cannot run (no weights) raise an InputError before anything runs.
        """
        from napari_blendphot.prediction import predict

        methods = list(self.selected if methods is None else methods)
        if not methods:
            raise InputError("methods", "no method selected", "tick at least one method")
        problems = [p for p in (self.check_method(name) for name in methods) if p]
        if problems:
            raise InputError("methods", "; ".join(problems))
        if blend_set_size(blend_set, split) == 0:
            raise InputError("blend set", f"has no blends{'' if split is None else f' in split {split!r}'}")
        options = {name: self._options(name) for name in methods if self._options(name)}
        return predict(blend_set, methods, split=split, method_options=options, engine=self.engine,
                       chunk_size=self.chunk_size, progress=progress, cancel=cancel)

    def submit_blend_set(self, blend_set, split=None, methods=None, progress=None) -> concurrent.futures.Future:
        """:meth:`run_blend_set` in the model's background thread; ``future.cancel_event`` stops it."""
        cancel = threading.Event()
        future = self._executor.submit(self.run_blend_set, blend_set, split, methods, progress, cancel)
        future.cancel_event = cancel
        return future
