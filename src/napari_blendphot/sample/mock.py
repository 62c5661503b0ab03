"""A CANDELS-like mock sample of isolated galaxies drawn with GalSim (SPEC §3).

The mock stands in for the real CANDELS F160W stamps when those cannot be
downloaded.  Each stamp is 128 x 128 pixels of 0.06 arcsec with one galaxy on
pixel [64, 64], in e-/s at the F160W AB zero point 25.96:

- **PSF**: an obscured Airy pattern (2.4 m aperture, 1.6 micron, linear
  obscuration 0.33) convolved with the native WFC3/IR pixel (a 0.13 arcsec box,
  which drizzling does not remove) and a Gaussian of sigma 0.03 arcsec standing
  for charge diffusion, jitter and drizzle smoothing; GalSim's default
  ``drawImage`` adds the 0.06 arcsec output pixel.  FWHM of the drawn PSF:
  0.18 arcsec (3 pixels).
- **Morphologies** by CANDELS visual type: ``sph`` Sersic n = 3-5;
  ``disk`` inclined exponential (random inclination and position angle);
  ``sphd`` de Vaucouleurs bulge + inclined exponential disk (bulge fraction
  0.15-0.85); ``irr`` exponential disk + ``galsim.RandomKnots`` star-forming
  knots, displaced from the disk to make it lopsided.
- **Population**: type mix of the paper's cleaned sample (Table 1: 352 sph,
  433 disk, 702 sphd, 432 irr), spread evenly along the sample by a
  low-discrepancy sequence.  Per type, magnitude, half-light radius and
  redshift follow smooth (monotone-cubic) quantile functions through the
  percentiles of the 1,050 distinct galaxies of the paper's published test
  catalogue, tied together by a Gaussian copula with the rank correlations of
  that catalogue (bright galaxies are larger).
- ``radius`` is the half-light radius in pixels of the intrinsic (PSF-free)
  profile along its major axis (the face-on value for inclined disks).
- ``mag``/``flux`` are the TRUE total magnitude/flux of the galaxy; the stamp
  holds ``stamp_flux`` of it (large de Vaucouleurs profiles lose up to a
  few tens of percent outside the 7.7 arcsec stamp, like real ones).
- **Noise**: white Gaussian background of rms :func:`candels_pixel_rms`
  (0.0106 e-/s, from the 5-sigma point-source depth 27.4 AB in a 0.17 arcsec
  radius aperture) plus, by default, the Poisson noise of the source for an
  exposure time of 3000 s.
- **Neighbours**: a share of the stamps (default 35 %) carries 1-3 fainter
  galaxies away from the central one.
- **Segmentation**: ``sep`` detection on the noisy stamp as SExtractor would
  do it (background subtracted, 1.5 sigma threshold, 5 pixel minimum area,
  deblending, 7x7 Gaussian filter of FWHM 4 px); ids are offset above 255 and the central source's
  id is ``seg[64, 64]`` (also in the ``segval`` column).  Like the real
  catalogue, the sample holds detected galaxies only: if noise leaves the
  centre pixel undetected, the noise is drawn again, then if need be the
  galaxy (ids in the provenance, ``redrawn_ids``).

Everything random flows from ``numpy.random.SeedSequence(seed)``: galaxy ``i``
uses its own generator spawned with key ``(i,)`` (and GalSim deviates seeded
from it), so galaxy ``i`` is the same whatever ``n`` is, and the same seed gives
byte-identical stamps.

GalSim is an optional dependency (the ``mock`` extra); it is imported only
inside the functions that need it.
"""

from __future__ import annotations

import math
import time
from functools import lru_cache

import numpy as np

from napari_blendphot.constants import CENTER, GALTYPES, PIXEL_SCALE, STAMP_SIZE, ZERO_POINT
from napari_blendphot.errors import InputError
from napari_blendphot.sample.galaxy_sample import GalaxySample, mag_to_flux

# --- population of the real sample -------------------------------------------------------
#: Percentile levels of the tables below (0 and 100 are the extremes).
PERCENTILE_LEVELS = (0.0, 1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0, 100.0)

