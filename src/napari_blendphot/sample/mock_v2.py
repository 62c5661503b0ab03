"""Mock v2: galaxies with the structure real HST galaxies show (issue 12).

Mock v1 (:mod:`napari_blendphot.sample.mock`) draws smooth Sersic / bulge+disk
profiles plus a few knots, one PSF and white noise; networks trained on it
learned the mock, not galaxies.  v2 keeps v1's population (same magnitudes,
radii, redshifts and type mix for the ``candels`` population, the same
segmentation and neighbours) and builds each galaxy as a GalSim sum of parts:

- **disks** (``disk``, and the disk of ``sphd``): ``galsim.InclinedExponential``
  with a scale height (isotropic inclinations), plus, at the rates of
  :data:`FEATURE_RATES`, *spiral arms* (2-4 logarithmic spirals traced by chains
  of Gaussian knots whose radii follow the disk light; the arm light is taken
  from the smooth disk, so arms make an arm/inter-arm contrast without changing
  the radial profile), a *bar* (an elongated Gaussian in the disk plane),
  *star-forming clumps* (Gaussians of 0.5-1.5 px placed like the disk light or on
  the arms, power-law luminosities), *lopsidedness* (a second, offset inclined
  disk) and, for inclined disks, a *dust lane* (a thin inclined exponential of
  negative flux in the mid-plane: an absorbing screen whose depth is at most
  70 % of the disk light it covers, so the light stays positive and the flux
  bookkeeping stays exact);
- **bulges** (``sph`` and ``sphd``): Sersic profiles on a grid of indices, with
  isophote twists (a second component of other ellipticity and angle) for
  spheroids and off-centre bulges for bulge+disk galaxies;
- **irregulars** (``irr``): 1-4 offset exponential blobs plus clumps;
- **disturbances** of any type: tidal tails (curved chains of fading Gaussians)
  and merger-like secondary nuclei.

The parts' fluxes are rescaled so that their sum is the catalogue's total
flux, and the whole galaxy is shifted so that its light centroid (computed from
the parts) is on pixel [64, 64].  Each galaxy gets its own PSF (v1's F160W PSF
dilated to a FWHM of 0.155-0.195" and sheared by |g| < 0.04) and correlated
background noise like a drizzled mosaic (:mod:`napari_blendphot.sample.mock_noise`).
Catalogue columns describe each galaxy's features so that failures can be
binned by them.

Three populations: ``candels`` (default; v1's per-type magnitude/radius/z model,
which passes the CANDELS population test), ``broad`` (for training: half the
galaxies from v1's model, half with magnitudes uniform in 18-23.5 and log-uniform
half-light radii up to 48 px below a surface-brightness limit, and every feature
more frequent and stronger) and ``wide`` (``broad`` with the tails the realism
check found it short of, docs/mock_sample.md: 60 % of the galaxies wide, log-uniform
radii up to 56 px with the magnitude drawn among those the surface-brightness limit
allows, so that large galaxies are as common as small ones per factor of radius;
a limit 0.5 mag/arcsec^2 fainter for low-surface-brightness disks; compact
high-index bulges, bulge/disk half-light ratios down to 0.05 and indices up to 6,
for nucleated disks whose single-Sersic index exceeds 7; pure disks with indices
down to 0.5).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from napari_blendphot.constants import CENTER, GALTYPES, PIXEL_SCALE, STAMP_SIZE
from napari_blendphot.errors import InputError
from napari_blendphot.sample import mock
from napari_blendphot.sample.galaxy_sample import mag_to_flux
from napari_blendphot.sample.mock_noise import add_mock_noise, correlation_kernel, neighbour_correlation

POPULATIONS = ("candels", "broad", "wide")

# --- population -----------------------------------------------------------------------------
#: ``broad``: share of galaxies drawn from the wide distributions (the rest from v1's model).
BROAD_WIDE_SHARE = 0.5
BROAD_MAG_RANGE = (18.0, 23.5)
#: Radius range (px) of the wide part, per type (spheroids are compact).
BROAD_RADIUS_RANGE = {"sph": (1.0, 25.0), "disk": (1.5, 48.0), "sphd": (1.5, 48.0), "irr": (1.5, 48.0)}
#: Faintest mean surface brightness inside the half-light radius (mag/arcsec^2) of a wide
#: galaxy: about the 1-sigma per-pixel level of the CANDELS noise (24.8), below which a
#: galaxy would not have been detected and classified.
BROAD_SB_LIMIT = 25.0
#: ``wide``: share of wide galaxies, radius ranges (px) and surface-brightness limit.  Real
#: disks reach 40-60 px (0.06" pixels) at CANDELS depths and low-surface-brightness disks
#: lie below broad's limit (Freeman's law scatters by ~1 mag/arcsec^2).
WIDE_SHARE = 0.6
WIDE_RADIUS_RANGE = {"sph": (1.0, 30.0), "disk": (1.5, 56.0), "sphd": (1.5, 56.0), "irr": (1.5, 56.0)}
WIDE_SB_LIMIT = 25.5


def _wide_mag_radius(rng: np.random.Generator, galtype: str):
    """``wide``: log-uniform radius, then a magnitude uniform among those below the SB limit."""
    low, high = WIDE_RADIUS_RANGE[galtype]
    radius = math.exp(rng.uniform(math.log(low), math.log(high)))
    faintest = WIDE_SB_LIMIT - 2.5 * math.log10(2.0 * math.pi * (radius * PIXEL_SCALE) ** 2)
    mag = rng.uniform(BROAD_MAG_RANGE[0], min(BROAD_MAG_RANGE[1], faintest))
    return mag, radius


def draw_population_v2(rng: np.random.Generator, galtype: str, population: str):
    """(mag, radius px, z) of one galaxy: v1's model, widened for ``broad`` and ``wide``."""
    mag, radius, z = mock.draw_population(rng, galtype)
    if population == "wide" and rng.uniform() < WIDE_SHARE:
        mag, radius = _wide_mag_radius(rng, galtype)
    elif population == "broad" and rng.uniform() < BROAD_WIDE_SHARE:
        low, high = BROAD_RADIUS_RANGE[galtype]
        for _ in range(100):
            mag = rng.uniform(*BROAD_MAG_RANGE)
            radius = math.exp(rng.uniform(math.log(low), math.log(high)))
            mean_sb = mag + 2.5 * math.log10(2.0 * math.pi * (radius * PIXEL_SCALE) ** 2)
            if mean_sb <= BROAD_SB_LIMIT:
                break
    return float(mag), float(radius), float(z)


