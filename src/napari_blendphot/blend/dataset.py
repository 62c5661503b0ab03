"""Blend datasets on disk: writing them in chunks and reading them memory-mapped.

Folder layout (docs/architecture.md)::

    DIR/
      blends.npy      float32 (N, 128, 128)     central + shifted companion
      galaxy1.npy     float32 (N, 128, 128)     central stamp alone
      galaxy2.npy     float32 (N, 128, 128)     companion stamp alone, shifted
      masks.npy       uint8   (N, 2, 128, 128)  [central, companion] true masks
      catalog.csv     one row per blend; also catalog.fits
      provenance.json how it was made

Train blends come first, then test blends; the ``split`` column says which.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from napari_blendphot.blend.assemble import CATALOG_COLUMNS, assemble_pairs, pair_catalog
from napari_blendphot.blend.blend_set import BlendBatch, BlendSet, file_fingerprint
from napari_blendphot.blend.pairing import MAX_DMAG, SHIFT_TRIES, check_rule, draw_pairs
from napari_blendphot.constants import STAMP_SIZE
from napari_blendphot.errors import InputError

#: Array files of a dataset: name -> (dtype, shape after N).
ARRAY_FILES = {
    "blends": (np.float32, (STAMP_SIZE, STAMP_SIZE)),
    "galaxy1": (np.float32, (STAMP_SIZE, STAMP_SIZE)),
    "galaxy2": (np.float32, (STAMP_SIZE, STAMP_SIZE)),
    "masks": (np.uint8, (2, STAMP_SIZE, STAMP_SIZE)),
}
CATALOG_FILES = ("catalog.csv", "catalog.fits")
#: ``provenance.json`` key of a dataset's layout; its value for a dataset without the galaxy stamps.
LAYOUT_KEY = "layout"
PREDICT_ONLY = "predict-only"
PROVENANCE_FILE = "provenance.json"
#: Every name a dataset folder holds: the only files an ``--overwrite`` deletes.
#: Every file a dataset folder holds (the CSV catalogue's metadata file included): what an overwrite may remove.
DATASET_FILES = frozenset({*(f"{name}.npy" for name in ARRAY_FILES), *CATALOG_FILES, "catalog.csv.meta.json",
                           PROVENANCE_FILE})
#: ``step`` of the provenance of the writers of dataset folders.
DATASET_STEPS = ("blend", "blend-builder", "compact")
#: Bytes per blend of the four arrays, and a generous bound for its two catalogue rows.
BYTES_PER_BLEND = sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for dtype, shape in ARRAY_FILES.values())
CATALOG_BYTES_PER_BLEND = 2048


def dataset_bytes(n: int) -> int:
    """Disk space a dataset of *n* blends takes (arrays exactly, catalogues bounded)."""
    return int(n) * (BYTES_PER_BLEND + CATALOG_BYTES_PER_BLEND) + 1024**2


def is_blend_dataset_folder(folder) -> bool:
    """A folder written by :func:`write_blend_dataset` or the Blend Builder (its ``provenance.json`` says so)."""
    try:
        record = json.loads((Path(folder) / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("step") in DATASET_STEPS


def check_dataset_output(out_dir, overwrite: bool, n_blends: int = 0, inputs=(), source=None) -> None:
    """Everything about a dataset output folder that can be checked before computing.

    The location can be written and has room for *n_blends*; no input lies
    inside it; an existing folder is replaced only with *overwrite*, only when
    it is a blend dataset and holds nothing else (:mod:`napari_blendphot.outputs`).
    """
    from napari_blendphot.outputs import check_inputs_outside, check_output_location, check_replaceable_folder

    out_dir = Path(out_dir)
    source = str(out_dir) if source is None else source
    check_output_location(out_dir, "folder", dataset_bytes(n_blends) if n_blends else 0, source)
    check_inputs_outside(out_dir, inputs, source)
    check_replaceable_folder(out_dir, overwrite, is_blend_dataset_folder, DATASET_FILES, "a blend dataset")


def split_counts(n: int, test_fraction: float, n_test: int | None = None) -> tuple[int, int]:
    """(train, test) numbers of blends: *n_test* (default ``round(n * f)``) test blends, the rest train."""
    if n_test is None:
        n_test = int(round(n * float(test_fraction)))
    return n - int(n_test), int(n_test)


def _portable_source(source) -> str:
    """The sample's name without its folder: the same file moved elsewhere must give the same bytes."""
    text = str(source)
    return os.path.basename(text.rstrip("/\\")) if (os.sep in text or (os.altsep and os.altsep in text)) else text


def _sample_digest(sample, sample_path) -> dict | str:
    from napari_blendphot.provenance import sha256_array, sha256_file

    if sample_path is not None and os.path.isfile(sample_path):
        return {"path": os.path.basename(os.fspath(sample_path)), "sha256": sha256_file(sample_path)}
    return {"images_sha256": sha256_array(sample.images), "segmaps_sha256": sha256_array(sample.segmaps),
            "n_galaxies": len(sample)}