#: Per-type percentiles of F160W magnitude, radius (px) and redshift of the 1,050 distinct
#: galaxies of the paper's published test catalogue (output_catalog.csv, g1_/g2_ columns),
#: and the Spearman rank correlations (mag-radius, mag-z, radius-z) measured on them.
REAL_POPULATION = {
    "sph": {
        "mag": (18.846, 19.061, 19.612, 20.780, 21.447, 21.967, 22.648, 22.763, 22.817),
        "radius": (1.072, 1.160, 1.334, 1.865, 2.266, 3.525, 6.474, 8.829, 10.853),
        "z": (0.13, 0.276, 0.412, 0.68, 0.90, 1.13, 1.40, 1.48, 1.49),
        "spearman": (-0.667, 0.383, -0.209),
    },
    "disk": {
        "mag": (18.153, 19.561, 20.827, 21.593, 22.099, 22.543, 22.842, 22.946, 22.995),
        "radius": (4.356, 4.799, 5.408, 6.879, 8.596, 11.169, 16.817, 22.064, 25.199),
        "z": (0.04, 0.083, 0.254, 0.514, 0.731, 0.971, 1.329, 1.44, 1.487),
        "spearman": (-0.363, 0.284, -0.070),
    },
    "sphd": {
        "mag": (18.016, 18.532, 18.959, 20.069, 20.857, 21.612, 22.458, 22.768, 22.990),
        "radius": (1.623, 2.450, 3.302, 4.366, 5.897, 8.305, 14.023, 19.402, 48.575),
        "z": (0.11, 0.21, 0.328, 0.60, 0.76, 1.04, 1.369, 1.461, 1.49),
        "spearman": (-0.549, 0.394, -0.103),
    },
    "irr": {
        "mag": (19.274, 19.645, 20.564, 21.540, 22.059, 22.513, 22.833, 22.924, 22.990),
        "radius": (0.809, 3.332, 4.342, 6.015, 7.962, 11.029, 17.310, 22.636, 41.008),
        "z": (0.02, 0.053, 0.173, 0.585, 0.938, 1.178, 1.42, 1.487, 1.49),
        "spearman": (-0.292, 0.167, -0.344),
    },
}

#: Morphological mix of the paper's full cleaned sample (Table 1).
TYPE_MIX = {"sph": 352, "disk": 433, "sphd": 702, "irr": 432}

# --- instrument ----------------------------------------------------------------------------
#: HST primary mirror diameter (m), F160W effective wavelength (nm), linear obscuration.
TELESCOPE_DIAMETER_M = 2.4
F160W_WAVELENGTH_NM = 1600.0
OBSCURATION = 0.33
#: Native WFC3/IR pixel (arcsec), kept by drizzling as part of the PSF.
NATIVE_PIXEL_ARCSEC = 0.13
#: Extra Gaussian blur (arcsec): charge diffusion, jitter, drizzle; brings the FWHM to 0.18".
EXTRA_BLUR_SIGMA_ARCSEC = 0.03
#: CANDELS F160W 5-sigma point-source depth (AB) in a 0.17 arcsec radius aperture.
POINT_SOURCE_DEPTH_MAG = 27.4
DEPTH_APERTURE_RADIUS_ARCSEC = 0.17
#: Effective exposure time (s) for the source's Poisson noise (CANDELS F160W: ~2 ks Wide to >10 ks Deep).
DEFAULT_EXPOSURE_TIME = 3000.0

# --- segmentation (SExtractor-like) ---------------------------------------------------------
DETECT_THRESHOLD_SIGMA = 1.5
DETECT_MIN_AREA = 5
DEBLEND_NTHRESH = 32
DEBLEND_CONT = 0.02
#: FWHM (px) of the Gaussian detection filter (SExtractor's gauss_4.0_7x7.conv, as in CANDELS):
#: it keeps the knots of irregulars from being deblended into separate sources.
DETECT_FILTER_FWHM = 4.0
#: Segmentation ids are offset by at least this much (real CANDELS ids exceed 255).
SEGMENT_ID_OFFSET = 256

#: Galaxy ids of the mock: FIRST_ID + index.
FIRST_ID = 10001


def candels_pixel_rms(depth_mag: float = POINT_SOURCE_DEPTH_MAG,
                      aperture_radius_arcsec: float = DEPTH_APERTURE_RADIUS_ARCSEC,
                      pixel_scale: float = PIXEL_SCALE, zero_point: float = ZERO_POINT) -> float:
    """Per-pixel background rms (e-/s) implied by a 5-sigma point-source depth.

    A point source of magnitude ``depth_mag`` is detected at 5 sigma in a circular
    aperture of ``A = pi (r / pixel_scale)^2`` pixels.  For white noise of rms
    ``s`` per pixel the aperture's noise is ``s sqrt(A)``, so
    ``s = F_lim / (5 sqrt(A))`` with ``F_lim = 10^(-0.4 (depth - zp))``.
    For 27.4 AB, r = 0.17", 0.06"/px and zp 25.96: F_lim = 0.266 e-/s,
    A = 25.2 px, s = 0.0106 e-/s.  (Taking the depth as aperture flux, not
    total flux, and ignoring drizzle noise correlations; an aperture
    correction of ~0.68, the PSF's encircled energy at 0.17", would give 0.0072.)
    """
    flux_limit = 10.0 ** (-0.4 * (depth_mag - zero_point))
    area = math.pi * (aperture_radius_arcsec / pixel_scale) ** 2
    return flux_limit / (5.0 * math.sqrt(area))


