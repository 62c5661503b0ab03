"""128x128 stamps of field sources, brought to the training domain.

For a source at image position (y, x) the stamp is cut from the
background-subtracted region (:class:`~napari_blendphot.field.detect.RegionDetection`):

* **centre**: the source sits on stamp pixel [64, 64], as the central galaxy
  of every training blend; without resampling the stamp is cut on whole
  pixels (the pixels are not interpolated; the centre is within half a pixel
  of [64, 64]), with resampling the grid is centred on the exact position;
* **neighbours**: pixels of detected sources that are not in the source's
  blend group are replaced by noise of the local background rms (their
  segments dilated by 5 pixels, minus the group's own dilated segments: the
  neighbour cleaning of the training stamps, SPEC §4.3), so the networks see
  the source and its companion(s) only;
* **padding**: pixels beyond the image or without data are filled with noise
  too (flags ``EDGE``, ``NO_DATA``);
* **units**: values times ``Calibration.flux_scale`` are e-/s at zero point
  25.96; **pixel scale**: resampled (:mod:`napari_blendphot.field.resample`,
  flux conserved) when the image's scale differs from 0.06" by more than 5%.

Noise is drawn from ``numpy.random.default_rng([seed, round(y), round(x)])``:
the same source gets the same stamp whatever the tiling or the order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_blendphot.constants import CENTER, STAMP_SIZE
from napari_blendphot.field import flags as F
from napari_blendphot.field.detect import DILATE_ITERATIONS, RegionDetection
from napari_blendphot.field.resample import input_span, resample_stamp


@dataclass
class Stamp:
    """One source's stamp in the training domain and where it lies on the image.

    ``pixels``: float32 (128, 128) e-/s at 25.96, 0.06"/px; ``flags``: EDGE/NO_DATA bits;
    ``origin_yx``: image coordinates of the centre of stamp pixel [0, 0];
    ``step_yx``: image pixels per stamp pixel (1 without resampling).
    """

    pixels: np.ndarray
    flags: int
    origin_yx: tuple
    step_yx: tuple

    def to_stamp(self, y, x):
        """Stamp coordinates (row, column) of image positions."""
        return ((np.asarray(y, np.float64) - self.origin_yx[0]) / self.step_yx[0],
                (np.asarray(x, np.float64) - self.origin_yx[1]) / self.step_yx[1])


def _window(array: np.ndarray, y0: int, y1: int, x0: int, x1: int, fill):
    """``array[y0:y1, x0:x1]`` with *fill* where the window leaves the array; also the 'inside' mask."""
    out = np.full((y1 - y0, x1 - x0), fill, dtype=array.dtype)
    inside = np.zeros(out.shape, bool)
    ny, nx = array.shape
    iy0, iy1, ix0, ix1 = max(y0, 0), min(y1, ny), max(x0, 0), min(x1, nx)
    if iy1 > iy0 and ix1 > ix0:
        out[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = array[iy0:iy1, ix0:ix1]
        inside[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = True
    return out, inside


def _dilate(mask, iterations=DILATE_ITERATIONS):
    from scipy.ndimage import binary_dilation

    return binary_dilation(mask, iterations=iterations) if mask.any() else mask


def source_rng(seed: int, y: float, x: float) -> np.random.Generator:
    return np.random.default_rng([int(seed) % 2**63, int(round(y)) % 2**32, int(round(x)) % 2**32])


def cut_stamp(detection: RegionDetection, region_origin, image_shape, y: float, x: float, keep_segments,
              zoom_yx=(1.0, 1.0), flux_scale: float = 1.0, seed: int = 0) -> Stamp:
    """The training-domain stamp of the source at image position (*y*, *x*) (module docstring).

    Parameters
    ----------
    detection : RegionDetection of the region the source lies in
    region_origin : (y0, x0) image coordinates of the region's pixel [0, 0]
    image_shape : (ny, nx) of the whole image (to tell padding from missing data)
    keep_segments : segment ids (in the region's segmap) of the source's blend group: not cleaned
    zoom_yx : training pixels per image pixel (1, 1 = no resampling)
    flux_scale : stored value -> e-/s at 25.96
    """
    oy, ox = (int(v) for v in region_origin)
    resample = tuple(zoom_yx) != (1.0, 1.0)
    ry, rx = y - oy, x - ox  # region coordinates
    if resample:
        wy0, wy1 = input_span(ry, zoom_yx[0])
        wx0, wx1 = input_span(rx, zoom_yx[1])
    else:
        iy, ix = int(np.floor(ry + 0.5)), int(np.floor(rx + 0.5))
        wy0, wy1, wx0, wx1 = iy - CENTER, iy - CENTER + STAMP_SIZE, ix - CENTER, ix - CENTER + STAMP_SIZE
    pixels, in_region = _window(detection.subtracted, wy0, wy1, wx0, wx1, np.float32(0))
    nodata, _ = _window(detection.nodata, wy0, wy1, wx0, wx1, True)
    segmap, _ = _window(detection.segmap, wy0, wy1, wx0, wx1, 0)
    rms, _ = _window(detection.rms, wy0, wy1, wx0, wx1, np.float32(detection.global_rms))
    # Inside the image = inside the region or beyond it but within the image bounds (tile margins).
    gy = np.arange(wy0, wy1)[:, None] + oy
    gx = np.arange(wx0, wx1)[None, :] + ox
    in_image = (gy >= 0) & (gy < image_shape[0]) & (gx >= 0) & (gx < image_shape[1])
    stamp_flags = 0
    if not in_image.all():
        stamp_flags |= F.EDGE
    if (nodata & in_image).any():
        stamp_flags |= F.NO_DATA
    keep = np.isin(segmap, np.asarray(list(keep_segments), np.int64)) & (segmap > 0)
    others = (segmap > 0) & ~keep
    fill = nodata | ~in_region
    if others.any():
        fill |= _dilate(others) & ~_dilate(keep)
    if fill.any():
        rng = source_rng(seed, y, x)
        noise = rng.standard_normal(pixels.shape).astype(np.float32)
        pixels = np.where(fill, noise * rms, pixels)
    if resample:
        stamp = resample_stamp(pixels, wy0, wx0, ry, rx, zoom_yx)
        origin = (y - CENTER / zoom_yx[0], x - CENTER / zoom_yx[1])
        step = (1.0 / zoom_yx[0], 1.0 / zoom_yx[1])
    else:
        stamp = pixels
        origin = (float(wy0 + oy), float(wx0 + ox))
        step = (1.0, 1.0)
    stamp = (np.asarray(stamp, np.float32) * np.float32(flux_scale)).astype(np.float32)
    return Stamp(stamp, stamp_flags, origin, step)
