"""The native sample file: one multi-extension FITS holding a whole :class:`GalaxySample`.

Layout (docs/architecture.md):

=====  ========  ===========================================================
HDU    name      content
=====  ========  ===========================================================
0      PRIMARY   header only: ``BPFORMAT = 'blendphot-sample'``, ``BPVERS``,
                 ``NGAL``, ``BPQUANT`` (0 = lossless) and ``BPPROV`` (the
                 provenance as canonical JSON, a long string on CONTINUE cards)
1      IMAGES    float32 (N, 128, 128) cube; with ``quantize`` a tile-compressed
                 (RICE_1, one tile per stamp) image with subtractive dithering
2      SEGMAPS   int32 (N, 128, 128) cube (PLIO_1 tile-compressed, lossless,
                 when ``quantize`` is given; RICE_1 for ids >= 2**24)
3      CATALOG   binary table: ``id, mag, flux, radius, z, galtype`` + extras
=====  ========  ===========================================================

The default is lossless: arrays, catalogue values and dtypes and the provenance
come back exactly.  (Two FITS limits: text columns must be ASCII, and trailing
spaces of text values are not kept, as FITS pads text with spaces.  int8 and
float16 columns, which astropy cannot write as such, are stored wider and cast
back using the ``BPDTYPES`` record of the CATALOG header.)  Files carry no timestamps, so the same sample written with
the same options gives byte-identical files.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from napari_blendphot.errors import InputError
from napari_blendphot.provenance import dumps
from napari_blendphot.sample.galaxy_sample import GalaxySample
from napari_blendphot.tables import as_native, check_fits_header

#: Value of the PRIMARY header's ``BPFORMAT`` keyword.
FORMAT_NAME = "blendphot-sample"
#: Version of the layout written here; readers accept this one and older ones.
FORMAT_VERSION = 1
#: Fixed dither seed of the quantised storage (1..10000 in the FITS convention);
#: a clock-based seed would make files differ from run to run.
DITHER_SEED = 4217
EXTENSIONS = ("IMAGES", "SEGMAPS", "CATALOG")


def sample_file_bytes(n_galaxies: int) -> int:
    """Disk space of a lossless native file of *n_galaxies* (two cubes of 4-byte pixels, a bounded catalogue)."""
    return int(n_galaxies) * (2 * 4 * 128 * 128 + 1024) + 1024**2


def check_native_output(path, overwrite: bool, n_galaxies: int = 0, inputs=(), source=None) -> None:
    """What can be checked of a native sample output before drawing or reading anything.

    The location can be written and has room for *n_galaxies*, no input is
    the output, and an existing file is replaced only with *overwrite* and
    only when it is a native sample file (``BPFORMAT``).
    """
    from napari_blendphot.outputs import (
        check_inputs_outside,
        check_output_location,
        check_replaceable_file,
        is_native_sample_file,
    )

    source = str(path) if source is None else source
    check_output_location(path, "file", sample_file_bytes(n_galaxies) if n_galaxies else 0, source)
    check_inputs_outside(path, inputs, source)
    check_replaceable_file(path, overwrite, is_native_sample_file, "a native sample file")


def write_native(sample: GalaxySample, path, overwrite: bool = False, quantize: float | None = None) -> Path:
    """Write *sample* to a native multi-extension FITS file, atomically.

    Parameters
    ----------
    sample : GalaxySample
        The sample to store.
    path : str or path-like
        Output file (conventionally ``*.fits``).
    overwrite : bool
        Replace an existing native sample file; without it an existing file is
        an error, and a file of another kind is never replaced.
    quantize : float, optional
        ``None`` (default) stores everything losslessly.  A number ``q`` stores
        the images tile-compressed (RICE_1, one tile per stamp) after
        quantisation with a step of (noise rms of the stamp) / ``q``, with
        SUBTRACTIVE_DITHER_2 dithering from a fixed seed (zeros stay exactly
        zero), and the segmentation maps PLIO_1 tile-compressed (lossless).  The
        error per pixel is then at most half a step, i.e. ``rms / (2 q)``.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    from astropy.io import fits

    path = Path(path)
    check_native_output(path, overwrite, len(sample))
    if quantize is not None:
        quantize = float(quantize)
        if not np.isfinite(quantize) or quantize <= 0:
            raise InputError("argument quantize", f"must be a positive number, got {quantize}")

    provenance = dict(sample.provenance)
    segmaps = np.ascontiguousarray(sample.segmaps, dtype=np.int32)
    if quantize is not None:
        # Lossy storage changes the pixels: say so where the numbers' history lives.
        provenance["storage"] = {
            "images": "RICE_1 tile-compressed, one tile per stamp",
            "segmaps": f"{_segmap_compression(segmaps)} tile-compressed, lossless",
            "quantize_level": quantize,
            "quantize_method": "SUBTRACTIVE_DITHER_2",
            "dither_seed": DITHER_SEED,
        }

    primary = fits.PrimaryHDU()
    header = primary.header
    header["BPFORMAT"] = (FORMAT_NAME, "napari-blendphot native sample file")
    header["BPVERS"] = (FORMAT_VERSION, "layout version")
    header["NGAL"] = (len(sample), "number of galaxies")
    header["BPQUANT"] = (quantize if quantize is not None else 0, "image quantize level; 0 = lossless")
    # Long JSON strings go on CONTINUE cards; a comment would only be truncated.
    header["BPPROV"] = dumps(provenance)

    images = np.ascontiguousarray(sample.images, dtype=np.float32)
    if quantize is None:
        image_hdu = fits.ImageHDU(images, name="IMAGES")
        segmap_hdu = fits.ImageHDU(segmaps, name="SEGMAPS")
    else:
        tile = (1, *images.shape[1:])
        image_hdu = fits.CompImageHDU(
            images, name="IMAGES", compression_type="RICE_1", tile_shape=tile,
            quantize_level=quantize, quantize_method=2, dither_seed=DITHER_SEED,
        )
        segmap_hdu = fits.CompImageHDU(segmaps, name="SEGMAPS", compression_type=_segmap_compression(segmaps),
                                       tile_shape=tile)

    catalog_hdu = _catalog_hdu(sample.catalog, path)
    hdul = fits.HDUList([primary, image_hdu, segmap_hdu, catalog_hdu])
    for hdu in hdul:
        _strip_dates(hdu.header)

    from napari_blendphot.atomic import atomic_output, remove_stale_partials

    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path.parent, path.name)
    with atomic_output(path, replace=overwrite) as tmp:
        hdul.writeto(tmp, output_verify="exception")
    return path


