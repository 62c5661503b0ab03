"""Photometric metrics of Boucaud et al. 2020 (SPEC §7).

Conventions (they reproduce the statistics of the paper's published
catalogue, see ``tests/test_metrics_paper.py``):

- ``mag = zero_point - 2.5 log10(flux)``; every method has its own zero point
  (the paper's SExtractor magnitudes use 25.67, everything else 25.96);
- ``dmag = mag_predicted - mag_true``;
- bias is the mean (or median) of ``dmag``; ``sigma`` the plain standard
  deviation (``ddof=0``; ``ddof=1`` agrees to the printed precision on the
  paper's samples of ~4,000 galaxies); NMAD is ``1.4826 median |x - median x|``
  (astropy's :func:`~astropy.stats.median_absolute_deviation`, scaled by the
  papers' rounded 1.4826);
- an outlier has ``|dmag| > 0.75`` (a factor of 2 in flux);
- flux MAPE is ``100 mean(|pred - true| / true)`` on the fluxes *as stored*
  (zero points only enter magnitudes: that is how the paper's 33.6 % for
  SExtractor is obtained); magnitude MAPE is the same on magnitudes.

A predicted flux that is NaN or not positive means "not detected": it is
counted in :attr:`PhotometryStats.n_undetected` and left out of the
statistics instead of raising.  True fluxes must be finite and positive.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from napari_blendphot.constants import OUTLIER_DMAG, ZERO_POINT
from napari_blendphot.errors import InputError
from napari_blendphot.sample.galaxy_sample import flux_to_mag, mag_to_flux

__all__ = [
    "NMAD_SCALE",
    "PhotometryStats",
    "bias",
    "check_true_flux",
    "delta_mag",
    "detected",
    "flux_mape",
    "flux_to_mag",
    "mag_mape",
    "mag_to_flux",
    "nmad",
    "outlier_fraction",
    "photometry_stats",
    "sigma",
]

#: Scale that makes the median absolute deviation a consistent estimator of a Gaussian sigma
#: (``1 / Phi^-1(3/4)`` = 1.482602..., rounded as the papers do; astropy's ``mad_std`` does not round).
NMAD_SCALE = 1.4826


def _as_1d(values, source: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(source, "values are not numbers") from None
    if array.ndim != 1:
        raise InputError(source, f"expected a 1-D array, got shape {array.shape}")
    return array


def check_true_flux(true_flux, source: str = "true fluxes") -> np.ndarray:
    """Return *true_flux* as float64, refusing NaN, infinite or non-positive values."""
    true_flux = _as_1d(true_flux, source)
    bad = ~(np.isfinite(true_flux) & (true_flux > 0))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InputError(source, f"{int(bad.sum())} true flux(es) are NaN, infinite or not positive "
                         f"(first: row {first}, value {true_flux[first]!r})",
                         "true fluxes come from the blend catalogue and must all be > 0")
    return true_flux


def detected(pred_flux) -> np.ndarray:
    """Boolean mask of predicted fluxes that are measurements (finite and > 0)."""
    pred_flux = np.asarray(pred_flux, dtype=np.float64)
    return np.isfinite(pred_flux) & (pred_flux > 0)


def delta_mag(true_flux, pred_flux, zp_true: float = ZERO_POINT, zp_pred: float = ZERO_POINT) -> np.ndarray:
    """``mag_pred - mag_true``; NaN where the prediction is not a positive finite flux."""
    return flux_to_mag(pred_flux, zp_pred) - flux_to_mag(true_flux, zp_true)


def bias(dmag, statistic: str = "mean") -> float:
    """Mean (default) or median of *dmag*, ignoring NaN; NaN if nothing is left."""
    values = _finite(dmag)
    if values.size == 0:
        return float("nan")
    if statistic == "mean":
        return float(np.mean(values))
    if statistic == "median":
        return float(np.median(values))
    raise InputError("argument statistic", f"unknown statistic {statistic!r}", "use 'mean' or 'median'")


def sigma(dmag, ddof: int = 0) -> float:
    """Standard deviation of *dmag* (NaN ignored); NaN with fewer than ``ddof + 1`` values."""
    values = _finite(dmag)
    if values.size <= ddof:
        return float("nan")
    return float(np.std(values, ddof=ddof))


def nmad(dmag) -> float:
    """Normalised median absolute deviation ``1.4826 median |x - median x|`` (NaN ignored)."""
    from astropy.stats import median_absolute_deviation

    values = _finite(dmag)
    if values.size == 0:
        return float("nan")
    return float(NMAD_SCALE * median_absolute_deviation(values))


def outlier_fraction(dmag, threshold: float = OUTLIER_DMAG) -> float:
    """Fraction (0-1) of finite *dmag* with ``|dmag| > threshold``."""
    values = _finite(dmag)
    if values.size == 0:
        return float("nan")
    return float(np.mean(np.abs(values) > threshold))


def flux_mape(true_flux, pred_flux) -> float:
    """Mean absolute percentage error on flux, ``100 mean(|pred - true| / true)``, over detected pairs."""
    true_flux = np.asarray(true_flux, dtype=np.float64)
    pred_flux = np.asarray(pred_flux, dtype=np.float64)
    keep = detected(pred_flux) & np.isfinite(true_flux) & (true_flux > 0)
    if not keep.any():
        return float("nan")
    return float(100.0 * np.mean(np.abs(pred_flux[keep] - true_flux[keep]) / true_flux[keep]))


def mag_mape(true_mag, pred_mag) -> float:
    """Mean absolute percentage error on magnitudes, ``100 mean(|pred - true| / true)`` (NaN ignored)."""
    true_mag = np.asarray(true_mag, dtype=np.float64)
    pred_mag = np.asarray(pred_mag, dtype=np.float64)
    keep = np.isfinite(true_mag) & np.isfinite(pred_mag)
    if not keep.any():
        return float("nan")
    return float(100.0 * np.mean(np.abs(pred_mag[keep] - true_mag[keep]) / np.abs(true_mag[keep])))


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    return values[np.isfinite(values)]


@dataclass(frozen=True)
class PhotometryStats:
    """Summary of one method's photometry on one set of galaxies.

    ``n`` galaxies were asked for; ``n_undetected`` of them have no predicted
    flux (NaN or <= 0) and are left out of every statistic, which is computed
    on the ``n_detected`` others.  Fractions are in [0, 1]; MAPEs in percent.
    """

    n: int
    n_detected: int
    n_undetected: int
    mean_dmag: float
    median_dmag: float
    sigma: float
    nmad: float
    outlier_fraction: float
    flux_mape: float
    mag_mape: float

    @property
    def outlier_percent(self) -> float:
        return 100.0 * self.outlier_fraction

    def as_dict(self) -> dict:
        return asdict(self)


def photometry_stats(true_flux, pred_flux, zp_true: float = ZERO_POINT, zp_pred: float = ZERO_POINT,
                     outlier_threshold: float = OUTLIER_DMAG, source: str = "predictions") -> PhotometryStats:
    """All photometric statistics of one method on one set of galaxies.

    Parameters
    ----------
    true_flux, pred_flux : 1-D arrays of the same length
        True fluxes (finite, > 0) and predicted fluxes (NaN or <= 0 = not detected).
    zp_true, zp_pred : float
        Zero points turning each into magnitudes.
    outlier_threshold : float
        ``|dmag|`` above which a galaxy is a catastrophic outlier.
    source : str
        Name used in error messages.
    """
    true_flux = check_true_flux(true_flux, f"{source}: true fluxes")
    pred_flux = _as_1d(pred_flux, f"{source}: predicted fluxes")
    if pred_flux.shape != true_flux.shape:
        raise InputError(source, f"{pred_flux.size} predicted fluxes for {true_flux.size} true fluxes")
    found = detected(pred_flux)
    true_mag = flux_to_mag(true_flux, zp_true)
    pred_mag = flux_to_mag(np.where(found, pred_flux, np.nan), zp_pred)
    dmag = pred_mag - true_mag
    return PhotometryStats(
        n=int(true_flux.size),
        n_detected=int(found.sum()),
        n_undetected=int((~found).sum()),
        mean_dmag=bias(dmag, "mean"),
        median_dmag=bias(dmag, "median"),
        sigma=sigma(dmag),
        nmad=nmad(dmag),
        outlier_fraction=outlier_fraction(dmag, outlier_threshold),
        flux_mape=flux_mape(true_flux, pred_flux),
        mag_mape=mag_mape(true_mag, pred_mag),
    )
