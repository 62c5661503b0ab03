"""Assembling blends: shift the companion's stamp and add it to the central's.

A blend is ``galaxy1 + galaxy2`` where ``galaxy1`` is the central's (cleaned)
stamp and ``galaxy2`` the companion's stamp shifted by whole pixels
``(dy, dx)`` with zero padding (no wrap-around: what leaves the stamp is
lost).  The true masks are the central segments ``seg == seg[64, 64]`` of each
stamp, the companion's shifted alike.

The array functions here are numpy only, for the training stream; the
catalogue helpers import astropy inside the functions that need it.
"""

from __future__ import annotations

import numpy as np

# The containers live in blend_set (imported here too, where they always were).
from napari_blendphot.blend.blend_set import Blend, BlendBatch  # noqa: F401
from napari_blendphot.constants import STAMP_SIZE, ZERO_POINT
from napari_blendphot.errors import InputError
from napari_blendphot.sample.galaxy_sample import central_segment, mag_to_flux

#: Per-galaxy catalogue fields copied into blend rows as ``g1_<field>`` / ``g2_<field>``.
GALAXY_FIELDS = ("id", "mag", "flux", "rad", "z", "type")
#: Columns of a blend catalogue, in order (docs/architecture.md).
CATALOG_COLUMNS = ("id", "split", "distance", "dy", "dx",
                   *(f"g1_{f}" for f in GALAXY_FIELDS), *(f"g2_{f}" for f in GALAXY_FIELDS))


def _shift_slices(shift: int, size: int) -> tuple[slice, slice]:
    """(source, destination) slices moving a length-*size* axis by *shift*."""
    if shift >= 0:
        return slice(0, size - shift), slice(shift, size)
    return slice(-shift, size), slice(0, size + shift)


def shift_stamp(image, dy: int, dx: int, out: np.ndarray | None = None) -> np.ndarray:
    """Shift the last two axes of *image* by whole pixels, padding with zeros.

    Pixel ``[y, x]`` moves to ``[y + dy, x + dx]``; pixels pushed past an edge
    are dropped (no wrap-around).  Works on ``(..., H, W)`` images and masks of
    any dtype.

    Parameters
    ----------
    image : (..., H, W) array
    dy, dx : int
        Shift along rows and columns.
    out : array, optional
        Where to write the result (same shape and dtype as *image*; must not
        share memory with it).
    """
    image = np.asarray(image)
    if image.ndim < 2:
        raise InputError("shift_stamp(image)", f"need at least 2 dimensions, got shape {image.shape}")
    if int(dy) != dy or int(dx) != dx:
        raise InputError("shift_stamp(dy, dx)", f"shifts must be whole pixels, got ({dy}, {dx})")
    dy, dx = int(dy), int(dx)
    height, width = image.shape[-2:]
    if out is None:
        out = np.zeros_like(image)
    else:
        out[...] = 0
    if abs(dy) >= height or abs(dx) >= width:
        return out
    src_y, dst_y = _shift_slices(dy, height)
    src_x, dst_x = _shift_slices(dx, width)
    out[..., dst_y, dst_x] = image[..., src_y, src_x]
    return out


def dmag_scale(dmag: float) -> float:
    """Flux factor of a magnitude change: ``10 ** (-0.4 dmag)`` (dmag < 0 brightens)."""
    return float(10.0 ** (-0.4 * float(dmag)))