def write_blend_dataset(sample, out_dir, n: int = 30000, test_fraction: float = 0.2, seed=0,
                        rule: str = "published", chunk_size: int = 1000, overwrite: bool = False,
                        progress=None, sample_path=None, max_dmag: float = MAX_DMAG,
                        n_test: int | None = None) -> Path:
    """Make *n* blends of *sample* and write them as a blend dataset folder.

    The sample is split by galaxy first (:func:`~napari_blendphot.blend.split.split_sample`);
    ``n * (1 - test_fraction)`` train blends are drawn from the train galaxies
    and ``n * test_fraction`` test blends from the test galaxies, so no galaxy
    appears on both sides.  Arrays are streamed to ``.npy`` files chunk by
    chunk; everything is written into a hidden temporary folder beside
    *out_dir* that is renamed into place only when complete.

    Parameters
    ----------
    sample : GalaxySample
        Cleaned isolated galaxies (neighbour cleaning is the caller's step).
    out_dir : path-like
        Dataset folder to create.  An existing non-empty folder is refused
        unless *overwrite*, and even then unless it is a blend dataset holding
        nothing else (only the dataset's own files are deleted).
    n : int
        Total number of blends (paper: 30,000).
    test_fraction : float
        Share of galaxies, and of blends, on the test side (paper: 0.2);
        0 makes a train-only dataset from all galaxies.
    seed : int
        Seed of the split and of the pairs; same seed, same bytes.
    rule : {"published", "paper-text"}
        Shift rule (:mod:`napari_blendphot.blend.pairing`).
    chunk_size : int
        Blends assembled and written per step (bounds the memory used).
    overwrite : bool
        Replace an existing dataset folder (one this project wrote).
    progress : callable, optional
        ``progress(done, total)`` after each chunk.
    sample_path : path-like, optional
        File the sample was read from, hashed into the provenance (otherwise
        the sample's arrays are hashed).
    max_dmag : float
        Largest |mag_c - mag_k| of a pair.
    n_test : int, optional
        Number of test blends out of *n* (default ``round(n * test_fraction)``).
        The paper held out 20% of the galaxies but made 5,000 test blends out
        of 30,000: ``n=30000, test_fraction=0.2, n_test=5000``.

    Returns
    -------
    pathlib.Path
        The dataset folder.
    """
    from napari_blendphot.blend.split import split_indices
    from napari_blendphot.provenance import make_provenance
    from napari_blendphot.sample.galaxy_sample import central_segment, check_pixel_range
    from napari_blendphot.tables import write_table

    out_dir = Path(out_dir)
    check_rule(rule)
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError("n", f"number of blends must be a positive integer, got {n!r}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError("seed", f"a dataset needs a non-negative integer seed (it is recorded), got {seed!r}")
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise InputError("chunk_size", f"must be a positive integer, got {chunk_size!r}")
    if not 0.0 <= float(test_fraction) < 1.0:
        raise InputError("test_fraction", f"must be in [0, 1), got {test_fraction!r}")
    check_dataset_output(out_dir, overwrite, int(n), inputs=[sample_path])
    check_pixel_range(sample)

    # Independent streams for the split and each side's pairs, all from one seed.
    split_seed, train_seed, test_seed = np.random.SeedSequence(int(seed)).spawn(3)
    if n_test is not None and (isinstance(n_test, (bool, np.bool_)) or not isinstance(n_test, (int, np.integer))
                               or not 0 <= n_test < n):
        raise InputError("n_test", f"must be an integer in [0, n), got {n_test!r}")
    if n_test and not test_fraction > 0:
        raise InputError("n_test", "test blends need test galaxies: set test_fraction > 0")
    n_train, n_test = split_counts(n, test_fraction, n_test)
    if test_fraction > 0:
        train_rows, test_rows = split_indices(len(sample), test_fraction, np.random.default_rng(split_seed))
    else:
        train_rows, test_rows = np.arange(len(sample)), np.arange(0)
    if n_test > 0 and test_rows.size < 2:
        raise InputError("test_fraction", "the test side has fewer than 2 galaxies")
    mags = np.asarray(sample.catalog["mag"], np.float64)
    radii = np.asarray(sample.catalog["radius"], np.float64)
    sides = []
    for name, rows, count, side_seed in (("train", train_rows, n_train, train_seed),
                                         ("test", test_rows, n_test, test_seed)):
        if count == 0:
            continue
        pairs = draw_pairs(mags[rows], radii[rows], count, np.random.default_rng(side_seed), rule, max_dmag)
        sides.append((name, pairs.remap(rows)))
    train_ids = set(np.asarray(sample.catalog["id"])[train_rows].tolist())
    test_ids = set(np.asarray(sample.catalog["id"])[test_rows].tolist())
    # The point of splitting before pairing; cheap to verify.
    assert not train_ids & test_ids, "a galaxy is on both sides of the split"

    catalogs = []
    first = 0
    for name, pairs in sides:
        catalogs.append(pair_catalog(sample.catalog, pairs, first, name))
        first += len(pairs)
    from astropy.table import vstack

    catalog = vstack(catalogs, metadata_conflicts="silent") if len(catalogs) > 1 else catalogs[0]
    catalog["split"] = catalog["split"].astype("U5")
    central_masks = central_segment(sample.segmaps).view(np.uint8)
    # Stamps whose centre pixel is background have an empty true mask; say how many.
    empty_masks = int(np.count_nonzero(~central_masks.reshape(len(sample), -1).any(axis=1)))
    provenance = make_provenance(
        "blend", int(seed), inputs={"sample": _sample_digest(sample, sample_path)},
        rule=rule, n_blends=int(n), n_train=int(n_train), n_test=int(n_test),
        test_fraction=float(test_fraction), max_dmag=float(max_dmag), shift_tries=SHIFT_TRIES,
        n_galaxies=len(sample), n_train_galaxies=int(train_rows.size), n_test_galaxies=int(test_rows.size),
        galaxies_without_central_segment=empty_masks,
        sample_source=_portable_source(getattr(sample, "source", "")),
        sample_provenance=getattr(sample, "provenance", {}),
    )
    catalog.meta["provenance"] = provenance

    from napari_blendphot.atomic import discard, make_partial_folder, remove_stale_partials

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out_dir.parent, out_dir.name)  # what killed runs left behind
    staging = make_partial_folder(out_dir)
    try:
        all_pairs = [(p.central, p.companion, p.dy, p.dx) for _, p in sides]
        central = np.concatenate([p[0] for p in all_pairs])
        companion = np.concatenate([p[1] for p in all_pairs])
        dy = np.concatenate([p[2] for p in all_pairs])
        dx = np.concatenate([p[3] for p in all_pairs])
        _write_arrays(staging, sample.images, central_masks, central, companion, dy, dx, chunk_size, progress,
                      source=out_dir)
        write_table(catalog, staging / "catalog.csv")
        write_table(catalog, staging / "catalog.fits")
        write_dataset_provenance(staging, provenance)
        move_into_place(staging, out_dir, overwrite=overwrite)
    except BaseException:
        discard(staging)
        raise
    return out_dir


