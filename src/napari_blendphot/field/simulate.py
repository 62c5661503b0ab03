"""Synthetic field images with known truth, made from isolated-galaxy stamps.

Used by the tests, the benchmark and the worked example of ``docs/field.md``:
:func:`make_field` places galaxies of a :class:`~napari_blendphot.sample.galaxy_sample.GalaxySample`
(the embedded mock sample, or the real galaxies of ``../shared/realgal``) on a
field, some as isolated galaxies and some as blend pairs drawn with the
paper's rules (|dmag| < 2, the published shift rule), and writes the field in
the units of a real image (counts with an ``EXPTIME`` and a zero point other
than 25.96, a TAN WCS).

How the pixels are made: each galaxy's whole 128x128 stamp (neighbours
cleaned first, as for the training blends) is added at its position; pixels
that no stamp covers get white noise of the stamps' rms.  So an isolated
galaxy looks exactly like its stamp, and where a pair's stamps overlap the
noise is that of a training blend (the sum of two stamps' noise).  Stamps are
placed on whole pixels, centres on a jittered grid so that groups do not
touch.  The truth is the sample's catalogue flux (total flux, e-/s at 25.96)
and the stamp centre's position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from napari_blendphot.constants import CENTER, PIXEL_SCALE, STAMP_SIZE, ZERO_POINT
from napari_blendphot.errors import InputError

#: Sky position of the synthetic fields (COSMOS-like), degrees.
DEFAULT_CENTRE = (150.1, 2.2)


@dataclass
class SyntheticField:
    """A field image (stored units), its FITS header, and the truth (astropy Table, one row per galaxy)."""

    image: np.ndarray
    header: object
    truth: object

    def write(self, path, overwrite: bool = False):
        """Write the image as a FITS file (atomically; never over an existing file unless *overwrite*)."""
        from astropy.io import fits

        from napari_blendphot.atomic import atomic_output
        from napari_blendphot.errors import check_output_path

        check_output_path(path, overwrite)
        with atomic_output(path) as tmp:
            fits.PrimaryHDU(self.image, header=self.header).writeto(tmp)
        return path


def tan_header(shape, pixel_scale: float = PIXEL_SCALE, centre=DEFAULT_CENTRE, rotation_deg: float = 0.0):
    """A FITS header with a TAN WCS centred on *centre* (RA, Dec degrees), North up, East left, optionally rotated."""
    from astropy.io import fits

    header = fits.Header()
    ny, nx = shape
    scale = pixel_scale / 3600.0
    angle = math.radians(rotation_deg)
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CUNIT1"], header["CUNIT2"] = "deg", "deg"
    header["CRVAL1"], header["CRVAL2"] = float(centre[0]), float(centre[1])
    header["CRPIX1"], header["CRPIX2"] = (nx + 1) / 2.0, (ny + 1) / 2.0
    header["CD1_1"] = -scale * math.cos(angle)
    header["CD1_2"] = scale * math.sin(angle)
    header["CD2_1"] = scale * math.sin(angle)
    header["CD2_2"] = scale * math.cos(angle)
    header["RADESYS"] = "ICRS"
    return header


def _flux_in_stamp(sample, catalog, fluxes) -> np.ndarray:
    """Noise-free flux inside each 128x128 stamp (e-/s): the mock's ``stamp_flux``, or ``STMPFRAC`` x flux."""
    if "stamp_flux" in catalog.colnames:
        return np.asarray(catalog["stamp_flux"], np.float64)
    fractions = np.full(len(fluxes), np.nan)
    source = getattr(sample, "source", None)
    if "file" in catalog.colnames and source:
        from pathlib import Path

        from astropy.io import fits

        folder = Path(str(source))
        for i, name in enumerate(np.asarray(catalog["file"]).astype(str)):
            path = folder / name
            if path.is_file():
                fractions[i] = float(fits.getheader(path).get("STMPFRAC", np.nan))
    return fluxes * fractions


