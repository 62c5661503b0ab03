"""Statistics of dmag in bins (paper Figures 7-9 and 12).

Everything here works on a *results table* (``docs/results_format.md``):
true fluxes ``g1_flux``/``g2_flux``, predicted fluxes ``g1_flux_<m>``/
``g2_flux_<m>``, zero points in ``table.meta["zero_points"]`` (default 25.96).

Binning conventions
-------------------
- **Pair magnitude difference** of a galaxy = its true magnitude minus the
  true magnitude of the other galaxy of the blend (positive: the galaxy is the
  fainter one).  The paper pairs galaxies with ``|difference| < 2`` and shows
  6 bins: by default the edges are the fixed ``-2, -4/3, ..., 2``; when the data
  reach beyond +-2 (other pairing rules), 6 equal-width bins spanning the data.
- **Distance**: centre separation in pixels, or divided by the central
  galaxy's effective radius (``distance / g1_rad``, the colour of Figure 7);
  6 bins of equal counts (quantile edges) by default.
- **Morphology**: the galaxy's own type (Figure 9) or the (central type,
  companion type) pair (Figure 12).

Bins report the number of galaxies asked for (``n``), how many had no
prediction (``n_undetected``) and the statistics of the detected ones.
"""

from __future__ import annotations

import numpy as np

from napari_blendphot.constants import GALTYPES, OUTLIER_DMAG, ZERO_POINT
from napari_blendphot.errors import InputError
from napari_blendphot.metrics import photometry as phot
from napari_blendphot.metrics.masks import mean_iou
from napari_blendphot.metrics.selection import GALAXIES, GALAXY_PREFIX, select

__all__ = [
    "DEFAULT_PAIR_DMAG_SPAN",
    "N_BINS",
    "binned_by_distance",
    "binned_by_morphology",
    "binned_by_pair_dmag",
    "binned_stats",
    "galaxy_measurements",
    "iou_by_morphology_pair",
    "pair_dmag_edges",
    "stats_by_morphology_pair",
    "zero_point_of",
]

N_BINS = 6
DEFAULT_PAIR_DMAG_SPAN = 2.0
_OTHER = {"central": "companion", "companion": "central"}


def zero_point_of(table, method: str | None) -> float:
    """Zero point of *method*'s fluxes (``meta["zero_points"]``; 25.96 when absent); None = truth."""
    if method is None:
        return ZERO_POINT
    zero_points = table.meta.get("zero_points") or {}
    return float(zero_points.get(method, ZERO_POINT))


def _column(table, name: str) -> np.ndarray:
    if name not in table.colnames:
        raise InputError("results table", f"missing column {name!r}")
    values = table[name]
    if hasattr(values, "filled") and values.dtype.kind == "f":
        return np.asarray(values.filled(np.nan), dtype=np.float64)
    if hasattr(values, "filled"):
        return np.asarray(values.filled())
    return np.asarray(values)


def galaxy_measurements(table, method: str, galaxy: str = "both", selection: str = "detected",
                        detection_column: str | None = None):
    """One row per selected galaxy with its truth, prediction and context.

    Parameters
    ----------
    table : astropy.table.Table
        A results table.
    method : str
        Method name (column suffix).
    galaxy : {"central", "companion", "both"}
        ``"both"`` stacks the central rows, then the companion rows.
    selection : {"detected", "all"}
        See :mod:`napari_blendphot.metrics.selection`.

    Returns
    -------
    astropy.table.Table with columns ``row`` (index in *table*), ``galaxy``,
    ``true_flux``, ``pred_flux``, ``true_mag``, ``pred_mag``, ``dmag`` (NaN if
    undetected), ``detected``, ``pair_dmag``, and where the results table has
    them ``distance``, ``distance_over_radius``, ``type``, ``neighbour_type``,
    ``iou``.
    """
    from astropy.table import Table, vstack

    if galaxy == "both":
        parts = [galaxy_measurements(table, method, g, selection, detection_column) for g in GALAXIES]
        return vstack(parts, metadata_conflicts="silent")
    if galaxy not in GALAXIES:
        raise InputError("argument galaxy", f"unknown galaxy {galaxy!r}", "use central, companion or both")
    prefix, other = GALAXY_PREFIX[galaxy], GALAXY_PREFIX[_OTHER[galaxy]]
    pred_name = f"{prefix}_flux_{method}"
    if pred_name not in table.colnames:
        raise InputError("results table", f"no column {pred_name!r} for method {method!r}")
    rows = np.flatnonzero(select(table, galaxy, selection, detection_column))
    true_flux = phot.check_true_flux(_column(table, f"{prefix}_flux")[rows], f"results table column {prefix}_flux")
    other_flux = phot.check_true_flux(_column(table, f"{other}_flux")[rows], f"results table column {other}_flux")
    pred_flux = _column(table, pred_name)[rows].astype(np.float64)
    found = phot.detected(pred_flux)
    true_mag = phot.flux_to_mag(true_flux, zero_point_of(table, None))
    pred_mag = phot.flux_to_mag(np.where(found, pred_flux, np.nan), zero_point_of(table, method))
    out = Table()
    out["row"] = rows
    out["galaxy"] = np.full(rows.size, galaxy)
    out["true_flux"] = true_flux
    out["pred_flux"] = pred_flux
    out["true_mag"] = true_mag
    out["pred_mag"] = pred_mag
    out["dmag"] = pred_mag - true_mag
    out["detected"] = found
    out["pair_dmag"] = true_mag - phot.flux_to_mag(other_flux, zero_point_of(table, None))
    if "distance" in table.colnames:
        distance = _column(table, "distance")[rows].astype(np.float64)
        out["distance"] = distance
        if "g1_rad" in table.colnames:
            radius = _column(table, "g1_rad")[rows].astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                out["distance_over_radius"] = np.where(radius > 0, distance / radius, np.nan)
    if f"{prefix}_type" in table.colnames and f"{other}_type" in table.colnames:
        out["type"] = np.asarray(_column(table, f"{prefix}_type")[rows]).astype(str)
        out["neighbour_type"] = np.asarray(_column(table, f"{other}_type")[rows]).astype(str)
    if f"{prefix}_iou_{method}" in table.colnames:
        out["iou"] = _column(table, f"{prefix}_iou_{method}")[rows].astype(np.float64)
    return out