#: Key of ``provenance.json`` recording the catalogues' SHA-256 as written (a cheap agreement check on reading).
CATALOG_DIGESTS_KEY = "catalog_sha256"


def write_dataset_provenance(folder, provenance: dict) -> None:
    """Write ``provenance.json`` into a dataset folder whose catalogues are written already.

    It records the SHA-256 of ``catalog.csv`` and ``catalog.fits``: a reader
    that finds both unchanged knows they agree without comparing them.
    """
    from napari_blendphot.provenance import dumps, sha256_file

    folder = Path(folder)
    record = json.loads(dumps(provenance))
    record[CATALOG_DIGESTS_KEY] = {name: sha256_file(folder / name) for name in CATALOG_FILES
                                   if (folder / name).is_file()}
    with open(folder / PROVENANCE_FILE, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2, sort_keys=True)
        handle.write("\n")


def write_blend_set(blend_set, out_dir, provenance: dict | None = None, overwrite: bool = False) -> Path:
    """Write an in-memory blend set with full truth (a :class:`~napari_blendphot.blend.assemble.BlendBatch`)
    as a blend dataset folder.

    The layout of :func:`write_blend_dataset`; the catalogue is the set's own
    (it must hold :data:`~napari_blendphot.blend.assemble.CATALOG_COLUMNS`).
    Written into a hidden folder beside *out_dir* and renamed into place when
    complete; an existing folder is replaced only with ``overwrite=True`` and
    only when it is a blend dataset holding nothing else (:func:`check_dataset_output`).
    """
    from napari_blendphot.atomic import discard, make_partial_folder, remove_stale_partials
    from napari_blendphot.tables import write_table

    out_dir = Path(out_dir)
    if len(blend_set) == 0:
        raise InputError(out_dir, "no blends to write")
    missing = [name for name in ARRAY_FILES if getattr(blend_set, name, None) is None]
    if missing or blend_set.catalog is None:
        raise InputError(out_dir, f"the blends lack {', '.join(missing) or 'a catalogue'}: a dataset needs the truth")
    absent = [c for c in CATALOG_COLUMNS if c not in blend_set.catalog.colnames]
    if absent:
        raise InputError(out_dir, f"the blends' catalogue lacks column(s) {', '.join(absent)}")
    check_dataset_output(out_dir, overwrite, len(blend_set))
    catalog = blend_set.catalog.copy()
    catalog.meta["provenance"] = provenance or {}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out_dir.parent, out_dir.name)
    staging = make_partial_folder(out_dir)
    try:
        for name, (dtype, _) in ARRAY_FILES.items():
            np.save(staging / f"{name}.npy", np.asarray(getattr(blend_set, name)).astype(dtype))
        write_table(catalog, staging / "catalog.csv")
        write_table(catalog, staging / "catalog.fits")
        write_dataset_provenance(staging, provenance or {})
        move_into_place(staging, out_dir, overwrite=overwrite)
    except BaseException:
        discard(staging)
        raise
    return out_dir


