"""The results table: one row per blend, the truth and every method's predictions.

Schema (``docs/results_format.md``, ``docs/architecture.md``):

- the blend catalogue columns (``id, distance, dy, dx, g1_*, g2_*``...);
- per method ``m``: ``g1_flux_<m>``, ``g2_flux_<m>`` (NaN = not detected);
  where the method gives flux errors, ``g1_flux_err_<m>``, ``g2_flux_err_<m>``
  (1 sigma, same units) and ``g1_mag_err_<m>``, ``g2_mag_err_<m>``
  (``2.5 / ln 10 * flux_err / flux``); ``g1_iou_<m>``, ``g2_iou_<m>`` where the
  method makes masks and true masks were given; ``<key>_<m>`` for each
  per-blend extra array (``detection_sep``);
- ``meta``: ``methods`` (list of names), ``zero_points`` ({method: zp}),
  ``flux_errors`` ({method: whether it gives errors}), ``provenance``.

Streaming: :func:`build_results_table` works on any slice of blends, so a
long ``predict`` can build one table per chunk and join them with
:func:`concatenate_results` (``astropy.table.vstack`` that also checks that the
chunks agree on methods and zero points).

:func:`read_results` also reads the paper's published catalogue
(``output_catalog.csv``) and maps it onto this schema.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_blendphot.constants import PAPER_SEXTRACTOR_ZERO_POINT, ZERO_POINT
from napari_blendphot.errors import InputError

__all__ = [
    "PAPER_METHODS",
    "build_results_table",
    "concatenate_results",
    "merge_results",
    "rename_method",
    "is_paper_catalog",
    "method_label",
    "methods_in",
    "read_results",
    "results_from_paper_catalog",
    "write_results",
]

#: Short names of the paper's catalogue -> our method names.
PAPER_METHODS = {"b2f": "blend2flux", "b2m2f": "blend2mask2flux", "sex": "sextractor"}
#: Labels and colours of the paper catalogue's methods (registered methods have theirs in the registry).
PAPER_LABELS = {"blend2flux": "blend2flux", "blend2mask2flux": "blend2mask2flux", "sextractor": "SExtractor"}
PAPER_COLORS = {"sextractor": "#d1495b"}
_TRUTH_COLUMNS = ("g1_flux", "g2_flux")


def method_label(table, method: str) -> str:
    """Label of *method* for figures: ``meta["labels"]``, the registry's short label, the paper's, or the name."""
    from napari_blendphot.deblend.registry import display_of

    labels = (getattr(table, "meta", None) or {}).get("labels") or {}
    return str(labels.get(method) or display_of(method)[0] or PAPER_LABELS.get(method, method))


def _check_method_name(name) -> str:
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise InputError("deblend outputs", f"invalid method name {name!r}",
                         "method names are column suffixes: letters, digits, '_' and '-'")
    return name


def _as_named_outputs(outputs) -> list[tuple[str, object]]:
    if isinstance(outputs, dict):
        items = list(outputs.items())
    else:
        items = [(getattr(out, "method", None), out) for out in outputs]
    names = [_check_method_name(name) for name, _ in items]
    if len(set(names)) != len(names):
        raise InputError("deblend outputs", f"method names repeat: {names}")
    return list(zip(names, (out for _, out in items)))


def build_results_table(catalog, outputs, true_masks=None, zero_points=None, provenance=None,
                        iou_threshold: float = 0.5):
    """Join a blend catalogue and the outputs of deblending methods into a results table.

    Parameters
    ----------
    catalog : astropy.table.Table
        The blend catalogue rows of these blends (``id, distance, g1_flux``...),
        in the order of the blends.
    outputs : list of DeblendOutput, or dict {method name: DeblendOutput}
        One per method, each for the same N blends.  A list takes the names
        from ``DeblendOutput.method``.
    true_masks : (N, 2, H, W) array, optional
        True [central, companion] masks; with it, every output carrying masks
        gets ``g1_iou_<m>``, ``g2_iou_<m>``.
    zero_points : dict, optional
        ``{method: zero point}`` of each method's fluxes; 25.96 otherwise.
    provenance : dict, optional
        Stored as ``meta["provenance"]``.
    iou_threshold : float
        Threshold applied to predicted and true masks before the IoU.

    Returns
    -------
    astropy.table.Table
    """
    from astropy.table import Table

    from napari_blendphot.metrics.masks import iou

    if not isinstance(catalog, Table):
        try:
            catalog = Table(catalog)
        except Exception as exc:
            raise InputError("blend catalogue", f"cannot be used as a table: {exc}") from None
    n = len(catalog)
    named = _as_named_outputs(outputs)
    if true_masks is not None:
        true_masks = np.asarray(true_masks)
        if true_masks.ndim != 4 or true_masks.shape[:2] != (n, 2):
            raise InputError("true masks", f"shape {true_masks.shape}, expected ({n}, 2, H, W)")
    zero_points = dict(zero_points or {})
    unknown = sorted(set(zero_points) - {name for name, _ in named})
    if unknown:
        raise InputError("argument zero_points", f"zero points given for unknown method(s) {unknown}")

    table = Table(catalog, copy=True)
    table.meta = {}
    labels = {}
    with_errors = {}
    intervals = {}
    for name, output in named:
        fluxes = np.asarray(output.fluxes, dtype=np.float64)
        if fluxes.shape != (n, 2):
            raise InputError(f"{name} output", f"fluxes of shape {fluxes.shape} for {n} blends, expected ({n}, 2)")
        for column in (f"g1_flux_{name}", f"g2_flux_{name}"):
            if column in table.colnames:
                raise InputError("blend catalogue", f"already has a column {column!r}")
        table[f"g1_flux_{name}"] = fluxes[:, 0]
        table[f"g2_flux_{name}"] = fluxes[:, 1]
        errors = getattr(output, "flux_errors", None)
        with_errors[name] = errors is not None
        if errors is not None:
            flux_errors, mag_errors = _checked_errors(name, fluxes, errors)
            for index, galaxy in enumerate(("g1", "g2")):
                table[f"{galaxy}_flux_err_{name}"] = flux_errors[:, index]
                table[f"{galaxy}_mag_err_{name}"] = mag_errors[:, index]
        masks = getattr(output, "masks", None)
        given_iou = getattr(output, "iou", None)
        if given_iou is not None and (masks is None or true_masks is None):
            # Computed by the engine where the masks were (the masks themselves stayed there).
            values = np.asarray(given_iou, np.float64)
            if values.shape != (n, 2):
                raise InputError(f"{name} output", f"IoU of shape {values.shape} for {n} blends, expected ({n}, 2)")
            table[f"g1_iou_{name}"] = values[:, 0]
            table[f"g2_iou_{name}"] = values[:, 1]
        elif masks is not None and true_masks is not None:
            masks = np.asarray(masks)
            if masks.shape != true_masks.shape:
                raise InputError(f"{name} output", f"masks of shape {masks.shape}, true masks {true_masks.shape}")
            values = iou(masks, true_masks, iou_threshold, source=f"{name} masks")
            table[f"g1_iou_{name}"] = values[:, 0]
            table[f"g2_iou_{name}"] = values[:, 1]
        for key, values in sorted((getattr(output, "extra", None) or {}).items()):
            values = np.asarray(values)
            if values.shape != (n,):
                raise InputError(f"{name} output", f"extra array {key!r} has shape {values.shape}, expected ({n},)")
            if f"{key}_{name}" in table.colnames:
                raise InputError(f"{name} output", f"extra array {key!r} would overwrite the column "
                                 f"{key}_{name!s} (a flux, flux error, IoU or catalogue column)",
                                 "rename the key in the method's DeblendOutput.extra; flux errors belong in "
                                 "DeblendOutput.flux_errors")
            table[f"{key}_{name}"] = values
        metadata = getattr(output, "metadata", None) or {}
        label = metadata.get("label")
        if label:
            labels[name] = str(label)
        if errors is not None and metadata.get("flux_error_k95"):
            intervals[name] = {role: float(value) for role, value in metadata["flux_error_k95"].items()}
    table.meta["methods"] = [name for name, _ in named]
    table.meta["zero_points"] = {name: float(zero_points.get(name, ZERO_POINT)) for name, _ in named}
    table.meta["flux_errors"] = with_errors
    if intervals:  # the calibrated 95% intervals: flux +- k95 x flux_err (docs/uncertainty.md)
        table.meta["flux_error_k95"] = intervals
    if labels:
        table.meta["labels"] = labels
    table.meta["provenance"] = dict(provenance or {})
    return table


#: ``mag_err = MAG_PER_RELATIVE_FLUX * flux_err / flux`` (first order of ``-2.5 log10``).
MAG_PER_RELATIVE_FLUX = 2.5 / np.log(10.0)


def _checked_errors(name: str, fluxes: np.ndarray, errors) -> tuple[np.ndarray, np.ndarray]:
    """(flux errors, magnitude errors) (N, 2); NaN where the flux is not measured, never NaN or inf where it is."""
    errors = np.asarray(errors, dtype=np.float64)
    if errors.shape != fluxes.shape:
        raise InputError(f"{name} output", f"flux errors of shape {errors.shape}, fluxes {fluxes.shape}")
    measured = np.isfinite(fluxes)
    bad = measured & ~(np.isfinite(errors) & (errors >= 0))
    if bad.any():
        raise InputError(f"{name} output", f"{int(bad.sum())} measured flux(es) have a NaN, infinite or negative "
                         "error", "a method must give a finite error for every flux it measures")
    errors = np.where(measured, errors, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        mags = np.where(measured & (fluxes > 0), MAG_PER_RELATIVE_FLUX * errors / fluxes, np.nan)
    return errors, mags


def concatenate_results(tables):
    """Stack results tables of consecutive chunks (same methods and zero points) into one."""
    from astropy.table import vstack

    tables = list(tables)
    if not tables:
        raise InputError("results chunks", "nothing to concatenate")
    first = tables[0]
    for index, table in enumerate(tables[1:], start=1):
        for key in ("methods", "zero_points", "flux_errors"):
            if table.meta.get(key) != first.meta.get(key):
                raise InputError("results chunks", f"chunk {index} has {key} {table.meta.get(key)!r}, "
                                 f"chunk 0 has {first.meta.get(key)!r}")
        if table.colnames != first.colnames:
            raise InputError("results chunks", f"chunk {index} has different columns")
    out = vstack(tables, join_type="exact", metadata_conflicts="silent")
    out.meta = dict(first.meta)
    return out


def rename_method(table, old: str, new: str, label: str | None = None):
    """A copy of *table* in which method *old* is called *new* (its columns ``*_<old>`` and its metadata)."""
    _check_method_name(new)
    methods = methods_in(table)
    if old not in methods:
        raise InputError("results table", f"has no method {old!r}")
    if new in methods and new != old:
        raise InputError("results table", f"already has a method {new!r}")
    out = table.copy()
    for name in table.colnames:
        if name.endswith(f"_{old}"):
            out.rename_column(name, name[: -len(old)] + new)
    meta = out.meta
    meta["methods"] = [new if m == old else m for m in methods]
    for key in ("zero_points", "labels", "flux_errors"):
        if isinstance(meta.get(key), dict) and old in meta[key]:
            meta[key] = {(new if m == old else m): v for m, v in meta[key].items()}
    if label is not None:
        meta.setdefault("labels", {})[new] = str(label)
    return out


def merge_results(tables, provenance: dict | None = None):
    """One results table with the method columns of all *tables*, joined on the blend ``id``.

    Every table must hold the same blends (same ids and the same truth
    columns); method columns must not repeat.  Each method keeps what its
    table records of it: zero point, label, error columns, calibrated 95%
    multiple (``flux_error_k95``) and its provenance (``method_metadata``:
    weights, precision, tta), the last under the merged table's provenance.
    """
    from astropy.table import Table

    tables = list(tables)
    if not tables:
        raise InputError("results tables", "nothing to merge")
    base = tables[0]
    ids = np.asarray(base["id"])
    merged = Table(base, copy=True)
    methods = list(methods_in(base))
    zero_points = dict(base.meta.get("zero_points") or {})
    labels = dict(base.meta.get("labels") or {})
    flux_errors = dict(base.meta.get("flux_errors") or {})
    k95, method_metadata = {}, {}

    def keep_method_records(table, method):
        if method in (table.meta.get("flux_error_k95") or {}):
            k95[method] = table.meta["flux_error_k95"][method]
        recorded = ((table.meta.get("provenance") or {}).get("parameters") or {}).get("method_metadata") or {}
        if method in recorded:
            method_metadata[method] = recorded[method]

    for method in methods:
        keep_method_records(base, method)
    for index, table in enumerate(tables[1:], start=1):
        other_ids = np.asarray(table["id"])
        if set(other_ids.tolist()) != set(ids.tolist()) or len(other_ids) != len(ids):
            raise InputError(f"results table {index}", "holds other blends than the first table")
        order = np.argsort(other_ids)[np.searchsorted(np.sort(other_ids), ids)]
        for column in ("g1_flux", "g2_flux"):
            if not np.allclose(np.asarray(table[column])[order], np.asarray(base[column]), rtol=1e-6):
                raise InputError(f"results table {index}", f"column {column} differs from the first table's")
        for method in methods_in(table):
            if method in methods:
                raise InputError(f"results table {index}", f"method {method!r} appears twice")
            methods.append(method)
            zero_points[method] = (table.meta.get("zero_points") or {}).get(method, ZERO_POINT)
            if method in (table.meta.get("labels") or {}):
                labels[method] = table.meta["labels"][method]
            if method in (table.meta.get("flux_errors") or {}):
                flux_errors[method] = table.meta["flux_errors"][method]
            keep_method_records(table, method)
            for column in table.colnames:
                if column.endswith(f"_{method}"):
                    merged[column] = np.asarray(table[column])[order]
    merged.meta = {"methods": methods, "zero_points": zero_points, "provenance": dict(provenance or {})}
    if method_metadata:
        merged.meta["provenance"]["parameters"] = {**(merged.meta["provenance"].get("parameters") or {}),
                                                   "method_metadata": method_metadata}
    if k95:
        merged.meta["flux_error_k95"] = k95
    if labels:
        merged.meta["labels"] = labels
    if flux_errors:
        merged.meta["flux_errors"] = flux_errors
    return merged


def methods_in(table) -> list[str]:
    """Method names of a results table (``meta["methods"]``, else found from ``g1_flux_<m>`` columns)."""
    methods = (getattr(table, "meta", None) or {}).get("methods")
    if methods:
        return [str(m) for m in methods]
    # "g1_flux_err_<m>" is an extra column of method <m> (SEP's flux errors), not a method "err_<m>"
    found = [name[len("g1_flux_"):] for name in table.colnames
             if name.startswith("g1_flux_") and not name.startswith("g1_flux_err_")]
    return [m for m in found if f"g2_flux_{m}" in table.colnames]


def results_targets(output) -> list[Path]:
    """The CSV and FITS files of a results output: a stem (``out/results``) or a ``.csv``/``.fits`` path.

    The extension is recognised in any case (``OUT.CSV`` -> ``OUT.CSV`` and
    ``OUT.fits``); an output naming a folder (``dir/``, or an existing
    folder) is refused: the stem would otherwise become ``dir.csv`` beside it.
    """
    text = os.fspath(output)
    if not text or text.endswith(("/", os.sep)) or Path(text).is_dir():
        raise InputError(text or "''", "is a folder; give a file name or stem for the results table",
                         "e.g. DIR/results, which writes DIR/results.csv and DIR/results.fits")
    path = Path(text)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return [path, path.with_suffix(".fits")]
    if suffix == ".fits":
        return [path.with_suffix(".csv"), path]
    return [path.with_name(path.name + ".csv"), path.with_name(path.name + ".fits")]


def is_results_file(path) -> bool:
    """A results table this project wrote (a table whose metadata carry a provenance record)."""
    from napari_blendphot.outputs import table_provenance

    return table_provenance(path) is not None


def check_results_output(output, overwrite: bool, inputs=(), source=None) -> list[Path]:
    """Check a results output before computing; return its two files (:func:`results_targets`).

    The folder must exist and be writable, no input may be one of the files,
    and an existing file is replaced only with *overwrite* and only when it is
    a results table blendphot wrote.  One exception: a lone file of the pair
    (CSV without FITS or the reverse) that blendphot wrote is what a run
    killed between the two files left, and it is replaced without
    *overwrite*, so that a rerun completes the pair.
    """
    from napari_blendphot.errors import OutputExistsError
    from napari_blendphot.outputs import check_inputs_outside, check_output_location, check_replaceable_file

    targets = results_targets(output)
    source = str(output) if source is None else source
    if not targets[0].parent.is_dir():
        raise InputError(source, f"output folder {str(targets[0].parent)!r} does not exist")
    for target in targets:
        check_output_location(target, "file", source=source)
        check_inputs_outside(target, inputs, source)
    present = [t for t in targets if os.path.lexists(t)]
    if len(present) == 1 and not overwrite and present[0].is_file() and is_results_file(present[0]):
        return targets  # half a pair: an interrupted write, completed by this one
    for target in targets:
        try:
            check_replaceable_file(target, overwrite, is_results_file, "a results table")
        except OutputExistsError:
            raise OutputExistsError(target) from None
    return targets


def write_results(table, stem_or_path, overwrite: bool = False) -> list[Path]:
    """Write a results table as CSV and FITS, as one step.

    *stem_or_path* is either a stem (``out/results`` -> ``out/results.csv`` and
    ``out/results.fits``) or a path ending in ``.csv``/``.fits`` (the other
    format is written beside it).  Nothing is written if either file exists
    and *overwrite* is false (except half a pair left by an interrupted
    write, see :func:`check_results_output`).

    Both files are written under temporary names first; then the old FITS
    file goes, the new CSV and the new FITS take their names.  A kill at any
    point leaves the old pair, the old or new CSV alone (which a rerun
    recognises and completes), or the new pair: never a CSV and a FITS file of
    different runs.
    """
    from napari_blendphot.atomic import fsync_path, install_file, partial_name, remove_stale_partials
    from napari_blendphot.tables import discard_table_file, install_table_file, write_table_file

    _validate(table, "results table", require_truth=False)
    targets = check_results_output(stem_or_path, overwrite)
    remove_stale_partials(targets[0].parent, targets[0].name)
    remove_stale_partials(targets[1].parent, targets[1].name)
    staged = [partial_name(targets[0], ".csv"), partial_name(targets[1], ".fits")]
    try:
        write_table_file(table, staged[0], "csv")
        write_table_file(table, staged[1], "fits")
        for path in staged:
            fsync_path(path)
        replace = [os.path.lexists(t) for t in targets]  # checked above: ours to replace
        if replace[1]:
            os.unlink(targets[1])
        install_table_file(staged[0], targets[0], "csv", replace=replace[0])
        install_file(staged[1], targets[1], replace=False)
    except BaseException:
        for path in staged:
            discard_table_file(path)
        raise
    fsync_path(targets[0].parent)
    return targets


def is_paper_catalog(table) -> bool:
    """Whether *table* has the columns of the paper's published ``output_catalog.csv``."""
    return all(f"{g}_flux_{short}" in table.colnames for g in ("g1", "g2") for short in PAPER_METHODS)


