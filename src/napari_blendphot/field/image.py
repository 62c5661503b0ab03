"""A field image on disk: read by region, with its WCS and calibration.

:func:`open_field` looks at a FITS file without reading its pixels: it picks
the image HDU (the first with 2-D or 3-D data, or the one asked for), the
plane of a cube, the celestial WCS, and the calibration
(:mod:`napari_blendphot.field.calibration`).  :meth:`FieldImage.read_region`
then reads any rectangle through ``hdu.section`` (only those rows are read,
BSCALE/BZERO applied), so a 20,000 x 20,000 image is measured tile by tile in
bounded memory.  The file is opened without a memory map: pages read for
earlier tiles are not kept mapped (and resident) in this process.

Pixels that carry no data become NaN in what ``read_region`` returns: pixels
outside the image, NaN or infinite values, and (in floating-point images)
exact zeros, the usual fill of mosaic borders.  Everything that was decided
rather than read (a plane, a missing WCS, an assumed zero point) is a line in
:attr:`FieldImage.notes`, issued once as a :class:`FieldWarning`.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from napari_blendphot.errors import InputError
from napari_blendphot.field.calibration import Calibration, read_calibration

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz", ".fz")
#: Gzip-compressed files cannot be read by region: below this many pixels they are read whole.
GZIP_MAX_PIXELS = 8192 * 8192


class FieldWarning(UserWarning):
    """Something about a field image was assumed or worked around (one line, naming the file)."""


def _is_fits_name(path: Path) -> bool:
    return path.name.lower().endswith(FITS_SUFFIXES)


def _image_hdus(hdul):
    """(index, hdu, shape) of HDUs holding numeric 2-D or 3-D images (length-1 extra axes dropped)."""
    found = []
    for index, hdu in enumerate(hdul):
        if not getattr(hdu, "is_image", False):
            continue
        shape = tuple(int(n) for n in (hdu.shape or ()))
        squeezed = tuple(n for n in shape[:-2] if n != 1) + shape[-2:] if len(shape) >= 2 else shape
        if len(squeezed) in (2, 3) and all(n > 0 for n in squeezed):
            found.append((index, hdu, shape))
    return found


class FieldImage:
    """A 2-D field image (or one plane of a cube) in a FITS file, read by region.

    Attributes
    ----------
    path : Path
    hdu_index, plane : int, int or None
    shape : (ny, nx)
    wcs : astropy.wcs.WCS or None (celestial, 2-D)
    calibration : Calibration
    header : astropy.io.fits.Header (the image HDU's, with the primary's cards it lacks)
    notes : list of str (one line each, also issued as FieldWarning)
    """

    def __init__(self, path, hdu_index: int, plane: int | None, shape, header, wcs, calibration: Calibration,
                 notes, raw_shape, float_data: bool):
        self.path = Path(path)
        self.hdu_index = hdu_index
        self.plane = plane
        self.shape = tuple(shape)
        self.header = header
        self.wcs = wcs
        self.calibration = calibration
        self.notes = list(notes)
        self._raw_shape = tuple(raw_shape)
        self._float_data = float_data
        self._hdul = None
        self._whole = None

    # ----------------------------------------------------------------- reading
    def __repr__(self) -> str:
        plane = "" if self.plane is None else f", plane {self.plane}"
        return f"FieldImage({self.path.name!r}, HDU {self.hdu_index}{plane}, {self.shape[1]}x{self.shape[0]})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def has_wcs(self) -> bool:
        return self.wcs is not None

    def _hdu(self):
        if self._hdul is None:
            from astropy.io import fits

            self._hdul = fits.open(self.path, memmap=False, lazy_load_hdus=True)
        return self._hdul[self.hdu_index]

    def close(self) -> None:
        if self._hdul is not None:
            self._hdul.close()
            self._hdul = None

    def __enter__(self) -> "FieldImage":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _index(self, ys: slice, xs: slice) -> tuple:
        extra = [0] * (len(self._raw_shape) - 2)
        if self.plane is not None:
            # The cube axis is the one extra axis longer than 1.
            axis = [i for i, n in enumerate(self._raw_shape[:-2]) if n != 1][0]
            extra[axis] = self.plane
        return (*extra, ys, xs)

    def read_region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels ``[y0:y1, x0:x1]`` as native float32; NaN outside the image and where there is no data."""
        y0, y1, x0, x1 = int(y0), int(y1), int(x0), int(x1)
        if y1 <= y0 or x1 <= x0:
            raise InputError(self.name, f"empty region [{y0}:{y1}, {x0}:{x1}]")
        out = np.full((y1 - y0, x1 - x0), np.nan, np.float32)
        ny, nx = self.shape
        iy0, iy1, ix0, ix1 = max(y0, 0), min(y1, ny), max(x0, 0), min(x1, nx)
        if iy1 <= iy0 or ix1 <= ix0:
            return out
        try:
            if self._whole is not None:
                block = self._whole[iy0:iy1, ix0:ix1]
            else:
                block = self._hdu().section[self._index(slice(iy0, iy1), slice(ix0, ix1))]
        except InputError:
            raise
        except Exception as exc:
            raise InputError(self.name, f"cannot read pixels [{iy0}:{iy1}, {ix0}:{ix1}]: "
                                        f"{' '.join(str(exc).split()) or type(exc).__name__}",
                             "is the file complete?") from None
        block = np.asarray(block)
        target = out[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
        target[...] = block  # converts to native float32
        bad = ~np.isfinite(target)
        if self._float_data:
            bad |= target == 0
        target[bad] = np.nan
        return out

    def read_all(self) -> np.ndarray:
        """The whole image (float32, NaN where there is no data): for images that fit in memory."""
        return self.read_region(0, self.shape[0], 0, self.shape[1])

    def pixel_to_world(self, x, y):
        """(ra, dec) in degrees of 0-based pixel positions (NaN arrays without a WCS)."""
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        if self.wcs is None:
            return np.full(x.shape, np.nan), np.full(y.shape, np.nan)
        ra, dec = self.wcs.wcs_pix2world(x, y, 0)
        return np.asarray(ra, np.float64), np.asarray(dec, np.float64)

    def world_to_pixel(self, ra, dec):
        """0-based (x, y) of sky positions in degrees; raises without a WCS."""
        if self.wcs is None:
            raise InputError(self.name, "has no celestial WCS: sky positions cannot be placed on it",
                             "give pixel positions (columns x, y) instead")
        x, y = self.wcs.wcs_world2pix(np.asarray(ra, np.float64), np.asarray(dec, np.float64), 0)
        return np.asarray(x, np.float64), np.asarray(y, np.float64)

    def describe(self) -> dict:
        """JSON-ready description (catalogue metadata)."""
        return {"file": self.path.name, "hdu": self.hdu_index, "plane": self.plane,
                "shape_yx": list(self.shape), "wcs": self.wcs is not None,
                "wcs_header": None if self.wcs is None else self.wcs.to_header().tostring(sep="\n").strip(),
                "calibration": self.calibration.as_dict(), "notes": list(self.notes)}


def _celestial_wcs(header, source: str, notes: list):
    """The celestial 2-D WCS of *header*, or None (with a note) when there is none or it is unusable."""
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header)
        except Exception as exc:
            notes.append(f"its WCS cannot be read ({' '.join(str(exc).split())}): positions in pixels only, "
                         "ra/dec left empty")
            return None
    if not wcs.has_celestial:
        notes.append("no celestial WCS: positions in pixels only, ra/dec left empty")
        return None
    celestial = wcs.celestial
    try:
        ra, dec = celestial.wcs_pix2world([[0.0, 0.0]], 0)[0]
    except Exception:
        ra = dec = float("nan")
    if not (math.isfinite(ra) and math.isfinite(dec)):
        notes.append("its celestial WCS gives no finite sky position: positions in pixels only, ra/dec left empty")
        return None
    return celestial


