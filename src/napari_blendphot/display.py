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

:func:`asinh_stretch` gives the real asinh mapping for static figures.
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
    """Sky level and sky sigma (median and NMAD of the pixels below the median + 3 NMAD)."""
    values = np.asarray(data, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    if values.size > 200_000:
        values = values[:: values.size // 200_000 + 1]
    median = float(np.median(values))
    nmad = 1.4826 * float(np.median(np.abs(values - median)))
    if nmad > 0:
        low = values[values < median + 3 * nmad]
        median = float(np.median(low))
        nmad = 1.4826 * float(np.median(np.abs(low - median)))
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
    """Map *image* to [0, 1] with an asinh stretch (softening defaults to 3 sky sigma)."""
    image = np.asarray(image, dtype=np.float64)
    sky, sigma = robust_sky(image)
    softening = 3 * sigma if softening is None else softening
    top = float(np.percentile(image, 99.9)) if upper is None else upper
    scaled = np.arcsinh((image - sky) / softening) / np.arcsinh(max(top - sky, softening) / softening)
    return np.clip(scaled, 0.0, 1.0)


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