def results_from_paper_catalog(table, source: str = "paper catalogue"):
    """Map the paper's published catalogue onto the results-table schema.

    ``*_b2f`` -> ``*_blend2flux``, ``*_b2m2f`` -> ``*_blend2mask2flux``,
    ``*_sex`` -> ``*_sextractor`` (zero point 25.67, the paper's), ``detection``
    -> ``detection_sextractor``; empty SExtractor fluxes become NaN; the
    ``g*_sex_mag`` columns are dropped (they are ``25.67 - 2.5 log10(flux)``).
    """
    from astropy.table import Table

    out = Table()
    for name in table.colnames:
        if name in ("g1_sex_mag", "g2_sex_mag"):
            continue
        column = table[name]
        values = column.filled(np.nan) if (hasattr(column, "filled") and column.dtype.kind == "f") else column
        new_name = name
        for short, method in PAPER_METHODS.items():
            if name.endswith(f"_flux_{short}"):
                new_name = name[: -len(short)] + method
        if name == "detection":
            new_name = "detection_sextractor"
        out[new_name] = np.asarray(values)
    out.meta["methods"] = list(PAPER_METHODS.values())
    out.meta["zero_points"] = {"blend2flux": ZERO_POINT, "blend2mask2flux": ZERO_POINT,
                               "sextractor": PAPER_SEXTRACTOR_ZERO_POINT}
    out.meta["labels"] = dict(PAPER_LABELS)
    out.meta["provenance"] = {"step": "paper-catalogue", "source": source,
                              "reference": "Boucaud et al. 2020, MNRAS 491, 2481 (arXiv:1905.01324)"}
    return out