# --- features ---------------------------------------------------------------------------------
#: Probability of each feature per type (``candels``); ``broad`` multiplies them by
#: :data:`BROAD_RATE_BOOST` (at most 0.9) and widens the amplitude ranges by :data:`BROAD_AMPLITUDE_BOOST`.
#: Physical guides: about 2/3 of nearby disks are spiral, 1/3-2/3 barred; clumpy
#: star-forming disks are common at z ~ 1; dust lanes show in most inclined
#: spirals; a few per cent of galaxies show tidal features or close pairs, more
#: among irregulars (CANDELS visual classifications); nuclear point sources (AGN,
#: nuclear star clusters) and extended faint envelopes (stellar halos, up-bending
#: outer disks, cD envelopes) are common in bulges and disks.
FEATURE_RATES = {
    "sph": {"arms": 0.0, "bar": 0.0, "clumps": 0.05, "lopsided": 0.15, "tidal": 0.06, "merger": 0.05,
            "twist": 0.5, "bulge": 1.0, "offcentre": 0.0, "dust": 0.0, "nucleus": 0.15, "envelope": 0.3},
    "disk": {"arms": 0.55, "bar": 0.25, "clumps": 0.6, "lopsided": 0.4, "tidal": 0.06, "merger": 0.05,
             "twist": 0.0, "bulge": 0.4, "offcentre": 0.2, "dust": 0.7, "nucleus": 0.1, "envelope": 0.2},
    "sphd": {"arms": 0.45, "bar": 0.3, "clumps": 0.3, "lopsided": 0.3, "tidal": 0.06, "merger": 0.05,
             "twist": 0.0, "bulge": 1.0, "offcentre": 0.3, "dust": 0.7, "nucleus": 0.2, "envelope": 0.3},
    "irr": {"arms": 0.0, "bar": 0.0, "clumps": 0.9, "lopsided": 1.0, "tidal": 0.3, "merger": 0.3,
            "twist": 0.0, "bulge": 0.0, "offcentre": 0.0, "dust": 0.0, "nucleus": 0.05, "envelope": 0.1},
}
BROAD_RATE_BOOST = 1.5
BROAD_AMPLITUDE_BOOST = 1.3
#: Most of a disk's light that bar, arms and clumps may take together.
MAX_STRUCTURE_FRACTION = 0.6
#: Dust lanes only where the disk is seen at cos(i) below this (i > 63 deg).
DUST_MAX_COS_I = 0.45
#: Deepest absorption of the mid-plane disk light by a dust lane (keeps the light positive).
DUST_MAX_DEPTH = 0.7

_SPH_N = (2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0)
#: Sersic indices of pure disks (flat low-surface-brightness disks have n < 1) and their weights.
_DISK_N = (0.6, 0.8, 1.0, 1.3)
_DISK_N_WEIGHTS = (0.15, 0.2, 0.5, 0.15)
_BULGE_N = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5)
#: ``wide``: bulges up to GalSim's Sersic limit, compact bulges, flatter pure disks.
_WIDE_BULGE_N = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0)
_WIDE_SPHD_SIZE_RATIO = (0.05, 0.6)
_WIDE_DISK_N = (0.5, 0.6, 0.8, 1.0, 1.3)
_WIDE_DISK_N_WEIGHTS = (0.1, 0.15, 0.2, 0.4, 0.15)
#: ``wide``: largest disk half-light radius over the galaxy's, and redraws of the bulge to meet it.
WIDE_MAX_DISK_OVER_HLR = 2.5
WIDE_MAX_REDRAWS = 20
#: Ratio of half-light radius to scale length of an exponential disk.
_EXP_HLR_OVER_SCALE = 1.6783469900166608


@lru_cache(maxsize=8192)
def _composite_unit_hlr(components) -> float:
    """Half-light radius of a sum of round Sersic components ((fraction, n, hlr), ...); n = 0: a point."""
    from scipy.optimize import brentq

    def excess(r):
        return sum(f * (1.0 if n == 0 else mock._enclosed_fraction(r, n, h)) for f, n, h in components) - 0.5

    return brentq(excess, 1e-5, 50.0, xtol=1e-9)


def _components_key(*components):
    return tuple((round(f, 4), n, round(h, 4)) for f, n, h in components if f > 0.0)