def _galaxy_parts(galaxy, which: str):
    """(image, central mask, catalogue values) of a Galaxy, an (image, segmap) pair or an image."""
    values = {"id": -1, "mag": np.nan, "flux": np.nan, "rad": np.nan, "z": np.nan, "type": ""}
    segmap = None
    if hasattr(galaxy, "image") and hasattr(galaxy, "segmap"):
        image, segmap = galaxy.image, galaxy.segmap
        row = getattr(galaxy, "row", None)
        if row is not None:
            mag = float(row["mag"])
            values = {"id": int(row["id"]), "mag": mag, "flux": float(mag_to_flux(mag, ZERO_POINT)),
                      "rad": float(row["radius"]), "z": float(row["z"]), "type": str(row["galtype"]).strip()}
    elif isinstance(galaxy, tuple) and len(galaxy) == 2:
        image, segmap = galaxy
    else:
        image = galaxy
    image = np.asarray(image)
    if image.shape != (STAMP_SIZE, STAMP_SIZE):
        raise InputError(f"{which} galaxy", f"stamp has shape {image.shape}, expected ({STAMP_SIZE}, {STAMP_SIZE})")
    if image.dtype != np.float32 or not image.dtype.isnative:
        image = image.astype(np.float32)
    if segmap is None:
        # A bare image has no segmentation: its mask is unknown, left empty.
        mask = np.zeros(image.shape, np.uint8)
    else:
        segmap = np.asarray(segmap)
        if segmap.shape != image.shape:
            raise InputError(f"{which} galaxy", f"segmentation map has shape {segmap.shape}, image {image.shape}")
        mask = central_segment(segmap).view(np.uint8)
    return image, mask, values


def make_blend(central, companion, dy: int, dx: int, dmag: float = 0.0) -> Blend:
    """Blend one pair: the central plus the companion shifted by ``(dy, dx)``.

    Parameters
    ----------
    central, companion : Galaxy, (image, segmap) tuple, or (128, 128) image
        Usually ``sample[i]``.  A bare image gives an empty mask and unknown
        catalogue values.
    dy, dx : int
        Companion shift in pixels along rows and columns.
    dmag : float
        Magnitude change of the companion: its stamp is scaled by
        ``10 ** (-0.4 dmag)`` and ``g2_mag``/``g2_flux`` follow.

    Returns
    -------
    Blend
    """
    image1, mask1, values1 = _galaxy_parts(central, "central")
    image2, mask2, values2 = _galaxy_parts(companion, "companion")
    if not np.isfinite(dmag):
        raise InputError("dmag", f"must be finite, got {dmag}")
    galaxy2 = shift_stamp(image2, dy, dx)
    if dmag != 0.0:
        scale = dmag_scale(dmag)
        galaxy2 *= np.float32(scale)
        values2 = dict(values2, mag=values2["mag"] + float(dmag), flux=values2["flux"] * scale)
    masks = np.empty((2, STAMP_SIZE, STAMP_SIZE), np.uint8)
    masks[0] = mask1
    shift_stamp(mask2, dy, dx, out=masks[1])
    galaxy1 = image1.copy()
    distance = float(np.hypot(dy, dx))
    row = {"distance": distance, "dy": int(dy), "dx": int(dx)}
    row.update({f"g1_{k}": v for k, v in values1.items()})
    row.update({f"g2_{k}": v for k, v in values2.items()})
    return Blend(galaxy1 + galaxy2, galaxy1, galaxy2, masks, int(dy), int(dx), distance, row)


def assemble_pairs(images, central_masks, central, companion, dy, dx, *, blends=None, galaxy1=None,
                   galaxy2=None, masks=None, companion_scale=None):
    """Assemble many pairs into (possibly pre-allocated or memory-mapped) arrays.

    Parameters
    ----------
    images : (N, 128, 128) float32
        Stamps of the sample.
    central_masks : (N, 128, 128) uint8 or bool
        Central segment of each stamp.
    central, companion, dy, dx : (B,) int arrays
        Pairs (row indices into *images*) and shifts.
    blends, galaxy1, galaxy2 : (B, 128, 128) float32, optional
        Output arrays (allocated when not given).  ``galaxy1``/``galaxy2``
        may be ``False`` to skip storing them.
    masks : (B, 2, 128, 128) uint8, optional, or ``False`` to skip
    companion_scale : (B,) float, optional
        Flux factor applied to each companion (dmag changes).

    Returns
    -------
    dict with the arrays ``blends``, ``galaxy1``, ``galaxy2``, ``masks`` (those not skipped).
    """
    count = len(central)
    size = images.shape[-1]
    shape = (count, images.shape[-2], size)
    out = {}
    out["blends"] = np.empty(shape, np.float32) if blends is None else blends
    if galaxy1 is not False:
        out["galaxy1"] = np.empty(shape, np.float32) if galaxy1 is None else galaxy1
    if galaxy2 is not False:
        out["galaxy2"] = np.empty(shape, np.float32) if galaxy2 is None else galaxy2
    if masks is not False:
        out["masks"] = np.empty((count, 2, *shape[1:]), np.uint8) if masks is None else masks
    shifted = np.empty(shape[1:], np.float32)
    for i in range(count):
        c, k, sy, sx = int(central[i]), int(companion[i]), int(dy[i]), int(dx[i])
        shift_stamp(images[k], sy, sx, out=shifted)
        if companion_scale is not None:
            shifted *= np.float32(companion_scale[i])
        np.add(images[c], shifted, out=out["blends"][i])
        if "galaxy1" in out:
            out["galaxy1"][i] = images[c]
        if "galaxy2" in out:
            out["galaxy2"][i] = shifted
        if "masks" in out:
            out["masks"][i, 0] = central_masks[c]
            shift_stamp(central_masks[k], sy, sx, out=out["masks"][i, 1])
    return out