def read_results(path, require_truth: bool = True):
    """Read a results table (our CSV/FITS, or the paper's ``output_catalog.csv``).

    Checks the schema: every method has both flux columns, and with
    *require_truth* the true fluxes ``g1_flux``/``g2_flux`` exist and are
    finite and positive.  Predicted NaN (or empty) fluxes are kept as NaN.
    """
    from napari_blendphot.provenance import sha256_file
    from napari_blendphot.tables import read_table

    path = Path(os.fspath(path))
    table = read_table(path)
    if is_paper_catalog(table):
        table = results_from_paper_catalog(table, source=path.name)
        table.meta["provenance"]["sha256"] = sha256_file(path)
    else:
        for name in table.colnames:
            column = table[name]
            if hasattr(column, "filled") and column.dtype.kind == "f":
                table[name] = np.asarray(column.filled(np.nan))
        _check_methods_meta(table, path)
        table.meta.setdefault("methods", methods_in(table))
        table.meta.setdefault("zero_points", {})
        table.meta.setdefault("provenance", {})
    _validate(table, path, require_truth)
    return table


#: Columns of a results table that hold numbers, when present (per-method ones are added).
_NUMERIC_COLUMNS = ("id", "distance", "dy", "dx", "g1_flux", "g2_flux", "g1_mag", "g2_mag", "g1_rad", "g2_rad")
#: Columns that hold text, when present.
_TEXT_COLUMNS = ("split", "g1_type", "g2_type")