class _Parts:
    """Components of a galaxy with their fluxes and centres (arcsec), for exact bookkeeping."""

    def __init__(self):
        self.items = []  # (profile, flux, x, y, reach)

    def add(self, profile, flux, x=0.0, y=0.0, reach=None):
        """*reach*: radius (arcsec) beyond which the part has no light (None: unbounded)."""
        self.items.append((profile, float(flux), float(x), float(y), reach))

    def total(self) -> float:
        return sum(item[1] for item in self.items)

    def profile(self, flux: float):
        """Sum of the parts scaled to *flux*, light centroid moved to the origin.

        Parts whose light cannot reach the stamp (knots of tidal tails far outside
        it) are left out of the drawing: they would add nothing inside, but would
        make GalSim's FFT grid large.  Their flux still counts in *flux*.
        """
        import galsim

        total = self.total()
        cx = sum(item[1] * item[2] for item in self.items) / total
        cy = sum(item[1] * item[3] for item in self.items) / total
        scale = flux / total
        half = 0.5 * STAMP_SIZE * PIXEL_SCALE
        drawn = [p.withFlux(f * scale).shift(x - cx, y - cy) for p, f, x, y, reach in self.items
                 if reach is None or max(abs(x - cx), abs(y - cy)) - reach < half]
        return galsim.Add(drawn)


def _rotate(x, y, angle):
    c, s = math.cos(angle), math.sin(angle)
    return x * c - y * s, x * s + y * c


def _project(x, y, cos_i, beta):
    """Disk-plane coordinates (x along the line of nodes) -> sky, position angle *beta*."""
    return _rotate(np.asarray(x), np.asarray(y) * cos_i, beta)


def _gaussian_from_covariance(cov, flux):
    """Elliptical Gaussian with covariance *cov* (arcsec^2) as a sheared round one (shear keeps area)."""
    import galsim

    evals, evecs = np.linalg.eigh(cov)
    minor, major = np.sqrt(np.maximum(evals, 1e-12))
    angle = math.atan2(evecs[1, 1], evecs[0, 1])
    return galsim.Gaussian(sigma=math.sqrt(minor * major), flux=flux).shear(
        q=minor / major, beta=angle * galsim.radians)


def _disk_radii(rng, scale, size, r_min=0.0, r_max=np.inf):
    """Radii distributed like the light of an exponential disk (Gamma(2) in scale lengths), truncated."""
    radii = rng.gamma(2.0, scale, size=size)
    for _ in range(20):
        bad = (radii < r_min) | (radii > r_max)
        if not bad.any():
            break
        radii[bad] = rng.gamma(2.0, scale, size=int(bad.sum()))
    return np.clip(radii, r_min, r_max if np.isfinite(r_max) else None)


def _power_law_luminosities(rng, size, slope=2.0, dynamic_range=10.0):
    """Luminosities from dN/dL ~ L^-slope between 1 and *dynamic_range* (clump luminosity function)."""
    u = rng.uniform(size=size)
    a = 1.0 - slope
    return (1.0 + u * (dynamic_range**a - 1.0)) ** (1.0 / a)


