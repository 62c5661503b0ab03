"""Flux-conserving resampling of a field cutout onto the training pixel grid.

Each axis is resampled on its own: the cumulative flux along the axis, known
exactly at the input pixel edges, is interpolated at the output pixel edges
and differenced.  Whatever the interpolant, the output pixels then sum to the
flux between the first and last output edges (flux is conserved by
construction, also for sub-pixel centring).  When the output pixels are
larger than the input ones (``zoom < 1``, a finer image than the training
scale) the interpolant is linear: each output pixel is the exact sum of the
input pixel areas it covers.  When they are smaller (a coarser image), a
piecewise-cubic Hermite (PCHIP) interpolant of the cumulative flux spreads
each input pixel smoothly, without the steps of a plain area-overlap
sampling and without overshoot.

Coordinates: pixel ``k`` of an axis covers ``[k - 0.5, k + 0.5]`` (0-based
centres, the convention of numpy, sep and astropy's ``origin=0``).
"""

from __future__ import annotations

import numpy as np

from napari_blendphot.constants import CENTER, STAMP_SIZE


def output_edges(centre: float, zoom: float, size: int = STAMP_SIZE, center: int = CENTER) -> np.ndarray:
    """Input-pixel coordinates of the ``size + 1`` output pixel edges; output pixel *center* is centred on *centre*."""
    return float(centre) + (np.arange(size + 1, dtype=np.float64) - center - 0.5) / float(zoom)


def input_span(centre: float, zoom: float, size: int = STAMP_SIZE, center: int = CENTER, pad: int = 2) -> tuple:
    """Input pixel range ``[first, stop)`` that covers the output edges (plus *pad* pixels for the interpolant)."""
    edges = output_edges(centre, zoom, size, center)
    return int(np.floor(edges[0] + 0.5)) - pad, int(np.ceil(edges[-1] + 0.5)) + pad


def resample_axis(data: np.ndarray, first: int, edges: np.ndarray, axis: int, smooth: bool) -> np.ndarray:
    """Resample *data* along *axis*: input pixel ``i`` of data sits at coordinate ``first + i``.

    Returns an array with ``len(edges) - 1`` pixels along *axis*, each the flux between two edges.
    """
    data = np.moveaxis(np.asarray(data, np.float64), axis, 0)
    n = data.shape[0]
    boundaries = first - 0.5 + np.arange(n + 1, dtype=np.float64)
    cumulative = np.zeros((n + 1, *data.shape[1:]), np.float64)
    np.cumsum(data, axis=0, out=cumulative[1:])
    if edges[0] < boundaries[0] or edges[-1] > boundaries[-1]:
        raise ValueError(f"output edges [{edges[0]:.2f}, {edges[-1]:.2f}] leave the input "
                         f"[{boundaries[0]:.2f}, {boundaries[-1]:.2f}]")
    if smooth:
        from scipy.interpolate import PchipInterpolator

        at_edges = PchipInterpolator(boundaries, cumulative, axis=0)(edges)
    else:
        flat = cumulative.reshape(n + 1, -1)
        # Linear interpolation of the cumulative flux = exact pixel-area overlap.
        index = np.clip(np.searchsorted(boundaries, edges, side="right") - 1, 0, n - 1)
        weight = (edges - boundaries[index])[:, None]
        at_edges = flat[index] + weight * (flat[index + 1] - flat[index])
        at_edges = at_edges.reshape(len(edges), *cumulative.shape[1:])
    return np.moveaxis(np.diff(at_edges, axis=0), 0, axis)


def resample_stamp(region: np.ndarray, region_y0: int, region_x0: int, centre_y: float, centre_x: float,
                   zoom_yx, size: int = STAMP_SIZE, center: int = CENTER) -> np.ndarray:
    """A ``size x size`` stamp of *region* on a grid ``zoom`` times finer, with pixel *center* on the centre.

    Parameters
    ----------
    region : (ny, nx) array
        Input pixels; ``region[0, 0]`` is image pixel ``(region_y0, region_x0)``.
        It must cover :func:`input_span` of both axes.
    centre_y, centre_x : float
        Image coordinates (0-based) that output pixel ``[center, center]`` is centred on.
    zoom_yx : (float, float)
        Output pixels per input pixel along y and x (``image scale / training scale``).

    Returns
    -------
    float32 (size, size), the same total flux per unit area (flux conserved).
    """
    zoom_y, zoom_x = (float(z) for z in zoom_yx)
    rows = resample_axis(region, region_y0, output_edges(centre_y, zoom_y, size, center), 0, smooth=zoom_y > 1.0)
    stamp = resample_axis(rows, region_x0, output_edges(centre_x, zoom_x, size, center), 1, smooth=zoom_x > 1.0)
    return stamp.astype(np.float32)


def noise_factor(zoom_yx, seed: int = 0, size: int = 128) -> float:
    """Output/input rms ratio of white noise resampled with *zoom_yx* (measured, not modelled).

    The ratio depends on how the output grid falls on the input pixels, so it
    is averaged over sixteen sub-pixel placements of the centre (the stamps
    are centred on the sources' exact positions).
    """
    rng = np.random.default_rng(seed)
    half = size // 2
    variances = []
    for dy in (0.0, 0.25, 0.5, 0.75):
        for dx in (0.0, 0.25, 0.5, 0.75):
            centre = (2.0 * half + dy, 2.0 * half + dx)
            span_y = input_span(centre[0], zoom_yx[0], size, half)
            span_x = input_span(centre[1], zoom_yx[1], size, half)
            noise = rng.normal(0.0, 1.0, (span_y[1] - span_y[0], span_x[1] - span_x[0]))
            out = resample_stamp(noise, span_y[0], span_x[0], centre[0], centre[1], zoom_yx, size, half)
            variances.append(float(np.var(out)))
    return float(np.sqrt(np.mean(variances)))
