"""``python -m training results``: the round-2 results tables, with uncertainties, from predict tables.

Input: one ``blendphot predict`` results table per test set (for example the
real-galaxy blends, the mock v2 and the mock v1 test blends), each predicted
with the shipped models and SEP.  Output (a folder, written atomically):

- ``summary.ecsv``: per set and method, galaxies measured, flux MAPE with a
  95% bootstrap interval, the size-balanced MAPE (:func:`size_balanced_mape`),
  bias / sigma / NMAD of ``dmag``, outlier fraction,
  mean IoU, and the ratio of SEP's MAPE to the method's with its interval;
- ``bins.ecsv``: flux MAPE and median predicted / true flux per bin of true
  half-light radius (<= 10, 10-21, > 21 px) and of separation;
- ``coverage.ecsv``: coverage of the flux errors at 68% and 95% (overall and
  per pair-dmag and magnitude bin), from :func:`napari_blendphot.report.evaluate.coverage_tables`,
  with 95% bootstrap intervals over galaxies;
- ``matched.ecsv`` (with ``--match-radius REF``): every other set's flux MAPE
  and 68% coverage reweighted to the galaxy radii of the set ``REF``
  (:func:`matched_rows`), to tell a method that does worse on ``REF``'s
  galaxies from one that meets bigger (or smaller) galaxies there;
- ``results.md``: the same as Markdown, also written between the markers
  ``<!-- BEGIN generated: python -m training results -->`` / ``<!-- END ... -->``
  of a document given with ``--update-docs``.

The bootstrap resamples *galaxies*, not blends: a galaxy appears in many
blends and its errors are correlated, so a blend bootstrap would give
intervals far too narrow, most of all on a set of 51 real galaxies.  Each
resample draws galaxy ids with replacement and weights every measurement of
a galaxy by the number of times it was drawn.  Every statistic is the one of
:mod:`napari_blendphot.metrics.photometry`; the resampling is seeded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_blendphot.errors import InputError

BEGIN = "<!-- BEGIN generated: python -m training results -->"
END = "<!-- END generated: python -m training results -->"
RADIUS_BINS = ((0.0, 10.0), (10.0, 21.0), (21.0, np.inf))
SEPARATION_BINS = ((0.0, 10.0), (10.0, 20.0), (20.0, 30.0), (30.0, np.inf))
#: Inner edges (px) of the radius bins of the matched comparison: finer than RADIUS_BINS, because the
#: MAPE changes by a factor 2 between 5 and 21 px and a coarse bin would hide the sets' different sizes.
MATCH_RADIUS_EDGES = (5.0, 10.0, 15.0, 21.0)
#: Inner edges (AB mag) of the magnitude bins crossed with the radius bins in the second matched column.
MATCH_MAG_EDGES = (20.5, 21.5, 22.5)
REFERENCE = "sep"


def _measurements(table, method: str) -> dict:
    """Arrays over every galaxy of every blend (central rows, then companion rows) for *method*."""
    def both(name):
        return np.concatenate([np.asarray(table[f"g1_{name}"]), np.asarray(table[f"g2_{name}"])])

    out = {"true": both("flux").astype(np.float64), "pred": both(f"flux_{method}").astype(np.float64),
           "err": both(f"flux_err_{method}").astype(np.float64) if f"g1_flux_err_{method}" in table.colnames
           else None,
           "id": both("id"), "radius": both("rad").astype(np.float64) if "g1_rad" in table.colnames else None,
           "mag": both("mag").astype(np.float64) if "g1_mag" in table.colnames else None,
           "distance": np.concatenate([np.asarray(table["distance"], np.float64)] * 2)
           if "distance" in table.colnames else None}
    if f"g1_iou_{method}" in table.colnames:
        out["iou"] = both(f"iou_{method}").astype(np.float64)
    return out


def _ape(true, pred) -> np.ndarray:
    """Absolute percentage error, NaN where the method measured nothing (the MAPE's own selection)."""
    found = np.isfinite(pred) & (pred > 0)
    return np.where(found, 100.0 * np.abs(pred - true) / true, np.nan)


def bootstrap_weights(ids, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, len(ids)) weights: how often each measurement's galaxy was drawn in each resample."""
    galaxies, index = np.unique(np.asarray(ids), return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, galaxies.size, galaxies.size), minlength=galaxies.size)
                       for _ in range(n_resamples)])
    return counts[:, index].astype(np.float64)