def open_field(path, hdu: int | None = None, plane: int | None = None, zero_point: float | None = None,
               pixel_scale: float | None = None, warn: bool = True) -> FieldImage:
    """Open a FITS field image without reading its pixels.

    Parameters
    ----------
    path : path-like
        A FITS file (``.fits``, ``.fit``, ``.fts``, optionally gzip- or fpack-compressed).
    hdu : int, optional
        HDU index; default the first HDU with a 2-D image or a 3-D cube.
    plane : int, optional
        Plane of a cube (0-based); default 0 (recorded in the notes).
    zero_point, pixel_scale : float, optional
        Override the header (AB zero point of the stored values; arcsec per pixel).
    warn : bool
        Issue each note as a :class:`FieldWarning` (one line naming the file).

    Raises
    ------
    InputError
        Not a FITS file, no image, a wrong HDU or plane: one line naming the file.
    """
    from astropy.io import fits

    path = Path(path)
    name = path.name
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a folder, not a FITS image")
    if not _is_fits_name(path):
        raise InputError(path, "is not a FITS file (expected .fits, .fit, .fts, optionally .gz or .fz)")
    from napari_blendphot.tables import check_fits_header

    check_fits_header(path)
    try:
        with warnings.catch_warnings():
            # A damaged file gets one line from us, not astropy's multi-line verification warnings.
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False)
    except Exception as exc:
        raise InputError(path, f"cannot be opened as FITS: {' '.join(str(exc).split()) or type(exc).__name__}",
                         "is it a complete FITS file?") from None
    notes = []
    try:
        candidates = _image_hdus(hdul)
        if hdu is None:
            if not candidates:
                raise InputError(path, "holds no 2-D image or 3-D cube in any HDU")
            index, image_hdu, raw_shape = candidates[0]
        else:
            chosen = [c for c in candidates if c[0] == int(hdu)]
            if not chosen:
                have = ", ".join(str(c[0]) for c in candidates) or "none"
                raise InputError(path, f"HDU {hdu} is not a 2-D image or 3-D cube (image HDUs: {have})")
            index, image_hdu, raw_shape = chosen[0]
        # Exact zeros mean "no data" only in floating-point images (BITPIX < 0).
        float_data = int(image_hdu.header.get("BITPIX", -32)) < 0
        squeezed = [n for n in raw_shape[:-2] if n != 1]
        if squeezed:
            n_planes = squeezed[0]
            chosen_plane = 0 if plane is None else int(plane)
            if not 0 <= chosen_plane < n_planes:
                raise InputError(path, f"plane {plane} does not exist: the cube has {n_planes} planes "
                                       f"(0-{n_planes - 1})")
            if plane is None:
                notes.append(f"3-D cube of {n_planes} planes: measuring plane 0 (choose another with --plane)")
            else:
                notes.append(f"3-D cube of {n_planes} planes: measuring plane {chosen_plane}")
        else:
            if plane not in (None, 0):
                raise InputError(path, f"plane {plane} asked for, but the image is 2-D")
            chosen_plane = None
        header = image_hdu.header.copy()
        if index != 0:
            for card in hdul[0].header.cards:  # HST: EXPTIME, PHOTFLAM... may sit in the primary header
                if card.keyword and card.keyword not in header and card.keyword not in ("SIMPLE", "EXTEND", "NAXIS"):
                    try:
                        header[card.keyword] = (card.value, card.comment)
                    except Exception:
                        continue
        shape = tuple(raw_shape[-2:])
        wcs = _celestial_wcs(header, name, notes)
        calibration = read_calibration(header, name, wcs, zero_point, pixel_scale)
        notes.extend(calibration.notes)
    finally:
        hdul.close()
    image = FieldImage(path, index, chosen_plane, shape, header, wcs, calibration, notes, raw_shape, float_data)
    if path.name.lower().endswith((".gz",)):
        if shape[0] * shape[1] > GZIP_MAX_PIXELS:
            raise InputError(path, f"gzip-compressed image of {shape[1]}x{shape[0]} pixels cannot be read by region",
                             "decompress it (gunzip) or tile-compress it (fpack) first")
        image._whole = _read_whole(image)
    if warn:
        for note in notes:
            warnings.warn(f"{name}: {note}", FieldWarning, stacklevel=2)
    return image


def _read_whole(image: FieldImage) -> np.ndarray:
    """The image plane read at once (gzip streams cannot seek cheaply, so region reads would re-inflate)."""
    from astropy.io import fits

    with fits.open(image.path, memmap=False) as hdul:
        data = hdul[image.hdu_index].data
        return np.array(data[image._index(slice(None), slice(None))])
