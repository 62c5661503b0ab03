"""A user's source list: positions to measure instead of SEP's detections.

Accepted files: FITS tables (``.fits``, ``.fit``, ``.fts``; first table HDU),
CSV (``.csv``, with a header line), ECSV (``.ecsv``); or an astropy Table.
Columns are found by name, case-insensitively:

* sky positions in degrees: ``ra``/``dec`` (also ``ra_deg``, ``raj2000``,
  ``alpha_j2000``, ``alphawin_j2000`` and ``dec_deg``, ``dej2000``,
  ``decj2000``, ``delta_j2000``, ``deltawin_j2000``), placed with the image's WCS;
* pixel positions: ``x``/``y``, **0-based** (numpy, sep and this project's
  catalogues: a catalogue written by ``blendphot measure`` can be fed back),
  or SExtractor's ``x_image``/``y_image`` (and ``xwin_image``/``ywin_image``),
  **1-based** (FITS convention) and converted.

When both are present, sky positions are used if the image has a celestial
WCS, pixel positions otherwise.  An ``id`` (or ``source_id``, ``number``)
column of unique integers becomes the catalogue's ``source_id``.  Rows whose
position is off the image (or not finite) are kept, flagged ``OFF_IMAGE`` and
not measured; a catalogue with no position on the image is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_blendphot.errors import InputError

RA_NAMES = ("ra", "ra_deg", "raj2000", "alpha_j2000", "alphawin_j2000")
DEC_NAMES = ("dec", "dec_deg", "dej2000", "decj2000", "delta_j2000", "deltawin_j2000")
X0_NAMES, Y0_NAMES = ("x",), ("y",)
X1_NAMES, Y1_NAMES = ("x_image", "xwin_image"), ("y_image", "ywin_image")
ID_NAMES = ("id", "source_id", "number")


@dataclass
class Positions:
    """Positions of a user catalogue on an image (0-based pixels), with what was decided."""

    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    on_image: np.ndarray
    source: str
    columns: str
    notes: list


def _column(table, names):
    lower = {name.lower(): name for name in table.colnames}
    for name in names:
        if name in lower:
            return lower[name]
    return None


def read_table_file(path):
    from astropy.table import Table

    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a folder, not a catalogue file")
    name = path.name.lower()
    try:
        if name.endswith((".fits", ".fit", ".fts", ".fits.gz")):
            return Table.read(path)
        if name.endswith(".ecsv"):
            return Table.read(path, format="ascii.ecsv")
        if name.endswith((".csv", ".txt")):
            return Table.read(path, format="ascii.csv")
    except Exception as exc:
        raise InputError(path, f"cannot be read as a table: {' '.join(str(exc).split()) or type(exc).__name__}",
                         "expected a FITS table, or a CSV/ECSV file with a header line") from None
    raise InputError(path, "is not a catalogue file this command reads", "expected .fits, .csv or .ecsv")


def read_positions(catalog, image) -> Positions:
    """Positions of *catalog* (a path or an astropy Table) on *image* (a :class:`FieldImage`)."""
    source = str(catalog) if not hasattr(catalog, "colnames") else "catalogue table"
    table = catalog if hasattr(catalog, "colnames") else read_table_file(catalog)
    if len(table) == 0:
        raise InputError(source, "the catalogue has no rows")
    notes = []
    ra_name, dec_name = _column(table, RA_NAMES), _column(table, DEC_NAMES)
    x0_name, y0_name = _column(table, X0_NAMES), _column(table, Y0_NAMES)
    x1_name, y1_name = _column(table, X1_NAMES), _column(table, Y1_NAMES)
    sky = ra_name is not None and dec_name is not None
    pixel = (x0_name is not None and y0_name is not None) or (x1_name is not None and y1_name is not None)
    if not sky and not pixel:
        raise InputError(source, f"no position columns (found: {', '.join(table.colnames[:12])})",
                         "expected ra/dec in degrees, or x/y (0-based) or x_image/y_image (1-based) pixels")
    if sky and (image.has_wcs or not pixel):
        if not image.has_wcs:
            raise InputError(source, f"gives sky positions ({ra_name}, {dec_name}) but {image.name} has no "
                                     "celestial WCS", "give pixel positions (x, y) instead")
        ra = np.asarray(table[ra_name], np.float64)
        dec = np.asarray(table[dec_name], np.float64)
        x, y = image.world_to_pixel(ra, dec)
        columns = f"{ra_name}, {dec_name} (degrees, placed with the WCS)"
    elif x0_name is not None and y0_name is not None:
        x = np.asarray(table[x0_name], np.float64)
        y = np.asarray(table[y0_name], np.float64)
        columns = f"{x0_name}, {y0_name} (0-based pixels)"
    else:
        x = np.asarray(table[x1_name], np.float64) - 1.0
        y = np.asarray(table[y1_name], np.float64) - 1.0
        columns = f"{x1_name}, {y1_name} (1-based pixels, SExtractor convention)"
    ny, nx = image.shape
    on_image = np.isfinite(x) & np.isfinite(y) & (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
    if not on_image.any():
        raise InputError(source, f"none of its {len(table)} positions ({columns}) falls on {image.name} "
                                 f"({nx}x{ny} pixels)",
                         "is it the catalogue of this image? pixel positions must be 0-based x (column), y (row)")
    if not on_image.all():
        off = np.flatnonzero(~on_image)
        shown = ", ".join(str(i) for i in off[:5]) + (", ..." if len(off) > 5 else "")
        notes.append(f"{len(off)} of {len(table)} positions fall off the image (rows {shown}): "
                     "kept, flagged OFF_IMAGE, not measured")
    id_name = _column(table, ID_NAMES)
    ids = np.arange(1, len(table) + 1, dtype=np.int64)
    if id_name is not None:
        values = np.asarray(table[id_name])
        if values.dtype.kind in "iu" and len(np.unique(values)) == len(values):
            ids = values.astype(np.int64)
        else:
            notes.append(f"column {id_name!r} is not unique integers: source_id is the row number (from 1)")
    return Positions(x, y, ids, on_image, source, columns, notes)