def _check_column_kinds(table, source, methods) -> None:
    """Numbers where numbers belong, decodable text where text belongs (damaged files fail here, by name)."""
    numeric = [*_NUMERIC_COLUMNS]
    for method in methods:
        numeric += [f"{g}_{what}_{method}" for g in ("g1", "g2") for what in ("flux", "iou")]
    for name in numeric:
        if name in table.colnames and table[name].dtype.kind not in "iuf":
            raise InputError(source, f"column {name!r} is not numeric (dtype {table[name].dtype})")
    for name in _TEXT_COLUMNS:
        if name in table.colnames and table[name].dtype.kind == "S":
            try:
                table[name] = np.char.decode(np.asarray(table[name]), "ascii")
            except UnicodeDecodeError:
                raise InputError(source, f"column {name!r} holds bytes that are not text") from None


def _check_methods_meta(table, source) -> None:
    listed = (getattr(table, "meta", None) or {}).get("methods")
    if listed is not None and (not isinstance(listed, list) or not all(isinstance(m, str) and m for m in listed)):
        raise InputError(source, f"metadata 'methods' is {listed!r}, not a list of method names")


#: Largest flux a results table may hold (magnitude -11.5 at zero point 25.96): anything
#: beyond is a damaged value, and 1e300 would overflow the statistics' squares.
MAX_FLUX = 1e15
#: Values a detection-case column may hold (-1: SEP assigned nothing; 0-3: the paper's cases).
DETECTION_VALUES = (-1, 0, 1, 2, 3)


