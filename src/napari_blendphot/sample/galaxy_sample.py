"""The in-memory sample of isolated galaxies every other step reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from napari_blendphot.constants import CENTER, GALTYPES, STAMP_SIZE, ZERO_POINT
from napari_blendphot.errors import InputError

#: Catalogue columns every sample has (more may ride along).
REQUIRED_COLUMNS = ("id", "mag", "flux", "radius", "z", "galtype")


def mag_to_flux(mag, zero_point: float = ZERO_POINT):
    """AB magnitude -> flux in the stamp's units: ``10 ** (-0.4 (mag - zp))``."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=np.float64) - zero_point))


def flux_to_mag(flux, zero_point: float = ZERO_POINT):
    """Flux -> AB magnitude; non-positive fluxes give NaN (not detected)."""
    flux = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, zero_point - 2.5 * np.log10(np.where(flux > 0, flux, 1.0)), np.nan)


class Galaxy(NamedTuple):
    """One isolated galaxy: its stamp, segmentation map and catalogue row."""

    image: np.ndarray
    segmap: np.ndarray
    row: object  # astropy.table.Row

    @property
    def id(self) -> int:
        return int(self.row["id"])

    @property
    def central_mask(self) -> np.ndarray:
        """Pixels of the central galaxy's segment (``seg == seg[64, 64]``)."""
        return central_segment(self.segmap)


def central_segment(segmap: np.ndarray) -> np.ndarray:
    """Boolean mask of the central segment; empty if the centre is background."""
    label = segmap[..., CENTER, CENTER]
    if np.ndim(label) == 0:
        return (segmap == label) if label != 0 else np.zeros(segmap.shape, bool)
    label = np.asarray(label)[..., None, None]
    return (segmap == label) & (label != 0)


@dataclass(eq=False)
class GalaxySample:
    """Isolated galaxies: stamps, segmentation maps and catalogue, kept in step.

    Parameters
    ----------
    images : (N, 128, 128) float32 array
        Stamps with the galaxy on pixel [64, 64].
    segmaps : (N, 128, 128) int32 array
        Segmentation ids of the whole stamp (ids may exceed 255).
    catalog : astropy.table.Table
        One row per stamp with at least ``id, mag, flux, radius, z, galtype``.
    provenance : dict
        Where the sample came from (written into files made from it).
    source : str
        Name used in error messages (usually the file it was read from).

    Indexing with an integer gives a :class:`Galaxy`; with a slice, an index
    array or a boolean mask, a new :class:`GalaxySample` of those galaxies.
    """

    images: np.ndarray
    segmaps: np.ndarray
    catalog: object
    provenance: dict = field(default_factory=dict)
    source: str = "sample"

    def __post_init__(self):
        self.images, self.segmaps, self.catalog = validate_sample(
            self.images, self.segmaps, self.catalog, self.source
        )
        self._index_of_id = None

    # -- container protocol -------------------------------------------------
    def __len__(self) -> int:
        return len(self.catalog)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            n = len(self)
            if not -n <= key < n:
                raise IndexError(f"galaxy index {key} out of range for a sample of {n}")
            return Galaxy(self.images[key], self.segmaps[key], self.catalog[int(key)])
        return self._subset(_normalise_key(key, len(self)))

    def _subset(self, index) -> "GalaxySample":
        # The parent was validated already: skip the checks for sub-samples.
        new = object.__new__(GalaxySample)
        new.images = self.images[index]
        new.segmaps = self.segmaps[index]
        new.catalog = self.catalog[index]
        new.provenance = dict(self.provenance)
        new.source = self.source
        new._index_of_id = None
        return new

    def __repr__(self) -> str:
        counts = ", ".join(f"{t}={n}" for t, n in self.type_counts().items())
        return f"<GalaxySample {len(self)} galaxies from {self.source!r} ({counts})>"

    # -- look-ups ------------------------------------------------------------
    @property
    def ids(self) -> np.ndarray:
        return np.asarray(self.catalog["id"])

    def index_of(self, galaxy_id) -> int:
        """Row index of the galaxy with catalogue id *galaxy_id*."""
        if self._index_of_id is None:
            self._index_of_id = {int(g): i for i, g in enumerate(self.ids)}
        try:
            return self._index_of_id[int(galaxy_id)]
        except KeyError:
            raise InputError(self.source, f"no galaxy with id {galaxy_id}") from None

    def by_id(self, galaxy_id) -> Galaxy:
        return self[self.index_of(galaxy_id)]

    def select(self, mask=None, *, galtype=None, mag_min=None, mag_max=None, ids=None) -> "GalaxySample":
        """Sub-sample by boolean mask and/or simple filters (all combined with AND)."""
        keep = np.ones(len(self), bool) if mask is None else np.asarray(mask, bool)
        if keep.shape != (len(self),):
            raise InputError("select(mask)", f"mask has shape {keep.shape}, expected ({len(self)},)")
        if galtype is not None:
            wanted = {galtype} if isinstance(galtype, str) else set(galtype)
            keep &= np.isin(np.asarray(self.catalog["galtype"]).astype(str), list(wanted))
        if mag_min is not None:
            keep &= np.asarray(self.catalog["mag"]) >= mag_min
        if mag_max is not None:
            keep &= np.asarray(self.catalog["mag"]) <= mag_max
        if ids is not None:
            keep &= np.isin(self.ids, np.asarray(list(ids)))
        return self[np.flatnonzero(keep)]

    def central_masks(self) -> np.ndarray:
        """(N, 128, 128) bool masks of each stamp's central segment."""
        return central_segment(self.segmaps)

    def type_counts(self) -> dict[str, int]:
        types = np.asarray(self.catalog["galtype"]).astype(str)
        return {t: int(np.sum(types == t)) for t in GALTYPES if np.any(types == t)}

    def summary(self) -> str:
        """A few lines describing the sample, for the CLI and notebooks."""
        mag = np.asarray(self.catalog["mag"], float)
        rad = np.asarray(self.catalog["radius"], float)
        lines = [f"{len(self)} isolated galaxies from {self.source}"]
        if len(self):
            lines.append("types: " + ", ".join(f"{t} {n}" for t, n in self.type_counts().items()))
            lines.append(
                f"F160W mag: {mag.min():.2f}-{mag.max():.2f} (median {np.median(mag):.2f}); "
                f"radius px: {rad.min():.1f}-{rad.max():.1f} (median {np.median(rad):.1f})"
            )
        return "\n".join(lines)