def _write_arrays(folder: Path, images, central_masks, central, companion, dy, dx, chunk_size, progress,
                  source=None) -> None:
    from numpy.lib.format import open_memmap

    from napari_blendphot.outputs import reserve

    total = len(central)
    paths = {name: folder / f"{name}.npy" for name in ARRAY_FILES}
    for name, (dtype, shape) in ARRAY_FILES.items():
        created = open_memmap(paths[name], mode="w+", dtype=dtype, shape=(total, *shape))
        del created
        # Take the disk blocks now: pages of a sparse map that find the disk full kill the process (SIGBUS).
        reserve(paths[name], paths[name].stat().st_size, source)
    for start in range(0, total, chunk_size):
        stop = min(start + chunk_size, total)
        # Map the files afresh per chunk and drop the maps afterwards, so the
        # written pages leave this process's memory instead of piling up.
        outputs = {name: np.load(paths[name], mmap_mode="r+", allow_pickle=False) for name in ARRAY_FILES}
        assemble_pairs(images, central_masks, central[start:stop], companion[start:stop], dy[start:stop],
                       dx[start:stop], blends=outputs["blends"][start:stop], galaxy1=outputs["galaxy1"][start:stop],
                       galaxy2=outputs["galaxy2"][start:stop], masks=outputs["masks"][start:stop])
        for array in outputs.values():
            array.flush()
        del outputs
        if progress is not None:
            progress(stop, total)


def move_into_place(staging: Path, out_dir: Path, overwrite: bool = False) -> None:
    """Rename a completely written *staging* folder to *out_dir*.

    A reader never sees a half-written dataset under the final name.  An
    existing non-empty *out_dir* is replaced only with *overwrite* and only
    when it is a blend dataset holding nothing else (checked again here: it
    may have changed while the blends were written); then only the dataset's
    own files are deleted.  Without *overwrite*, a folder that another run
    created meanwhile is left alone (:class:`OutputExistsError`).
    """
    from napari_blendphot.outputs import replace_folder_with

    replace_folder_with(staging, out_dir, overwrite, is_blend_dataset_folder, DATASET_FILES, "a blend dataset")


# -- reading ---------------------------------------------------------------------------------

