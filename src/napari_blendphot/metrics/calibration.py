"""Coverage of per-galaxy flux errors, and their recalibration (shared by every method; no Qt).

A method's 1-sigma flux error ``err`` is *calibrated* when the true flux lies
within ``flux +- err`` for 68.3% of the galaxies and within ``flux +- 1.96 err``
for 95%.  :func:`coverage` measures that on a results table (the truth is in
``g1_flux``/``g2_flux``, the errors in ``g1_flux_err_<m>``/``g2_flux_err_<m>``),
overall and per bin of pair magnitude difference or of true magnitude.

The classical methods' errors are background noise only (sep, SExtractor with
GAIN 0, photutils) or the photon noise of a fitted model (scarlet2): in blends
the deblending errors dominate and they cover far less than 68%.
:func:`fit_calibration` fits, on held-out blends, for each method and galaxy
role (central, companion)

    err_cal = sqrt((a * err)^2 + (b * |flux|)^2 + (c * flux_neighbour)^2 + (d * outer)^2)

(``b`` is a fractional error; ``c`` a fraction of the neighbour's predicted
flux: the light the two galaxies share, which dominates the faint member's
error; ``d`` a fraction of ``outer``, the galaxy's share -- by predicted
flux -- of the blend's light outside the central 56 x 56 pixels
(:func:`outer_light`): a galaxy whose light reaches the stamp's edge has
light beyond it that every method must guess, and its true flux counts
it): the ratios of ``a``, ``b``, ``c``, ``d``
by Gaussian maximum likelihood, then both scaled so that exactly 68.27%
of the calibration galaxies lie within ``+-err_cal`` (split-conformal).  The
95% interval ``+-1.96 err_cal`` is then measured, not forced: where the
residuals have heavier tails than a Gaussian (deblending failures) it covers
less, and the file records ``k95``, the multiple that covers 95% on the
calibration blends.  A method without errors gets ``a = 0``.

How far a galaxy's flux can be off depends on how much brighter its
neighbour is, and one scale for all galaxies over-covers some pairs and
under-covers others.  So a second, Mondrian step scales ``err_cal`` once
more per bin of the *predicted* pair magnitude difference
``-2.5 log10(flux / flux_neighbour)`` (known at prediction time, unlike the
true one): ``dmag_edges`` (the inner bin edges: quantiles of the calibration
galaxies; the end bins are open) and one ``dmag_scales`` factor per bin, each making 68.27% of that bin's
calibration galaxies lie within ``+-err_cal``.  Coverage is judged per bin of
the *true* pair dmag, which a method with large flux errors scatters across
the predicted bins, so the scales are then moved until 68.27% of each true
bin's calibration galaxies lie within ``+-err_cal`` (:func:`_match_true_bins`);
``k95`` is measured after it.  The result is stored as JSON with its
provenance (:meth:`FluxErrorCalibration.save`) and applied to arrays
(:meth:`~FluxErrorCalibration.calibrate`) or to a results table
(:meth:`~FluxErrorCalibration.apply`).  Fitting draws nothing at random;
:func:`split_blends` makes the held-out split from an explicit seed.

Averaging a network over test-time symmetries (``tta``) makes its fluxes
better and leaves its raw errors as they were, so errors calibrated on
single-pass predictions over-cover with ``--tta 8``.  A calibration records
the ``tta`` each method's results were predicted with (:func:`table_tta`),
and a model's manifest can hold one calibration per ``tta``
(:func:`manifest_calibration`); a prediction takes the one fitted with its
own ``tta``, else the single-pass one (:func:`calibration_for_tta`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_blendphot.errors import InputError, check_output_path
from napari_blendphot.metrics.binned import N_BINS, galaxy_measurements, pair_dmag_edges
from napari_blendphot.metrics.selection import GALAXIES, GALAXY_PREFIX

#: (name, multiple of the 1-sigma error, nominal coverage) of the two intervals checked.
LEVELS = (("68", 1.0, 0.6827), ("95", 1.96, 0.95))
FORMAT = "blendphot-flux-error-calibration"
FORMAT_VERSION = 1
MODEL = ("err_cal = s(dmag_pred) * sqrt((a * err)**2 + (b * abs(flux))**2 + (c * flux_neighbour)**2 "
         "+ (d * outer_share)**2)")
#: Width (px) of the stamp's border whose light is the ``outer`` of the error model: the blend outside the
#: central 56 x 56 pixels.  Chosen on the calibration blends by the likelihood of blend2flux_v5's fit
#: among 6, 12, 20, 28, 36 and 44 px (docs/uncertainty.md, "Round 6").
OUTER_MARGIN = 36
#: Per-blend column of a method's results: its blends' light outside the central box (``outer_light``).
OUTER_COLUMN = "outer_flux"
#: Bins of predicted pair magnitude difference in the Mondrian step (fewer when galaxies are few).
DMAG_BINS = N_BINS
#: Fewest galaxies a role's calibration is fitted from.
MIN_GALAXIES = 20


def error_column(method: str, galaxy: str) -> str:
    """``g1_flux_err_<m>`` / ``g2_flux_err_<m>``: the results-table column of a method's errors."""
    return f"{GALAXY_PREFIX[galaxy]}_flux_err_{method}"


