"""The bad-input corpus: valid inputs written at test time, and the edits that break them.

Nothing here is a stored binary: every malformed input of the reliability
tests is made from a small valid one by a named, reviewable edit (a FITS
header card set to a value, a CSV cell replaced, a file truncated, a .npy
saved with the wrong dtype...).  The fuzzer's crashing inputs were reduced to
such edits too (``scripts/fuzz_readers.py``).

Helpers
-------
``write_valid_inputs(root)``
    A native sample file, a Zenodo-layout CANDELS folder, a folder of FITS
    cutouts, a blend dataset folder and a results table (CSV + FITS), all
    from the numpy toy sample (no GalSim, milliseconds).
``tree_digest(path)``
    {relative path: sha256} of every file under *path* (or of one file), to
    check that a refused input left the disk exactly as it was.
``set_card`` / ``edit_csv`` / ``truncate`` ...
    The edits.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

#: Toy sample size of the valid inputs (small: every bad input copies one).
N_GALAXIES = 8


def tree_digest(path) -> dict[str, str]:
    """{relative path: sha256 (or 'link -> target' / 'dir')} of *path* and everything under it."""
    path = Path(path)
    if not os.path.lexists(path):
        return {}
    if path.is_file() and not path.is_symlink():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    out = {}
    for root, dirs, files in os.walk(path):
        for name in sorted(dirs + files):
            item = Path(root) / name
            rel = str(item.relative_to(path))
            if item.is_symlink():
                out[rel] = f"link -> {os.readlink(item)}"
            elif item.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(item.read_bytes()).hexdigest()
    return out


def toy_sample(n: int = N_GALAXIES, seed: int = 7):
    from napari_blendphot.sample.toy import make_toy_sample

    return make_toy_sample(n, seed=seed)


def write_cutouts(sample, folder: Path, count: int = 3, segmap: bool = True) -> Path:
    """*count* single-galaxy cutouts (PRIMARY image + header keywords, SEG extension)."""
    from astropy.io import fits

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        row = sample.catalog[i]
        header = fits.Header()
        header["GALTYPE"] = str(row["galtype"])
        header["RADIUS"] = float(row["radius"])
        header["MAG"] = float(row["mag"])
        header["ID"] = int(row["id"])
        header["Z"] = float(row["z"])
        hdus = [fits.PrimaryHDU(sample.images[i], header=header)]
        if segmap:
            hdus.append(fits.ImageHDU(sample.segmaps[i], name="SEG"))
        fits.HDUList(hdus).writeto(folder / f"galaxy{i}.fits")
    return folder


def write_valid_inputs(root) -> dict[str, Path]:
    """One small valid input of each kind under *root*; returns {kind: path}."""
    from napari_blendphot.blend.dataset import BlendDataset, write_blend_dataset
    from napari_blendphot.deblend.base import DeblendOutput
    from napari_blendphot.report.results import build_results_table, write_results
    from napari_blendphot.sample.io_candels import write_candels_layout
    from napari_blendphot.sample.io_native import write_native

    root = Path(root)
    sample = toy_sample()
    paths = {"native": write_native(sample, root / "sample.fits"),
             "candels": write_candels_layout(sample, root / "candels"),
             "cutouts": write_cutouts(sample, root / "cutouts"),
             "dataset": write_blend_dataset(sample, root / "dataset", n=6, test_fraction=0.5, seed=3)}
    dataset = BlendDataset(paths["dataset"])
    fluxes = dataset.fluxes * np.random.default_rng(0).uniform(0.8, 1.2, size=dataset.fluxes.shape)
    fluxes[0, 1] = np.nan  # one companion not detected
    output = DeblendOutput("sep", fluxes, extra={"detection": np.array([2, 0, 2, 2, 3, 2], np.int8)})
    table = build_results_table(dataset.catalog, [output], provenance={"step": "test"})
    write_results(table, root / "results")
    paths["results"] = root / "results.csv"
    paths["results_fits"] = root / "results.fits"
    return paths


def copy_input(source: Path, target_dir: Path) -> Path:
    """A private copy of a valid input (file or folder; a CSV table with its metadata file) to break."""
    from napari_blendphot.tables import meta_path

    target = Path(target_dir) / Path(source).name
    if Path(source).is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copyfile(source, target)
        if meta_path(source).is_file():
            shutil.copyfile(meta_path(source), meta_path(target))
    return target


# -- edits ---------------------------------------------------------------------------------------

def set_card(path, keyword: str, value: str, occurrence: int = 0) -> None:
    """Overwrite the *occurrence*-th header card *keyword* of a FITS file with ``keyword = value`` (raw text)."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    key = keyword.encode("ascii").ljust(8)
    positions = [p for p in range(0, len(data), 80) if data[p:p + 8] == key]
    if len(positions) <= occurrence:
        raise LookupError(f"{path.name} has no card {keyword!r} #{occurrence}")
    p = positions[occurrence]
    data[p:p + 80] = (key + b"= " + value.encode("ascii").rjust(20)).ljust(80)[:80]
    path.write_bytes(bytes(data))