def _normalise_key(key, n: int):
    if isinstance(key, slice):
        return np.arange(n)[key]
    key = np.asarray(key)
    if key.dtype == bool:
        if key.shape != (n,):
            raise IndexError(f"boolean index of shape {key.shape} for a sample of {n}")
        return np.flatnonzero(key)
    if key.dtype.kind not in "iu":
        raise IndexError(f"cannot index a sample with {key.dtype} values")
    return key


def _filled_float(column) -> np.ndarray:
    """Column values as float64 with empty (masked) cells as NaN, so they are caught as non-finite."""
    if hasattr(column, "filled") and column.dtype.kind in "iuf":
        return np.asarray(column.filled(np.nan) if column.dtype.kind == "f" else column.astype(float).filled(np.nan),
                          dtype=np.float64)
    return np.asarray(column, dtype=np.float64)


#: Largest pixel value a sample may have to be blended and measured: beyond it the sums of
#: squares that photometry computes over a 128x128 stamp in 32-bit floats overflow
#: (1e15^2 x 16384 < 3.4e38).  A sample file may hold any finite value (the format is exact).
MAX_PIXEL = 1e15


def check_pixel_range(sample, source=None) -> None:
    """Refuse a sample whose stamps hold values no photometry can sum (|pixel| > :data:`MAX_PIXEL`).

    A 3e38 pixel is finite in float32, but SEP's sums over it are infinite:
    such a galaxy came out "not detected" instead of as a damaged input.
    """
    images = sample.images
    source = source if source is not None else (getattr(sample, "source", None) or "sample")
    peaks = np.abs(images.reshape(len(images), -1)).max(axis=1)
    huge = peaks > MAX_PIXEL
    if huge.any():
        first = int(np.flatnonzero(huge)[0])
        raise InputError(source, f"{int(huge.sum())} stamp(s) hold pixel values beyond +-{MAX_PIXEL:g} (first: row "
                         f"{first}, id {sample.catalog['id'][first]}, value {float(peaks[first]):.3g})",
                         "no flux can be measured on them in 32-bit floats: a damaged or unscaled image?")


