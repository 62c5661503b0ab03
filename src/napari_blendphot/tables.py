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


#: Key of the CSV's own SHA-256 in its metadata file (checked and dropped on reading).
_CSV_DIGEST_KEY = "csv_sha256"


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


#: Longest primary header accepted (blocks of 2880 bytes); ours take one or two.
_MAX_HEADER_BLOCKS = 64


def _check_primary_end(start: bytes, source: str) -> None:
    """The primary header must end with an ``END`` card before its data or the next header.

    Without it astropy reads on into the data looking for one: seconds and
    several times the file's size in memory for a large file, then a wrong
    reading or a confusing error.
    """
    if not start.startswith(b"SIMPLE"):
        return
    for at in range(0, len(start) - 79, 80):
        card = start[at:at + 80]
        keyword = card[:8].rstrip()
        if keyword == b"END":
            return
        if at and (keyword == b"XTENSION" or keyword == b"SIMPLE" or any(b < 32 or b > 126 for b in card)):
            break
    raise InputError(source, "damaged FITS file: the primary header has no END card")


def check_fits_header(path, source: str | None = None) -> None:
    """Refuse a FITS file with damaged ``NAXIS``/``NAXISn``/``TFIELDS`` cards before astropy parses it.

    Some damaged cards make astropy hang instead of failing: ``NAXIS`` or
    ``TFIELDS`` above 999 (the FITS standard's limit; astropy loops over that
    many axes or columns: minutes and gigabytes for ``99999999``) and a
    negative axis length (``NAXIS2 = -1`` gives a negative data size, and
    astropy keeps re-reading the same header); a primary header without its
    ``END`` card (astropy reads on through the data, with several times the
    file's size in memory).  This scan of the raw bytes
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
            _check_primary_end(handle.read(_MAX_HEADER_BLOCKS * 2880), source)
            handle.seek(0)
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


#: Table extensions by format (compared in lower case: ``.CSV`` from a spreadsheet is a CSV file).
CSV_SUFFIXES = (".csv",)
FITS_SUFFIXES = (".fits", ".fit", ".fits.gz")
_UTF8_BOM = b"\xef\xbb\xbf"


def table_format(path) -> str | None:
    """``"csv"`` or ``"fits"`` from *path*'s extension, in any case; None for anything else."""
    name = Path(path).name.lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(FITS_SUFFIXES):
        return "fits"
    return None


def write_table(table, path, overwrite: bool = False) -> Path:
    """Write *table* to ``.csv`` or ``.fits`` (by extension, in any case), atomically.

    Table ``meta`` entries (including a ``provenance`` dict) are kept: in the
    FITS header, or for a CSV file in ``NAME.csv.meta.json`` beside it (so that
    any CSV reader takes the file with its defaults).  An existing file is
    replaced only with ``overwrite=True``; without it a file that appears under
    *path* while this one is written is left alone too.
    """
    from napari_blendphot.atomic import discard, fsync_path, partial_name

    path = Path(path)
    check_output_path(path, overwrite)
    fmt = table_format(path)
    if fmt is None:
        raise InputError(path, f"unknown table extension {path.suffix!r}", "use .csv or .fits")
    if fmt == "csv":
        check_output_path(meta_path(path), overwrite)
    staged = partial_name(path, ".csv" if fmt == "csv" else "".join(path.suffixes) or ".fits")
    try:
        write_table_file(table, staged, fmt)
        fsync_path(staged)
        install_table_file(staged, path, fmt, replace=overwrite)
    except BaseException:
        discard_table_file(staged)
        raise
    fsync_path(path.parent if str(path.parent) else ".")
    return path