def _weighted_mean(values, weights) -> np.ndarray:
    ok = np.isfinite(values)
    w = weights * ok
    return (w @ np.where(ok, values, 0.0)) / np.maximum(w.sum(axis=1), 1e-300)


def _interval(samples) -> tuple[float, float]:
    low, high = np.nanpercentile(samples, [2.5, 97.5])
    return float(low), float(high)


def set_summary(table, name: str, n_resamples: int = 1000, seed: int = 0):
    """Rows of ``summary.ecsv`` for one results table (one per method)."""
    from napari_blendphot.metrics import photometry as phot
    from napari_blendphot.metrics.binned import zero_point_of
    from napari_blendphot.report.results import methods_in

    methods = methods_in(table)
    if not methods:
        raise InputError(name, "results table without methods")
    data = {m: _measurements(table, m) for m in methods}
    first = data[methods[0]]
    weights = bootstrap_weights(first["id"], n_resamples, seed)
    apes = {m: _ape(d["true"], d["pred"]) for m, d in data.items()}
    boot = {m: _weighted_mean(apes[m], weights) for m in methods}
    rows = []
    for method in methods:
        d = data[method]
        stats = phot.photometry_stats(d["true"], d["pred"], zp_true=zero_point_of(table, None),
                                      zp_pred=zero_point_of(table, method), source=f"{name}: {method}")
        low, high = _interval(boot[method])
        row = {"set": name, "method": method, "n_galaxies": int(np.unique(first["id"]).size),
               "n": stats.n, "measured_pct": 100.0 * stats.n_detected / max(stats.n, 1),
               "flux_mape_pct": float(np.nanmean(apes[method])), "mape_low": low, "mape_high": high,
               "bias_dmag": stats.mean_dmag, "sigma_dmag": stats.sigma, "nmad_dmag": stats.nmad,
               "outlier_pct": stats.outlier_percent,
               "mean_iou": float(np.nanmean(d["iou"])) if "iou" in d else np.nan,
               "size_balanced_mape_pct": size_balanced_mape(d["radius"], apes[method]),
               "sep_ratio": np.nan, "sep_ratio_low": np.nan, "sep_ratio_high": np.nan}
        if REFERENCE in methods and method != REFERENCE:
            row["sep_ratio"] = float(np.nanmean(apes[REFERENCE]) / np.nanmean(apes[method]))
            row["sep_ratio_low"], row["sep_ratio_high"] = _interval(boot[REFERENCE] / boot[method])
        rows.append(row)
    return rows


def size_balanced_mape(radius, ape) -> float:
    """Mean of the flux MAPEs in the radius bins of :data:`MATCH_RADIUS_EDGES` that hold galaxies (NaN without radii).

    Every size counts alike, however rare it is in the set: the rule that
    chooses between round-6 candidates on the calibration blends.
    """
    if radius is None:
        return np.nan
    bins, count = _match_bins({"radius": radius}, with_mag=False)
    means = [np.nanmean(ape[bins == k]) for k in range(count) if np.isfinite(ape[bins == k]).any()]
    return float(np.mean(means)) if means else np.nan