def validate_sample(images, segmaps, catalog, source: str = "sample"):
    """Check and normalise the three parts of a sample; raise :class:`InputError`.

    Returns native-order float32 images, int32 segmentation maps and the
    catalogue with ``galtype`` as plain strings and ``id`` as integers.
    """
    from astropy.table import Table

    from napari_blendphot.tables import as_native

    images = as_native(np.asarray(images))
    segmaps = as_native(np.asarray(segmaps))
    if images.ndim != 3 or images.shape[1:] != (STAMP_SIZE, STAMP_SIZE):
        raise InputError(source, f"images have shape {images.shape}, expected (N, {STAMP_SIZE}, {STAMP_SIZE})")
    if segmaps.shape != images.shape:
        raise InputError(source, f"segmentation maps have shape {segmaps.shape}, images {images.shape}: they must match")
    if images.dtype.kind != "f":
        raise InputError(source, f"images have dtype {images.dtype}, expected floating point")
    if segmaps.dtype.kind not in "iu":
        raise InputError(source, f"segmentation maps have dtype {segmaps.dtype}, expected integers")
    images = images.astype(np.float32, copy=False)
    if segmaps.dtype != np.int32:
        if segmaps.size and (segmaps.max() > np.iinfo(np.int32).max or segmaps.min() < 0):
            raise InputError(source, "segmentation ids out of the int32 range or negative")
        segmaps = segmaps.astype(np.int32)
    if not isinstance(catalog, Table):
        catalog = Table(catalog)
    missing = [c for c in REQUIRED_COLUMNS if c not in catalog.colnames]
    if missing:
        raise InputError(source, f"catalogue lacks column(s) {', '.join(missing)}",
                         f"required: {', '.join(REQUIRED_COLUMNS)}")
    if len(catalog) != len(images):
        raise InputError(source, f"catalogue has {len(catalog)} rows but there are {len(images)} stamps")
    if len(images) == 0:
        raise InputError(source, "the sample is empty")
    bad = ~np.isfinite(images)
    if bad.any():
        first = int(np.flatnonzero(bad.reshape(len(images), -1).any(axis=1))[0])
        raise InputError(source, f"{int(bad.reshape(len(images), -1).any(axis=1).sum())} stamp(s) contain NaN or "
                         f"infinite pixels (first: row {first}, id {catalog['id'][first]})")
    try:
        types = np.char.strip(np.asarray(catalog["galtype"]).astype(str))
    except UnicodeDecodeError:
        raise InputError(source, "column 'galtype' holds bytes that are not text") from None
    unknown = sorted(set(map(str, types)) - set(GALTYPES))
    if unknown:
        raise InputError(source, f"unknown galtype value(s) {unknown}", f"expected one of {list(GALTYPES)}")
    catalog = catalog.copy(copy_data=False)
    catalog["galtype"] = types
    column = catalog["id"]
    mask = getattr(column, "mask", None)
    if mask is not None and np.any(mask):
        raise InputError(source, "column 'id' has empty values")
    ids = np.asarray(column)
    if ids.dtype.kind not in "iu":
        try:
            floats = ids.astype(np.float64)
        except (TypeError, ValueError):
            raise InputError(source, "galaxy ids are not integers") from None
        # A float id such as 1.5 or NaN would silently become another integer.
        if not np.all(np.isfinite(floats)) or np.any(floats != np.round(floats)):
            raise InputError(source, "galaxy ids are not integers")
        ids = floats.astype(np.int64)
        catalog["id"] = ids
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise InputError(source, f"duplicated galaxy id(s) {uniq[counts > 1][:5].tolist()}")
    for name in ("mag", "flux", "radius"):
        try:
            values = _filled_float(catalog[name])
        except (TypeError, ValueError):
            raise InputError(source, f"column {name!r} is not numeric") from None
        if not np.all(np.isfinite(values)):
            raise InputError(source, f"column {name!r} has NaN or infinite values")
    if np.any(_filled_float(catalog["flux"]) <= 0):
        raise InputError(source, "column 'flux' has zero or negative values")
    if np.any(_filled_float(catalog["radius"]) <= 0):
        raise InputError(source, "column 'radius' has zero or negative values")
    return images, segmaps, catalog