class _Builder:
    """Draws the features of one galaxy with its generator; knows the population's boosts."""

    def __init__(self, galtype, rng, population):
        self.galtype = galtype
        self.rng = rng
        widened = population in ("broad", "wide")
        self.rate_boost = BROAD_RATE_BOOST if widened else 1.0
        self.amp_boost = BROAD_AMPLITUDE_BOOST if widened else 1.0
        self.rates = FEATURE_RATES[galtype]
        self.parts = _Parts()
        self.features = {
            "bulge_fraction": 0.0, "axis_ratio": np.nan, "sersic_n": np.nan, "inclination": np.nan,
            "n_clumps": 0, "clump_fraction": 0.0, "arms": 0, "arm_fraction": 0.0, "pitch_deg": np.nan,
            "has_bar": False, "bar_fraction": 0.0, "dust": False, "dust_depth": 0.0, "bulge_offset": 0.0,
            "lopsided": 0.0, "tidal": 0, "merger": False, "merger_fraction": 0.0,
            "envelope_fraction": 0.0, "nucleus_fraction": 0.0,
        }

    def has(self, feature) -> bool:
        return bool(self.rng.uniform() < min(0.9, self.rates[feature] * self.rate_boost)
                    if self.rates[feature] < 1.0 else True)

    def amplitude(self, low, high) -> float:
        return float(self.rng.uniform(low, high * self.amp_boost))

    # -- components ----------------------------------------------------------------------
    def disk(self, hlr, flux, beta, n=1.0):
        """Inclined Sersic (n = 1: exponential) disk with arms, bar, clumps, lopsidedness, dust."""
        import galsim

        def layer(h_over_r_layer):
            if n == 1.0:
                return galsim.InclinedExponential(inclination * galsim.radians, half_light_radius=hlr,
                                                  scale_h_over_r=h_over_r_layer)
            return galsim.InclinedSersic(n, inclination * galsim.radians, half_light_radius=hlr,
                                         scale_h_over_r=h_over_r_layer)

        rng = self.rng
        cos_i = float(rng.uniform(0.0, 1.0))
        inclination = math.acos(cos_i)
        h_over_r = float(rng.uniform(0.1, 0.25))
        scale = hlr / _EXP_HLR_OVER_SCALE
        self.features.update(inclination=math.degrees(inclination), axis_ratio=cos_i)

        # Fractions of the disk light in bar, arms and clumps, drawn first and kept
        # together below MAX_STRUCTURE_FRACTION so that a smooth disk always remains.
        bar_fraction = self.amplitude(0.05, 0.2) if self.has("bar") else 0.0
        arm_fraction = self.amplitude(0.15, 0.45) if self.has("arms") else 0.0
        clump_fraction = self.amplitude(0.05, 0.3) if self.has("clumps") else 0.0
        structure = bar_fraction + arm_fraction + clump_fraction
        if structure > MAX_STRUCTURE_FRACTION:
            bar_fraction, arm_fraction, clump_fraction = (
                f * MAX_STRUCTURE_FRACTION / structure for f in (bar_fraction, arm_fraction, clump_fraction))

        smooth = flux
        bar_length = 0.0
        if bar_fraction:
            fraction = bar_fraction
            bar_length = float(rng.uniform(0.4, 0.9)) * hlr  # Gaussian sigma along the bar
            bar_q = float(rng.uniform(0.2, 0.4))
            phi = float(rng.uniform(0.0, math.pi))
            c, s = math.cos(phi), math.sin(phi)
            in_plane = np.array([[c, -s], [s, c]]) @ np.diag([bar_length**2, (bar_q * bar_length) ** 2]) \
                @ np.array([[c, s], [-s, c]])
            projection = np.array([[math.cos(beta), -math.sin(beta)], [math.sin(beta), math.cos(beta)]]) \
                @ np.diag([1.0, cos_i])
            self.parts.add(_gaussian_from_covariance(projection @ in_plane @ projection.T, 1.0), fraction * flux)
            smooth -= fraction * flux
            self.features.update(has_bar=True, bar_fraction=fraction)

        arm_points = None
        if arm_fraction:
            fraction = arm_fraction
            m = int(rng.choice([2, 3, 4], p=[0.6, 0.2, 0.2]))
            pitch = math.radians(float(rng.uniform(12.0, 35.0)))
            width = max(0.9 * PIXEL_SCALE, float(rng.uniform(0.1, 0.2)) * hlr)
            r_in = max(bar_length, 0.2 * hlr)
            r_out = 3.0 * hlr
            per_arm = int(np.clip(3.0 * (r_out - r_in) / width, 6, 60 // m))
            phase = float(rng.uniform(0.0, 2.0 * math.pi))
            xs, ys = [], []
            for k in range(m):
                radii = _disk_radii(rng, scale, per_arm, r_in, r_out)
                theta = phase + 2.0 * math.pi * k / m + np.log(radii / r_in) / math.tan(pitch)
                theta = theta + rng.normal(0.0, 0.08, per_arm)
                xs.append(radii * np.cos(theta))
                ys.append(radii * np.sin(theta))
            arm_points = (np.concatenate(xs), np.concatenate(ys))
            weights = rng.lognormal(0.0, 0.4, len(arm_points[0]))
            weights *= fraction * flux / weights.sum()
            px, py = _project(*arm_points, cos_i, beta)
            for w, x, y in zip(weights, px, py):
                self.parts.add(galsim.Gaussian(sigma=width), w, x, y, reach=5.0 * width)
            smooth -= fraction * flux
            self.features.update(arms=m, arm_fraction=fraction, pitch_deg=math.degrees(pitch))

        if clump_fraction:
            self.clumps(scale, flux, cos_i, beta, arm_points, fraction=clump_fraction)
            smooth -= clump_fraction * flux

        lopsided = 0.0
        if self.has("lopsided"):
            lopsided = self.amplitude(0.1, 0.3)
        main = smooth * (1.0 - lopsided)
        self.parts.add(layer(h_over_r).rotate(beta * galsim.radians), main)
        if lopsided:
            offset = float(rng.uniform(0.2, 0.5)) * hlr
            angle = float(rng.uniform(0.0, 2.0 * math.pi))
            x, y = _project(offset * math.cos(angle), offset * math.sin(angle), cos_i, beta)
            lop_scale = scale * float(rng.uniform(1.0, 1.4))
            self.parts.add(galsim.InclinedExponential(inclination * galsim.radians, scale_radius=lop_scale,
                                                      scale_h_over_r=h_over_r * scale / lop_scale)
                           .rotate(beta * galsim.radians), smooth * lopsided, float(x), float(y))
            self.features["lopsided"] = lopsided

        if cos_i < DUST_MAX_COS_I and self.has("dust"):
            depth = float(rng.uniform(0.3, DUST_MAX_DEPTH))
            thin = 0.35
            # The thin layer's mid-plane light per unit flux is 1/thin times the disk's, so
            # a flux of -depth * thin * disk absorbs `depth` of the mid-plane disk light.
            offset = float(rng.uniform(-0.5, 0.5)) * thin * h_over_r * scale * math.sin(inclination)
            x, y = _rotate(0.0, offset, beta)
            self.parts.add(layer(thin * h_over_r).rotate(beta * galsim.radians), -depth * thin * main, x, y)
            self.features.update(dust=True, dust_depth=depth)
        return cos_i

    def clumps(self, scale, flux, cos_i, beta, arm_points=None, centres=None, fraction=None):
        """Star-forming clumps that follow the disk light (or the arms, or irregular blobs).

        Returns (fraction of *flux* in clumps, number of clumps).
        """
        import galsim

        rng = self.rng
        irregular = centres is not None
        if fraction is None:
            fraction = self.amplitude(0.05, 0.3)
        n = int(rng.integers(5, 31) if irregular else rng.integers(3, 26))
        if arm_points is not None and rng.uniform() < 0.7:
            pick = rng.integers(0, len(arm_points[0]), n)
            x = arm_points[0][pick] + rng.normal(0.0, 0.1 * scale, n)
            y = arm_points[1][pick] + rng.normal(0.0, 0.1 * scale, n)
            x, y = _project(x, y, cos_i, beta)
        elif irregular:
            blob = rng.choice(len(centres), size=n, p=[c[2] for c in centres])
            radii = _disk_radii(rng, 1.0, n)
            angle = rng.uniform(0.0, 2.0 * math.pi, n)
            x = np.array([centres[b][0] for b in blob]) + radii * np.array([centres[b][3] for b in blob]) * np.cos(angle)
            y = np.array([centres[b][1] for b in blob]) + radii * np.array([centres[b][3] for b in blob]) * np.sin(angle)
        else:
            radii = _disk_radii(rng, scale, n)
            angle = rng.uniform(0.0, 2.0 * math.pi, n)
            x, y = _project(radii * np.cos(angle), radii * np.sin(angle), cos_i, beta)
        weights = _power_law_luminosities(rng, n)
        weights *= fraction * flux / weights.sum()
        # Star-forming complexes of ~0.3-1 kpc: unresolved in small (distant) galaxies,
        # a few per cent of the half-light radius in large (nearby) ones.
        sigmas = np.maximum(rng.uniform(0.5, 1.5, n) * PIXEL_SCALE, rng.uniform(0.03, 0.08, n) * scale * _EXP_HLR_OVER_SCALE)
        for w, xi, yi, s in zip(weights, np.atleast_1d(x), np.atleast_1d(y), sigmas):
            self.parts.add(galsim.Gaussian(sigma=float(s)), w, xi, yi, reach=5.0 * float(s))
        self.features.update(n_clumps=n, clump_fraction=fraction)
        return fraction, n

    def add_envelope_and_nucleus(self, envelope, envelope_hlr, nucleus, body, q, beta):
        """A faint extended exponential envelope and a nuclear point source (fractions of *body*)."""
        import galsim

        if envelope:
            self.parts.add(galsim.Exponential(half_light_radius=envelope_hlr * math.sqrt(q)).shear(
                q=q, beta=beta * galsim.radians), envelope * body)
        if nucleus:
            self.parts.add(galsim.DeltaFunction(), nucleus * body)
        self.features.update(envelope_fraction=envelope, nucleus_fraction=nucleus)

    def tidal_tails(self, hlr, flux):
        """1-2 curved chains of fading, growing Gaussians leaving the galaxy; returns their flux share."""
        import galsim

        rng = self.rng
        fraction = self.amplitude(0.03, 0.1)
        tails = 2 if rng.uniform() < 0.5 else 1
        theta0 = float(rng.uniform(0.0, 2.0 * math.pi))
        curvature = float(rng.uniform(0.3, 1.0)) * (1 if rng.uniform() < 0.5 else -1)
        for t in range(tails):
            points = int(rng.integers(8, 15))
            r0 = float(rng.uniform(0.8, 1.5)) * hlr
            r1 = float(rng.uniform(2.0, 4.0)) * hlr
            radii = np.linspace(r0, r1, points)
            theta = theta0 + math.pi * t + curvature * (radii - r0) / hlr
            weights = np.exp(-(radii - r0) / (0.5 * (r1 - r0)))
            weights *= fraction * flux / tails / weights.sum()
            sigmas = np.maximum(PIXEL_SCALE, 0.15 * hlr) * np.sqrt(radii / r0)
            for w, r, th, s in zip(weights, radii, theta, sigmas):
                self.parts.add(galsim.Gaussian(sigma=float(s)), w, r * math.cos(th), r * math.sin(th),
                               reach=5.0 * float(s))
        self.features["tidal"] = tails
        return fraction

    def merger(self, hlr, flux):
        """A secondary nucleus (compact Sersic) at 0.4-1.5 half-light radii; returns its flux share."""
        import galsim

        rng = self.rng
        fraction = self.amplitude(0.1, 0.3)
        separation = float(rng.uniform(0.4, 1.5)) * hlr
        angle = float(rng.uniform(0.0, 2.0 * math.pi))
        n = float(rng.choice((1.0, 2.0, 3.0, 4.0)))
        size = max(0.8 * PIXEL_SCALE, float(rng.uniform(0.15, 0.4)) * hlr)
        q = float(rng.uniform(0.5, 1.0))
        nucleus = galsim.Sersic(n=n, half_light_radius=size * math.sqrt(q)).shear(
            q=q, beta=float(rng.uniform(0.0, math.pi)) * galsim.radians)
        self.parts.add(nucleus, fraction * flux, separation * math.cos(angle), separation * math.sin(angle))
        self.features.update(merger=True, merger_fraction=fraction)
        return fraction


def build_galaxy_v2(galtype: str, flux: float, radius_px: float, rng: np.random.Generator,
                    population: str = "candels"):
    """GalSim profile (PSF-free, light centroid at the origin, total flux *flux*) and its features."""
    import galsim

    if galtype not in GALTYPES:
        raise InputError("galtype", f"unknown galaxy type {galtype!r}", f"expected one of {list(GALTYPES)}")
    hlr = radius_px * PIXEL_SCALE
    b = _Builder(galtype, rng, population)
    beta = float(rng.uniform(0.0, math.pi))
    # Disturbances take their light from the galaxy's own budget (unit total here).
    body = 1.0
    if b.has("tidal"):
        body -= b.tidal_tails(hlr, 1.0)
    if b.has("merger"):
        body -= b.merger(hlr, 1.0)

    nucleus = b.amplitude(0.01, 0.08) if b.has("nucleus") else 0.0
    envelope = b.amplitude(0.05, 0.2) if b.has("envelope") else 0.0
    envelope_size = float(rng.uniform(2.0, 4.0))  # in units of the main body's half-light radius
    if galtype == "sph":
        q_low = 0.35
        n = float(rng.choice(_SPH_N))
        twist = float(rng.uniform(0.3, 0.5)) if b.has("twist") else 0.0
        twist_size = float(rng.uniform(0.6, 1.5))
        main_share = 1.0 - twist - envelope - nucleus
        # Sizes chosen so that the whole (main + twist + envelope + nucleus) has the drawn radius.
        unit = hlr / _composite_unit_hlr(_components_key(
            (main_share, n, 1.0), (twist, n, twist_size), (envelope, 1.0, envelope_size), (nucleus, 0, 0.0)))
        q = float(rng.uniform(q_low, 1.0))
        b.parts.add(galsim.Sersic(n=n, half_light_radius=unit * math.sqrt(q)).shear(
            q=q, beta=beta * galsim.radians), main_share * body)
        if twist:
            q2 = float(np.clip(q + rng.uniform(-0.15, 0.15), q_low, 1.0))
            b.parts.add(galsim.Sersic(n=n, half_light_radius=twist_size * unit * math.sqrt(q2)).shear(
                q=q2, beta=(beta + math.radians(rng.uniform(-20.0, 20.0))) * galsim.radians), twist * body)
        if b.has("clumps"):  # a little star formation in a spheroid
            b.clumps(unit / _EXP_HLR_OVER_SCALE, body, q, beta, fraction=b.amplitude(0.02, 0.1))
        if b.has("lopsided"):
            fraction = b.amplitude(0.05, 0.2)
            offset = float(rng.uniform(0.2, 0.5)) * unit
            angle = float(rng.uniform(0.0, 2.0 * math.pi))
            b.parts.add(galsim.Sersic(n=min(n, 2.0), half_light_radius=1.3 * unit), fraction * body,
                        offset * math.cos(angle), offset * math.sin(angle))
            b.features["lopsided"] = fraction
        b.features.update(bulge_fraction=1.0, axis_ratio=q, sersic_n=n)
        b.add_envelope_and_nucleus(envelope, envelope_size * unit, nucleus, body, q, beta)
    elif galtype in ("disk", "sphd"):
        wide = population == "wide"
        rest = 1.0 - envelope - nucleus
        for _ in range(WIDE_MAX_REDRAWS if wide else 1):
            if galtype == "sphd":
                bulge_fraction = round(float(rng.uniform(0.15, 0.85)), 3)
                size_ratio = round(float(rng.uniform(*(_WIDE_SPHD_SIZE_RATIO if wide else (0.15, 0.6)))), 3)
            elif b.has("bulge"):
                bulge_fraction = round(float(rng.uniform(0.02, 0.12)), 3)
                size_ratio = round(float(rng.uniform(0.1, 0.3)), 3)
            else:
                bulge_fraction, size_ratio = 0.0, 0.0
            bulge_n = float(rng.choice(_WIDE_BULGE_N if wide else _BULGE_N))
            disk_n = 1.0 if bulge_fraction else float(
                rng.choice(_WIDE_DISK_N, p=_WIDE_DISK_N_WEIGHTS) if wide else rng.choice(_DISK_N, p=_DISK_N_WEIGHTS))
            disk_hlr = hlr / _composite_unit_hlr(_components_key(
                (rest * bulge_fraction, bulge_n, size_ratio), (rest * (1.0 - bulge_fraction), disk_n, 1.0),
                (envelope, 1.0, envelope_size), (nucleus, 0, 0.0)))
            # A compact bulge holding most of the light pushes the disk needed for the drawn
            # radius far out (a 56 px galaxy with a 200 px disk: unphysical, and a 16k FFT).
            if disk_hlr <= WIDE_MAX_DISK_OVER_HLR * hlr:
                break
        cos_i = b.disk(disk_hlr, rest * (1.0 - bulge_fraction) * body, beta, n=disk_n)
        if bulge_fraction > 0.0:
            q_bulge = float(rng.uniform(0.6, 1.0))
            bulge = galsim.Sersic(n=bulge_n, half_light_radius=size_ratio * disk_hlr * math.sqrt(q_bulge)).shear(
                q=q_bulge, beta=float(rng.uniform(0.0, math.pi)) * galsim.radians)
            x = y = 0.0
            if b.has("offcentre"):
                offset = max(0.5 * PIXEL_SCALE, float(rng.uniform(0.03, 0.12)) * b.amp_boost * disk_hlr)
                angle = float(rng.uniform(0.0, 2.0 * math.pi))
                x, y = offset * math.cos(angle), offset * math.sin(angle)
                b.features["bulge_offset"] = offset / PIXEL_SCALE
            b.parts.add(bulge, rest * bulge_fraction * body, x, y)
        b.features.update(bulge_fraction=bulge_fraction, axis_ratio=cos_i,
                          sersic_n=bulge_n if bulge_fraction else disk_n)
        b.add_envelope_and_nucleus(envelope, envelope_size * disk_hlr, nucleus, body,
                                   float(np.clip(cos_i + rng.uniform(0.1, 0.4), 0.3, 1.0)), beta)
    else:  # irr
        blobs = int(rng.integers(1, 5))
        shares = rng.dirichlet(np.full(blobs, 2.0))
        clump_fraction = b.amplitude(0.2, 0.5) if b.has("clumps") else 0.0
        centres = []
        for share in shares:
            size = hlr * float(rng.uniform(0.4, 0.9))
            q = float(rng.uniform(0.4, 1.0))
            offset = float(rng.uniform(0.0, 0.7)) * hlr if blobs > 1 else 0.0
            angle = float(rng.uniform(0.0, 2.0 * math.pi))
            x, y = offset * math.cos(angle), offset * math.sin(angle)
            blob = galsim.Exponential(half_light_radius=size * math.sqrt(q)).shear(
                q=q, beta=float(rng.uniform(0.0, math.pi)) * galsim.radians)
            b.parts.add(blob, share * body * (1.0 - clump_fraction), x, y)
            centres.append((x, y, float(share), size / _EXP_HLR_OVER_SCALE))
        if clump_fraction:
            b.clumps(hlr / _EXP_HLR_OVER_SCALE, body, 1.0, 0.0, centres=centres, fraction=clump_fraction)
        b.features.update(axis_ratio=float(np.nan), sersic_n=1.0, lopsided=1.0 if blobs > 1 else 0.0)
        b.add_envelope_and_nucleus(envelope, envelope_size * hlr, nucleus, body, float(rng.uniform(0.5, 1.0)), beta)
    return b.parts.profile(flux), b.features


# --- PSF ------------------------------------------------------------------------------------------
#: Range of the PSF profile's FWHM (arcsec, without the 0.06" output pixel: 0.16-0.20" with it).
PSF_FWHM_RANGE = (0.155, 0.195)
PSF_MAX_SHEAR = 0.04


@lru_cache(maxsize=1)
def base_psf_fwhm() -> float:
    """FWHM (arcsec) of v1's PSF profile, measured on a fine grid (0.172")."""
    return float(mock.make_psf().drawImage(nx=256, ny=256, scale=0.004, method="no_pixel").calculateFWHM())


def draw_psf(rng: np.random.Generator):
    """v1's F160W PSF dilated to a random FWHM in :data:`PSF_FWHM_RANGE` and slightly sheared."""
    import galsim

    fwhm = float(rng.uniform(*PSF_FWHM_RANGE))
    g = float(rng.uniform(0.0, PSF_MAX_SHEAR))
    beta = float(rng.uniform(0.0, math.pi))
    psf = mock.make_psf().dilate(fwhm / base_psf_fwhm()).shear(g=g, beta=beta * galsim.radians)
    return psf, {"psf_fwhm": fwhm, "psf_g": g, "psf_beta": math.degrees(beta)}


# --- noise ----------------------------------------------------------------------------------------
#: Range of ``a`` in the [a, 1, a] drizzle kernel: adjacent-pixel correlation 0 to 0.51.
NOISE_KERNEL_A_RANGE = (0.0, 0.3)


# --- one stamp -----------------------------------------------------------------------------------
def draw_stamp_v2(rng, galtype, population, rms, neighbour_fraction, exposure_time):
    """One v2 stamp; None when the centre goes undetected after the noise redraws (as in v1) or GalSim fails."""
    import galsim

    mag, radius, z = draw_population_v2(rng, galtype, population)
    flux = float(mag_to_flux(mag))
    profile, features = build_galaxy_v2(galtype, flux, radius, rng, population)
    psf, psf_info = draw_psf(rng)
    kernel_a = float(rng.uniform(*NOISE_KERNEL_A_RANGE))
    kernel = correlation_kernel(kernel_a)

    image = galsim.ImageF(STAMP_SIZE, STAMP_SIZE, scale=PIXEL_SCALE)
    galsim.Convolve(profile, psf).drawImage(image, offset=(0.5, 0.5))
    if not np.all(np.isfinite(image.array)):
        # GalSim's k-space drawing gives NaN for rare combinations of a large inclined
        # disk and a sheared PSF (~1 in 150 broad galaxies): draw another galaxy.
        return None
    model = image.array.copy()
    stamp_flux = float(model.sum(dtype=np.float64))

    neighbours = []
    if rng.uniform() < neighbour_fraction:
        distance = mock._distance_to_footprint(model, 0.5 * mock.DETECT_THRESHOLD_SIGMA * rms)
        neighbours = mock._draw_neighbours(rng, mag, distance)
    for nb_mag, nb_radius, nb_type, dy, dx in neighbours:
        nb_profile, _ = mock.build_galaxy(nb_type, float(mag_to_flux(nb_mag)), nb_radius, rng)
        galsim.Convolve(nb_profile, psf).drawImage(image, offset=(0.5 + dx, 0.5 + dy), add_to_image=True)
    neighbour_model = image.array - model

    noise = {"noise_rms": rms, "noise_kernel": kernel,
             "exposure_time": exposure_time if exposure_time is not None else 0.0}
    clean = image.array.astype(np.float64)
    for noise_draw in range(1, mock.MAX_NOISE_DRAWS + 1):
        noisy = add_mock_noise(clean, noise, rng)
        segmap = mock.segment_stamp(noisy, rms, id_offset=0)
        if segmap[CENTER, CENTER] != 0:
            break
    else:
        return None
    return {"image": noisy, "model": model, "neighbours": neighbour_model, "segmap": segmap,
            "noise_draws": noise_draw, "kernel": kernel,
            "mag": mag, "flux": flux, "radius": radius, "z": round(z, 4), "stamp_flux": stamp_flux,
            "n_neighbours": len(neighbours), **features, **psf_info,
            "noise_rms": rms, "noise_corr": neighbour_correlation(kernel), "noise_kernel_a": kernel_a,
            "exposure_time": float(noise["exposure_time"])}


#: Catalogue columns of v2 beyond ``id, mag, flux, radius, z, galtype, segval``.
V2_COLUMNS = ("stamp_flux", "n_neighbours", "bulge_fraction", "axis_ratio", "sersic_n", "inclination",
              "n_clumps", "clump_fraction", "arms", "arm_fraction", "pitch_deg", "has_bar", "bar_fraction",
              "dust", "dust_depth", "bulge_offset", "lopsided", "tidal", "merger", "merger_fraction",
              "envelope_fraction", "nucleus_fraction", "psf_fwhm", "psf_g", "psf_beta", "noise_rms", "noise_corr", "noise_kernel_a", "exposure_time")
_INT_COLUMNS = {"n_neighbours": np.int16, "n_clumps": np.int16, "arms": np.int16, "tidal": np.int16}
_BOOL_COLUMNS = ("has_bar", "dust", "merger")


def make_mock_sample_v2(n, seed, progress=None, neighbour_fraction=0.35, noise_rms=None,
                        exposure_time=mock.DEFAULT_EXPOSURE_TIME, population="candels", keep_models=False):
    """Mock v2 sample; see :func:`napari_blendphot.sample.mock.make_mock_sample` for the arguments.

    Returns the :class:`GalaxySample`, and with *keep_models* also a dict of numpy
    arrays: ``models`` (N, 128, 128) float32, the PSF-convolved central galaxy before
    noise and without neighbours; ``neighbours`` (N, 128, 128) float32, the
    noiseless neighbours alone (zeros where there are none); ``noise_rms`` (N,),
    ``noise_kernel`` (N, 3, 3), ``exposure_time`` (N,) (0 = no Poisson noise) for
    :func:`~napari_blendphot.sample.mock_noise.add_mock_noise`; ``ids`` (N,).
    """
    from astropy.table import Table

    from napari_blendphot.provenance import make_provenance
    from napari_blendphot.sample.galaxy_sample import GalaxySample

    if population not in POPULATIONS:
        raise InputError("argument population", f"unknown population {population!r}",
                         f"expected one of {list(POPULATIONS)}")
    n, seed = int(n), int(seed)
    rms = float(noise_rms) if noise_rms is not None else mock.candels_pixel_rms()
    types = mock.galaxy_types(seed, range(n))
    images = np.empty((n, STAMP_SIZE, STAMP_SIZE), np.float32)
    segmaps = np.empty((n, STAMP_SIZE, STAMP_SIZE), np.int32)
    models = np.empty((n, STAMP_SIZE, STAMP_SIZE), np.float32) if keep_models else None
    neighbour_models = np.empty_like(models) if keep_models else None
    kernels = np.empty((n, 3, 3), np.float64)
    columns = {name: [] for name in ("id", "mag", "flux", "radius", "z", "galtype", "segval") + V2_COLUMNS}
    redrawn = {"noise": [], "galaxy": []}
    for i in range(n):
        rng = mock.galaxy_generator(seed, i)
        for attempt in range(mock.MAX_GALAXY_DRAWS):
            drawn = draw_stamp_v2(rng, types[i], population, rms, neighbour_fraction, exposure_time)
            if drawn is not None:
                break
        else:  # pragma: no cover - would need ~100 undetectable galaxies in a row
            raise RuntimeError(f"galaxy {i} of seed {seed}: no detectable galaxy in {mock.MAX_GALAXY_DRAWS} draws")
        if attempt:
            redrawn["galaxy"].append(mock.FIRST_ID + i)
        elif drawn["noise_draws"] > 1:
            redrawn["noise"].append(mock.FIRST_ID + i)
        images[i] = drawn["image"]
        kernels[i] = drawn["kernel"]
        if keep_models:
            models[i] = drawn["model"]
            neighbour_models[i] = drawn["neighbours"]
        id_offset = mock.SEGMENT_ID_OFFSET + int(rng.integers(0, 60000))
        segmaps[i] = np.where(drawn["segmap"] > 0, drawn["segmap"] + np.int32(id_offset), 0)
        columns["id"].append(mock.FIRST_ID + i)
        columns["galtype"].append(types[i])
        columns["segval"].append(int(segmaps[i, CENTER, CENTER]))
        for key in ("mag", "flux", "radius", "z") + V2_COLUMNS:
            columns[key].append(drawn[key])
        if progress is not None:
            progress(i + 1, n)

    catalog = Table(columns)
    catalog["id"] = np.asarray(catalog["id"], np.int64)
    catalog["segval"] = np.asarray(catalog["segval"], np.int32)
    for name, dtype in _INT_COLUMNS.items():
        catalog[name] = np.asarray(catalog[name], dtype)
    for name in _BOOL_COLUMNS:
        catalog[name] = np.asarray(catalog[name], bool)
    provenance = make_provenance(
        "make-sample", seed=seed, generator="napari_blendphot.sample.mock_v2.make_mock_sample_v2",
        mock_version=2, population=population,
        n=n, neighbour_fraction=float(neighbour_fraction), noise_rms=rms, exposure_time=exposure_time,
        pixel_scale=PIXEL_SCALE, stamp_size=STAMP_SIZE, zero_point=mock.ZERO_POINT,
        psf=(f"v1 PSF dilated to FWHM U{PSF_FWHM_RANGE}\" (profile, without the output pixel), "
             f"sheared |g| < {PSF_MAX_SHEAR}; per galaxy in psf_fwhm, psf_g, psf_beta"),
        noise=(f"Poisson (exposure_time) + Gaussian rms noise_rms correlated by the kernel [a,1,a]x[a,1,a], "
               f"a U{NOISE_KERNEL_A_RANGE}; per galaxy in noise_kernel_a, noise_corr"),
        feature_rates=FEATURE_RATES if population == "candels" else
        {t: {k: min(0.9, v * BROAD_RATE_BOOST) if v < 1 else v for k, v in r.items()}
         for t, r in FEATURE_RATES.items()},
        segmentation={"threshold_sigma": mock.DETECT_THRESHOLD_SIGMA, "minarea": mock.DETECT_MIN_AREA,
                      "filter": f"gaussian FWHM {mock.DETECT_FILTER_FWHM} px, 7x7",
                      "deblend_nthresh": mock.DEBLEND_NTHRESH, "deblend_cont": mock.DEBLEND_CONT},
        redrawn_ids=redrawn,
    )
    sample = GalaxySample(images, segmaps, catalog, provenance=provenance,
                          source=f"CANDELS-like mock v2 ({population}, seed {seed})")
    if not keep_models:
        return sample
    extras = {"models": models, "neighbours": neighbour_models, "ids": np.asarray(catalog["id"]),
              "noise_rms": np.asarray(catalog["noise_rms"], np.float64), "noise_kernel": kernels,
              "exposure_time": np.asarray(catalog["exposure_time"], np.float64)}
    return sample, extras