def pair_dmag_edges(values, n_bins: int = N_BINS, span: float = DEFAULT_PAIR_DMAG_SPAN) -> np.ndarray:
    """Bin edges of the pair magnitude difference (fixed +-span unless the data reach beyond)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0 or np.all(np.abs(values) <= span):
        return np.linspace(-span, span, n_bins + 1)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        high = low + 1e-6
    return np.linspace(low, high, n_bins + 1)


def _quantile_edges(values, n_bins: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise InputError("results table", "no finite values to bin")
    edges = np.unique(np.quantile(values, np.linspace(0, 1, n_bins + 1)))
    if edges.size < 2:
        edges = np.array([edges[0], edges[0] + 1e-6])
    return edges


def binned_stats(x, dmag, edges, undetected=None, outlier_threshold: float = OUTLIER_DMAG):
    """Statistics of *dmag* in bins of *x*.

    The last bin includes its upper edge; values outside ``[edges[0],
    edges[-1]]`` are left out.  *undetected* (boolean, same length) flags
    galaxies without a prediction: counted in ``n_undetected``, excluded from
    the statistics (their dmag is NaN anyway).

    Returns
    -------
    astropy.table.Table: ``bin_low, bin_high, bin_center, n, n_undetected,
    mean, median, sigma, nmad, q25, q75, outlier_fraction``.
    """
    from astropy.table import Table

    x = np.asarray(x, dtype=np.float64)
    dmag = np.asarray(dmag, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    if x.shape != dmag.shape:
        raise InputError("binned statistics", f"{x.size} positions for {dmag.size} dmag values")
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise InputError("argument edges", "bin edges must be at least two increasing numbers")
    undetected = np.zeros(x.shape, bool) if undetected is None else np.asarray(undetected, bool)
    index = np.searchsorted(edges, x, side="right") - 1
    index[x == edges[-1]] = edges.size - 2
    rows = []
    for b in range(edges.size - 1):
        inside = index == b
        values = dmag[inside & ~undetected]
        finite = values[np.isfinite(values)]
        q25, q75 = (np.quantile(finite, [0.25, 0.75]) if finite.size else (np.nan, np.nan))
        rows.append((edges[b], edges[b + 1], 0.5 * (edges[b] + edges[b + 1]), int(inside.sum()),
                     int((inside & undetected).sum()), phot.bias(values, "mean"), phot.bias(values, "median"),
                     phot.sigma(values), phot.nmad(values), float(q25), float(q75),
                     phot.outlier_fraction(values, outlier_threshold)))
    names = ("bin_low", "bin_high", "bin_center", "n", "n_undetected", "mean", "median", "sigma", "nmad",
             "q25", "q75", "outlier_fraction")
    return Table(rows=rows, names=names)


def binned_by_pair_dmag(table, method: str, galaxy: str = "both", selection: str = "detected",
                        edges=None, n_bins: int = N_BINS, detection_column: str | None = None):
    """dmag statistics in bins of pair magnitude difference (paper Figures 7-8)."""
    data = galaxy_measurements(table, method, galaxy, selection, detection_column)
    edges = pair_dmag_edges(data["pair_dmag"], n_bins) if edges is None else edges
    out = binned_stats(data["pair_dmag"], data["dmag"], edges, ~np.asarray(data["detected"]))
    out.meta.update(method=method, galaxy=galaxy, selection=selection, x="pair_dmag")
    return out


def binned_by_distance(table, method: str, galaxy: str = "both", selection: str = "detected",
                       normalised: bool = True, edges=None, n_bins: int = N_BINS,
                       detection_column: str | None = None):
    """dmag statistics in bins of separation (``distance / g1_rad`` when *normalised*)."""
    data = galaxy_measurements(table, method, galaxy, selection, detection_column)
    key = "distance_over_radius" if normalised else "distance"
    if key not in data.colnames:
        raise InputError("results table", f"binning by {key} needs the columns 'distance'"
                         + (" and 'g1_rad'" if normalised else ""))
    edges = _quantile_edges(data[key], n_bins) if edges is None else edges
    out = binned_stats(data[key], data["dmag"], edges, ~np.asarray(data["detected"]))
    out.meta.update(method=method, galaxy=galaxy, selection=selection, x=key)
    return out


def binned_by_morphology(table, method: str, galaxy: str = "both", selection: str = "detected",
                         edges=None, n_bins: int = N_BINS, detection_column: str | None = None):
    """Per morphological type of the galaxy, dmag statistics in pair-dmag bins (paper Figure 9).

    Returns the :func:`binned_stats` columns with a leading ``type`` column;
    the same edges are used for every type.
    """
    from astropy.table import vstack

    data = galaxy_measurements(table, method, galaxy, selection, detection_column)
    if "type" not in data.colnames:
        raise InputError("results table", "per-morphology statistics need the columns g1_type and g2_type")
    edges = pair_dmag_edges(data["pair_dmag"], n_bins) if edges is None else edges
    parts = []
    for galtype in _types_in(data["type"]):
        part = data[np.asarray(data["type"]) == galtype]
        stats = binned_stats(part["pair_dmag"], part["dmag"], edges, ~np.asarray(part["detected"]))
        stats.add_column(np.full(len(stats), galtype), name="type", index=0)
        parts.append(stats)
    if not parts:  # an empty selection: no type, no rows (the figure says "no data")
        empty = np.zeros(0)
        stats = binned_stats(empty, empty, edges, np.zeros(0, bool))[:0]
        stats.add_column(np.zeros(0, dtype="U8"), name="type", index=0)
        parts.append(stats)
    out = vstack(parts, metadata_conflicts="silent")
    out.meta = {"method": method, "galaxy": galaxy, "selection": selection, "x": "pair_dmag"}
    return out


def stats_by_morphology_pair(table, method: str, galaxy: str = "both", selection: str = "detected",
                             detection_column: str | None = None):
    """Photometric statistics per (galaxy type, neighbour type)."""
    from astropy.table import Table

    data = galaxy_measurements(table, method, galaxy, selection, detection_column)
    if "type" not in data.colnames:
        raise InputError("results table", "per-morphology statistics need the columns g1_type and g2_type")
    rows = []
    types, neighbours = np.asarray(data["type"]), np.asarray(data["neighbour_type"])
    for own in _types_in(types):
        for other in _types_in(neighbours):
            part = data[(types == own) & (neighbours == other)]
            if len(part) == 0:
                continue
            dmag = np.asarray(part["dmag"])
            rows.append((own, other, len(part), int((~np.asarray(part["detected"])).sum()),
                         phot.bias(dmag), phot.bias(dmag, "median"), phot.sigma(dmag), phot.nmad(dmag),
                         phot.outlier_fraction(dmag)))
    names = ("type", "neighbour_type", "n", "n_undetected", "mean", "median", "sigma", "nmad", "outlier_fraction")
    if not rows:
        return Table(names=names, dtype=("U8", "U8", int, int, float, float, float, float, float))
    return Table(rows=rows, names=names)


def iou_by_morphology_pair(table, method: str):
    """Mean IoU of both galaxies per (central type, companion type) (paper Figure 12).

    Needs ``g1_iou_<m>``, ``g2_iou_<m>``, ``g1_type`` and ``g2_type``; every
    blend is used (segmentation does not depend on the photometric selection).
    """
    from astropy.table import Table

    names = [f"g1_iou_{method}", f"g2_iou_{method}", "g1_type", "g2_type"]
    missing = [n for n in names if n not in table.colnames]
    if missing:
        raise InputError("results table", f"IoU per morphology needs the columns {missing}")
    iou1, iou2 = _column(table, names[0]).astype(float), _column(table, names[1]).astype(float)
    central, companion = _column(table, "g1_type").astype(str), _column(table, "g2_type").astype(str)
    rows = []
    for own in _types_in(central):
        for other in _types_in(companion):
            keep = (central == own) & (companion == other)
            if keep.any():
                rows.append((own, other, int(keep.sum()), mean_iou(iou1[keep]), mean_iou(iou2[keep]),
                             mean_iou(np.concatenate([iou1[keep], iou2[keep]]))))
    names = ("central_type", "companion_type", "n", "mean_iou_central", "mean_iou_companion", "mean_iou")
    if not rows:
        return Table(names=names, dtype=("U8", "U8", int, float, float, float))
    return Table(rows=rows, names=names)


def _types_in(values) -> list[str]:
    """The paper's types in their usual order, then any others alphabetically."""
    present = set(np.asarray(values).astype(str).tolist())
    return [t for t in GALTYPES if t in present] + sorted(present - set(GALTYPES))
