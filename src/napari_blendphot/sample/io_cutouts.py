"""Reader of a folder of single-galaxy FITS cutouts.

Each ``*.fits`` (or ``*.fit``, ``*.fits.gz``) file in the folder holds one
galaxy; files are read in sorted file-name order, so the result is
deterministic.

* The image is the PRIMARY HDU's data, 128 x 128 pixels, the galaxy on pixel
  [64, 64] (numpy order, rows then columns).
* The segmentation map, if any, is an image extension named ``SEG`` or
  ``SEGMAP`` of the same shape with integer ids.  Without one, a segmentation
  map is made by a simple SExtractor-like detection with ``sep`` (threshold
  1.5 x the global background rms, minimum area 5 pixels, default filter and
  deblending), and the catalogue column ``seg_made`` says so.
* The catalogue values come from PRIMARY header keywords:

  ========  ========  =====================================================
  keyword   required  meaning
  ========  ========  =====================================================
  GALTYPE   yes       morphology: ``sph``, ``disk``, ``sphd`` or ``irr``
  RADIUS    yes       effective radius in pixels
  MAG       one of    F160W AB magnitude (flux from it at zero point 25.96)
  FLUX      the two   flux in image units (magnitude from it at 25.96)
  ID        no        integer galaxy id (default: 1-based position in the
                      sorted file list)
  Z         no        redshift (default NaN)
  ========  ========  =====================================================

The catalogue also gets a ``file`` column with each cutout's file name.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from napari_blendphot.constants import STAMP_SIZE, ZERO_POINT
from napari_blendphot.errors import InputError
from napari_blendphot.sample.galaxy_sample import GalaxySample, flux_to_mag, mag_to_flux
from napari_blendphot.tables import as_native

CUTOUT_SUFFIXES = (".fits", ".fit", ".fits.gz")
SEGMAP_EXTENSIONS = ("SEG", "SEGMAP")
#: Detection settings of the fallback segmentation (SExtractor-like defaults).
DETECTION_THRESHOLD = 1.5
DETECTION_MINAREA = 5


def cutout_files(folder) -> list[Path]:
    """The cutout files of *folder*, sorted by name (hidden files skipped)."""
    folder = Path(folder)
    return sorted(
        (p for p in folder.iterdir()
         if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(CUTOUT_SUFFIXES)),
        key=lambda p: p.name,
    )


def is_cutout_folder(path) -> bool:
    path = Path(path)
    return path.is_dir() and bool(cutout_files(path))


def read_cutouts(folder) -> GalaxySample:
    """Read a folder of single-galaxy FITS cutouts (see the module docstring for the keywords)."""
    from astropy.table import Table
    from astropy.utils.exceptions import AstropyUserWarning

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "folder not found" if not folder.exists() else "not a folder")
    files = cutout_files(folder)
    if not files:
        raise InputError(folder, "no FITS cutouts (*.fits) in this folder")

    images = np.empty((len(files), STAMP_SIZE, STAMP_SIZE), np.float32)
    segmaps = np.empty((len(files), STAMP_SIZE, STAMP_SIZE), np.int32)
    rows = []
    for index, path in enumerate(files):
        try:
            with warnings.catch_warnings():
                # astropy only warns about a truncated file; a short cutout must fail loudly.
                warnings.simplefilter("error", AstropyUserWarning)
                image, segmap, header = _read_one(path)
            made = segmap is None
            rows.append(_catalog_row(header, path, index, made))
        except InputError:
            raise
        except Exception as exc:  # astropy raises many types on damaged files and cards
            raise InputError(path, "cannot read as a FITS cutout (damaged file or header?): "
                             + " ".join(str(exc).split())) from None
        images[index] = image
        segmaps[index] = detect_segmentation(image) if made else segmap
    catalog = Table(rows=rows, names=("id", "mag", "flux", "radius", "z", "galtype", "file", "seg_made"))
    from napari_blendphot.provenance import make_provenance

    provenance = make_provenance(
        "read-cutouts", folder=folder.name, files=len(files), zero_point=ZERO_POINT,
        segmentation={"threshold_rms": DETECTION_THRESHOLD, "minarea": DETECTION_MINAREA,
                      "made_for": int(np.sum(catalog["seg_made"]))},
    )
    return GalaxySample(images, segmaps, catalog, provenance=provenance, source=str(folder))


def _read_one(path: Path):
    from astropy.io import fits

    from napari_blendphot.sample.io_native import is_native_sample_file
    from napari_blendphot.tables import check_fits_header

    if is_native_sample_file(path):
        raise InputError(path, "is a whole native sample file, not a single-galaxy cutout",
                         "pass the file itself instead of its folder")
    check_fits_header(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            header = hdul[0].header.copy()
            data = hdul[0].data
            segmap = None
            for name in SEGMAP_EXTENSIONS:
                if name in hdul:
                    segmap = hdul[name].data
                    break
            data = None if data is None else as_native(np.array(data))
            segmap = None if segmap is None else as_native(np.array(segmap))
    except OSError as exc:
        raise InputError(path, f"cannot read as FITS: {' '.join(str(exc).split())}") from None
    if data is None:
        raise InputError(path, "the PRIMARY HDU holds no image", "put the 128 x 128 cutout in the primary HDU")
    if data.shape != (STAMP_SIZE, STAMP_SIZE):
        raise InputError(path, f"image has shape {data.shape}, expected ({STAMP_SIZE}, {STAMP_SIZE})")
    if not np.all(np.isfinite(data)):
        raise InputError(path, "image has NaN or infinite pixels")
    if segmap is not None:
        if segmap.shape != data.shape:
            raise InputError(path, f"segmentation extension has shape {segmap.shape}, image {data.shape}")
        if segmap.dtype.kind not in "iu":
            if not np.all(np.isfinite(segmap)) or np.any(segmap != np.round(segmap)):
                raise InputError(path, "segmentation extension holds non-integer values")
        if segmap.min() < 0 or segmap.max() > np.iinfo(np.int32).max:
            raise InputError(path, "segmentation ids are negative or exceed int32")
        segmap = segmap.astype(np.int32)
    return data.astype(np.float32), segmap, header


def _catalog_row(header, path: Path, index: int, seg_made: bool):
    def number(key, required):
        if key not in header:
            if required:
                raise InputError(path, f"header lacks keyword {key}", "see napari_blendphot.sample.io_cutouts")
            return None
        value = header[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(path, f"header keyword {key} = {value!r} is not a number")
        return value

    if "GALTYPE" not in header:
        raise InputError(path, "header lacks keyword GALTYPE", "one of sph, disk, sphd, irr")
    galtype = str(header["GALTYPE"]).strip()
    radius = float(number("RADIUS", True))
    mag, flux = number("MAG", False), number("FLUX", False)
    if mag is None and flux is None:
        raise InputError(path, "header has neither MAG nor FLUX", "give the F160W magnitude or flux")
    if mag is not None:
        mag = float(mag)
        flux = float(mag_to_flux(mag, ZERO_POINT))
    else:
        flux = float(flux)
        if flux <= 0:
            raise InputError(path, f"FLUX = {flux} is not positive")
        mag = float(flux_to_mag(flux, ZERO_POINT))
    galaxy_id = number("ID", False)
    if galaxy_id is None:
        galaxy_id = index + 1
    elif float(galaxy_id) != int(galaxy_id):
        raise InputError(path, f"ID = {galaxy_id} is not an integer")
    z = number("Z", False)
    return (int(galaxy_id), mag, flux, radius, np.nan if z is None else float(z), galtype, path.name, seg_made)


def detect_segmentation(image: np.ndarray) -> np.ndarray:
    """A segmentation map of one stamp by a simple sep detection (ids from 1; 0 = sky)."""
    import sep

    data = np.ascontiguousarray(as_native(image), dtype=np.float32)
    background = sep.Background(data)
    rms = float(background.globalrms)
    if not np.isfinite(rms) or rms <= 0:
        rms = float(np.std(data)) or 1.0
    _, segmap = sep.extract(data - background.back(), DETECTION_THRESHOLD, err=rms,
                            minarea=DETECTION_MINAREA, segmentation_map=True)
    return segmap.astype(np.int32)