def interval_multiples(table, method: str) -> dict:
    """``{role: k95}``: the multiple of a method's 1-sigma error that makes its 95% interval.

    A calibrated method records it (results-table metadata ``flux_error_k95``,
    from the calibration of its errors: the residuals of deblending have heavier
    tails than a Gaussian, so 1.96 sigma holds less than 95%); otherwise 1.96.
    """
    recorded = (table.meta.get("flux_error_k95") or {}).get(method) or {}
    return {role: float(recorded.get(role, LEVELS[1][1])) for role in GALAXIES}


def coverage_arrays(true_flux, pred_flux, errors, k95=None) -> dict:
    """Coverage statistics of one set of galaxies (those with a flux and a finite, positive error).

    Returns ``n``, ``coverage_68`` and ``coverage_95`` (fractions within 1 and
    *k95* errors; *k95* per galaxy or one value, default 1.96),
    ``coverage_95_gauss`` (within 1.96 errors), ``median_abs_z`` (median of
    |flux - true| / err; 0.674 if Gaussian and calibrated) and ``spearman``
    (rank correlation of err with |flux - true|; NaN below 3 galaxies).
    """
    from scipy.stats import spearmanr

    true_flux, pred_flux, errors = (np.asarray(a, dtype=np.float64).reshape(-1)
                                    for a in (true_flux, pred_flux, errors))
    k95 = np.broadcast_to(np.asarray(LEVELS[1][1] if k95 is None else k95, np.float64), true_flux.shape)
    usable = np.isfinite(true_flux) & np.isfinite(pred_flux) & np.isfinite(errors) & (errors > 0)
    residual = np.abs(pred_flux[usable] - true_flux[usable])
    err = errors[usable]
    out = {"n": int(usable.sum())}
    for name, multiple, _ in LEVELS:
        if name == "95":
            multiple = k95[usable]
        out[f"coverage_{name}"] = float(np.mean(residual <= multiple * err)) if out["n"] else math.nan
    out["coverage_95_gauss"] = float(np.mean(residual <= LEVELS[1][1] * err)) if out["n"] else math.nan
    out["median_abs_z"] = float(np.median(residual / err)) if out["n"] else math.nan
    if out["n"] >= 3 and np.ptp(err) > 0 and np.ptp(residual) > 0:
        out["spearman"] = float(spearmanr(err, residual).statistic)
    else:
        out["spearman"] = math.nan
    return out


def coverage(table, method: str, by: str | None = None, selection: str = "all", edges=None):
    """Coverage of *method*'s flux errors at 68% and 95%, per galaxy role and bin.

    Parameters
    ----------
    table : astropy.table.Table
        A results table with ``g1_flux_err_<m>``/``g2_flux_err_<m>``.
    by : {None, "pair_dmag", "mag"}
        No bins, bins of pair magnitude difference (the galaxy's true magnitude
        minus its neighbour's; ``metrics.binned`` conventions) or of true magnitude.
    selection : {"all", "detected"}
        Which galaxies (``metrics.selection``); galaxies without a flux or an
        error are left out either way (``n`` counts the ones used).
    edges : array, optional
        Bin edges (default: the pair-dmag edges of ``metrics.binned``; one
        magnitude wide for ``"mag"``).

    Returns
    -------
    astropy.table.Table with columns ``galaxy`` (central, companion, both),
    ``bin_low``, ``bin_high``, ``n``, ``coverage_68``, ``coverage_95``,
    ``nominal_68``, ``nominal_95``, ``median_abs_z``, ``spearman``.
    """
    from astropy.table import Table

    if by not in (None, "pair_dmag", "mag"):
        raise InputError("argument by", f"unknown binning {by!r}", "use None, 'pair_dmag' or 'mag'")
    parts = {}
    multiples = interval_multiples(table, method)
    for galaxy in GALAXIES:
        column = error_column(method, galaxy)
        if column not in table.colnames:
            raise InputError("results table", f"no column {column!r}: method {method!r} gave no flux errors")
        rows = galaxy_measurements(table, method, galaxy, selection)
        errors = np.asarray(table[column], dtype=np.float64)[np.asarray(rows["row"])]
        key = {"pair_dmag": "pair_dmag", "mag": "true_mag"}.get(by)
        parts[galaxy] = (np.asarray(rows["true_flux"]), np.asarray(rows["pred_flux"]), errors,
                         None if key is None else np.asarray(rows[key], dtype=np.float64),
                         np.full(errors.shape, multiples[galaxy]))
    parts["both"] = tuple(None if parts["central"][i] is None else
                          np.concatenate([parts["central"][i], parts["companion"][i]]) for i in range(5))
    if by is None:
        edges = np.array([-np.inf, np.inf])
    elif edges is None:
        values = parts["both"][3]
        if by == "pair_dmag":
            edges = pair_dmag_edges(values, N_BINS)
        else:
            finite = values[np.isfinite(values)]
            low, high = (math.floor(finite.min()), math.ceil(finite.max())) if finite.size else (0, 1)
            edges = np.arange(low, max(high, low + 1) + 1, 1.0)
    edges = np.asarray(edges, dtype=np.float64)
    records = []
    for galaxy in (*GALAXIES, "both"):
        true_flux, pred_flux, errors, values, k95 = parts[galaxy]
        for low, high in zip(edges[:-1], edges[1:]):
            if values is None:
                inside = np.ones(true_flux.size, bool)
            else:
                last = high == edges[-1]
                inside = (values >= low) & ((values <= high) if last else (values < high))
            stats = coverage_arrays(true_flux[inside], pred_flux[inside], errors[inside], k95[inside])
            records.append({"galaxy": galaxy, "bin_low": float(low), "bin_high": float(high), "n": stats["n"],
                            "coverage_68": stats["coverage_68"], "coverage_95": stats["coverage_95"],
                            "coverage_95_gauss": stats["coverage_95_gauss"],
                            "nominal_68": LEVELS[0][2], "nominal_95": LEVELS[1][2],
                            "median_abs_z": stats["median_abs_z"], "spearman": stats["spearman"]})
    out = Table(rows=records, names=list(records[0]))
    out.meta.update({"method": method, "by": by or "none", "selection": selection})
    return out