def _placements(rng, shape, n_groups: int, margin: int):
    """Integer centres on a jittered grid inside the image, *margin* pixels from the edges."""
    ny, nx = shape
    usable_y, usable_x = ny - 2 * margin, nx - 2 * margin
    if usable_y <= 0 or usable_x <= 0:
        raise InputError("field shape", f"{shape} is too small for {margin}-pixel margins")
    rows = max(1, int(round(math.sqrt(n_groups * usable_y / usable_x))))
    cols = max(1, int(math.ceil(n_groups / rows)))
    cell_y, cell_x = usable_y / rows, usable_x / cols
    cells = rng.permutation(rows * cols)[:n_groups]
    cy = margin + (cells // cols + 0.5) * cell_y + rng.uniform(-0.15, 0.15, n_groups) * cell_y
    cx = margin + (cells % cols + 0.5) * cell_x + rng.uniform(-0.15, 0.15, n_groups) * cell_x
    return np.round(cy).astype(np.int64), np.round(cx).astype(np.int64), min(cell_y, cell_x)


def make_field(sample, n_galaxies: int, pair_fraction: float = 1 / 3, shape=(2048, 2048), seed: int = 0,
               zero_point: float = ZERO_POINT, exptime: float | None = None, pixel_scale: float = PIXEL_SCALE,
               centre=DEFAULT_CENTRE, rotation_deg: float = 0.0, clean_seed: int = 0,
               noise_rms: float | None = None, header_zero_point: bool = True) -> SyntheticField:
    """A synthetic field (module docstring).

    Parameters
    ----------
    sample : GalaxySample
        Isolated galaxies (0.06"/px stamps in e-/s at 25.96); neighbours are cleaned with *clean_seed*
        (None: the sample is used as given, e.g. already cleaned).
    n_galaxies : int
        Galaxies placed; ``round(pair_fraction * n_galaxies / 2)`` pairs, the rest isolated.
    shape : (ny, nx)
    seed : int
        Placement, pairs, orientation and noise.
    zero_point : float
        AB zero point of the stored values; pixels are ``e-/s * 10**(0.4 (zero_point - 25.96))``.
        With *exptime* the header says ``BUNIT = 'COUNTS'`` and ``EXPTIME``, otherwise ``'ELECTRONS/S'``.
    pixel_scale : float
        Arcsec per pixel written in the WCS.  Pixels stay those of the stamps unless the scale is an
        integer multiple of 0.06, in which case blocks of pixels are summed (flux conserved).
    header_zero_point : bool
        Write ``MAGZERO`` (False: a header without calibration).

    Returns
    -------
    SyntheticField; ``truth`` columns: ``truth_id, galaxy_id, x, y, ra, dec, flux, mag, flux_image,
    flux_in_image, mag_in_image, radius, galtype, pair_id, partner, turn, flip`` (``pair_id`` -1 for isolated
    galaxies; positions 0-based in the written image; ``flux``/``mag``: the sample's total flux, e-/s
    at 25.96, what the networks are trained to give; ``flux_image``: the same in stored units;
    ``flux_in_image``: the part of the galaxy's light its 128x128 stamp holds, i.e. what is in the
    field (NaN when the sample does not say); ``turn``, ``flip``: how the stamp was oriented).
    """
    from astropy.table import Table
    from astropy.wcs import WCS

    from napari_blendphot.blend.pairing import draw_pairs
    from napari_blendphot.clean.neighbours import clean_sample

    if n_galaxies < 1:
        raise InputError("n_galaxies", f"must be positive, got {n_galaxies}")
    rebin = int(round(pixel_scale / PIXEL_SCALE))
    if not (rebin >= 1 and abs(rebin * PIXEL_SCALE - pixel_scale) < 1e-9):
        rebin = 1
    rng = np.random.default_rng(seed)
    cleaned = clean_sample(sample, clean_seed) if clean_seed is not None else sample
    images = np.asarray(cleaned.images, np.float32)
    catalog = cleaned.catalog
    mags = np.asarray(catalog["mag"], np.float64)
    fluxes = np.asarray(catalog["flux"], np.float64)
    radii = np.asarray(catalog["radius"], np.float64)
    ids = np.asarray(catalog["id"])
    galtypes = np.asarray(catalog["galtype"]).astype(str) if "galtype" in catalog.colnames else np.full(len(ids), "")
    if noise_rms is not None:
        rms = float(noise_rms)
    elif "noise_rms" in catalog.colnames:
        rms = float(np.nanmedian(np.asarray(catalog["noise_rms"])))
    else:
        from napari_blendphot.field.calibration import TRAINING_NOISE_RMS

        rms = TRAINING_NOISE_RMS
    in_stamp = _flux_in_stamp(sample, catalog, fluxes)

    n_pairs = int(round(pair_fraction * n_galaxies / 2))
    n_isolated = n_galaxies - 2 * n_pairs
    pairs = draw_pairs(mags, radii, n_pairs, rng) if n_pairs else None
    isolated = rng.integers(0, len(ids), n_isolated)
    n_groups = n_pairs + n_isolated
    full_shape = (shape[0] * rebin, shape[1] * rebin)
    cy, cx, cell = _placements(rng, full_shape, n_groups, margin=CENTER + 2)

    canvas = np.zeros(full_shape, np.float64)
    covered = np.zeros(full_shape, bool)
    rows = []

    marker = np.zeros((STAMP_SIZE, STAMP_SIZE), bool)
    marker[CENTER, CENTER] = True

    def orient(array, turn, flip):
        array = np.rot90(array, turn)
        return array[:, ::-1] if flip else array

    def paste(index, y, x, pair_id, partner):
        # Random quarter turns and flips vary the reused galaxies; the light centre stays on a pixel
        # centre ([64, 64] moves to [63 or 64, 63 or 64]), found by moving a marker the same way.
        turn, flip = int(rng.integers(0, 4)), bool(rng.uniform() < 0.5)
        stamp = orient(images[index], turn, flip)
        dy, dx = (int(v) for v in np.argwhere(orient(marker, turn, flip))[0])
        y0, x0 = y - dy, x - dx
        ys = slice(max(y0, 0), min(y0 + STAMP_SIZE, full_shape[0]))
        xs = slice(max(x0, 0), min(x0 + STAMP_SIZE, full_shape[1]))
        canvas[ys, xs] += stamp[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        covered[ys, xs] = True
        rows.append((index, y, x, pair_id, partner, turn, flip))

    for k in range(n_groups):
        if k < n_pairs:
            c, m = int(pairs.central[k]), int(pairs.companion[k])
            paste(c, cy[k], cx[k], k, len(rows) + 1)
            paste(m, cy[k] + int(pairs.dy[k]), cx[k] + int(pairs.dx[k]), k, len(rows) - 1)
        else:
            paste(int(isolated[k - n_pairs]), cy[k], cx[k], -1, -1)

    noise = rng.normal(0.0, rms, full_shape)
    canvas[~covered] += noise[~covered]
    del noise
    if rebin > 1:
        canvas = canvas.reshape(shape[0], rebin, shape[1], rebin).sum(axis=(1, 3))
    scale = 10.0 ** (0.4 * (zero_point - ZERO_POINT))
    image = (canvas * scale).astype(np.float32)

    header = tan_header(shape, rebin * PIXEL_SCALE if rebin > 1 else pixel_scale, centre, rotation_deg)
    if exptime is not None:
        header["BUNIT"] = "COUNTS"
        header["EXPTIME"] = float(exptime)
    else:
        header["BUNIT"] = "ELECTRONS/S"
    if header_zero_point:
        header["MAGZERO"] = (float(zero_point), "AB mag of one unit of the stored values")
    index = np.array([r[0] for r in rows], np.int64)
    # Pixel centres of a rebinned image: full-resolution pixel p sits at (p + 0.5) / rebin - 0.5.
    y = (np.array([r[1] for r in rows], np.float64) + 0.5) / rebin - 0.5
    x = (np.array([r[2] for r in rows], np.float64) + 0.5) / rebin - 0.5
    ra, dec = WCS(header).wcs_pix2world(x, y, 0)
    truth = Table({
        "truth_id": np.arange(1, len(rows) + 1), "galaxy_id": ids[index], "x": x, "y": y, "ra": ra, "dec": dec,
        "flux": fluxes[index], "mag": mags[index], "flux_image": fluxes[index] * scale,
        "flux_in_image": in_stamp[index], "mag_in_image": ZERO_POINT - 2.5 * np.log10(in_stamp[index]),
        "radius": radii[index] / rebin, "galtype": galtypes[index],
        "pair_id": np.array([r[3] for r in rows], np.int64),
        "partner": np.array([r[4] + 1 if r[4] >= 0 else -1 for r in rows], np.int64),
        "turn": np.array([r[5] for r in rows], np.int8), "flip": np.array([r[6] for r in rows], bool),
    })
    truth.meta.update({"seed": seed, "zero_point": zero_point, "exptime": exptime, "noise_rms_e_per_s": rms,
                       "pixel_scale": rebin * PIXEL_SCALE if rebin > 1 else pixel_scale, "n_pairs": n_pairs,
                       "n_isolated": n_isolated, "sample": str(getattr(sample, "source", ""))})
    return SyntheticField(image, header, truth)


def match_truth(truth, x, y, radius: float):
    """One-to-one matching of true galaxies to measured positions (nearest first, within *radius* pixels).

    Returns ``(index, distance)`` per true galaxy: the row of the matched
    measurement (-1 if none) and its distance in pixels.
    """
    from scipy.spatial import cKDTree

    tx, ty = np.asarray(truth["x"], np.float64), np.asarray(truth["y"], np.float64)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    index = np.full(len(tx), -1, np.int64)
    distance = np.full(len(tx), np.inf)
    if len(x) == 0:
        return index, distance
    k = min(4, len(x))
    d, j = cKDTree(np.stack([x, y], axis=1)).query(np.stack([tx, ty], axis=1), k=k, distance_upper_bound=radius)
    d, j = d.reshape(len(tx), k), j.reshape(len(tx), k)
    pairs = sorted((d[t, c], t, j[t, c]) for t in range(len(tx)) for c in range(k) if np.isfinite(d[t, c]))
    taken = set()
    for dist, t, row in pairs:
        if index[t] < 0 and row not in taken:
            index[t], distance[t] = row, dist
            taken.add(row)
    return index, distance


def pair_stamps(sample, truth, clean_seed: int = 0):
    """The pairs of a synthetic field as training-domain blends, each member once as the central.

    For every pair member: its own (cleaned, oriented) stamp plus its partner's
    stamp shifted by the offset they have in the field, the
    :class:`~napari_blendphot.deblend.base.BlendContext` and the true
    [central, companion] fluxes.  Running the methods on these gives the
    stamp-level accuracy on exactly the field's pairs (noise as in the training
    blends: the sum of the two stamps' noise).  For a field binned to a coarser
    scale the blends are those of the unbinned pairs (what binning costs).

    Returns
    -------
    rows : (M,) truth rows of the members, blends : (M, 128, 128) float32,
    context : BlendContext, fluxes : (M, 2) float64
    """
    from napari_blendphot.blend.assemble import shift_stamp
    from napari_blendphot.clean.neighbours import clean_sample
    from napari_blendphot.deblend.base import BlendContext

    cleaned = clean_sample(sample, clean_seed) if clean_seed is not None else sample
    images = np.asarray(cleaned.images, np.float32)
    row_of = {int(galaxy_id): i for i, galaxy_id in enumerate(np.asarray(cleaned.catalog["id"]))}
    radii = np.asarray(cleaned.catalog["radius"], np.float64)

    def oriented(t):
        image = np.rot90(images[row_of[int(truth["galaxy_id"][t])]], int(truth["turn"][t]))
        return np.ascontiguousarray(image[:, ::-1] if truth["flip"][t] else image)

    members = np.flatnonzero(np.asarray(truth["partner"]) > 0)
    rebin = int(round(float(truth.meta.get("pixel_scale", PIXEL_SCALE)) / PIXEL_SCALE))
    blends = np.zeros((len(members), STAMP_SIZE, STAMP_SIZE), np.float32)
    shifts = np.zeros((len(members), 2), np.int64)
    fluxes = np.zeros((len(members), 2))
    central_radius = np.zeros(len(members))
    for k, t in enumerate(members):
        p = int(truth["partner"][t]) - 1
        dy = int(round((truth["y"][p] - truth["y"][t]) * rebin))
        dx = int(round((truth["x"][p] - truth["x"][t]) * rebin))
        # Oriented stamps keep the light centre within a pixel of [64, 64]; align the centres exactly.
        cy_t, cx_t = _oriented_centre(truth, t)
        cy_p, cx_p = _oriented_centre(truth, p)
        central = shift_stamp(oriented(t), CENTER - cy_t, CENTER - cx_t)
        companion = shift_stamp(oriented(p), dy + CENTER - cy_p, dx + CENTER - cx_p)
        blends[k] = central + companion
        shifts[k] = (dy, dx)
        fluxes[k] = (truth["flux"][t], truth["flux"][p])
        central_radius[k] = radii[row_of[int(truth["galaxy_id"][t])]]
    return members, blends, BlendContext(shifts, central_radius), fluxes


def _oriented_centre(truth, t) -> tuple:
    marker = np.zeros((STAMP_SIZE, STAMP_SIZE), bool)
    marker[CENTER, CENTER] = True
    marker = np.rot90(marker, int(truth["turn"][t]))
    if truth["flip"][t]:
        marker = marker[:, ::-1]
    cy, cx = np.argwhere(marker)[0]
    return int(cy), int(cx)