def set_bins(table, name: str):
    """Rows of ``bins.ecsv``: flux MAPE and median predicted / true flux per radius and separation bin.

    The median ratio tells a method that is off in both directions (scatter)
    from one that is off in one (a bias: over-estimating the real galaxies'
    large members, say), which the MAPE alone cannot.
    """
    from napari_blendphot.report.results import methods_in

    rows = []
    for method in methods_in(table):
        d = _measurements(table, method)
        ape = _ape(d["true"], d["pred"])
        for kind, key, edges in (("radius_px", "radius", RADIUS_BINS), ("separation_px", "distance", SEPARATION_BINS)):
            if d[key] is None:
                continue
            for low, high in edges:
                inside = (d[key] > low) & (d[key] <= high) if low > 0 else (d[key] <= high)
                measured = inside & np.isfinite(ape)
                rows.append({"set": name, "method": method, "binning": kind, "low": low, "high": high,
                             "n": int(inside.sum()),
                             "flux_mape_pct": float(np.nanmean(ape[inside])) if inside.any() else np.nan,
                             "median_ratio": float(np.median(d["pred"][measured] / d["true"][measured]))
                             if measured.any() else np.nan})
    return rows


def coverage_indicators(table, method: str) -> dict:
    """Per measurement (central rows, then companion rows): galaxy ``id``, ``inside_68``/``inside_95``.

    1 where the truth lies within 1 (k95) errors, 0 outside, NaN where the
    method gave no flux or no finite positive error: the same galaxies and
    intervals as :func:`napari_blendphot.metrics.calibration.coverage_arrays`;
    with the true ``pair_dmag`` and ``mag`` the coverage bins are made of.
    """
    from napari_blendphot.metrics import photometry as phot
    from napari_blendphot.metrics.binned import zero_point_of
    from napari_blendphot.metrics.calibration import interval_multiples

    multiples = interval_multiples(table, method)
    d = _measurements(table, method)
    k95 = np.repeat([multiples["central"], multiples["companion"]], len(table))
    usable = np.isfinite(d["true"]) & np.isfinite(d["pred"]) & np.isfinite(d["err"]) & (d["err"] > 0)
    residual = np.abs(d["pred"] - d["true"])
    # The arithmetic of metrics.binned.galaxy_measurements, so that a galaxy on a bin edge falls alike.
    mag = phot.flux_to_mag(d["true"], zero_point_of(table, None))
    pair_dmag = mag - np.concatenate([mag[len(table):], mag[:len(table)]])
    return {"id": d["id"], "pair_dmag": pair_dmag, "mag": mag,
            "inside_68": np.where(usable, (residual <= d["err"]).astype(np.float64), np.nan),
            "inside_95": np.where(usable, (residual <= k95 * d["err"]).astype(np.float64), np.nan)}


def set_coverage(table, name: str, n_resamples: int = 1000, seed: int = 0):
    """Rows of ``coverage.ecsv`` (both galaxies together), every method with errors.

    Every row carries 95% bootstrap intervals over galaxies of the 68% and
    95% coverage (``coverage_68_low`` ... ``coverage_95_high``): a set of a
    few dozen (or a few hundred) galaxies cannot pin a coverage to a point or
    two, overall or in a bin, and the interval says whether a distance from
    nominal is the errors' or the sample's.
    """
    from napari_blendphot.report.evaluate import coverage_tables

    rows, indicators, weights = [], {}, None
    for by, part in coverage_tables(table).items():
        part = part[part["galaxy"] == "both"]
        for r in part:
            row = {"set": name, "method": str(r["method"]), "binning": by, "low": float(r["bin_low"]),
                   "high": float(r["bin_high"]), "n": int(r["n"]),
                   "coverage_68": 100.0 * float(r["coverage_68"]),
                   "coverage_95": 100.0 * float(r["coverage_95"]),
                   "spearman": float(r["spearman"])}
            if row["method"] not in indicators:
                indicators[row["method"]] = coverage_indicators(table, row["method"])
            inside = indicators[row["method"]]
            if weights is None:  # the same galaxies for every method: one set of resamples
                weights = bootstrap_weights(inside["id"], n_resamples, seed)
            in_bin = np.ones(inside["id"].shape, bool)
            if by != "overall":  # the bins of coverage(): the last one closed
                values = inside[by]
                last = row["high"] == max(float(x) for x in part["bin_high"][part["method"] == row["method"]])
                in_bin = (values >= row["low"]) & ((values <= row["high"]) if last else (values < row["high"]))
            for level in ("68", "95"):
                row[f"coverage_{level}_low"] = row[f"coverage_{level}_high"] = np.nan
                if row["n"] > 0:
                    samples = 100.0 * _weighted_mean(np.where(in_bin, inside[f"inside_{level}"], np.nan), weights)
                    row[f"coverage_{level}_low"], row[f"coverage_{level}_high"] = _interval(samples)
            rows.append(row)
    return rows


