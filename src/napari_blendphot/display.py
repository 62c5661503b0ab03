"""Display choices shared by the napari reader, the widgets and the figures.

Astronomical stamps span a huge dynamic range: a bright bulge is thousands of
times the sky noise while the outskirts of a disk sit at one sigma.  napari
displays linearly between two contrast limits, optionally with a gamma curve.
We keep the data untouched (so the status bar shows real e-/s) and choose:

* lower limit = sky level - 1 sigma of the sky, so the noise is visible but dark;
* upper limit = the 99.8th percentile of the pixels, so bright cores saturate
  only in their very centre;
* gamma = 0.5 (a square-root stretch), a close, cheap stand-in for the asinh
  stretch of Lupton et al. (2004) over this range.

:func:`asinh_stretch` gives the real asinh mapping for static figures
(astropy.visualization's ``AsinhStretch`` over a ``ManualInterval``).
"""

from __future__ import annotations

import numpy as np

#: Per-galaxy label values used for masks in Labels layers, across all methods.
CENTRAL_LABEL = 1
COMPANION_LABEL = 2
OVERLAP_LABEL = 3
#: Consistent colours per galaxy across methods (RGBA).
GALAXY_COLORS = {
    CENTRAL_LABEL: (0.12, 0.63, 1.0, 1.0),    # central: blue
    COMPANION_LABEL: (1.0, 0.55, 0.0, 1.0),   # companion: orange
    OVERLAP_LABEL: (0.85, 0.2, 0.85, 1.0),    # both: magenta
}


def robust_sky(data) -> tuple[float, float]:
    """Sky level and sky sigma: median and NMAD of the pixels below the median + 3 NMAD (one clipping pass)."""
    from astropy.stats import mad_std, sigma_clip

    values = np.asarray(data, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    if values.size > 200_000:
        values = values[:: values.size // 200_000 + 1]
    kept = values
    if mad_std(values) > 0:  # (a constant image has no sky noise to clip with)
        kept = sigma_clip(values, sigma_lower=np.inf, sigma_upper=3.0, maxiters=1, cenfunc="median",
                          stdfunc="mad_std", masked=False)
    median, nmad = float(np.median(kept)), float(mad_std(kept))
    return median, (nmad if nmad > 0 else max(float(np.std(values)), 1e-12))


def astro_contrast(data) -> dict:
    """``contrast_limits`` and ``gamma`` for an image layer of stamps (see module doc)."""
    values = np.asarray(data, dtype=np.float64)
    sky, sigma = robust_sky(values)
    finite = values[np.isfinite(values)]
    if finite.size > 500_000:
        finite = finite.ravel()[:: finite.size // 500_000 + 1]
    upper = float(np.percentile(finite, 99.8)) if finite.size else 1.0
    lower = sky - sigma
    if not upper > lower:
        upper = lower + max(abs(lower), 1.0)
    return {"contrast_limits": (lower, upper), "gamma": 0.5}


def asinh_stretch(image, softening: float | None = None, upper: float | None = None) -> np.ndarray:
    """Map *image* to [0, 1] with an asinh stretch (softening defaults to 3 sky sigma).

    ``asinh((x - sky) / softening) / asinh((top - sky) / softening)``, clipped:
    astropy's ``AsinhStretch(a)`` on the interval [sky, top] with
    ``a = softening / (top - sky)`` (the top at least one softening above the sky).
    """
    from astropy.visualization import AsinhStretch, ManualInterval

    image = np.asarray(image, dtype=np.float64)
    sky, sigma = robust_sky(image)
    softening = 3 * sigma if softening is None else softening
    top = float(np.percentile(image, 99.9)) if upper is None else upper
    span = max(top - sky, softening)
    unit = ManualInterval(sky, sky + span)(image, clip=True)
    return AsinhStretch(a=softening / span)(unit, clip=True)


def masks_to_labels(masks) -> np.ndarray:
    """(..., 2, H, W) [central, companion] masks -> (..., H, W) labels 1/2/3 (3 = both)."""
    masks = np.asarray(masks) > 0.5
    central = masks[..., 0, :, :]
    companion = masks[..., 1, :, :]
    labels = np.zeros(central.shape, np.uint8)
    labels[central] = CENTRAL_LABEL
    labels[companion] = COMPANION_LABEL
    labels[central & companion] = OVERLAP_LABEL
    return labels