class BlendDataset(BlendSet):
    """A blend dataset folder, read memory-mapped (a :class:`~napari_blendphot.blend.blend_set.BlendSet`).

    Parameters
    ----------
    path : path-like
        Folder written by :func:`write_blend_dataset`.

    Attributes
    ----------
    blends, galaxy1, galaxy2 : (N, 128, 128) float32 memmaps (in-memory arrays for a selection)
    masks : (N, 2, 128, 128) uint8 memmap (in-memory for a selection)
    catalog : astropy.table.Table
    provenance : dict
    rows : row indices into the folder's arrays

    ``len(ds)`` is the number of blends, ``ds[i]`` a :class:`~napari_blendphot.blend.assemble.Blend`,
    ``ds.select(split="test")`` the blends of one split (a BlendDataset too,
    sharing the open files), ``ds.iter_chunks(size)`` yields
    :class:`~napari_blendphot.blend.assemble.BlendBatch` chunks.  The files are
    opened once, when the dataset is made; :meth:`check_unchanged` says
    whether they have been replaced or rewritten since.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.source = str(self.path)
        if not self.path.is_dir():
            raise InputError(self.path, "blend dataset folder not found",
                             "make one with 'blendphot blend' or write_blend_dataset()")
        provenance_file = self.path / PROVENANCE_FILE
        self.provenance = {}
        if provenance_file.is_file():
            try:
                self.provenance = json.loads(provenance_file.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise InputError(provenance_file, f"not valid JSON: {exc}") from None
            if not isinstance(self.provenance, dict):
                raise InputError(provenance_file, "does not hold a JSON object")
        #: "full" (the four arrays) or "predict-only" (the blends, and the true masks where kept).
        self.layout = PREDICT_ONLY if self.provenance.get(LAYOUT_KEY) == PREDICT_ONLY else "full"
        arrays = {}
        for name, (dtype, shape) in ARRAY_FILES.items():
            file = self.path / f"{name}.npy"
            if not file.is_file():
                if self.layout == PREDICT_ONLY and name != "blends":
                    continue
                raise InputError(file, "missing from the blend dataset")
            try:
                # Memory-mapped, never unpickled (object arrays cannot be mapped anyway).
                array = np.load(file, mmap_mode="r", allow_pickle=False)
            except Exception as exc:  # corrupt header, truncated file...
                raise InputError(file, f"cannot read as a .npy array: {exc}") from None
            if array.dtype != np.dtype(dtype) or array.ndim != 1 + len(shape) or array.shape[1:] != shape:
                raise InputError(file, f"holds {array.dtype} {array.shape}, expected {np.dtype(dtype)} (N, "
                                       f"{', '.join(map(str, shape))})")
            arrays[name] = array
        counts = {name: len(a) for name, a in arrays.items()}
        if len(set(counts.values())) != 1:
            raise InputError(self.path, f"array files disagree on the number of blends: {counts}")
        self._catalog_file, catalog = _read_catalog(self.path)
        if len(catalog) != counts["blends"]:
            raise InputError(self.path, f"catalogue has {len(catalog)} rows but the arrays hold "
                                        f"{counts['blends']} blends")
        missing = [c for c in CATALOG_COLUMNS if c not in catalog.colnames]
        if missing:
            raise InputError(self.path, f"catalogue lacks column(s) {', '.join(missing)}")
        _check_catalog_values(catalog, self.path)
        self._arrays = arrays
        self._full_catalog = catalog
        self.rows = None
        self.catalog = catalog
        _check_ids_are_rows(self.catalog, self._catalog_file)
        _check_catalogs_agree(self.path, self.catalog, self._catalog_file, self.provenance)
        watched = [self.path / f"{name}.npy" for name in arrays] + [self._catalog_file]
        if provenance_file.is_file():
            watched.append(provenance_file)
        self._fingerprint = {file.name: file_fingerprint(file) for file in watched}

    def worker_rows(self, start: int = 0, stop: int | None = None) -> "DatasetRows":
        """Blends ``start:stop`` of this set as a :class:`DatasetRows`: what a worker needs to read them itself."""
        stop = len(self) if stop is None else stop
        rows = np.arange(start, stop, dtype=np.int64) if self.rows is None else np.asarray(self.rows[start:stop])
        names = ("blends", "masks") if "masks" in self._arrays else ("blends",)
        return DatasetRows(str(self.path.resolve()), rows,
                           {name: self._fingerprint[f"{name}.npy"] for name in names})

    @property
    def catalog_path(self) -> Path:
        """The catalogue file that was read (``catalog.fits`` when both exist; they must agree)."""
        return self._catalog_file

    # -- the files, opened once --------------------------------------------------------------
    def _array(self, name: str):
        return self._arrays[name]

    def __len__(self) -> int:
        return len(self._arrays["blends"]) if self.rows is None else len(self.rows)

    def __repr__(self) -> str:
        splits = np.asarray(self.catalog["split"]).astype(str)
        counts = ", ".join(f"{s} {int(np.sum(splits == s))}" for s in np.unique(splits))
        kind = "BlendDataset" if self.rows is None else "BlendDataset selection of"
        return f"<{kind} {len(self)} blends ({counts}) at {str(self.path)!r}>"

    def _read(self, name: str, start: int, stop: int):
        array = self._arrays.get(name)
        if array is None:  # a predict-only dataset: no galaxy stamps, perhaps no masks
            return None
        if self.rows is None:
            out = np.array(array[start:stop])
        else:
            out = _take_rows(array, self.rows[start:stop])
        _release_pages(array)
        return out

    def _subset(self, positions) -> "BlendDataset":
        positions = np.asarray(positions, np.int64)
        rows = positions if self.rows is None else self.rows[positions]
        selection = object.__new__(BlendDataset)
        selection.__dict__.update(self.__dict__)
        selection.rows = rows
        selection.catalog = self._full_catalog[rows]
        return selection

    def _whole(self, name: str):
        """Array *name* of the whole set: the memory map itself, the selected rows in memory, or None."""
        if name not in self._arrays:
            return None
        return self._arrays[name] if self.rows is None else self._read(name, 0, len(self))

    @property
    def blends(self):
        return self._whole("blends")

    @property
    def galaxy1(self):
        return self._whole("galaxy1")

    @property
    def galaxy2(self):
        return self._whole("galaxy2")

    @property
    def masks(self):
        return self._whole("masks")

    @property
    def dataset(self) -> "BlendDataset":
        """The whole folder's dataset (this one, or the one this selection was made from)."""
        if self.rows is None:
            return self
        whole = object.__new__(BlendDataset)
        whole.__dict__.update(self.__dict__)
        whole.rows, whole.catalog = None, self._full_catalog
        return whole

    def indices(self, split: str | None = None) -> np.ndarray:
        """Positions of the blends of *split* in this set (all blends for ``None``)."""
        if split is None:
            return np.arange(len(self))
        splits = np.char.strip(np.asarray(self.catalog["split"]).astype(str))
        if split not in set(splits.tolist()):
            raise InputError(self.path, f"no blends with split {split!r}",
                             f"present: {', '.join(sorted(set(splits.tolist())))}")
        return np.flatnonzero(splits == split)

    # -- provenance ---------------------------------------------------------------------------
    def fingerprint(self) -> dict:
        """``{file name: (device, inode, size, mtime)}`` of the files as they were opened."""
        return dict(self._fingerprint)

    def check_unchanged(self) -> None:
        """Raise :class:`InputError` if a file of the dataset was replaced or rewritten since it was opened."""
        changed = []
        for name, opened in self._fingerprint.items():
            try:
                now = file_fingerprint(self.path / name)
            except OSError:
                now = None
            if now != opened:
                changed.append(name)
        if changed:
            raise InputError(self.path, f"changed while it was being read ({', '.join(changed)} replaced or "
                                        "rewritten): the results would mix two datasets, so none were written",
                             "run again once the dataset is no longer being written")

    def describe_inputs(self) -> dict:
        """Digests that identify the dataset cheaply: its provenance and catalogue files."""
        from napari_blendphot.provenance import sha256_file

        record = {}
        for name in ("provenance.json", "catalog.fits", "catalog.csv"):
            path = self.path / name
            if path.is_file():
                record[name] = sha256_file(path)
        return record