def outer_light(blends, margin: int = OUTER_MARGIN) -> np.ndarray:
    """(N,) each blend's summed light within *margin* pixels of the stamp's edge (N, H, W), in its units."""
    blends = np.asarray(blends)
    if blends.ndim != 3 or min(blends.shape[1:]) <= 2 * margin:
        raise InputError("blends", f"shape {blends.shape}: expected (N, H, W) stamps larger than {2 * margin} px")
    total = blends.sum(axis=(1, 2), dtype=np.float64)
    return total - blends[:, margin:-margin, margin:-margin].sum(axis=(1, 2), dtype=np.float64)


def outer_shares(fluxes, outer) -> np.ndarray:
    """(N, 2) each galaxy's share, by predicted flux, of its blend's outer light (negative light counts as 0)."""
    fluxes = np.clip(np.nan_to_num(np.asarray(fluxes, dtype=np.float64), nan=0.0), 0.0, None)
    total = fluxes.sum(axis=1, keepdims=True)
    share = np.divide(fluxes, total, out=np.full(fluxes.shape, 0.5), where=total > 0)
    return share * np.clip(np.nan_to_num(np.asarray(outer, dtype=np.float64), nan=0.0), 0.0, None)[:, None]


def predicted_pair_dmag(fluxes) -> np.ndarray:
    """(N, 2) ``-2.5 log10(flux / flux_neighbour)`` of each galaxy from predicted fluxes (N, 2).

    A galaxy whose neighbour has no positive flux is "alone": -inf (the
    brightest bin); NaN where its own flux is not positive.
    """
    fluxes = np.asarray(fluxes, dtype=np.float64)
    own, other = fluxes, fluxes[:, ::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        dmag = -2.5 * np.log10(own / other)
    dmag = np.where(own > 0, np.where(other > 0, dmag, -np.inf), np.nan)
    return dmag


def _bin_of(dmag, inner_edges) -> np.ndarray:
    """Bin index of each predicted pair dmag given the bins' inner edges (the end bins are open)."""
    return np.searchsorted(np.asarray(inner_edges, dtype=np.float64),
                           np.nan_to_num(np.asarray(dmag, np.float64), nan=0.0), side="right")


def check_dmag_bins(p: dict) -> str | None:
    """What is wrong with a role's Mondrian bins (``dmag_edges``, ``dmag_scales``), or None."""
    edges, scales = p.get("dmag_edges"), p.get("dmag_scales")
    if edges is None and scales is None:
        return None
    if not (isinstance(edges, list) and isinstance(scales, list) and len(scales) == len(edges) + 1):
        return "'dmag_scales' must be a list one longer than 'dmag_edges'"
    if not all(isinstance(e, (int, float)) and math.isfinite(e) for e in edges) or sorted(edges) != edges:
        return "'dmag_edges' must be finite and increasing"
    if not all(_finite_non_negative(v) and v > 0 for v in scales):
        return "'dmag_scales' must be finite and > 0"
    return None


def table_tta(table, method: str) -> int:
    """The test-time symmetries *method* ran with in a results table (its provenance; 1 where not recorded)."""
    provenance = table.meta.get("provenance") or {}
    recorded = ((provenance.get("parameters") or {}).get("method_metadata") or {}).get(method) or {}
    value = recorded.get("tta", 1)
    try:
        return max(int(value), 1)
    except (TypeError, ValueError):
        raise InputError(f"results table, method {method!r}", f"recorded tta {value!r} is not a number") from None


def manifest_calibration(calibrations, method: str) -> dict:
    """The ``flux_error_calibration`` entry of *method*'s manifest from one or more fitted calibrations.

    Each :class:`FluxErrorCalibration` knows the ``tta`` its results were
    predicted with; the single-pass one (``tta`` 1) is required and becomes the
    default, the others go under ``by_tta`` (``{"8": {"parameters", "provenance"}}``).
    """
    entry, by_tta = None, {}
    for fitted in calibrations:
        if method not in fitted.parameters:
            raise InputError(fitted.source or "calibration", f"has no calibration of {method!r}",
                             f"calibrated: {', '.join(sorted(fitted.parameters)) or 'none'}")
        tta = fitted.tta(method)
        if tta == 1 and entry is None:
            entry = {"model": MODEL, "parameters": fitted.parameters[method], "provenance": fitted.provenance}
        elif tta != 1 and str(tta) not in by_tta:
            by_tta[str(tta)] = {"parameters": fitted.parameters[method], "provenance": fitted.provenance}
        else:
            raise InputError(fitted.source or "calibration", f"a second calibration of {method!r} with tta {tta}")
    if entry is None:
        raise InputError("calibration", f"none of {method!r} fitted on single-pass predictions (tta 1)",
                         "fit one on results predicted without --tta")
    if by_tta:
        entry["by_tta"] = dict(sorted(by_tta.items(), key=lambda item: int(item[0])))
    return entry


def calibration_for_tta(calibration: dict, tta: int) -> tuple[dict | None, int]:
    """``(parameters, tta fitted with)`` of a manifest's calibration for predictions made with *tta*.

    The calibration fitted with the same ``tta`` where the manifest has one,
    else the single-pass one; ``(None, 1)`` without a calibration.
    """
    calibration = calibration or {}
    own = (calibration.get("by_tta") or {}).get(str(int(tta)))
    if int(tta) != 1 and isinstance(own, dict) and own.get("parameters"):
        return own["parameters"], int(tta)
    return calibration.get("parameters") or None, 1


def calibrated_errors(parameters: dict, fluxes, errors=None, outer=None) -> np.ndarray:
    """Calibrated 1-sigma errors (N, 2) from one method's ``{role: parameters}``, fluxes and raw errors (N, 2).

    The one implementation of the error model (:data:`MODEL`), used on tables
    and by the network methods; NaN where the flux is not measured, never
    infinite.  *outer* (N,): the blends' :func:`outer_light`, needed where a
    role's ``d`` is above 0.
    """
    fluxes = np.asarray(fluxes, dtype=np.float64)
    raw = np.zeros_like(fluxes) if errors is None else np.asarray(errors, dtype=np.float64)
    dmag = predicted_pair_dmag(fluxes)
    uses_outer = any(float(parameters[role].get("d", 0.0)) > 0 for role in GALAXIES)
    if uses_outer and outer is None:
        raise InputError("flux-error calibration", "its error model uses the blends' outer light (d > 0)",
                         f"give the blends, or a results table with the {OUTER_COLUMN}_<method> column")
    shares = outer_shares(fluxes, outer) if uses_outer else None
    out = np.full(fluxes.shape, np.nan)
    for slot, role in enumerate(GALAXIES):
        p = parameters[role]
        a, b, c = float(p.get("a", 1.0)), float(p.get("b", 0.0)), float(p.get("c", 0.0))
        d = float(p.get("d", 0.0))
        raw_term = (a * raw[:, slot]) ** 2 if a > 0 else 0.0
        neighbour = np.clip(np.nan_to_num(fluxes[:, 1 - slot], nan=0.0), 0.0, None)
        value = np.sqrt(raw_term + (b * fluxes[:, slot]) ** 2 + ((c * neighbour) ** 2 if c > 0 else 0.0)
                        + ((d * shares[:, slot]) ** 2 if d > 0 else 0.0))
        if p.get("dmag_edges") is not None:
            value = value * np.asarray(p["dmag_scales"], np.float64)[_bin_of(dmag[:, slot], p["dmag_edges"])]
        out[:, slot] = value
    out[~(np.isfinite(out) & np.isfinite(fluxes))] = np.nan
    return out


def fit_role(true_flux, pred_flux, errors=None, pair_dmag=None, neighbour_flux=None, outer_share=None,
             true_pair_dmag=None) -> dict:
    """``{"a", "b", "c", "d", "k95", "n", "coverage_68", "coverage_95"}`` of one method and role.

    ``c`` (the fraction of the neighbour's predicted flux, *neighbour_flux*)
    is fitted only when *neighbour_flux* is given, else 0; ``d`` (the
    fraction of the galaxy's share of its blend's outer light,
    *outer_share*: :func:`outer_shares`) only when *outer_share* is given.
    The shape of the error model (the ratios of ``a``, ``b``, ``c``) is the Gaussian
    maximum-likelihood fit of the residuals; both are then scaled together so
    that exactly 68.27% of the galaxies lie within ``+-err_cal`` (the
    split-conformal step, exact whatever the distribution).  ``k95`` is the
    multiple of ``err_cal`` that holds 95% of them (1.96 if the normalised
    residuals are Gaussian; more with the heavy tails of deblending failures).
    With *pair_dmag* (the galaxies' predicted pair magnitude differences) the
    Mondrian step adds ``dmag_edges`` and ``dmag_scales`` (module docstring);
    with *true_pair_dmag* too, the scales are then matched to the bins of the
    true pair dmag (:func:`_match_true_bins`).
    """
    from scipy.optimize import minimize

    true_flux = np.asarray(true_flux, dtype=np.float64).reshape(-1)
    pred_flux = np.asarray(pred_flux, dtype=np.float64).reshape(-1)
    if errors is None:
        errors = np.zeros_like(pred_flux)
    errors = np.asarray(errors, dtype=np.float64).reshape(-1)
    has_error = np.isfinite(errors) & (errors > 0)
    usable = np.isfinite(true_flux) & np.isfinite(pred_flux)
    with_errors = bool((usable & has_error).any())
    if with_errors:
        usable &= has_error  # a method that gives errors is calibrated where it gives them
    n = int(usable.sum())
    if n < MIN_GALAXIES:
        raise InputError("calibration blends", f"{n} usable galaxies, at least {MIN_GALAXIES} are needed")
    residual = np.abs(pred_flux[usable] - true_flux[usable])
    # Variance terms: the method's own error, a fraction of the flux, a fraction of the neighbour's flux
    # (light shared with a brighter neighbour: the faint galaxy's deblending error).
    terms = {}
    if with_errors:
        terms["a"] = errors[usable] ** 2
    terms["b"] = pred_flux[usable] ** 2
    if neighbour_flux is not None:
        neighbour = np.asarray(neighbour_flux, dtype=np.float64).reshape(-1)[usable]
        terms["c"] = np.where(np.isfinite(neighbour), np.clip(neighbour, 0.0, None), 0.0) ** 2
    if outer_share is not None:
        outer = np.asarray(outer_share, dtype=np.float64).reshape(-1)[usable]
        terms["d"] = np.where(np.isfinite(outer), np.clip(outer, 0.0, None), 0.0) ** 2
    names = list(terms)
    stacked = np.vstack([terms[k] for k in names])
    floor = 1e-12 * max(float(np.median(residual)), 1e-300) ** 2  # keeps log(variance) finite

    def negative_log_likelihood(params):
        v = np.exp(2 * np.asarray(params)) @ stacked + floor
        return float(np.sum(0.5 * np.log(v) + 0.5 * residual ** 2 / v))

    first = terms[names[0]]
    start = [math.log(max(float(np.median(residual / np.sqrt(first + floor))), 1e-6) / 0.6745)]
    start += [math.log(0.05)] * (len(names) - 1)
    bounds = [(-30, 30) if name == "a" else (-30, 5) for name in names]
    fit = minimize(negative_log_likelihood, start, method="L-BFGS-B", bounds=bounds)
    values = {"a": 0.0, "b": 0.0, "c": 0.0, "d": 0.0}
    for name, x in zip(names, fit.x):
        values[name] = math.exp(x)
        if name != names[0] and values[name] < 1e-9:  # the bound stands for "no such term"
            values[name] = 0.0
    base = np.sqrt(sum(values[name] ** 2 * terms[name] for name in names))
    score = np.divide(residual, base, out=np.full(n, np.inf), where=base > 0)
    scale = float(np.quantile(score, LEVELS[0][2], method="higher"))
    if not (math.isfinite(scale) and scale > 0):
        raise InputError("calibration blends", "the residuals are zero or the error model is degenerate")
    a, b, c, d = (values[k] * scale for k in ("a", "b", "c", "d"))
    normalised = score / scale
    mondrian = {}
    if pair_dmag is not None:
        dmag = np.asarray(pair_dmag, dtype=np.float64).reshape(-1)[usable]
        n_bins = int(min(DMAG_BINS, n // MIN_GALAXIES))
        if n_bins >= 2:
            finite = dmag[np.isfinite(dmag)]
            # Inner edges only (the end bins are open): finite numbers, plain JSON.
            edges = np.quantile(finite, np.linspace(0, 1, n_bins + 1)[1:-1]) if finite.size else np.zeros(n_bins - 1)
            bins = _bin_of(dmag, edges)
            scales = np.ones(n_bins)
            for k in range(n_bins):
                inside = normalised[bins == k]
                if inside.size >= MIN_GALAXIES:
                    scales[k] = float(np.quantile(inside, LEVELS[0][2], method="higher"))
            scales[~(np.isfinite(scales) & (scales > 0))] = 1.0
            if true_pair_dmag is not None:
                true_dmag = np.asarray(true_pair_dmag, dtype=np.float64).reshape(-1)[usable]
                scales = _match_true_bins(normalised, bins, true_dmag, scales)
            normalised = normalised / scales[bins]
            mondrian = {"dmag_edges": [float(e) for e in edges], "dmag_scales": [float(v) for v in scales]}
    return {"a": a, "b": b, "c": c, **({"d": d} if outer_share is not None else {}), **mondrian, "k95": float(np.quantile(normalised, LEVELS[1][2], method="higher")), "n": n,
            "coverage_68": float(np.mean(normalised <= LEVELS[0][1])),
            "coverage_95": float(np.mean(normalised <= LEVELS[1][1]))}


def _match_true_bins(normalised, predicted_bins, true_dmag, scales, regularisation: float = 1e-3) -> np.ndarray:
    """Per-bin scales of the *predicted* pair dmag that hold 68.27% in each bin of the *true* pair dmag.

    The coverage a user asks about (and ``coverage(by="pair_dmag")``
    reports) is per bin of the true magnitude difference, but only the
    predicted one is known at prediction time.  For a method whose fluxes
    are far off (the U-Net) the two differ: a galaxy it over-estimates moves
    to a brighter predicted bin, and scales that hold 68% in every predicted
    bin leave true bins several points apart.  The scales are chosen to
    minimise the squared distance of each true bin's coverage from 68.27%
    (weighted by the bin's share of the galaxies), plus a small pull towards
    the predicted-bin scales that keeps the problem well posed where the
    true bins do not pin every scale.  The coverage is a step function of the
    scales; it is smoothed (a logistic of width 0.02 in log error) for the
    minimiser and the result kept only where the exact objective improves.
    The true bins are
    :func:`~napari_blendphot.metrics.binned.pair_dmag_edges`' (the reported
    ones) with at least ``MIN_GALAXIES`` galaxies.  Returns the new scales.
    """
    from scipy.optimize import minimize
    from scipy.special import expit

    edges = pair_dmag_edges(true_dmag, DMAG_BINS)
    finite = np.isfinite(true_dmag)
    normalised, predicted_bins, true_dmag = normalised[finite], predicted_bins[finite], true_dmag[finite]
    true_bins = np.clip(np.searchsorted(edges, true_dmag, side="right") - 1, 0, edges.size - 2)
    filled = [j for j in range(edges.size - 1) if np.count_nonzero(true_bins == j) >= MIN_GALAXIES]
    if not filled:
        return scales
    groups = [true_bins == j for j in filled]
    shares = np.array([g.mean() for g in groups])
    start = np.log(np.asarray(scales, dtype=np.float64))
    target = LEVELS[0][2]

    log_z = np.log(np.clip(normalised, 1e-300, None))

    def objective(log_scales, width=0.0):
        gap = log_scales[predicted_bins] - log_z
        inside = expit(gap / width) if width > 0 else (gap >= 0).astype(np.float64)
        misses = np.array([inside[g].mean() for g in groups]) - target
        return float(np.sum(shares * misses ** 2) + regularisation * np.mean((log_scales - start) ** 2))

    fit = minimize(objective, start, args=(0.02,), method="L-BFGS-B")
    matched = np.exp(fit.x) if objective(fit.x) < objective(start) else np.exp(start)
    return np.where(np.isfinite(matched) & (matched > 0), matched, scales)


@dataclass
class FluxErrorCalibration:
    """Fitted ``(a, b)`` per method and galaxy role, with provenance.

    ``parameters[method][role] = {"a", "b", "k95", "n", "coverage_68", "coverage_95"}``
    (``k95``: the multiple of the calibrated error that holds 95% of the
    calibration galaxies; the last three: how many there were and their
    coverage after calibration).
    """

    parameters: dict
    provenance: dict = field(default_factory=dict)
    #: The file it was read from (for messages); None when fitted in memory.
    source: str | None = None

    def tta(self, method: str) -> int:
        """The test-time symmetries *method*'s calibration results were predicted with (1 if not recorded)."""
        return int((self.provenance.get("tta") or {}).get(method, 1))

    def calibrate(self, method: str, fluxes, errors=None, outer=None) -> np.ndarray:
        """Calibrated 1-sigma errors (N, 2) for *fluxes* (N, 2) [central, companion] and raw *errors*.

        *outer*: the blends' :func:`outer_light` (N,), for a calibration whose ``d`` is above 0.

        NaN where the flux is not measured (or a raw error is missing when the
        method has one); never infinite.
        """
        if method not in self.parameters:
            raise InputError(f"method {method!r}", "has no calibration in this file",
                             f"calibrated: {', '.join(sorted(self.parameters)) or 'none'}")
        fluxes = np.asarray(fluxes, dtype=np.float64)
        if fluxes.ndim != 2 or fluxes.shape[1] != 2:
            raise InputError("fluxes", f"shape {fluxes.shape}, expected (N, 2)")
        raw = None if errors is None else np.asarray(errors, dtype=np.float64)
        if raw is not None and raw.shape != fluxes.shape:
            raise InputError("errors", f"shape {raw.shape}, fluxes {fluxes.shape}")
        return calibrated_errors(self.parameters[method], fluxes, raw, outer)

    def apply(self, table):
        """A copy of a results table with calibrated ``g?_flux_err_<m>`` (the raw ones kept as ``g?_flux_err_raw_<m>``)."""
        out = table.copy(copy_data=True)
        done = []
        for method in self.parameters:
            if f"g1_flux_{method}" not in out.colnames:
                continue
            if table_tta(table, method) != self.tta(method):
                raise InputError(self.source or "calibration",
                                 f"{method!r} was fitted on predictions with tta {self.tta(method)}, the table's "
                                 f"were made with tta {table_tta(table, method)}",
                                 "fit a calibration on results predicted with the same --tta")
            fluxes = np.column_stack([np.asarray(out[f"{GALAXY_PREFIX[g]}_flux_{method}"], dtype=np.float64)
                                      for g in GALAXIES])
            raw = None
            if all(error_column(method, g) in out.colnames for g in GALAXIES):
                raw = np.column_stack([np.asarray(out[error_column(method, g)], dtype=np.float64) for g in GALAXIES])
                for g in GALAXIES:
                    out.rename_column(error_column(method, g), f"{GALAXY_PREFIX[g]}_flux_err_raw_{method}")
            column = f"{OUTER_COLUMN}_{method}"
            outer = np.asarray(out[column], dtype=np.float64) if column in out.colnames else None
            calibrated = self.calibrate(method, fluxes, raw, outer)
            for slot, g in enumerate(GALAXIES):
                out[error_column(method, g)] = calibrated[:, slot]
            done.append(method)
        out.meta["flux_error_calibration"] = {"model": MODEL, "methods": done, "provenance": self.provenance}
        k95 = dict(out.meta.get("flux_error_k95") or {})
        for method in done:
            k95[method] = {role: float(self.parameters[method][role]["k95"]) for role in GALAXIES
                           if "k95" in self.parameters[method][role]}
        out.meta["flux_error_k95"] = k95
        return out

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": FORMAT_VERSION, "model": MODEL,
                "levels": {name: {"multiple": m, "nominal": c} for name, m, c in LEVELS},
                "parameters": self.parameters, "provenance": self.provenance}

    def save(self, path, overwrite: bool = False) -> Path:
        """Write the calibration as JSON (atomically; an existing file only with *overwrite*)."""
        from napari_blendphot.atomic import atomic_output

        path = Path(path)
        check_output_path(path, overwrite)
        with atomic_output(path) as temporary:
            Path(temporary).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path) -> "FluxErrorCalibration":
        """Read a calibration file; a malformed one is an :class:`InputError` naming the problem."""
        path = Path(path)
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(path, "calibration file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(path, f"not a readable JSON calibration file: {exc}") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise InputError(path, f"not a flux-error calibration (format is not {FORMAT!r})")
        if record.get("version") != FORMAT_VERSION:
            raise InputError(path, f"calibration format version {record.get('version')!r}, expected {FORMAT_VERSION}")
        parameters = record.get("parameters")
        if not isinstance(parameters, dict):
            raise InputError(path, "has no 'parameters' mapping")
        for method, roles in parameters.items():
            for role in GALAXIES:
                p = roles.get(role) if isinstance(roles, dict) else None
                if not (isinstance(p, dict) and all(_finite_non_negative(p.get(k)) for k in ("a", "b"))
                        and all(_finite_non_negative(p.get(k, 0.0)) for k in ("c", "d"))):
                    raise InputError(path, f"method {method!r}, {role}: 'a', 'b', 'c' and 'd' must be finite and >= 0")
                problem = check_dmag_bins(p)
                if problem:
                    raise InputError(path, f"method {method!r}, {role}: {problem}")
        return cls(parameters, record.get("provenance") or {}, source=str(path))


def _finite_non_negative(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def fit_calibration(table, methods=None, selection: str = "all", provenance: dict | None = None,
                    mondrian: bool = True, neighbour: bool = True, true_bins: bool = True) -> FluxErrorCalibration:
    """Fit ``(a, b)`` for each method (default: all of the table's) and role on the blends of *table*.

    *table* should hold calibration blends only (held out from the blends the
    coverage is then measured on: :func:`split_blends`).  Methods without
    error columns are calibrated from their fluxes alone (``a = 0``).
    *neighbour* fits the neighbour-flux term ``c`` and *mondrian* the
    per-bin scales of predicted pair dmag (module docstring), *true_bins*
    matches those scales to the bins of true pair dmag (:func:`_match_true_bins`);
    all three by default.
    A method whose results have the per-blend column ``outer_flux_<m>``
    (the network methods write it) gets the outer-light term ``d`` too.
    """
    from napari_blendphot.report.results import methods_in

    methods = list(methods) if methods is not None else methods_in(table)
    parameters = {}
    truth = np.column_stack([np.asarray(table[f"{GALAXY_PREFIX[g]}_flux"], dtype=np.float64) for g in GALAXIES])
    with np.errstate(divide="ignore", invalid="ignore"):
        true_dmag = -2.5 * np.log10(truth / truth[:, ::-1])  # the same for every method
    for method in methods:
        parameters[method] = {}
        fluxes = np.column_stack([np.asarray(table[f"{GALAXY_PREFIX[g]}_flux_{method}"], dtype=np.float64)
                                  for g in GALAXIES])
        pair_dmag = predicted_pair_dmag(fluxes)
        column = f"{OUTER_COLUMN}_{method}"
        shares = outer_shares(fluxes, np.asarray(table[column], dtype=np.float64)) if column in table.colnames else None
        for galaxy in GALAXIES:
            rows = galaxy_measurements(table, method, galaxy, selection)
            index = np.asarray(rows["row"])
            column = error_column(method, galaxy)
            errors = np.asarray(table[column], dtype=np.float64)[index] if column in table.colnames else None
            slot = GALAXIES.index(galaxy)
            parameters[method][galaxy] = fit_role(rows["true_flux"], rows["pred_flux"], errors,
                                                  pair_dmag=pair_dmag[index, slot] if mondrian else None,
                                                  neighbour_flux=fluxes[index, 1 - slot] if neighbour else None,
                                                  outer_share=None if shares is None else shares[index, slot],
                                                  true_pair_dmag=true_dmag[index, slot] if mondrian and true_bins
                                                  else None)
    record = dict(provenance or {})
    record.setdefault("n_blends", int(len(table)))
    record.setdefault("dmag_scales_matched_to", "true pair dmag bins" if mondrian and true_bins
                      else "predicted pair dmag bins" if mondrian else None)
    # A calibration holds for the tta it was fitted with (module docstring).
    record.setdefault("tta", {method: table_tta(table, method) for method in methods})
    return FluxErrorCalibration(parameters, record)


def stack_results(tables, sources) -> "Table":
    """One table of the blends of several results tables, for one calibration fit on all of them.

    A calibration is as good as the galaxies it was fitted on, and held-out
    blends often come in more than one folder.  The tables must hold the same
    methods, predicted with the same tta (a calibration holds for one,
    :func:`table_tta`), and the same columns; the first table's metadata is
    kept.  *sources* names each table in the one-line refusals.
    """
    from astropy.table import vstack

    from napari_blendphot.report.results import methods_in

    tables, sources = list(tables), [str(s) for s in sources]
    if len(tables) == 1:
        return tables[0]
    first, first_source = tables[0], sources[0]
    methods = methods_in(first)
    for table, source in zip(tables[1:], sources[1:]):
        if methods_in(table) != methods:
            raise InputError(source, f"holds methods {', '.join(methods_in(table)) or 'none'}, "
                             f"{first_source} holds {', '.join(methods) or 'none'}",
                             "fit one calibration on tables of the same methods")
        for method in methods:
            if table_tta(table, method) != table_tta(first, method):
                raise InputError(source, f"method {method!r} was predicted with tta {table_tta(table, method)}, "
                                 f"in {first_source} with tta {table_tta(first, method)}")
        if set(table.colnames) != set(first.colnames):
            different = sorted(set(table.colnames) ^ set(first.colnames))
            raise InputError(source, f"columns differ from {first_source}'s: {', '.join(different[:4])}"
                             + (" ..." if len(different) > 4 else ""))
    stacked = vstack([t[first.colnames] for t in tables], join_type="exact", metadata_conflicts="silent")
    stacked.meta = dict(first.meta)
    return stacked


def split_blends(n_blends: int, calibration_fraction: float = 0.5, seed: int = 0):
    """Seeded split of ``range(n_blends)`` into (calibration rows, evaluation rows), both sorted."""
    if not 0 < calibration_fraction < 1:
        raise InputError("calibration_fraction", f"{calibration_fraction!r} is not between 0 and 1")
    order = np.random.default_rng(seed).permutation(int(n_blends))
    cut = int(round(calibration_fraction * n_blends))
    return np.sort(order[:cut]), np.sort(order[cut:])
