"""Writing and reading field catalogues.

``-o NAME`` (or ``NAME.fits`` / ``NAME.csv``) writes three files beside each other:

* ``NAME.fits``: a binary table; the metadata (provenance, calibration,
  flag legend, notes) in the header as JSON strings;
* ``NAME.csv``: the same columns, plain CSV that ``pandas.read_csv`` and
  ``astropy.table.Table.read`` read with their defaults (no comment lines);
* ``NAME.json``: the CSV's metadata (what the FITS header holds).

``-o NAME.ecsv`` writes one ECSV file instead (metadata in its YAML header,
read by ``astropy.table.Table.read``).  Every file appears atomically and an
existing one is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from napari_blendphot.errors import InputError, check_output_path
from napari_blendphot.provenance import dumps

_FITS_META_KEYS = ("format", "image", "zero_point", "zero_point_source", "pixel_scale", "pixel_scale_source")


def output_paths(output) -> list[Path]:
    """The files written for *output* (module docstring)."""
    path = Path(output)
    if path.suffix.lower() == ".ecsv":
        return [path]
    stem = path.with_suffix("") if path.suffix.lower() in (".fits", ".csv", ".json") else path
    return [stem.with_name(stem.name + ext) for ext in (".fits", ".csv", ".json")]


def check_outputs(output, overwrite: bool) -> list[Path]:
    """Refuse early (before any work) outputs that exist or whose folder is missing."""
    paths = output_paths(output)
    for path in paths:
        check_output_path(path, overwrite)
    if not paths[0].parent.is_dir():
        raise InputError(f"output {output}", f"folder {str(paths[0].parent)!r} does not exist")
    return paths


def _plain_meta(meta) -> dict:
    return json.loads(dumps(dict(meta)))


def write_catalog(table, output, overwrite: bool = False) -> list[Path]:
    """Write a field catalogue (module docstring); returns the paths written."""
    from astropy.table import Table

    from napari_blendphot.atomic import atomic_output, write_text_atomic

    paths = check_outputs(output, overwrite)
    meta = _plain_meta(table.meta)
    if paths[0].suffix.lower() == ".ecsv":
        out = Table(table, copy=False)
        out.meta = meta
        with atomic_output(paths[0]) as tmp:
            out.write(tmp, format="ascii.ecsv")
        return paths
    fits_path, csv_path, json_path = paths
    out = Table(table, copy=True)
    for name in out.colnames:
        if out[name].dtype == np.int8:  # astropy writes int8 as FITS logicals
            out[name] = np.asarray(out[name], np.int16)
    out.meta = {}
    for key in _FITS_META_KEYS:
        if key in meta:
            out.meta[key.upper()[:8] if len(key) <= 8 else f"HIERARCH {key.upper()}"] = meta[key]
    for key, value in meta.items():
        if key not in _FITS_META_KEYS:
            out.meta[f"HIERARCH BP {key.upper()}"] = dumps(value)
    with atomic_output(fits_path) as tmp:
        out.write(tmp, format="fits")
    plain = Table(table, copy=False)
    plain.meta = {}
    with atomic_output(csv_path) as tmp:
        plain.write(tmp, format="ascii.csv")
    write_text_atomic(json_path, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return paths


def read_catalog(path):
    """Read a field catalogue written by :func:`write_catalog` (FITS, CSV with its JSON, or ECSV), meta restored."""
    from astropy.table import Table

    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".ecsv":
            return Table.read(path, format="ascii.ecsv")
        if suffix == ".csv":
            table = Table.read(path, format="ascii.csv")
            sidecar = path.with_suffix(".json")
            if sidecar.is_file():
                table.meta.update(json.loads(sidecar.read_text(encoding="utf-8")))
            return table
        table = Table.read(path)
    except Exception as exc:
        raise InputError(path, f"cannot be read as a field catalogue: {' '.join(str(exc).split())}") from None
    meta = {}
    for key, value in table.meta.items():
        name = key.lower()
        if name.startswith("bp "):
            name = name[3:]
            try:
                value = json.loads(value)
            except (TypeError, json.JSONDecodeError):
                pass
        meta[name] = value
    table.meta = meta
    return table