def _segmap_compression(segmaps: np.ndarray) -> str:
    """Lossless tile compression for segmentation maps.

    PLIO_1 (run-length, made for masks) is ~18x smaller than RICE_1 on these
    few flat regions, but takes values in [0, 2**24) only.  GZIP is no option:
    its tiles carry the time of writing, which breaks byte-identical files.
    """
    if segmaps.size and (segmaps.min() < 0 or segmaps.max() >= 2**24):
        return "RICE_1"
    return "PLIO_1"


def _catalog_hdu(catalog, path):
    from astropy.io import fits
    from astropy.table import Table

    table = Table(catalog, copy=False).copy(copy_data=False)
    meta = dict(table.meta)
    table.meta = {}
    dtypes = {}
    for name in table.colnames:
        dtype = table[name].dtype
        dtypes[name] = dtype.str
        if dtype.kind == "O":
            raise InputError(path, f"catalogue column {name!r} holds Python objects and cannot be stored in FITS")
        # astropy writes int8 as FITS logical (values become booleans) and has no
        # float16: store a wider type and cast back on reading (BPDTYPES).
        if dtype.kind == "i" and dtype.itemsize == 1:
            table[name] = table[name].astype(np.int16)
        elif dtype.kind == "f" and dtype.itemsize == 2:
            table[name] = table[name].astype(np.float32)
    try:
        hdu = fits.table_to_hdu(table)
    except (UnicodeEncodeError, ValueError, TypeError) as exc:
        raise InputError(path, f"the catalogue cannot be stored in FITS: {exc}",
                         "FITS text columns must be ASCII") from None
    hdu.name = "CATALOG"
    hdu.header["BPDTYPES"] = json.dumps(dtypes, separators=(",", ":"))
    if meta:
        hdu.header["BPMETA"] = dumps(meta)
    return hdu


def _strip_dates(header) -> None:
    # No timestamps: identical inputs must give identical bytes.
    for key in ("DATE", "DATE-HDU", "CHECKSUM", "DATASUM"):
        while key in header:
            del header[key]