# --- population sampling ---------------------------------------------------------------------
@lru_cache(maxsize=None)
def _quantile_function(galtype: str, quantity: str):
    """Monotone cubic quantile function p -> value through the tabulated percentiles."""
    from scipy.interpolate import PchipInterpolator

    values = np.asarray(REAL_POPULATION[galtype][quantity], float)
    if quantity == "radius":
        values = np.log(values)  # radii are log-normal-like: interpolate in log
    return PchipInterpolator(np.asarray(PERCENTILE_LEVELS) / 100.0, values)


@lru_cache(maxsize=None)
def _copula_cholesky(galtype: str) -> np.ndarray:
    """Cholesky factor of the Gaussian-copula correlation matrix of (mag, radius, z)."""
    rs_mr, rs_mz, rs_rz = REAL_POPULATION[galtype]["spearman"]
    # Pearson correlation of the Gaussian copula that has these Spearman correlations.
    pearson = [2.0 * math.sin(math.pi * r / 6.0) for r in (rs_mr, rs_mz, rs_rz)]
    corr = np.array([[1.0, pearson[0], pearson[1]],
                     [pearson[0], 1.0, pearson[2]],
                     [pearson[1], pearson[2], 1.0]])
    return np.linalg.cholesky(corr)


def draw_population(rng: np.random.Generator, galtype: str) -> tuple[float, float, float]:
    """Draw (mag, radius in px, z) of one galaxy of type *galtype*."""
    from scipy.special import ndtr

    normals = _copula_cholesky(galtype) @ rng.standard_normal(3)
    uniforms = ndtr(normals)
    mag = float(_quantile_function(galtype, "mag")(uniforms[0]))
    radius = float(np.exp(_quantile_function(galtype, "radius")(uniforms[1])))
    z = float(_quantile_function(galtype, "z")(uniforms[2]))
    return mag, radius, z


# --- GalSim models -----------------------------------------------------------------------------
@lru_cache(maxsize=1)
def make_psf():
    """The F160W PSF (a GalSim profile, without the 0.06" output pixel)."""
    import galsim

    airy = galsim.Airy(lam=F160W_WAVELENGTH_NM, diam=TELESCOPE_DIAMETER_M, obscuration=OBSCURATION,
                       scale_unit=galsim.arcsec)
    return galsim.Convolve(airy, galsim.Box(NATIVE_PIXEL_ARCSEC, NATIVE_PIXEL_ARCSEC),
                           galsim.Gaussian(sigma=EXTRA_BLUR_SIGMA_ARCSEC))


@lru_cache(maxsize=None)
def _sersic_b(n: float) -> float:
    from scipy.special import gammaincinv

    return float(gammaincinv(2.0 * n, 0.5))


def _enclosed_fraction(radius, n: float, half_light_radius: float) -> float:
    from scipy.special import gammainc

    return float(gammainc(2.0 * n, _sersic_b(n) * (radius / half_light_radius) ** (1.0 / n)))


@lru_cache(maxsize=4096)
def _bulge_disk_unit_hlr(bulge_fraction: float, size_ratio: float) -> float:
    """Half-light radius of a face-on de Vaucouleurs + exponential with disk hlr 1."""
    from scipy.optimize import brentq

    def excess(r):
        return (bulge_fraction * _enclosed_fraction(r, 4.0, size_ratio)
                + (1.0 - bulge_fraction) * _enclosed_fraction(r, 1.0, 1.0) - 0.5)

    return brentq(excess, 1e-4, 10.0, xtol=1e-10)


#: Sersic indices of spheroids: a small grid, since GalSim caches its tables per index.
_SPH_SERSIC_N = (3.0, 3.5, 4.0, 4.5, 5.0)


def _elliptical(profile_cls, major_hlr_arcsec, q, beta, **kwargs):
    """Profile with major-axis half-light radius *major_hlr_arcsec* (shear conserves area)."""
    import galsim

    return profile_cls(half_light_radius=major_hlr_arcsec * math.sqrt(q), **kwargs).shear(
        q=q, beta=beta * galsim.radians)


def _inclined_disk(hlr_arcsec, flux, rng):
    import galsim

    cos_i = rng.uniform(0.0, 1.0)  # isotropic orientations
    inclination = math.acos(cos_i)
    return galsim.InclinedExponential(inclination * galsim.radians, half_light_radius=hlr_arcsec,
                                      scale_h_over_r=rng.uniform(0.08, 0.2), flux=flux), cos_i