def pair_catalog(catalog, pairs, first_id: int = 0, split: str = "all", companion_dmag=None):
    """The blend catalogue (astropy Table) of *pairs* drawn from a sample with *catalog*.

    Fluxes are ``10 ** (-0.4 (mag - 25.96))`` of the catalogue magnitudes;
    *companion_dmag* (per pair) shifts ``g2_mag`` and scales ``g2_flux``.
    """
    from astropy.table import Table

    mag = np.asarray(catalog["mag"], dtype=np.float64)
    columns = {
        "id": np.arange(first_id, first_id + len(pairs), dtype=np.int64),
        "split": np.full(len(pairs), split, dtype=f"U{max(len(split), 1)}"),
        "distance": pairs.distance.astype(np.float64),
        "dy": np.asarray(pairs.dy, np.int64),
        "dx": np.asarray(pairs.dx, np.int64),
    }
    for prefix, rows in (("g1", pairs.central), ("g2", pairs.companion)):
        galaxy_mag = mag[rows]
        if prefix == "g2" and companion_dmag is not None:
            galaxy_mag = galaxy_mag + np.asarray(companion_dmag, np.float64)
        columns[f"{prefix}_id"] = np.asarray(catalog["id"])[rows].astype(np.int64)
        columns[f"{prefix}_mag"] = galaxy_mag
        columns[f"{prefix}_flux"] = mag_to_flux(galaxy_mag, ZERO_POINT)
        columns[f"{prefix}_rad"] = np.asarray(catalog["radius"], np.float64)[rows]
        columns[f"{prefix}_z"] = np.asarray(catalog["z"], np.float64)[rows]
        columns[f"{prefix}_type"] = np.char.strip(np.asarray(catalog["galtype"]).astype(str)[rows])
    table = Table(columns)
    table.meta["zero_point"] = ZERO_POINT
    return table


def make_blends(sample, n: int, seed, rule: str = "published", split: str = "all",
                max_dmag: float = 2.0) -> BlendBatch:
    """Make *n* blends of *sample* in memory.

    Parameters
    ----------
    sample : GalaxySample
        The (already cleaned) galaxies; pairs are drawn among all of them.
    n : int
        Number of blends.
    seed : int or numpy.random.Generator
    rule : {"published", "paper-text"}
        Shift rule (:mod:`napari_blendphot.blend.pairing`).
    split : str
        Value of the catalogue's ``split`` column.
    max_dmag : float
        Largest |mag_c - mag_k| of a pair.

    Returns
    -------
    BlendBatch
        All arrays in memory: use :func:`~napari_blendphot.blend.dataset.write_blend_dataset`
        for large numbers (30,000 blends take 6.9 GB).
    """
    from napari_blendphot.blend.pairing import draw_pairs

    catalog = sample.catalog
    pairs = draw_pairs(np.asarray(catalog["mag"]), np.asarray(catalog["radius"]), n, seed, rule, max_dmag)
    masks = central_segment(sample.segmaps).view(np.uint8)
    arrays = assemble_pairs(sample.images, masks, pairs.central, pairs.companion, pairs.dy, pairs.dx)
    table = pair_catalog(catalog, pairs, 0, split)
    return BlendBatch(arrays["blends"], arrays["galaxy1"], arrays["galaxy2"], arrays["masks"], table)