def truncate(path, size: int) -> None:
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[:size if size >= 0 else len(data) + size])


def insert_bytes(path, at: int, blob: bytes) -> None:
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[:at] + blob + data[at:])


def delete_bytes(path, at: int, length: int) -> None:
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[:at] + data[at + length:])


def csv_rows(path) -> tuple[list[str], list[list[str]], list[str]]:
    """(comment lines, header + data rows split on commas, trailing text) of a simple CSV file."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    comments = [line for line in lines if line.startswith("#")]
    rows = [line.split(",") for line in lines if line and not line.startswith("#")]
    return comments, rows, []


def write_csv_rows(path, comments, rows) -> None:
    Path(path).write_text("\n".join([*comments, *(",".join(r) for r in rows)]) + "\n", encoding="utf-8")


def edit_csv(path, edit) -> None:
    """Apply ``edit(header, data_rows)`` (lists edited in place) to a CSV file, comments kept."""
    comments, rows, _ = csv_rows(path)
    header, data = rows[0], rows[1:]
    edit(header, data)
    write_csv_rows(path, comments, [header, *data])


def set_csv_cell(path, column: str, row: int, value: str) -> None:
    def edit(header, data):
        data[row][header.index(column)] = value

    edit_csv(path, edit)


def rename_csv_column(path, old: str, new: str) -> None:
    def edit(header, data):
        header[header.index(old)] = new

    edit_csv(path, edit)


def drop_csv_column(path, column: str) -> None:
    def edit(header, data):
        j = header.index(column)
        del header[j]
        for row in data:
            del row[j]

    edit_csv(path, edit)


def drop_csv_row(path, row: int) -> None:
    edit_csv(path, lambda header, data: data.pop(row))


def duplicate_csv_row(path, row: int) -> None:
    edit_csv(path, lambda header, data: data.insert(row, list(data[row])))


def edit_npy_header(path, old: bytes, new: bytes) -> None:
    """Replace text in a .npy header dict, keeping the header's length (padding spaces absorb the change)."""
    path = Path(path)
    data = path.read_bytes()
    end = data.index(b"\n")  # the header ends with spaces and a newline
    header = data[:end]
    if old not in header:
        raise LookupError(f"{old!r} not in the header of {path.name}")
    edited = header.replace(old, new, 1)
    growth = len(edited) - len(header)
    if growth > 0:
        if not edited.endswith(b" " * growth):
            raise ValueError("not enough padding in the .npy header")
        edited = edited[:len(edited) - growth]
    else:
        edited = edited + b" " * -growth
    path.write_bytes(edited + data[end:])


def replace_in_file(path, old: bytes, new: bytes) -> None:
    path = Path(path)
    data = path.read_bytes()
    if old not in data:
        raise LookupError(f"{old!r} not in {path.name}")
    path.write_bytes(data.replace(old, new, 1))