def build_galaxy(galtype: str, flux: float, radius_px: float, rng: np.random.Generator):
    """GalSim profile (PSF-free, centred) of one galaxy, and its shape parameters."""
    import galsim

    hlr = radius_px * PIXEL_SCALE
    beta = rng.uniform(0.0, math.pi)
    params = {"bulge_fraction": np.nan, "axis_ratio": np.nan, "sersic_n": np.nan}
    if galtype == "sph":
        n = float(rng.choice(_SPH_SERSIC_N))
        q = rng.uniform(0.55, 1.0)
        profile = _elliptical(galsim.Sersic, hlr, q, beta, n=n, flux=flux)
        params.update(bulge_fraction=1.0, axis_ratio=q, sersic_n=n)
    elif galtype == "disk":
        disk, cos_i = _inclined_disk(hlr, flux, rng)
        profile = disk.rotate(beta * galsim.radians)
        params.update(bulge_fraction=0.0, axis_ratio=cos_i, sersic_n=1.0)
    elif galtype == "sphd":
        bulge_fraction = round(rng.uniform(0.15, 0.85), 3)
        size_ratio = round(rng.uniform(0.15, 0.6), 3)
        disk_hlr = hlr / _bulge_disk_unit_hlr(bulge_fraction, size_ratio)
        disk, cos_i = _inclined_disk(disk_hlr, (1.0 - bulge_fraction) * flux, rng)
        q_bulge = rng.uniform(0.6, 1.0)
        bulge = _elliptical(galsim.DeVaucouleurs, size_ratio * disk_hlr, q_bulge, 0.0,
                            flux=bulge_fraction * flux)
        profile = galsim.Add([bulge, disk]).rotate(beta * galsim.radians)
        params.update(bulge_fraction=bulge_fraction, axis_ratio=cos_i, sersic_n=np.nan)
    elif galtype == "irr":
        knot_fraction = rng.uniform(0.15, 0.4)
        q = rng.uniform(0.35, 0.9)
        disk = _elliptical(galsim.Exponential, hlr, q, 0.0, flux=(1.0 - knot_fraction) * flux)
        n_knots = int(rng.integers(10, 50))
        knots = galsim.RandomKnots(n_knots, half_light_radius=0.8 * hlr, flux=knot_fraction * flux,
                                   rng=galsim.BaseDeviate(int(rng.integers(1, 2**31 - 1))))
        # Knots are star-forming complexes of ~1 kpc (0.1" at z ~ 1), not points.
        knot_size = rng.uniform(1.0, 2.0) * PIXEL_SCALE
        knots = galsim.Convolve(knots, galsim.Gaussian(sigma=knot_size))
        knots = knots.shear(q=rng.uniform(0.5, 1.0), beta=rng.uniform(0, math.pi) * galsim.radians)
        # Lopsidedness: displace knots and disk oppositely, keeping the light centroid put.
        offset = rng.uniform(0.1, 0.4) * hlr
        angle = rng.uniform(0.0, 2.0 * math.pi)
        ox, oy = offset * math.cos(angle), offset * math.sin(angle)
        profile = galsim.Add([
            disk.shift(-ox * knot_fraction, -oy * knot_fraction),
            knots.shift(ox * (1.0 - knot_fraction), oy * (1.0 - knot_fraction)),
        ]).rotate(beta * galsim.radians)
        params.update(bulge_fraction=0.0, axis_ratio=q, sersic_n=1.0)
    else:
        raise InputError("galtype", f"unknown galaxy type {galtype!r}", f"expected one of {list(GALTYPES)}")
    return profile, params


# --- neighbours ----------------------------------------------------------------------------------
_NEIGHBOUR_MAG_RANGE = (22.5, 26.5)
#: Slope of faint F160W galaxy counts, d log N / d mag.
_COUNTS_SLOPE = 0.3