def _check_rows_unique(table, source) -> None:
    """One row per blend: a repeated blend id would count the blend twice in every statistic."""
    if "id" not in table.colnames or len(table) < 2:
        return
    ids = np.asarray(table["id"])
    values, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if np.any(counts > 1):
        repeated = int(np.argmax(counts > 1))
        raise InputError(source, f"blend id {values[repeated]} appears in {counts[repeated]} rows "
                                 f"({int(np.sum(counts > 1))} id(s) repeat)",
                         "a results table has one row per blend: were rows pasted twice?")


def _as_float(column) -> np.ndarray:
    values = column.astype(np.float64).filled(np.nan) if hasattr(column, "filled") else column
    return np.asarray(values, dtype=np.float64)


def _check_value_ranges(table, source, methods) -> None:
    """Values no method can produce: detection cases outside -1..3, IoU outside [0, 1], infinite or absurd fluxes."""
    for name in table.colnames:
        if name.startswith("detection_") and table[name].dtype.kind in "iuf":
            values = _as_float(table[name])
            bad = ~np.isin(values, DETECTION_VALUES)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise InputError(source, f"column {name!r} holds {values[row]:g} (row {row}); detection cases are "
                                         "-1 (nothing assigned), 0, 1, 2, 3")
    for method in methods:
        for galaxy in ("g1", "g2"):
            name = f"{galaxy}_iou_{method}"
            if name in table.colnames:
                values = _as_float(table[name])
                bad = ~np.isnan(values) & ~((values >= 0) & (values <= 1))
                if bad.any():
                    row = int(np.flatnonzero(bad)[0])
                    raise InputError(source, f"column {name!r} holds {values[row]:g} (row {row}); an IoU lies "
                                             "in [0, 1] (or is empty)")
    flux_columns = [c for c in _TRUTH_COLUMNS if c in table.colnames]
    flux_columns += [f"{g}_flux_{m}" for m in methods for g in ("g1", "g2") if f"{g}_flux_{m}" in table.colnames]
    for name in flux_columns:
        values = _as_float(table[name])
        bad = np.isinf(values) | (np.abs(np.nan_to_num(values)) > MAX_FLUX)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(source, f"column {name!r} holds {values[row]:g} (row {row}), beyond any flux "
                                     f"(|flux| <= {MAX_FLUX:g}; an undetected galaxy is an empty cell or NaN)")


