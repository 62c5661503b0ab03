"""Flux correction of segmentation photometry, by predicted pair magnitude difference (no Qt).

Summing a blend over the pixels a mask claims misses the light outside the
mask: the faint wings below the mask's threshold, and the pixels the
neighbour's mask takes.  How much is missed depends on the neighbour: the
brighter it is against the galaxy, the more of the galaxy's pixels it
claims.  The U-Net's mask sums on the 4,000 mock v2 calibration blends hold
85% of the true flux in the median, 92% for a galaxy much brighter than its
neighbour and 64% for one much fainter (docs/uncertainty.md).

So, like an aperture correction, each flux is multiplied by a factor read
from its *predicted* pair magnitude difference
``-2.5 log10(flux / flux_neighbour)`` (known at prediction time):

    flux_corrected = flux * factor[bin(dmag_pred)]

``dmag_edges`` are the inner bin edges (quantiles of the calibration
galaxies, the end bins open), ``factors`` the median of true / predicted
flux in each bin, both roles together.  Fitted once on held-out mock blends
(:func:`fit_flux_correction`), stored in the model's manifest
(``flux_correction``) and applied by the method before its errors are
calibrated (:func:`apply_flux_correction`).  Nothing is drawn at random.
"""

from __future__ import annotations

import math

import numpy as np

from napari_blendphot.errors import InputError

MODEL = "flux_corrected = flux * factor(dmag_pred)"
#: Bins of predicted pair magnitude difference, and the fewest galaxies a bin's factor is the median of.
N_BINS = 6
MIN_GALAXIES = 50


def check_flux_correction(parameters: dict) -> str | None:
    """What is wrong with a correction's ``{"dmag_edges", "factors"}``, or None."""
    edges, factors = parameters.get("dmag_edges"), parameters.get("factors")
    if not (isinstance(edges, list) and isinstance(factors, list) and len(factors) == len(edges) + 1):
        return "'factors' must be a list one longer than 'dmag_edges'"
    if not all(isinstance(e, (int, float)) and math.isfinite(e) for e in edges) or sorted(edges) != edges:
        return "'dmag_edges' must be finite and increasing"
    if not all(isinstance(f, (int, float)) and math.isfinite(f) and f > 0 for f in factors):
        return "'factors' must be finite and > 0"
    return None


def correction_factors(parameters: dict, fluxes) -> np.ndarray:
    """(N, 2) factor of each galaxy from the (uncorrected) predicted fluxes (N, 2).

    A galaxy whose neighbour was not found counts as much brighter than it
    (the first bin); 1 where the galaxy's own flux is not positive or not measured.
    """
    from napari_blendphot.metrics.calibration import _bin_of, predicted_pair_dmag

    fluxes = np.asarray(fluxes, dtype=np.float64)
    dmag = predicted_pair_dmag(fluxes)
    factors = np.asarray(parameters["factors"], np.float64)[_bin_of(dmag, parameters["dmag_edges"])]
    return np.where(np.isnan(dmag), 1.0, factors)


def apply_flux_correction(parameters: dict, fluxes) -> np.ndarray:
    """Corrected fluxes (N, 2); NaN stays NaN."""
    return np.asarray(fluxes, dtype=np.float64) * correction_factors(parameters, fluxes)


def fit_flux_correction(true_flux, pred_flux, n_bins: int = N_BINS) -> dict:
    """``{"dmag_edges", "factors", "n"}`` from true and predicted fluxes (N, 2) of calibration blends.

    Galaxies the method did not measure (NaN or non-positive flux) are left
    out.  Fewer bins are used when the galaxies are too few for *n_bins*.
    """
    from napari_blendphot.metrics.calibration import _bin_of, predicted_pair_dmag

    true_flux = np.asarray(true_flux, dtype=np.float64)
    pred_flux = np.asarray(pred_flux, dtype=np.float64)
    if true_flux.shape != pred_flux.shape or true_flux.ndim != 2 or true_flux.shape[1] != 2:
        raise InputError("calibration blends", f"true fluxes {true_flux.shape} and predicted {pred_flux.shape}: "
                                               "expected two (N, 2) arrays")
    dmag = predicted_pair_dmag(pred_flux)
    usable = np.isfinite(dmag) & (pred_flux > 0) & np.isfinite(true_flux) & (true_flux > 0)
    n = int(usable.sum())
    n_bins = int(min(n_bins, n // MIN_GALAXIES))
    if n_bins < 1:
        raise InputError("calibration blends", f"{n} measured galaxies, at least {MIN_GALAXIES} are needed")
    ratio, dmag = (true_flux / pred_flux)[usable], dmag[usable]
    edges = np.quantile(dmag, np.linspace(0, 1, n_bins + 1)[1:-1])
    bins = _bin_of(dmag, edges)
    factors = [float(np.median(ratio[bins == k])) for k in range(n_bins)]
    return {"dmag_edges": [float(e) for e in edges], "factors": factors, "n": n}