def _match_bins(d, with_mag: bool):
    """(bin of each measurement, number of bins): radius bins (closed on the right, the end bins open),
    crossed with magnitude bins if *with_mag*."""
    bins = np.searchsorted(np.asarray(MATCH_RADIUS_EDGES), d["radius"], side="left")
    count = len(MATCH_RADIUS_EDGES) + 1
    if with_mag:
        bins = bins * (len(MATCH_MAG_EDGES) + 1) + np.searchsorted(np.asarray(MATCH_MAG_EDGES), d["mag"], side="left")
        count *= len(MATCH_MAG_EDGES) + 1
    return bins, count


def _match_shares(reference, with_mag: bool) -> np.ndarray:
    """Share of *reference*'s measurements in each matching bin."""
    bins, count = _match_bins(reference, with_mag)
    return np.bincount(bins, minlength=count) / max(len(bins), 1)


def _reweighted(values, bins, shares, weights=None):
    """sum_k shares[k] * mean(values in bin k), per bootstrap resample when *weights* (R, N) is given.

    NaN values (galaxies not measured, no error) drop out of their bin's mean, as in the MAPE itself.
    """
    ok = np.isfinite(values)
    filled = np.where(ok, values, 0.0)
    weights = np.ones((1, len(values))) if weights is None else weights
    total = np.zeros(len(weights))
    for k, share in enumerate(shares):
        if share == 0:
            continue
        inside = (bins == k) & ok
        w = weights * inside
        total += share * (w @ filled) / np.where(w.sum(axis=1) > 0, w.sum(axis=1), np.nan)
    return total


