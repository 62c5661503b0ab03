"""Reading and writing astropy tables as CSV or FITS, with provenance kept.

A CSV file is plain CSV (a header line, then the rows), so that every CSV
reader takes it with its defaults (``pandas.read_csv(path)``,
``astropy.table.Table.read(path)``, a spreadsheet); its metadata (provenance,
methods, zero points...) are canonical JSON in a file beside it,
``NAME.csv.meta.json`` (:func:`meta_path`).  CSV files written by older
versions, with the metadata in ``# blendphot-meta`` comment lines at the top,
are still read.  FITS files carry the metadata in the table header, with the
provenance as a JSON string.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from napari_blendphot.errors import InputError, check_output_path
from napari_blendphot.provenance import dumps

_META_PREFIX = "blendphot-meta "
#: What a CSV file's metadata file adds to its name.
META_SUFFIX = ".meta.json"


def meta_path(csv_path) -> Path:
    """The metadata file of a CSV table: ``results.csv`` -> ``results.csv.meta.json``."""
    csv_path = Path(csv_path)
    return csv_path.with_name(csv_path.name + META_SUFFIX)


#: Largest NAXIS and TFIELDS the FITS standard allows.
_FITS_MAX_AXES = 999
_COUNT_CARD = re.compile(rb"(NAXIS|TFIELDS)([0-9]{0,3}) *= *([-+]?[0-9]+)")


def _check_count_card(match, source: str) -> None:
    keyword, axis, value = match.group(1).decode(), match.group(2).decode(), int(match.group(3))
    if keyword == "TFIELDS" and axis:
        return
    if not axis and value > _FITS_MAX_AXES:
        raise InputError(source, f"damaged FITS header: {keyword} = {value} "
                                 f"(the FITS standard allows at most {_FITS_MAX_AXES})")
    if axis and value < 0:
        raise InputError(source, f"damaged FITS header: NAXIS{axis} = {value} (axis lengths cannot be negative)")


def check_fits_header(path, source: str | None = None) -> None:
    """Refuse a FITS file with damaged ``NAXIS``/``NAXISn``/``TFIELDS`` cards before astropy parses it.

    Some damaged cards make astropy hang instead of failing: ``NAXIS`` or
    ``TFIELDS`` above 999 (the FITS standard's limit; astropy loops over that
    many axes or columns: minutes and gigabytes for ``99999999``) and a
    negative axis length (``NAXIS2 = -1`` gives a negative data size, and
    astropy keeps re-reading the same header).  This scan of the raw bytes
    (gzip-compressed files are decompressed on the fly) is cheap by comparison.
    """
    import gzip

    path = Path(path)
    source = str(path) if source is None else source
    with open(path, "rb") as handle:
        compressed = handle.read(2) == b"\x1f\x8b"
    opener = gzip.open if compressed else open
    tail = b""
    offset = 0
    try:
        with opener(path, "rb") as handle:
            while True:
                block = handle.read(1 << 22)
                if not block:
                    break
                data = tail + block  # the tail catches a card split between two reads
                base = offset - len(tail)
                for keyword in (b"NAXIS", b"TFIELDS"):
                    # bytes.find is fast; cards are rare, so the slower regex only sees candidates.
                    at = data.find(keyword)
                    while at != -1:
                        match = _COUNT_CARD.match(data, at) if (base + at) % 80 == 0 else None
                        if match:
                            _check_count_card(match, source)
                        at = data.find(keyword, at + 1)
                tail = data[-80:]
                offset += len(block)
    except (OSError, EOFError) as exc:
        raise InputError(source, f"cannot read the file (truncated or corrupted?): {exc}") from None


def write_table(table, path, overwrite: bool = False) -> Path:
    """Write *table* to ``.csv`` or ``.fits`` (by extension), atomically.

    Table ``meta`` entries (including a ``provenance`` dict) are kept.  An
    existing file is replaced only with ``overwrite=True``.
    """
    from astropy.table import Table

    from napari_blendphot.atomic import atomic_output, write_text_atomic

    path = Path(path)
    check_output_path(path, overwrite)
    table = Table(table, copy=False)
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    out = table.copy(copy_data=False)
    out.meta = {}
    if suffix == ".csv":
        check_output_path(meta_path(path), overwrite)
        # The metadata first: a CSV never appears without the metadata of its own rows.
        write_text_atomic(meta_path(path), dumps(dict(table.meta)) + "\n")
        with atomic_output(path) as tmp:
            out.write(tmp, format="ascii.csv", overwrite=True)
    elif suffix in (".fits", ".fit", ".fits.gz"):
        # astropy writes int8 columns as FITS logicals ('L'): SEP's detection
        # case (-1..3) would come back as booleans.  Widen them to int16.
        for name in out.colnames:
            if out[name].dtype == np.int8:
                out[name] = np.asarray(out[name], dtype=np.int16)
        for key, value in table.meta.items():
            out.meta[_fits_key(key)] = value if isinstance(value, (int, float, str, bool)) else dumps(value)
        with atomic_output(path) as tmp:
            out.write(tmp, format="fits", overwrite=True)
    else:
        raise InputError(path, f"unknown table extension {path.suffix!r}", "use .csv or .fits")
    return path


def read_table(path):
    """Read a table written by :func:`write_table` (or any CSV/FITS table)."""
    from astropy.table import Table

    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        if path.suffix == ".csv":
            table = Table.read(path, format="ascii.csv", comment="#", fast_reader=False)
            _restore_csv_meta(path, table)
        else:
            with open(path, "rb") as handle:
                start = handle.read(9)
            if start == b"SIMPLE  =" or start[:2] == b"\x1f\x8b":
                check_fits_header(path)
            table = Table.read(path)
            for key in list(table.meta):
                value = table.meta[key]
                if isinstance(value, str) and value[:1] in "{[":
                    try:
                        table.meta[key.lower()] = json.loads(value)
                        if key != key.lower():
                            del table.meta[key]
                    except json.JSONDecodeError:
                        pass
    except InputError:
        raise
    except Exception as exc:  # astropy raises many types for unreadable files
        raise InputError(path, f"cannot read as a table: {exc}") from None
    return table


def _restore_csv_meta(path: Path, table) -> None:
    table.meta.pop("comments", None)
    sidecar = meta_path(path)
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(sidecar, f"the metadata of {path.name} cannot be read: {exc}") from None
        if not isinstance(meta, dict):
            raise InputError(sidecar, f"the metadata of {path.name} is not a JSON object")
        table.meta.update(meta)
        return
    # Written by an older version: the metadata in "# blendphot-meta" comment lines.
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            text = line[1:].strip()
            if text.startswith(_META_PREFIX):
                try:
                    table.meta.update(json.loads(text[len(_META_PREFIX):]))
                except json.JSONDecodeError:
                    continue


def _fits_key(key: str) -> str:
    key = str(key)
    return key if len(key) <= 8 else f"HIERARCH {key}"


def as_native(array: np.ndarray) -> np.ndarray:
    """Return *array* in native byte order (FITS data is big-endian; sep needs native)."""
    array = np.asarray(array)
    if not array.dtype.isnative:
        return array.astype(array.dtype.newbyteorder("="))
    return array
