"""A fast numpy-only toy sample (Sersic blobs + noise), for tests and GPU machines.

It is not the CANDELS-like mock (see :mod:`napari_blendphot.sample.mock`, which
needs GalSim); it exists so that tests and machines without GalSim can make a
valid :class:`GalaxySample` in milliseconds, deterministically for a seed.
"""

from __future__ import annotations

import numpy as np

from napari_blendphot.constants import CENTER, GALTYPES, STAMP_SIZE
from napari_blendphot.sample.galaxy_sample import GalaxySample, mag_to_flux

_SERSIC_N = {"sph": 4.0, "disk": 1.0, "sphd": 2.0, "irr": 1.0}


def _sersic_b(n: float) -> float:
    return 2.0 * n - 1.0 / 3.0 + 0.009876 / n


def sersic_stamp(flux, radius, n, q=1.0, theta=0.0, dy=0.0, dx=0.0, size=STAMP_SIZE) -> np.ndarray:
    """Pixel-sampled elliptical Sersic profile normalised to *flux* over the stamp."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    y -= CENTER + dy
    x -= CENTER + dx
    c, s = np.cos(theta), np.sin(theta)
    xr = c * x + s * y
    yr = (-s * x + c * y) / q
    r = np.hypot(xr, yr)
    profile = np.exp(-_sersic_b(n) * ((r + 0.5) / radius) ** (1.0 / n))
    return (profile * (flux / profile.sum())).astype(np.float32)


def make_toy_sample(n: int = 100, seed: int = 0, noise_rms: float = 0.01, neighbour_fraction: float = 0.3) -> GalaxySample:
    """*n* toy galaxies with CANDELS-like magnitudes and radii, noise and segmentation."""
    from astropy.table import Table
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    types = rng.choice(GALTYPES, size=n)
    mags = rng.uniform(19.0, 23.0, size=n)
    radii = np.exp(rng.uniform(np.log(1.5), np.log(12.0), size=n))
    images = np.empty((n, STAMP_SIZE, STAMP_SIZE), np.float32)
    segmaps = np.zeros((n, STAMP_SIZE, STAMP_SIZE), np.int32)
    for i in range(n):
        stamp = sersic_stamp(mag_to_flux(mags[i]), radii[i], _SERSIC_N[types[i]],
                             q=rng.uniform(0.4, 1.0), theta=rng.uniform(0, np.pi))
        if rng.random() < neighbour_fraction:
            ny, nx = rng.uniform(-50, 50, size=2)
            if np.hypot(ny, nx) > 25:
                stamp += sersic_stamp(mag_to_flux(rng.uniform(22.5, 25.0)), rng.uniform(1.5, 4.0), 1.0, dy=ny, dx=nx)
        stamp += rng.normal(0.0, noise_rms, stamp.shape).astype(np.float32)
        images[i] = stamp
        labels, _ = ndimage.label(ndimage.gaussian_filter(stamp, 1.0) > 1.5 * noise_rms)
        # Renumber so ids exceed 255 like real CANDELS segmentation maps.
        segmaps[i] = np.where(labels > 0, labels + 300 + i, 0)
        if segmaps[i, CENTER, CENTER] == 0:
            segmaps[i, CENTER - 1:CENTER + 2, CENTER - 1:CENTER + 2] = 299
    catalog = Table(
        {
            "id": np.arange(1, n + 1, dtype=np.int64) * 10 + 7,
            "mag": mags,
            "flux": mag_to_flux(mags),
            "radius": radii,
            "z": rng.uniform(0.2, 3.0, size=n),
            "galtype": types.astype(str),
        }
    )
    return GalaxySample(images, segmaps, catalog, provenance={"step": "toy-sample", "seed": seed, "n": n},
                        source=f"toy sample (seed {seed})")