def read_native(path) -> GalaxySample:
    """Read a sample written by :func:`write_native`.

    Data are returned in native byte order.  Raises :class:`InputError` naming
    the file when it is missing, not FITS, truncated, not a blendphot sample,
    lacks an extension or has arrays and catalogue that do not agree.
    """
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyUserWarning

    path = Path(path)
    source = str(path)
    if not path.exists():
        raise InputError(source, "file not found")
    if path.is_dir():
        raise InputError(source, "is a folder, not a native sample file",
                         "pass the .fits file, or use load_sample() for CANDELS/cutout folders")
    with open(path, "rb") as handle:
        start = handle.read(30)
    if start.startswith(b"\x1f\x8b"):
        # gzip-compressed FITS (.fits.gz): astropy unpacks it; check the FITS inside.
        import gzip

        try:
            with gzip.open(path, "rb") as handle:
                start = handle.read(30)
        except (OSError, EOFError) as exc:
            raise InputError(source, f"damaged gzip file: {exc}") from None
    if not start.startswith(b"SIMPLE  =") or b"T" not in start[9:30]:
        raise InputError(source, "not a FITS file")
    check_fits_header(path, source)

    with warnings.catch_warnings():
        # astropy only warns about truncation; a short file must fail loudly.
        warnings.simplefilter("error", AstropyUserWarning)
        try:
            with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
                header = hdul[0].header
                _check_primary(header, source)
                names = [hdu.name for hdu in hdul]
                missing = [name for name in EXTENSIONS if name not in names]
                if missing:
                    raise InputError(source, f"missing extension(s) {', '.join(missing)}",
                                     f"a native sample has {', '.join(EXTENSIONS)}; is the file truncated?")
                images = _read_cube(hdul["IMAGES"], "IMAGES", source)
                segmaps = _read_cube(hdul["SEGMAPS"], "SEGMAPS", source)
                catalog = _read_catalog(hdul, source)
                provenance = _read_provenance(header, source)
                ngal = header["NGAL"]
        except InputError:
            raise
        except Exception as exc:  # astropy raises many types (VerifyError, AssertionError...) on damaged files
            raise InputError(source, "cannot read the FITS file (truncated or corrupted?): "
                             + " ".join(str(exc).split())) from None

    for what, count in (("IMAGES", len(images)), ("SEGMAPS", len(segmaps)), ("CATALOG", len(catalog))):
        if count != ngal:
            raise InputError(source, f"header says NGAL = {ngal} but {what} holds {count}",
                             "the file is inconsistent; rewrite it")
    if images.dtype != np.float32:
        raise InputError(source, f"IMAGES has dtype {images.dtype}, expected float32")
    if segmaps.dtype != np.int32:
        raise InputError(source, f"SEGMAPS has dtype {segmaps.dtype}, expected int32")
    return GalaxySample(images, segmaps, catalog, provenance=provenance, source=source)


def _check_primary(header, source: str) -> None:
    fmt = header.get("BPFORMAT")
    if fmt != FORMAT_NAME:
        raise InputError(source, "not a blendphot sample file (no BPFORMAT = 'blendphot-sample' in the header)",
                         "write one with write_native() or 'blendphot make-sample'")
    version = header.get("BPVERS")
    if not isinstance(version, int) or version < 1:
        raise InputError(source, f"invalid BPVERS {version!r}")
    if version > FORMAT_VERSION:
        raise InputError(source, f"format version {version} is newer than this reader ({FORMAT_VERSION})",
                         "upgrade napari-blendphot")
    if not isinstance(header.get("NGAL"), int):
        raise InputError(source, "header lacks an integer NGAL")


def _read_cube(hdu, name: str, source: str) -> np.ndarray:
    data = hdu.data
    if data is None:
        raise InputError(source, f"extension {name} holds no data")
    if data.ndim != 3:
        raise InputError(source, f"extension {name} has shape {data.shape}, expected (N, 128, 128)")
    return as_native(np.array(data))


def _read_catalog(hdul, source: str):
    from astropy.table import Table

    hdu = hdul["CATALOG"]
    if not hasattr(hdu, "columns"):
        raise InputError(source, "extension CATALOG is not a table")
    table = Table.read(hdu, character_as_bytes=False)
    table.meta = {}
    for name in table.colnames:
        column = table[name]
        if not column.dtype.isnative and column.dtype.kind != "U":
            table[name] = as_native(np.asarray(column))
            table[name].unit = column.unit
            table[name].description = column.description
    dtypes_text = hdu.header.get("BPDTYPES")
    if dtypes_text:
        try:
            dtypes = json.loads(dtypes_text)
        except json.JSONDecodeError as exc:
            raise InputError(source, f"CATALOG header BPDTYPES is not valid JSON: {exc}") from None
        for name, dtype_str in dtypes.items():
            if name in table.colnames and table[name].dtype.str != dtype_str:
                column = table[name]
                stored = np.asarray(column)
                restored = stored.astype(np.dtype(dtype_str).newbyteorder("="))
                # The record only undoes the writer's widening; it must never change a value.
                with np.errstate(invalid="ignore"):
                    same = restored.astype(stored.dtype) == stored
                if stored.dtype.kind == "f":
                    same |= np.isnan(stored) & np.isnan(restored.astype(stored.dtype))
                if not np.all(same):
                    raise InputError(source, f"CATALOG column {name!r} holds values that do not fit "
                                             f"its recorded dtype {dtype_str} (BPDTYPES)")
                table[name] = restored
                table[name].unit = column.unit
                table[name].description = column.description
    meta_text = hdu.header.get("BPMETA")
    if meta_text:
        try:
            table.meta.update(json.loads(meta_text))
        except json.JSONDecodeError as exc:
            raise InputError(source, f"CATALOG header BPMETA is not valid JSON: {exc}") from None
    return table


def _read_provenance(header, source: str) -> dict:
    text = header.get("BPPROV")
    if text is None:
        return {}
    try:
        provenance = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(source, f"header BPPROV is not valid JSON: {exc}") from None
    if not isinstance(provenance, dict):
        raise InputError(source, "header BPPROV is not a JSON object")
    return provenance


def is_native_sample_file(path) -> bool:
    """Whether *path* is a FITS file whose PRIMARY header says it is a native sample."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as handle:
            block = handle.read(2880)
    except OSError:
        return False
    return block.startswith(b"SIMPLE  =") and b"'blendphot-sample'" in block