def write_table_file(table, path, fmt: str) -> None:
    """Write *table* to *path* in *fmt* (``"csv"`` or ``"fits"``) directly (no temporary: the caller's job).

    For CSV the metadata goes to ``meta_path(path)`` with the SHA-256 of the CSV
    bytes, so that a reader can tell metadata that belongs to another version
    of the file (:func:`install_table_file` moves both).
    """
    from astropy.table import Table

    from napari_blendphot.provenance import sha256_file

    table = Table(table, copy=False)
    path = Path(path)
    out = table.copy(copy_data=False)
    out.meta = {}
    if fmt == "csv":
        out.write(path, format="ascii.csv", overwrite=True)
        meta = dict(table.meta)
        meta[_CSV_DIGEST_KEY] = sha256_file(path)
        meta_path(path).write_text(dumps(meta) + "\n", encoding="utf-8")
    elif fmt == "fits":
        # astropy writes int8 columns as FITS logicals ('L'): SEP's detection
        # case (-1..3) would come back as booleans.  Widen them to int16.
        for name in out.colnames:
            if out[name].dtype == np.int8:
                out[name] = np.asarray(out[name], dtype=np.int16)
        for key, value in table.meta.items():
            out.meta[_fits_key(key)] = value if isinstance(value, (int, float, str, bool)) else dumps(value)
        out.write(path, format="fits", overwrite=True)
    else:
        raise InputError(path, f"unknown table format {fmt!r}", "use csv or fits")


def install_table_file(staged, path, fmt: str, replace: bool) -> None:
    """Move a table written by :func:`write_table_file` under *staged* to *path*.

    A CSV file's metadata is installed first: a kill in between leaves new
    metadata beside the old CSV, which :func:`read_table` recognises by the
    digest and refuses, never reads as the old file's.
    """
    from napari_blendphot.atomic import fsync_path, install_file

    staged, path = Path(staged), Path(path)
    if fmt == "csv":
        fsync_path(meta_path(staged))
        install_file(meta_path(staged), meta_path(path), replace=True)
    install_file(staged, path, replace=replace)


def discard_table_file(staged) -> None:
    """Remove a staged table (and a staged CSV's metadata)."""
    from napari_blendphot.atomic import discard

    discard(staged)
    discard(meta_path(staged))


def read_table(path):
    """Read a table written by :func:`write_table` (or any CSV/FITS table).

    The extension decides the format in any case (``.CSV``); a CSV file may
    start with a UTF-8 byte-order mark (Excel's "CSV UTF-8").
    """
    from astropy.table import Table

    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a folder, not a table file")
    try:
        if table_format(path) == "csv":
            table = read_csv(path, comment="#")
            _restore_csv_meta(path, table)
        else:
            with open(path, "rb") as handle:
                start = handle.read(9)
            if start == b"SIMPLE  =" or start[:2] == b"\x1f\x8b":
                check_fits_header(path)
            elif table_format(path) is None:
                raise InputError(path, f"unknown table extension {path.suffix!r}",
                                 "tables are .csv or .fits files")
            table = Table.read(path, format="fits")
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
        raise InputError(path, f"cannot read as a table: {_one_line(exc)}") from None
    return table


def read_csv(path, **options):
    """``Table.read(path, format="ascii.csv", fast_reader=False, **options)``, reading past a UTF-8 BOM.

    Excel's "CSV UTF-8" starts the file with a byte-order mark, which would
    otherwise become part of the first column's name.
    """
    from astropy.table import Table

    with open(path, "rb") as handle:
        has_bom = handle.read(3) == _UTF8_BOM
    if not has_bom:
        return Table.read(path, format="ascii.csv", fast_reader=False, **options)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return Table.read(handle.read().splitlines(), format="ascii.csv", fast_reader=False, **options)


def _one_line(exc) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


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
        digest = meta.pop(_CSV_DIGEST_KEY, None)
        if digest is not None:
            from napari_blendphot.provenance import sha256_file

            if digest != sha256_file(path):
                # Edited by hand (a spreadsheet) or torn by a kill between the two renames:
                # the rows are read as they are; say that the metadata describe another version.
                import warnings

                warnings.warn(f"{sidecar}: written for another version of {path.name} (edited since, or an "
                              "interrupted write); its metadata may not describe these rows", stacklevel=3)
                meta["metadata_mismatch"] = True
        table.meta.update(meta)
        return
    # Written by an older version: the metadata in "# blendphot-meta" comment lines.
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
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