def _draw_neighbours(rng: np.random.Generator, central_mag: float, distance_to_central: np.ndarray):
    """Parameters (mag, radius px, type, dy, dx) of 1-3 fainter galaxies clear of the central one.

    *distance_to_central* gives, per pixel, the distance (px) to the central
    galaxy's footprint; a neighbour is placed where it is at least 2.5 of its
    radii + 3 px, so that it sits beside the central galaxy, not on top of it.
    """
    count = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
    lo = max(_NEIGHBOUR_MAG_RANGE[0], central_mag + 0.75)  # fainter than the central galaxy
    hi = max(_NEIGHBOUR_MAG_RANGE[1], lo + 0.5)
    neighbours = []
    for _ in range(count):
        # Inverse CDF of dN/dm proportional to 10^(slope m) between lo and hi.
        a, b = 10.0 ** (_COUNTS_SLOPE * lo), 10.0 ** (_COUNTS_SLOPE * hi)
        mag = math.log10(a + rng.uniform() * (b - a)) / _COUNTS_SLOPE
        # Fainter galaxies are smaller: median 3 px at 23 AB, 0.2 dex scatter.
        radius = float(np.clip(3.0 * 10 ** (-0.12 * (mag - 23.0) + rng.normal(0.0, 0.2)), 0.8, 12.0))
        galtype = str(rng.choice(["sph", "disk", "irr"], p=[0.3, 0.5, 0.2]))
        for _attempt in range(50):
            dy, dx = rng.uniform(-(CENTER - 6), CENTER - 7, size=2)
            row, col = int(round(CENTER + dy)), int(round(CENTER + dx))
            if distance_to_central[row, col] >= 2.5 * radius + 3.0:
                break
        else:
            continue  # the central galaxy fills the stamp: no room for this neighbour
        neighbours.append((mag, radius, galtype, float(dy), float(dx)))
    return neighbours


def _distance_to_footprint(central: np.ndarray, level: float) -> np.ndarray:
    """Distance (px) of every pixel to the pixels where *central* exceeds *level*."""
    from scipy import ndimage

    footprint = central > level
    footprint[CENTER, CENTER] = True
    return ndimage.distance_transform_edt(~footprint)


# --- segmentation ----------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def detection_kernel() -> np.ndarray:
    """7x7 Gaussian detection filter of FWHM :data:`DETECT_FILTER_FWHM` pixels."""
    sigma = DETECT_FILTER_FWHM / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    y, x = np.mgrid[-3:4, -3:4]
    kernel = np.exp(-(x**2 + y**2) / (2.0 * sigma**2))
    return kernel / kernel.sum()


def segment_stamp(stamp: np.ndarray, noise_rms: float, id_offset: int) -> np.ndarray:
    """SExtractor-like segmentation map (int32, ids offset by *id_offset*) of a noisy stamp."""
    import sep

    data = np.ascontiguousarray(stamp, dtype=np.float64)
    # Large boxes: the stamp is mostly galaxy, and real CANDELS backgrounds were flat.
    background = sep.Background(data, bw=64, bh=64, fw=3, fh=3)
    data = data - background.globalback
    _objects, segmap = sep.extract(
        data, DETECT_THRESHOLD_SIGMA, err=noise_rms, minarea=DETECT_MIN_AREA,
        filter_kernel=detection_kernel(), deblend_nthresh=DEBLEND_NTHRESH, deblend_cont=DEBLEND_CONT, clean=True,
        segmentation_map=True,
    )
    segmap = segmap.astype(np.int32)
    return np.where(segmap > 0, segmap + np.int32(id_offset), 0).astype(np.int32)


#: Noise realisations tried until the central galaxy is detected on its centre pixel,
#: then galaxies (new magnitude, size, shape) tried until one is.
MAX_NOISE_DRAWS = 5
MAX_GALAXY_DRAWS = 20


def _draw_stamp(rng, galtype, psf, rms, neighbour_fraction, exposure_time):
    """Draw one stamp (galaxy, neighbours, noise, segmentation); None if the centre goes undetected.

    The real catalogue holds detected galaxies only: when noise leaves the centre
    pixel outside every segment (rare: faint, flat disks), the noise is drawn
    again, and if that never works the caller draws another galaxy.
    """
    import galsim

    mag, radius, z = draw_population(rng, galtype)
    flux = float(mag_to_flux(mag))
    profile, shape = build_galaxy(galtype, flux, radius, rng)

    image = galsim.ImageF(STAMP_SIZE, STAMP_SIZE, scale=PIXEL_SCALE)
    # GalSim centres on the true centre (between pixels for an even size); the
    # half-pixel offset puts the galaxy on pixel [64, 64] (0-based).
    galsim.Convolve(profile, psf).drawImage(image, offset=(0.5, 0.5))
    stamp_flux = float(image.array.sum(dtype=np.float64))
    model = image.array.copy()  # the central galaxy alone (keep_models)

    neighbours = []
    if rng.uniform() < neighbour_fraction:
        # Footprint: where the central galaxy is above half the detection threshold.
        distance = _distance_to_footprint(image.array, 0.5 * DETECT_THRESHOLD_SIGMA * rms)
        neighbours = _draw_neighbours(rng, mag, distance)
    for nb_mag, nb_radius, nb_type, dy, dx in neighbours:
        nb_profile, _ = build_galaxy(nb_type, float(mag_to_flux(nb_mag)), nb_radius, rng)
        galsim.Convolve(nb_profile, psf).drawImage(image, offset=(0.5 + dx, 0.5 + dy), add_to_image=True)

    clean = image.array.astype(np.float64)
    for noise_draw in range(1, MAX_NOISE_DRAWS + 1):
        noisy = clean
        if exposure_time is not None:
            counts = np.clip(clean, 0.0, None) * exposure_time
            noisy = clean + (rng.poisson(counts) - counts) / exposure_time
        noisy = (noisy + rng.normal(0.0, rms, clean.shape)).astype(np.float32)
        segmap = segment_stamp(noisy, rms, id_offset=0)
        if segmap[CENTER, CENTER] != 0:
            break
    else:
        return None
    return {"image": noisy, "noiseless": clean, "model": model, "segmap": segmap, "noise_draws": noise_draw,
            "mag": mag, "flux": flux, "radius": radius, "z": round(z, 4), "stamp_flux": stamp_flux,
            "n_neighbours": len(neighbours), **{k: float(v) for k, v in shape.items()}}