class DatasetRows:
    """Rows of a dataset folder's arrays, to be read where they are used instead of sent there.

    What the inference engine hands its worker for a chunk of a
    :class:`BlendDataset`: the folder, the row numbers and the fingerprints
    of the files as the caller opened them (a few hundred bytes instead of
    64 KiB of pixels per blend through a pipe).  The worker maps the files
    once (:meth:`read`) and refuses files that changed since the caller
    opened them.  Sliced like an array of shape (N, 128, 128).
    """

    dtype = np.dtype(np.float32)
    ndim = 3

    def __init__(self, folder: str, rows, fingerprints: dict):
        self.folder = str(folder)
        self.rows = np.asarray(rows, np.int64)
        self.fingerprints = dict(fingerprints)

    @property
    def shape(self) -> tuple:
        return (len(self.rows), STAMP_SIZE, STAMP_SIZE)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> "DatasetRows":
        if not isinstance(index, slice):
            raise TypeError("DatasetRows are sliced with start:stop only")
        return DatasetRows(self.folder, self.rows[index], self.fingerprints)

    @property
    def has_masks(self) -> bool:
        return "masks" in self.fingerprints

    def read(self, name: str = "blends") -> np.ndarray:
        """The rows of array *name* (``blends`` or ``masks``) in memory."""
        array = _mapped(self.folder, name, self.fingerprints.get(name))
        out = _take_rows(array, self.rows)
        _release_pages(array)
        return out

    def __repr__(self) -> str:
        span = f"{self.rows[0]}-{self.rows[-1]}" if len(self.rows) else "none"
        return f"<DatasetRows {len(self)} rows ({span}) of {self.folder!r}>"


#: Memory maps a worker opened: ``{(folder, name): (fingerprint, array)}``.
_MAPPED: dict = {}


def _mapped(folder: str, name: str, fingerprint) -> np.ndarray:
    """Array file *name* of *folder*, memory-mapped once per process; refused if it is not the file the caller saw."""
    path = Path(folder) / f"{name}.npy"
    if fingerprint is None:
        raise InputError(path, "was not part of the dataset when it was opened")
    key = (str(folder), name)
    cached = _MAPPED.get(key)
    try:
        now = file_fingerprint(path)
    except OSError:
        now = None
    if now != tuple(fingerprint):
        raise InputError(Path(folder), f"changed while it was being read ({path.name} replaced or rewritten): "
                         "the results would mix two datasets", "run again once the dataset is no longer being written")
    if cached is None or cached[0] != now:
        _MAPPED[key] = (now, np.load(path, mmap_mode="r", allow_pickle=False))
    return _MAPPED[key][1]


def write_predict_only(dataset, out_dir, keep_masks: bool = True, split: str | None = None,
                       overwrite: bool = False, chunk_size: int = 4096, progress=None) -> Path:
    """Write a predict-only copy of a blend dataset: the blends (and the true masks), no galaxy stamps.

    A full dataset stores every stamp three times (the blend and the two
    galaxies: 224 KiB per blend with the masks); predicting needs only the
    blends (64 KiB), and the IoU the masks (32 KiB more, ``keep_masks``).  The
    catalogue (the truth of the fluxes) is kept whole, so ``predict`` and
    ``evaluate`` give the same table as on the full dataset.  *split* keeps
    one split only (the blend ids are renumbered from 0, ``source_id`` keeps
    the original ones).  Written into a hidden folder beside *out_dir* and
    renamed into place when complete.
    """
    from numpy.lib.format import open_memmap

    from napari_blendphot.atomic import discard, make_partial_folder, remove_stale_partials
    from napari_blendphot.provenance import make_provenance
    from napari_blendphot.tables import write_table

    source = dataset if isinstance(dataset, BlendDataset) else BlendDataset(dataset)
    selection = source.select(split) if split not in (None, "all") else source
    keep_masks = bool(keep_masks) and "masks" in source._arrays
    out_dir = Path(out_dir)
    names = ("blends", "masks") if keep_masks else ("blends",)
    check_dataset_output(out_dir, overwrite, 0, inputs=[source.path])
    catalog = selection.catalog.copy()
    if split not in (None, "all"):
        catalog["source_id"] = catalog["id"]
        catalog["id"] = np.arange(len(catalog), dtype=np.int64)
    provenance = make_provenance("compact", None, inputs={"dataset": source.describe_inputs()},
                                 split=split or "all", n_blends=int(len(selection)), masks=keep_masks,
                                 source_provenance=source.provenance)
    provenance[LAYOUT_KEY] = PREDICT_ONLY
    catalog.meta["provenance"] = provenance
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out_dir.parent, out_dir.name)
    staging = make_partial_folder(out_dir)
    try:
        total = len(selection)
        for name in names:
            dtype, shape = ARRAY_FILES[name]
            target = open_memmap(staging / f"{name}.npy", mode="w+", dtype=dtype, shape=(total, *shape))
            for start in range(0, total, chunk_size):
                stop = min(start + chunk_size, total)
                target[start:stop] = selection._read(name, start, stop)
                if progress is not None and name == "blends":
                    progress(stop, total)
            target.flush()
            del target
        write_table(catalog, staging / "catalog.csv")
        write_table(catalog, staging / "catalog.fits")
        write_dataset_provenance(staging, provenance)
        move_into_place(staging, out_dir, overwrite=overwrite)
    except BaseException:
        discard(staging)
        raise
    return out_dir