def matched_rows(tables: dict, reference: str, n_resamples: int = 1000, seed: int = 0):
    """Rows of ``matched.ecsv``: each set's MAPE and 68% coverage reweighted to *reference*'s galaxy radii.

    For every set other than *reference* and every method both sets have,
    the per-bin flux MAPE (and fraction within +-1 error) in bins of true
    half-light radius (:data:`MATCH_RADIUS_EDGES`) is averaged with the
    shares of *reference*'s measurements in those bins: what the method
    would score on *reference* if it measured *reference*'s galaxies as well
    as this set's galaxies of the same size.  The interval resamples this
    set's galaxies (the reference's shares stay fixed).  A bin *reference*
    fills but this set leaves empty makes the matched numbers NaN.
    ``matched_rm_mape_pct`` does the same in bins of radius crossed with
    true magnitude (:data:`MATCH_MAG_EDGES`), where both sets have magnitudes.
    """
    from napari_blendphot.report.results import methods_in

    if reference not in tables:
        raise InputError(f"--match-radius {reference}", "is not one of the sets",
                         f"sets: {', '.join(tables)}")
    ref_table = tables[reference]
    ref_methods = methods_in(ref_table)
    ref_data = {m: _measurements(ref_table, m) for m in ref_methods}
    rows = []
    for name, table in tables.items():
        if name == reference:
            continue
        for method in [m for m in methods_in(table) if m in ref_methods]:
            d, r = _measurements(table, method), ref_data[method]
            if d["radius"] is None or r["radius"] is None:
                raise InputError(name if d["radius"] is None else reference,
                                 "has no true radii (g1_rad, g2_rad): cannot match sizes")
            shares, (bins, _) = _match_shares(r, with_mag=False), _match_bins(d, with_mag=False)
            ape = _ape(d["true"], d["pred"])
            boot = _reweighted(ape, bins, shares, bootstrap_weights(d["id"], n_resamples, seed))
            low, high = _interval(boot) if np.isfinite(boot).any() else (np.nan, np.nan)
            row = {"set": name, "method": method, "reference": reference,
                   "flux_mape_pct": float(np.nanmean(ape)),
                   "matched_mape_pct": float(_reweighted(ape, bins, shares)[0]),
                   "matched_low": low, "matched_high": high,
                   "matched_rm_mape_pct": np.nan,
                   "reference_mape_pct": float(np.nanmean(_ape(r["true"], r["pred"]))),
                   "coverage_68": np.nan, "matched_coverage_68": np.nan, "reference_coverage_68": np.nan}
            if d["mag"] is not None and r["mag"] is not None:
                joint = _match_bins(d, with_mag=True)[0]
                row["matched_rm_mape_pct"] = float(_reweighted(ape, joint, _match_shares(r, with_mag=True))[0])
            if d["err"] is not None and r["err"] is not None:
                inside, ref_inside = (_within_error(x) for x in (d, r))
                row["coverage_68"] = 100.0 * float(np.nanmean(inside))
                row["matched_coverage_68"] = 100.0 * float(_reweighted(inside, bins, shares)[0])
                row["reference_coverage_68"] = 100.0 * float(np.nanmean(ref_inside))
            rows.append(row)
    return rows


def _within_error(d) -> np.ndarray:
    """1 where the truth lies within +-1 error, 0 outside, NaN where the method gave no finite error."""
    usable = np.isfinite(d["pred"]) & np.isfinite(d["err"]) & (d["err"] > 0)
    return np.where(usable, (np.abs(d["pred"] - d["true"]) <= d["err"]).astype(np.float64), np.nan)


def _fmt(value, spec=".2f") -> str:
    return "-" if value is None or not np.isfinite(value) else format(value, spec)


def _with_interval(row, level: str) -> str:
    """``66.5 [60.1, 72.0]``: a coverage and its bootstrap interval (the value alone where there is none)."""
    value, low, high = (row.get(f"coverage_{level}{part}", np.nan) for part in ("", "_low", "_high"))
    if value is None or not np.isfinite(value):
        return "-"
    if not (np.isfinite(low) and np.isfinite(high)):
        return _fmt(value, ".1f")
    return f"{value:.1f} [{low:.1f}, {high:.1f}]"