# --- the generator -------------------------------------------------------------------------------------
#: Golden-ratio conjugate: the additive recurrence frac(u0 + i g) spreads any n galaxies evenly.
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def galaxy_types(seed: int, indices) -> list[str]:
    """Morphological types of galaxies *indices* of a mock made with *seed*.

    The types follow :data:`TYPE_MIX` through a low-discrepancy sequence with a
    seeded phase, so every sample (even a small one) has the mix within a
    galaxy or two per type, and galaxy ``i``'s type does not depend on ``n``.
    """
    names = list(TYPE_MIX)
    cumulative = np.cumsum([TYPE_MIX[t] for t in names], dtype=float)
    cumulative /= cumulative[-1]
    phase = np.random.default_rng(np.random.SeedSequence(int(seed))).random()
    u = np.mod(phase + _GOLDEN * np.asarray(indices, dtype=np.float64), 1.0)
    return [names[k] for k in np.minimum(np.searchsorted(cumulative, u, side="right"), len(names) - 1)]


def galaxy_generator(seed: int, index: int) -> np.random.Generator:
    """The random generator of galaxy *index* of a mock sample made with *seed*."""
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=(int(index),)))


def _check_arguments(n, seed, neighbour_fraction, noise_rms, exposure_time):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError("argument n", f"must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError("argument seed", f"must be a non-negative integer, got {seed!r}")
    if not 0.0 <= float(neighbour_fraction) <= 1.0:
        raise InputError("argument neighbour_fraction", f"must be within [0, 1], got {neighbour_fraction}")
    if noise_rms is not None and not (np.isfinite(noise_rms) and noise_rms > 0):
        raise InputError("argument noise_rms", f"must be a positive number, got {noise_rms}")
    if exposure_time is not None and not (np.isfinite(exposure_time) and exposure_time > 0):
        raise InputError("argument exposure_time", f"must be a positive number or None, got {exposure_time}")


#: Versions of the mock generator (2 is the default; 1 is kept byte-identical for old test sets).
MOCK_VERSIONS = (1, 2)


def make_mock_sample(n: int, seed: int, progress=None, neighbour_fraction: float = 0.35,
                     noise_rms: float | None = None, exposure_time: float | None = DEFAULT_EXPOSURE_TIME,
                     return_noiseless: bool = False, mock_version: int = 2, population: str = "candels",
                     keep_models: bool = False):
    """Draw *n* CANDELS-like galaxies with GalSim.

    ``mock_version=2`` (default) draws the structured galaxies of
    :mod:`napari_blendphot.sample.mock_v2`; ``mock_version=1`` the smooth model of
    this module's docstring, byte-identical to what earlier versions made for the
    same seed.

    Parameters
    ----------
    n : int
        Number of galaxies.
    seed : int
        Seed of everything random; the same seed gives byte-identical stamps, and
        galaxy ``i`` does not depend on ``n``.
    progress : callable, optional
        ``progress(done, total)`` called after each galaxy.
    neighbour_fraction : float
        Probability that a stamp carries fainter neighbours (1-3 of them).
    noise_rms : float, optional
        Background rms per pixel in e-/s; default :func:`candels_pixel_rms` (0.0106).
    exposure_time : float or None
        Exposure time (s) setting the source's Poisson noise; ``None`` for no source noise.
    return_noiseless : bool
        Also return the noise-free stamps (central galaxy + neighbours); version 1 only
        (version 2 gives more with *keep_models*).
    mock_version : int
        1 or 2 (see above).
    population : str
        ``"candels"`` (the paper's sample) or, version 2 only, ``"broad"`` (wider
        magnitudes, radii and feature mix, for training) or ``"wide"`` (``broad``
        with larger, lower-surface-brightness and more concentrated galaxies).
    keep_models : bool
        Also return a dict with the noiseless models: ``models`` (N, 128, 128) float32,
        the PSF-convolved central galaxy alone; ``neighbours``, the noiseless neighbours
        alone; and the noise parameters ``noise_rms``, ``noise_kernel`` (N, 3, 3),
        ``exposure_time`` for :func:`napari_blendphot.sample.mock_noise.add_mock_noise`.

    Returns
    -------
    GalaxySample, or (GalaxySample, ndarray) with *return_noiseless*, or (GalaxySample, dict)
    with *keep_models*.  Version 1's catalogue:
        Catalogue columns ``id, mag, flux, radius, z, galtype`` plus ``stamp_flux``
        (noise-free flux of the central galaxy inside the stamp), ``segval``
        (``seg[64, 64]``), ``n_neighbours``, ``bulge_fraction``, ``axis_ratio``
        (projected q, cos(inclination) for disks), ``sersic_n``.
        ``provenance["timing"]`` is left out on purpose (it would break
        byte-identity); the CLI reports the time per stamp.
    """
    try:
        import galsim  # noqa: F401 - checked here so that a missing extra fails before any work
    except ImportError:
        raise InputError("make_mock_sample", "GalSim is not installed",
                         "pip install galsim (or napari-blendphot[mock])") from None
    from astropy.table import Table

    from napari_blendphot.provenance import make_provenance

    _check_arguments(n, seed, neighbour_fraction, noise_rms, exposure_time)
    if mock_version not in MOCK_VERSIONS or isinstance(mock_version, bool):
        raise InputError("argument mock_version", f"must be one of {list(MOCK_VERSIONS)}, got {mock_version!r}")
    if population not in ("candels", "broad", "wide"):
        raise InputError("argument population", f"unknown population {population!r}",
                         "expected candels, broad or wide")
    if mock_version == 2:
        if return_noiseless:
            raise InputError("argument return_noiseless", "is a version 1 option", "use keep_models=True")
        from napari_blendphot.sample.mock_v2 import make_mock_sample_v2

        return make_mock_sample_v2(n, seed, progress=progress, neighbour_fraction=neighbour_fraction,
                                   noise_rms=noise_rms, exposure_time=exposure_time, population=population,
                                   keep_models=keep_models)
    if population != "candels":
        raise InputError("argument population", "version 1 has only the 'candels' population",
                         "use mock_version=2")
    if return_noiseless and keep_models:
        raise InputError("argument keep_models", "cannot be combined with return_noiseless")
    n, seed = int(n), int(seed)
    rms = float(noise_rms) if noise_rms is not None else candels_pixel_rms()
    psf = make_psf()
    types = galaxy_types(seed, range(n))

    images = np.empty((n, STAMP_SIZE, STAMP_SIZE), np.float32)
    segmaps = np.empty((n, STAMP_SIZE, STAMP_SIZE), np.int32)
    noiseless = np.empty((n, STAMP_SIZE, STAMP_SIZE), np.float32) if return_noiseless else None
    models = np.empty((n, STAMP_SIZE, STAMP_SIZE), np.float32) if keep_models else None
    neighbour_models = np.empty_like(models) if keep_models else None
    columns = {name: [] for name in ("id", "mag", "flux", "radius", "z", "galtype", "stamp_flux", "segval",
                                     "n_neighbours", "bulge_fraction", "axis_ratio", "sersic_n")}
    redrawn = {"noise": [], "galaxy": []}
    for i in range(n):
        rng = galaxy_generator(seed, i)
        for attempt in range(MAX_GALAXY_DRAWS):
            drawn = _draw_stamp(rng, types[i], psf, rms, neighbour_fraction, exposure_time)
            if drawn is not None:
                break
        else:  # pragma: no cover - would need ~100 undetectable galaxies in a row
            raise RuntimeError(f"galaxy {i} of seed {seed}: no detectable galaxy in {MAX_GALAXY_DRAWS} draws")
        if attempt:
            redrawn["galaxy"].append(FIRST_ID + i)
        elif drawn["noise_draws"] > 1:
            redrawn["noise"].append(FIRST_ID + i)
        images[i] = drawn["image"]
        if noiseless is not None:
            noiseless[i] = drawn["noiseless"]
        if models is not None:
            models[i] = drawn["model"]
            neighbour_models[i] = drawn["noiseless"] - drawn["model"]
        id_offset = SEGMENT_ID_OFFSET + int(rng.integers(0, 60000))
        segmaps[i] = np.where(drawn["segmap"] > 0, drawn["segmap"] + np.int32(id_offset), 0)

        columns["id"].append(FIRST_ID + i)
        columns["galtype"].append(types[i])
        columns["segval"].append(int(segmaps[i, CENTER, CENTER]))
        for key in ("mag", "flux", "radius", "z", "stamp_flux", "n_neighbours",
                    "bulge_fraction", "axis_ratio", "sersic_n"):
            columns[key].append(drawn[key])
        if progress is not None:
            progress(i + 1, n)

    catalog = Table(columns)
    catalog["id"] = np.asarray(catalog["id"], np.int64)
    catalog["segval"] = np.asarray(catalog["segval"], np.int32)
    catalog["n_neighbours"] = np.asarray(catalog["n_neighbours"], np.int16)
    provenance = make_provenance(
        "make-sample", seed=seed, generator="napari_blendphot.sample.mock.make_mock_sample",
        n=n, neighbour_fraction=float(neighbour_fraction), noise_rms=rms, exposure_time=exposure_time,
        pixel_scale=PIXEL_SCALE, stamp_size=STAMP_SIZE, zero_point=ZERO_POINT,
        psf=(f"Airy(lam={F160W_WAVELENGTH_NM} nm, diam={TELESCOPE_DIAMETER_M} m, obscuration={OBSCURATION})"
             f" * Box({NATIVE_PIXEL_ARCSEC}\") * Gaussian(sigma={EXTRA_BLUR_SIGMA_ARCSEC}\") * pixel"),
        segmentation={"threshold_sigma": DETECT_THRESHOLD_SIGMA, "minarea": DETECT_MIN_AREA,
                      "filter": f"gaussian FWHM {DETECT_FILTER_FWHM} px, 7x7",
                      "deblend_nthresh": DEBLEND_NTHRESH, "deblend_cont": DEBLEND_CONT},
        population="per-type percentiles and rank correlations of the paper's published test catalogue",
        redrawn_ids=redrawn,
    )
    sample = GalaxySample(images, segmaps, catalog, provenance=provenance,
                          source=f"CANDELS-like mock (seed {seed})")
    if keep_models:
        return sample, {"models": models, "neighbours": neighbour_models, "ids": np.asarray(catalog["id"]),
                        "noise_rms": np.full(n, rms), "noise_kernel": np.tile(np.pad([[1.0]], 1), (n, 1, 1)),
                        "exposure_time": np.full(n, 0.0 if exposure_time is None else float(exposure_time))}
    return (sample, noiseless) if return_noiseless else sample


def time_per_stamp(n: int = 50, seed: int = 0, mock_version: int = 2) -> float:
    """Mean wall time (s) to make one mock stamp (noise and segmentation included)."""
    start = time.perf_counter()
    make_mock_sample(n, seed, mock_version=mock_version)
    return (time.perf_counter() - start) / n


# --- montage --------------------------------------------------------------------------------------
def save_montage(sample: GalaxySample, path, per_type: int = 4, overwrite: bool = False, seed: int = 0):
    """PNG grid of *per_type* stamps of each type (rows), asinh stretched, centre segment outlined.

    Stamps are picked at random (seeded) among those of each type; the title of
    each shows type, magnitude and radius.  Returns the path written.
    """
    from pathlib import Path

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from napari_blendphot.errors import check_output_path

    path = Path(path)
    check_output_path(path, overwrite)
    if per_type < 1:
        raise InputError("argument per_type", f"must be at least 1, got {per_type}")
    rng = np.random.default_rng(seed)
    types = np.asarray(sample.catalog["galtype"]).astype(str)
    present = [t for t in GALTYPES if np.any(types == t)]
    figure = Figure(figsize=(2.0 * per_type, 2.1 * len(present)), dpi=100)
    FigureCanvasAgg(figure)
    for row, galtype in enumerate(present):
        indices = np.flatnonzero(types == galtype)
        chosen = np.sort(rng.choice(indices, size=min(per_type, len(indices)), replace=False))
        for col in range(per_type):
            axes = figure.add_subplot(len(present), per_type, row * per_type + col + 1)
            axes.set_axis_off()
            if col >= len(chosen):
                continue
            galaxy = sample[int(chosen[col])]
            image = galaxy.image.astype(np.float64)
            noise = 1.4826 * np.median(np.abs(image - np.median(image)))
            softening = max(noise, 1e-6)
            stretched = np.arcsinh(image / softening)
            top = np.percentile(stretched, 99.9)
            axes.imshow(stretched, origin="lower", cmap="gray", vmin=-1.0, vmax=max(top, 1.0),
                        interpolation="nearest")
            axes.contour(galaxy.central_mask.astype(float), levels=[0.5], colors="tab:orange", linewidths=0.6)
            row_data = galaxy.row
            axes.set_title(f"{galtype} {row_data['mag']:.1f} mag r={row_data['radius']:.1f}", fontsize=8)
    figure.tight_layout(pad=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    from napari_blendphot.atomic import atomic_output

    with atomic_output(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png")
    return path
