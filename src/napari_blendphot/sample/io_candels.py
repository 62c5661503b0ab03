"""Reader of the real CANDELS sample as published on Zenodo (record 2604740).

The archive ``candels-blender-data.tar.gz`` unpacks to a folder with

``candels_img.npy``
    float32 (N, 128, 128) F160W stamps, galaxy on pixel [64, 64];
``candels_seg.npy``
    (N, 128, 128) SExtractor segmentation ids of the whole stamp (above 255);
``candels_cat.csv``
    ``ID, RA, DEC, FIELD, mag, mag_err, radius, z, galtype, segval``.

Quirks handled here: ``FIELD`` is written as a Python bytes literal
(``"b'COSMOS    '"``) and is decoded to ``"COSMOS"``; ``mag_err`` repeats
``mag`` in the published file, so it is dropped (kept only if it differs from
``mag``, which would mean a corrected catalogue); the flux is computed from
``mag`` at the F160W zero point 25.96.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from napari_blendphot.constants import GALTYPES, STAMP_SIZE, ZERO_POINT
from napari_blendphot.errors import InputError
from napari_blendphot.sample.galaxy_sample import GalaxySample, mag_to_flux

IMAGES_FILE = "candels_img.npy"
SEGMAPS_FILE = "candels_seg.npy"
CATALOG_FILE = "candels_cat.csv"
#: Columns of ``candels_cat.csv`` the reader needs (``mag_err`` is optional).
CATALOG_COLUMNS = ("ID", "RA", "DEC", "FIELD", "mag", "radius", "z", "galtype", "segval")


def is_candels_folder(path) -> bool:
    """Whether *path* is a folder holding the Zenodo CANDELS files."""
    path = Path(path)
    return path.is_dir() and (path / IMAGES_FILE).is_file()


def read_candels(folder) -> GalaxySample:
    """Read the Zenodo CANDELS folder into a :class:`GalaxySample`.

    Parameters
    ----------
    folder : str or path-like
        Folder with ``candels_img.npy``, ``candels_seg.npy`` and ``candels_cat.csv``.

    Returns
    -------
    GalaxySample
        Catalogue columns ``id, mag, flux, radius, z, galtype`` plus ``ra, dec,
        field, segval`` (``field`` decoded to plain text).
    """
    from astropy.table import Table

    from napari_blendphot.tables import read_csv

    folder = Path(folder)
    if not folder.exists():
        raise InputError(folder, "folder not found")
    if not folder.is_dir():
        raise InputError(folder, "not a folder", f"expected a folder with {IMAGES_FILE}, {SEGMAPS_FILE}, {CATALOG_FILE}")
    missing = [name for name in (IMAGES_FILE, SEGMAPS_FILE, CATALOG_FILE) if not (folder / name).is_file()]
    if missing:
        raise InputError(folder, f"missing {', '.join(missing)}",
                         "expected the unpacked Zenodo 2604740 archive (blendphot fetch-candels)")

    images = _load_npy(folder / IMAGES_FILE, "f", "F160W stamps")
    segmaps = _load_npy(folder / SEGMAPS_FILE, "iu", "segmentation maps")
    if segmaps.shape != images.shape:
        raise InputError(folder / SEGMAPS_FILE, f"has shape {segmaps.shape} but {IMAGES_FILE} has {images.shape}")

    csv_path = folder / CATALOG_FILE
    try:
        raw = read_csv(csv_path)
    except Exception as exc:  # astropy raises several types for unreadable CSV
        raise InputError(csv_path, f"cannot read as CSV: {' '.join(str(exc).split())}") from None
    # Some versions of the file have padded header names.
    for name in raw.colnames:
        if name != name.strip():
            raw.rename_column(name, name.strip())
    absent = [c for c in CATALOG_COLUMNS if c not in raw.colnames]
    if absent:
        raise InputError(csv_path, f"lacks column(s) {', '.join(absent)}", f"expected {', '.join(CATALOG_COLUMNS)}")
    if len(raw) != len(images):
        raise InputError(csv_path, f"has {len(raw)} rows but {IMAGES_FILE} holds {len(images)} stamps")

    galtypes = np.char.strip(np.asarray(raw["galtype"]).astype(str))
    unknown = sorted(set(map(str, galtypes)) - set(GALTYPES))
    if unknown:
        raise InputError(csv_path, f"unknown galtype value(s) {unknown}", f"expected one of {list(GALTYPES)}")
    mags = _float_column(raw, "mag", csv_path)
    catalog = Table(
        {
            "id": _int_column(raw, "ID", csv_path),
            "mag": mags,
            "flux": mag_to_flux(mags, ZERO_POINT),
            "radius": _float_column(raw, "radius", csv_path),
            "z": _float_column(raw, "z", csv_path),
            "galtype": galtypes,
            "ra": _float_column(raw, "RA", csv_path),
            "dec": _float_column(raw, "DEC", csv_path),
            "field": np.array([decode_bytes_literal(v) for v in np.asarray(raw["FIELD"]).astype(str)]),
            "segval": _int_column(raw, "segval", csv_path),
        }
    )
    if "mag_err" in raw.colnames:
        mag_err = _float_column(raw, "mag_err", csv_path)
        if not np.array_equal(mag_err, mags):
            # Not the published quirk: this catalogue has real errors, keep them.
            catalog["mag_err"] = mag_err
    from napari_blendphot.provenance import make_provenance

    # Only the small catalogue is hashed here; the arrays are hashed by the
    # steps that need a digest of the sample (hashing ~250 MB on every read
    # would cost seconds).
    provenance = make_provenance(
        "read-candels", inputs={"catalog": csv_path},
        source="Zenodo 2604740 (candels-blender-data.tar.gz)", folder=folder.name, zero_point=ZERO_POINT,
        notes="FIELD decoded from bytes literals; mag_err dropped where it repeats mag",
    )
    return GalaxySample(images, segmaps, catalog, provenance=provenance, source=str(folder))


def decode_bytes_literal(text: str) -> str:
    """``"b'COSMOS    '"`` -> ``"COSMOS"``; plain text is only stripped."""
    text = str(text).strip()
    if len(text) >= 3 and text[0] == "b" and text[1] in "'\"" and text[-1] == text[1]:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        if isinstance(value, bytes):
            return value.decode("ascii", errors="replace").strip()
    return text


def _load_npy(path: Path, kinds: str, what: str) -> np.ndarray:
    try:
        # Never unpickle: a .npy from the internet must not run code.  Map the
        # file first so that the shape and dtype its header claims are checked
        # against the file's size before anything is allocated (a damaged
        # header can claim terabytes).
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise InputError(path, f"cannot read as a numpy array (damaged or truncated?): {' '.join(str(exc).split())}",
                         "object arrays are refused") from None
    except (OSError, EOFError, OverflowError, MemoryError) as exc:
        # OverflowError: a damaged header whose shape overflows the mapping length.
        raise InputError(path, f"cannot read as a numpy array (damaged or truncated?): {exc}") from None
    if mapped.ndim != 3 or mapped.shape[1:] != (STAMP_SIZE, STAMP_SIZE):
        raise InputError(path, f"{what} have shape {mapped.shape}, expected (N, {STAMP_SIZE}, {STAMP_SIZE})")
    if mapped.dtype.kind not in kinds:
        raise InputError(path, f"{what} have dtype {mapped.dtype}")
    try:
        return np.array(mapped)
    finally:
        del mapped


def _float_column(table, name: str, path: Path) -> np.ndarray:
    column = table[name]
    try:
        values = np.array(column, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(path, f"column {name!r} is not numeric") from None
    mask = getattr(column, "mask", None)
    if mask is not None and np.any(mask):
        # Empty cells: NaN, never the 0 astropy fills them with (mag 0 is a very bright galaxy).
        values[np.asarray(mask, bool)] = np.nan
    return values


def _int_column(table, name: str, path: Path) -> np.ndarray:
    column = table[name]
    mask = getattr(column, "mask", None)
    if mask is not None and np.any(mask):
        first = int(np.flatnonzero(np.asarray(mask, bool))[0])
        raise InputError(path, f"column {name!r} has empty values (first: data row {first + 1})")
    values = np.asarray(column)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    try:
        floats = values.astype(np.float64)
    except (TypeError, ValueError):
        raise InputError(path, f"column {name!r} is not an integer column") from None
    if not np.all(np.isfinite(floats)) or np.any(floats != np.round(floats)):
        raise InputError(path, f"column {name!r} is not an integer column")
    return floats.astype(np.int64)


def write_candels_layout(sample: GalaxySample, folder, overwrite: bool = False) -> Path:
    """Write *sample* as a folder in the Zenodo layout (quirks included).

    ``FIELD`` is written as a bytes literal padded to 10 characters and
    ``mag_err`` repeats ``mag``, as in the published file, so that the result
    exercises :func:`read_candels` exactly like the real data.  Useful to hand
    a mock sample to tools that expect the Zenodo files, and for tests.
    """
    from astropy.table import Table

    from napari_blendphot.errors import check_output_path

    folder = Path(folder)
    for name in (IMAGES_FILE, SEGMAPS_FILE, CATALOG_FILE):
        check_output_path(folder / name, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    catalog = sample.catalog
    n = len(sample)

    def column(name, default):
        return np.asarray(catalog[name]) if name in catalog.colnames else default

    fields = column("field", np.array(["COSMOS"] * n))
    table = Table(
        {
            "ID": np.asarray(catalog["id"]),
            "RA": column("ra", np.zeros(n)),
            "DEC": column("dec", np.zeros(n)),
            "FIELD": [repr(str(f).ljust(10).encode("ascii")) for f in fields],
            "mag": np.asarray(catalog["mag"]),
            "mag_err": np.asarray(catalog["mag"]),
            "radius": np.asarray(catalog["radius"]),
            "z": np.asarray(catalog["z"]),
            "galtype": np.asarray(catalog["galtype"]).astype(str),
            "segval": column("segval", sample.segmaps[:, 64, 64]),
        }
    )
    from napari_blendphot.atomic import atomic_output

    for name, array in ((IMAGES_FILE, np.ascontiguousarray(sample.images, np.float32)),
                        (SEGMAPS_FILE, np.ascontiguousarray(sample.segmaps, np.int32))):
        with atomic_output(folder / name, replace=overwrite) as tmp:
            np.save(tmp, array)
    with atomic_output(folder / CATALOG_FILE, replace=overwrite) as tmp:
        table.write(tmp, format="ascii.csv")
    return folder