def as_blend_set(blends, split: str | None = None) -> BlendSet:
    """A :class:`BlendSet` from a blend set, a dataset folder, an array (N, 128, 128) or one stamp.

    *split* selects the blends of one split (``"test"``...; None or ``"all"``: every blend).
    """
    if isinstance(blends, BlendSet):
        blend_set = blends
    elif isinstance(blends, (str, os.PathLike)):
        blend_set = BlendDataset(blends)
    else:
        if not hasattr(blends, "shape"):
            blends = np.asarray(blends)
        if blends.ndim == 2:
            blends = np.asarray(blends)[None]
        if blends.ndim != 3 or tuple(blends.shape[1:]) != (STAMP_SIZE, STAMP_SIZE):
            raise InputError("blends", f"shape {tuple(blends.shape)}, expected (N, {STAMP_SIZE}, {STAMP_SIZE}) or a "
                             f"single ({STAMP_SIZE}, {STAMP_SIZE}) stamp, a blend dataset folder or a blend set")
        blend_set = BlendBatch(blends)
    if split not in (None, "all"):
        blend_set = blend_set.select(split)
    return blend_set


def BlendDatasetView(dataset: BlendDataset, rows) -> BlendDataset:  # noqa: N802 (the old class name)
    """Deprecated: ``dataset.select(index=rows)`` (a selection is a :class:`BlendDataset` now)."""
    import warnings

    warnings.warn("BlendDatasetView(dataset, rows) is deprecated: use dataset.select(index=rows)",
                  DeprecationWarning, stacklevel=2)
    return dataset.select(index=rows)


def _take_rows(array, rows) -> np.ndarray:
    """Rows of a memory map in memory: one read for contiguous rows, sorted reads otherwise."""
    rows = np.asarray(rows, np.int64)
    if rows.size and np.all(np.diff(rows) == 1):
        return np.array(array[rows[0]:rows[-1] + 1])
    return np.asarray(array[rows])