def _validate(table, source, require_truth: bool = True) -> None:
    from napari_blendphot.metrics.photometry import check_true_flux

    _check_methods_meta(table, source)
    methods = methods_in(table)
    if not methods:
        raise InputError(source, "no method columns (g1_flux_<method>, g2_flux_<method>) found",
                         "is this a results table written by 'blendphot predict'?")
    for method in methods:
        for galaxy in ("g1", "g2"):
            if f"{galaxy}_flux_{method}" not in table.colnames:
                raise InputError(source, f"method {method!r} is listed but column {galaxy}_flux_{method!r} is missing")
    _check_column_kinds(table, source, methods)
    _check_rows_unique(table, source)
    _check_value_ranges(table, source, methods)
    zero_points = table.meta.get("zero_points") or {}
    if not isinstance(zero_points, dict):
        raise InputError(source, f"metadata 'zero_points' is {zero_points!r}, not a mapping of method to number")
    for method, value in zero_points.items():
        if not isinstance(value, (int, float)) or not np.isfinite(value):
            raise InputError(source, f"zero point of {method!r} is {value!r}, not a number")
    if require_truth:
        missing = [name for name in _TRUTH_COLUMNS if name not in table.colnames]
        if missing:
            raise InputError(source, f"missing true-flux column(s) {missing}",
                             "evaluation needs the blend catalogue's g1_flux and g2_flux")
        for name in _TRUTH_COLUMNS:
            column = table[name]
            # Empty cells -> NaN, via float: an integer column cannot hold NaN.
            values = column.astype(np.float64).filled(np.nan) if hasattr(column, "filled") else column
            check_true_flux(np.asarray(values, dtype=np.float64), f"{source}: column {name}")