def markdown(summary, bins, coverage, sources: dict, n_resamples: int, seed: int, matched=()) -> str:
    """The generated block of docs/results.md."""
    lines = [BEGIN, "", f"Generated by `python -m training results` from {len(sources)} results tables "
             f"({', '.join(f'{k}: `{Path(v).name}`' for k, v in sources.items())}); intervals are 95% "
             f"bootstrap intervals over galaxies ({n_resamples} resamples, seed {seed}).", "",
             "| set | method | galaxies | flux MAPE % [95% CI] | bias | sigma | NMAD | outliers % | IoU | "
             "SEP / method [95% CI] |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary:
        ratio = "" if not np.isfinite(r["sep_ratio"]) else \
            f"{r['sep_ratio']:.2f} [{r['sep_ratio_low']:.2f}, {r['sep_ratio_high']:.2f}]"
        lines.append(f"| {r['set']} | {r['method']} | {r['n_galaxies']} | {r['flux_mape_pct']:.2f} "
                     f"[{r['mape_low']:.2f}, {r['mape_high']:.2f}] | {_fmt(r['bias_dmag'], '+.3f')} | "
                     f"{_fmt(r['sigma_dmag'], '.3f')} | {_fmt(r['nmad_dmag'], '.3f')} | "
                     f"{_fmt(r['outlier_pct'], '.2f')} | {_fmt(r['mean_iou'], '.3f')} | {ratio} |")
    for kind, title in (("radius_px", "true half-light radius (px)"), ("separation_px", "separation (px)")):
        part = [b for b in bins if b["binning"] == kind]
        if not part:
            continue
        edges = sorted({(b["low"], b["high"]) for b in part})
        labels = [f"<= {h:g}" if lo == 0 else (f"> {lo:g}" if not np.isfinite(h) else f"{lo:g}-{h:g}")
                  for lo, h in edges]
        lines += ["", f"Flux MAPE (%) per bin of {title} (galaxies in the bin in brackets):", "",
                  "| set | method | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
        for key in dict.fromkeys((b["set"], b["method"]) for b in part):
            cells = {(b["low"], b["high"]): b for b in part if (b["set"], b["method"]) == key}
            lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(
                f"{_fmt(cells[e]['flux_mape_pct'])} ({cells[e]['n']})" for e in edges) + " |")
        if kind == "radius_px" and any("median_ratio" in b for b in part):
            lines += ["", f"Median predicted / true flux per bin of {title} (1.000: no bias; above: "
                      "over-estimated):", "", "| set | method | " + " | ".join(labels) + " |",
                      "|---|---|" + "---|" * len(labels)]
            for key in dict.fromkeys((b["set"], b["method"]) for b in part):
                cells = {(b["low"], b["high"]): b for b in part if (b["set"], b["method"]) == key}
                lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(
                    _fmt(cells[e].get("median_ratio", np.nan), ".3f") for e in edges) + " |")
    overall = [c for c in coverage if c["binning"] == "overall"]
    if overall:
        lines += ["", "Coverage of the flux errors (both galaxies; nominal 68.3% within 1 error, 95% within "
                  "k95 errors) and Spearman correlation of error with |flux - true|:", "",
                  "| set | method | n | 68% [95% CI] | 95% [95% CI] | worst 68% per pair-dmag bin | worst 95% per bin "
                  "| Spearman |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in overall:
            per_bin = [b for b in coverage if b["binning"] == "pair_dmag" and b["set"] == c["set"]
                       and b["method"] == c["method"] and b["n"] > 0]
            worst68 = max(per_bin, key=lambda b: abs(b["coverage_68"] - 68.27), default=None)
            worst95 = max(per_bin, key=lambda b: abs(b["coverage_95"] - 95.0), default=None)
            lines.append(f"| {c['set']} | {c['method']} | {c['n']} | {_with_interval(c, '68')} | "
                         f"{_with_interval(c, '95')} | {_with_interval(worst68 or {}, '68')} | "
                         f"{_with_interval(worst95 or {}, '95')} | {_fmt(c['spearman'])} |")
    if matched:
        reference = matched[0]["reference"]
        labels = ", ".join([f"<= {MATCH_RADIUS_EDGES[0]:g}"]
                           + [f"{a:g}-{b:g}" for a, b in zip(MATCH_RADIUS_EDGES, MATCH_RADIUS_EDGES[1:])]
                           + [f"> {MATCH_RADIUS_EDGES[-1]:g}"])
        lines += ["", f"Each set reweighted to the galaxy radii of the {reference} (bins {labels} px): what a "
                  f"method would score on the {reference} if it measured them as well as that set's galaxies "
                  "of the same size (interval: bootstrap over that set's galaxies; 'also in magnitude': "
                  "bins of radius crossed with bins of true magnitude, edges "
                  f"{', '.join(f'{m:g}' for m in MATCH_MAG_EDGES)}):", "",
                  f"| set | method | flux MAPE % | matched to {reference} [95% CI] | also in magnitude | "
                  f"{reference} | 68% coverage | matched | {reference} |", "|---|---|---|---|---|---|---|---|---|"]
        for r in matched:
            lines.append(f"| {r['set']} | {r['method']} | {r['flux_mape_pct']:.2f} | "
                         f"{_fmt(r['matched_mape_pct'])} [{_fmt(r['matched_low'])}, {_fmt(r['matched_high'])}] | "
                         f"{_fmt(r['matched_rm_mape_pct'])} | "
                         f"{r['reference_mape_pct']:.2f} | {_fmt(r['coverage_68'], '.1f')} | "
                         f"{_fmt(r['matched_coverage_68'], '.1f')} | {_fmt(r['reference_coverage_68'], '.1f')} |")
    lines += ["", END]
    return "\n".join(lines) + "\n"


def replace_block(document: str, block: str, source) -> str:
    """*document* with the text between the generated markers (markers included) replaced by *block*."""
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < start:
        raise InputError(source, f"has no generated block (the lines {BEGIN!r} ... {END!r})")
    return document[:start] + block.rstrip("\n") + document[end + len(END):]


def write_results(sources: dict, out_dir, n_resamples: int = 1000, seed: int = 0, update_docs=None,
                  overwrite: bool = False, match_radius: str | None = None) -> dict:
    """Compute and write the tables of every set; return ``{name: Path}`` of what was written."""
    from astropy.table import Table

    from napari_blendphot.atomic import atomic_output, write_text_atomic
    from napari_blendphot.errors import check_output_path
    from napari_blendphot.provenance import make_provenance
    from napari_blendphot.report.results import read_results

    if not sources:
        raise InputError("--set", "give at least one NAME=RESULTS table")
    out_dir = Path(out_dir)
    if match_radius is not None and match_radius not in sources:
        raise InputError(f"--match-radius {match_radius}", "is not one of the --set names",
                         f"sets: {', '.join(sources)}")
    names = ("summary.ecsv", "bins.ecsv", "coverage.ecsv", "results.md") + (("matched.ecsv",) if match_radius else ())
    for name in names:
        check_output_path(out_dir / name, overwrite)
    summary, bins, coverage, tables = [], [], [], {}
    for label, path in sources.items():
        table = tables[label] = read_results(path)
        summary += set_summary(table, label, n_resamples, seed)
        bins += set_bins(table, label)
        coverage += set_coverage(table, label, n_resamples, seed)
    matched = matched_rows(tables, match_radius, n_resamples, seed) if match_radius else []
    provenance = make_provenance("training results", inputs={k: str(v) for k, v in sources.items()}, seed=seed,
                                 bootstrap_resamples=n_resamples, unit="galaxy", match_radius=match_radius,
                                 match_radius_edges=list(MATCH_RADIUS_EDGES), match_mag_edges=list(MATCH_MAG_EDGES))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    parts = [("summary.ecsv", summary), ("bins.ecsv", bins), ("coverage.ecsv", coverage)]
    if match_radius:
        parts.append(("matched.ecsv", matched))
    for name, rows in parts:
        table = Table(rows=rows) if rows else Table()
        table.meta["provenance"] = provenance
        with atomic_output(out_dir / name) as tmp:
            table.write(tmp, format="ascii.ecsv")
        written[name] = out_dir / name
    block = markdown(summary, bins, coverage, sources, n_resamples, seed, matched)
    written["results.md"] = write_text_atomic(out_dir / "results.md", block)
    if update_docs:
        document = Path(update_docs).read_text()
        write_text_atomic(update_docs, replace_block(document, block, update_docs))
        written["docs"] = Path(update_docs)
    return written


def parse_sets(values) -> dict:
    """``["name=path", ...]`` -> ``{name: path}``, in order; a malformed one names itself."""
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise InputError(f"--set {value}", "expected NAME=RESULTS_TABLE")
        out[name.strip()] = path.strip()
    return out