def _release_pages(array) -> None:
    """Let go of the pages of a memory map read so far (they stay in the page cache).

    A long-lived memory map keeps every page it touched in this process's
    resident memory; a run over a large dataset would grow to the dataset's
    size.  Dropping the pages after each read keeps it at one chunk.
    """
    import mmap

    handle = getattr(array, "_mmap", None)
    if handle is not None and hasattr(handle, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            handle.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass


def _read_catalog(path: Path):
    """``(file read, catalogue)`` of a dataset folder."""
    from napari_blendphot.tables import read_table

    for name in ("catalog.fits", "catalog.csv"):  # FITS first: faster and typed
        file = path / name
        if file.is_file():
            catalog = read_table(file)
            for column in ("split", "g1_type", "g2_type"):
                if column in catalog.colnames:
                    try:
                        catalog[column] = np.char.strip(np.asarray(catalog[column]).astype(str))
                    except UnicodeDecodeError:
                        raise InputError(file, f"column {column!r} holds bytes that are not text") from None
            return file, catalog
    raise InputError(path, "blend dataset has no catalog.fits or catalog.csv")


def _check_ids_are_rows(catalog, source) -> None:
    """Every dataset is written with blend id == row: a re-sorted catalogue would pair rows with other arrays."""
    ids = np.asarray(catalog["id"], np.int64)
    wrong = np.flatnonzero(ids != np.arange(len(ids)))
    if wrong.size:
        row = int(wrong[0])
        raise InputError(source, f"catalogue row {row} has blend id {int(ids[row])}: rows must be in blend "
                                 "order (id == row) to match the arrays",
                         "was the catalogue re-sorted or edited? sort it by id or write the dataset again")


def _check_catalogs_agree(folder: Path, catalog, read_from: Path, provenance: dict) -> None:
    """Refuse a dataset whose ``catalog.csv`` and ``catalog.fits`` say different things.

    The FITS file is the one read; an edited CSV would otherwise be silently
    ignored.  Files unchanged since writing (their SHA-256 in
    ``provenance.json``) agree without a comparison.
    """
    from napari_blendphot.provenance import sha256_file

    files = [folder / name for name in CATALOG_FILES]
    if not all(f.is_file() for f in files):
        return
    recorded = provenance.get(CATALOG_DIGESTS_KEY) if isinstance(provenance, dict) else None
    if isinstance(recorded, dict) and all(recorded.get(f.name) == sha256_file(f) for f in files):
        return
    other_file = next(f for f in files if f != read_from)
    from astropy.table import Table

    try:
        other = Table.read(other_file, format="ascii.csv", comment="#") if other_file.suffix == ".csv" \
            else Table.read(other_file)
    except Exception as exc:
        raise InputError(other_file, f"cannot be read to compare it with {read_from.name}, which is the one "
                                     f"read: {exc}") from None
    problem = _first_difference(catalog, other)
    if problem:
        raise InputError(folder, f"{CATALOG_FILES[0]} and {CATALOG_FILES[1]} disagree ({problem}); "
                                 f"{read_from.name} is the one read",
                         f"remove the one that is wrong, or write the dataset again")


def _first_difference(catalog, other) -> str | None:
    if len(catalog) != len(other):
        return f"{len(catalog)} rows against {len(other)}"
    for name in catalog.colnames:
        if name not in other.colnames:
            return f"column {name!r} is in one only"
        a, b = np.asarray(catalog[name]), np.asarray(other[name])
        if a.dtype.kind in "SU" or b.dtype.kind in "SU" or a.dtype.kind == "O" or b.dtype.kind == "O":
            a = np.char.strip(np.char.decode(a, "ascii", "replace") if a.dtype.kind == "S" else a.astype(str))
            b = np.char.strip(np.char.decode(b, "ascii", "replace") if b.dtype.kind == "S" else b.astype(str))
            differ = a != b
        else:
            try:
                a, b = a.astype(np.float64), b.astype(np.float64)
            except (TypeError, ValueError):
                return f"column {name!r} is not numeric in one of them"
            differ = ~((a == b) | (np.isnan(a) & np.isnan(b)))
        if np.any(differ):
            return f"column {name!r}, row {int(np.flatnonzero(differ)[0])}"
    return None


#: Catalogue columns that must hold whole numbers, finite numbers, finite positive
#: numbers, or numbers (NaN allowed: unknown redshifts).
_INTEGER_COLUMNS = ("id", "dy", "dx", "g1_id", "g2_id")
_FINITE_COLUMNS = ("distance", "g1_mag", "g2_mag")
_POSITIVE_COLUMNS = ("g1_flux", "g2_flux", "g1_rad", "g2_rad")
_NUMBER_COLUMNS = ("g1_z", "g2_z")


def _check_catalog_values(catalog, source) -> None:
    """Refuse catalogue columns of the wrong kind (text, empty cells, fractional shifts, fluxes <= 0).

    The arrays are trusted to be what the catalogue says; a damaged catalogue
    must fail here, by name, not later inside the metrics or the SEP assignment.
    """
    for name in (*_INTEGER_COLUMNS, *_FINITE_COLUMNS, *_POSITIVE_COLUMNS, *_NUMBER_COLUMNS):
        column = catalog[name]
        if column.dtype.kind not in "iuf":
            raise InputError(source, f"catalogue column {name!r} is not numeric (dtype {column.dtype})")
        values = np.array(column, dtype=np.float64)
        mask = getattr(column, "mask", None)
        if mask is not None and np.any(mask):
            if name not in _NUMBER_COLUMNS:
                raise InputError(source, f"catalogue column {name!r} has empty values")
            values[np.asarray(mask, bool)] = np.nan
            catalog[name] = values
        if name in _INTEGER_COLUMNS:
            if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
                raise InputError(source, f"catalogue column {name!r} holds non-integer values")
            if column.dtype.kind == "f":
                catalog[name] = values.astype(np.int64)
        elif name in _FINITE_COLUMNS and not np.all(np.isfinite(values)):
            raise InputError(source, f"catalogue column {name!r} has NaN or infinite values")
        elif name in _POSITIVE_COLUMNS and not np.all(np.isfinite(values) & (values > 0)):
            raise InputError(source, f"catalogue column {name!r} has NaN, infinite or non-positive values")


# -- summary ---------------------------------------------------------------------------------

def summarize_blends(catalog) -> str:
    """A few lines describing a blend catalogue: counts, separations, pair dmag, type pairs."""
    if len(catalog) == 0:
        return "0 blends"
    distance = np.asarray(catalog["distance"], np.float64)
    dmag = np.asarray(catalog["g2_mag"], np.float64) - np.asarray(catalog["g1_mag"], np.float64)
    lines = []
    if "split" in catalog.colnames:
        splits = np.char.strip(np.asarray(catalog["split"]).astype(str))
        order = [s for s in ("train", "test") if s in splits] + sorted(set(splits.tolist()) - {"train", "test"})
        per_split = ", ".join(f"{s} {int(np.sum(splits == s))}" for s in order)
        lines.append(f"{len(catalog)} blends ({per_split})")
        for s in order:
            ids1 = np.asarray(catalog["g1_id"])[splits == s]
            ids2 = np.asarray(catalog["g2_id"])[splits == s]
            lines.append(f"  {s}: {np.unique(np.concatenate([ids1, ids2])).size} distinct galaxies")
    else:
        lines.append(f"{len(catalog)} blends")
    lines.append(f"distance px: median {np.median(distance):.1f}, min {distance.min():.1f}, "
                 f"max {distance.max():.1f}")
    lines.append(f"pair dmag (companion - central): median {np.median(dmag):+.2f}, |dmag| median "
                 f"{np.median(np.abs(dmag)):.2f}, max {np.abs(dmag).max():.3f}")
    if "g1_rad" in catalog.colnames:
        ratio = distance / np.asarray(catalog["g1_rad"], np.float64)
        lines.append(f"distance / central radius: median {np.median(ratio):.2f}")
    t1 = np.char.strip(np.asarray(catalog["g1_type"]).astype(str))
    t2 = np.char.strip(np.asarray(catalog["g2_type"]).astype(str))
    pairs, counts = np.unique(np.char.add(np.char.add(t1, "+"), t2), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    shown = ", ".join(f"{pairs[i]} {counts[i]}" for i in order[:8])
    more = f" (+{len(pairs) - 8} more)" if len(pairs) > 8 else ""
    lines.append(f"type pairs (central+companion): {shown}{more}")
    return "\n".join(lines)
