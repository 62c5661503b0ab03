"""Training batches, deterministic for (seed, epoch), for any Keras backend.

Two sources of blends:

* :class:`FixedBlends` reads a blend dataset folder (docs/architecture.md):
  the blends of the ``train`` split, of which a seeded share (by blend) is held
  out for validation.  This is the paper's protocol: one fixed set of 25,000
  blends.
* :class:`StreamBlends` makes new pairs and shifts every epoch from the
  training galaxies of an isolated sample (numpy only), so that the network
  never sees the same blend twice.

Both give the same batches for the same seed, epoch and batch index, whatever
the number of worker threads: each batch draws its random flips from its own
generator ``default_rng([seed, epoch, batch])``.  :class:`BatchFeeder` runs the
batch assembly in worker threads ahead of the accelerator (numpy releases the
GIL for the copies) and yields them in order as a plain Python generator, which
``model.fit`` takes on every backend.  No ``tf.data``.

Array layout given to the networks: raw blends ``(B, 128, 128)`` (the models
add the channel axis and normalise inside), channels-last
masks ``(B, 128, 128, 2)`` [central, companion] in {0, 1}, fluxes ``(B, 2)``
[central, companion] in the stamp's units.
"""

from __future__ import annotations

import json
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_blendphot.errors import InputError

TARGETS = ("fluxes", "masks")


# ---------------------------------------------------------------------------
# Reading a blend dataset folder
# ---------------------------------------------------------------------------
@dataclass
class BlendArrays:
    """Blends of one split, with their targets and catalogue rows (memory-mapped or in memory)."""

    blends: np.ndarray          # (N, 128, 128) float32
    masks: np.ndarray | None    # (N, 2, 128, 128) uint8, or None when not needed
    fluxes: np.ndarray          # (N, 2) float64 [g1_flux, g2_flux]
    catalog: object             # astropy Table rows of these blends
    rows: np.ndarray            # row indices into the folder's arrays
    source: str = ""

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, positions) -> "BlendArrays":
        """The blends at *positions* (0..N-1) of this split."""
        positions = np.asarray(positions)

        def take(array):
            if array is None:
                return None
            if isinstance(array, _RowView):
                return _RowView(array.array, array.rows[positions])
            return array[positions]

        return BlendArrays(take(self.blends), take(self.masks), self.fluxes[positions], self.catalog[positions],
                           self.rows[positions], self.source)

    def load(self) -> "BlendArrays":
        """The same blends with the arrays read into memory (sorted row order)."""
        return BlendArrays(
            np.asarray(self.blends, np.float32),
            None if self.masks is None else np.asarray(self.masks, np.uint8),
            self.fluxes, self.catalog, self.rows, self.source,
        )


def read_split(folder, split: str = "train", with_masks: bool = True, in_memory: bool = False) -> BlendArrays:
    """The blends of one split of a blend dataset folder.

    Parameters
    ----------
    folder : path-like
        Folder written by ``python -m training build-dataset`` / ``blendphot blend``.
    split : {"train", "test", "all"}
    with_masks : bool
        Read ``masks.npy`` too (U-Net targets).
    in_memory : bool
        Copy the split into memory (fast random access for training) instead of
        leaving it memory-mapped.
    """
    from napari_blendphot.tables import read_table

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "blend dataset folder not found",
                         "make one with `python -m training build-dataset SAMPLE -o DIR`")
    for name in ("blends.npy", "catalog.csv") + (("masks.npy",) if with_masks else ()):
        if not (folder / name).is_file():
            raise InputError(folder, f"not a blend dataset folder: {name} is missing")
    catalog = read_table(folder / "catalog.csv")
    blends = np.load(folder / "blends.npy", mmap_mode="r")
    if blends.ndim != 3 or len(blends) != len(catalog):
        raise InputError(folder, f"blends.npy has shape {blends.shape} but the catalogue {len(catalog)} rows")
    masks = np.load(folder / "masks.npy", mmap_mode="r") if with_masks else None
    if masks is not None and masks.shape != (len(blends), 2, *blends.shape[1:]):
        raise InputError(folder, f"masks.npy has shape {masks.shape}, expected ({len(blends)}, 2, 128, 128)")
    if split == "all":
        rows = np.arange(len(catalog))
    else:
        if "split" not in catalog.colnames:
            raise InputError(folder / "catalog.csv", "has no 'split' column")
        rows = np.flatnonzero(np.char.strip(np.asarray(catalog["split"]).astype(str)) == split)
        if len(rows) == 0:
            raise InputError(folder, f"has no blends of split {split!r}")
    fluxes = np.stack([np.asarray(catalog["g1_flux"], np.float64), np.asarray(catalog["g2_flux"], np.float64)], 1)
    part = BlendArrays(blends[rows] if in_memory else _RowView(blends, rows),
                       None if masks is None else (masks[rows] if in_memory else _RowView(masks, rows)),
                       fluxes[rows], catalog[rows], rows, str(folder))
    return part


class _RowView:
    """Rows of a memory-mapped array, read lazily (``view[i]`` or ``view[index_array]``)."""

    def __init__(self, array, rows):
        self.array = array
        self.rows = np.asarray(rows)
        self.shape = (len(self.rows), *array.shape[1:])
        self.dtype = array.dtype
        self.ndim = array.ndim

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        rows = self.rows[index]
        if np.ndim(rows) == 0:
            return np.asarray(self.array[int(rows)])
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), *self.array.shape[1:]), self.array.dtype)
        out[order] = self.array[np.sort(rows)]
        return out

    def __array__(self, dtype=None, copy=None):
        out = self[np.arange(len(self.rows))]
        return out if dtype is None else out.astype(dtype)


def dataset_digest(folder) -> dict:
    """Where a blend dataset came from: its provenance record and the digest of its blends file."""
    from napari_blendphot.provenance import sha256_file

    folder = Path(folder)
    record = {"path": str(folder), "blends_sha256": sha256_file(folder / "blends.npy")}
    prov = folder / "provenance.json"
    if prov.is_file():
        try:
            record["provenance"] = json.loads(prov.read_text())
        except json.JSONDecodeError:
            record["provenance"] = "unreadable"
    return record


def validation_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) positions of *n* blends, the validation share drawn with *seed*."""
    rng = np.random.default_rng([int(seed), 7919])
    order = rng.permutation(n)
    n_val = max(1, int(round(fraction * n)))
    if n_val >= n:
        raise InputError("data.validation_fraction", f"leaves no training blends out of {n}")
    return np.sort(order[n_val:]), np.sort(order[:n_val])


# ---------------------------------------------------------------------------
# Batch assembly
# ---------------------------------------------------------------------------
def to_network_layout(blends, masks=None):
    """(B, H, W) blends and (B, 2, H, W) masks -> float32 (B, H, W) and channels-last (B, H, W, 2)."""
    x = np.array(blends, np.float32)
    y_masks = None if masks is None else np.moveaxis(np.asarray(masks), 1, -1).astype(np.float32)
    return x, y_masks


def flip_batch(x, masks, rng: np.random.Generator):
    """Flip each blend (and its masks alike) up-down and/or left-right with probability 1/2.

    Fluxes are unchanged by a flip, so blend2flux targets need no change.
    """
    flips = rng.random((len(x), 2)) < 0.5
    for i in np.flatnonzero(flips[:, 0]):
        x[i] = x[i, ::-1]
        if masks is not None:
            masks[i] = masks[i, ::-1]
    for i in np.flatnonzero(flips[:, 1]):
        x[i] = x[i, :, ::-1]
        if masks is not None:
            masks[i] = masks[i, :, ::-1]
    return x, masks


class FixedBlends:
    """Batches of a fixed set of blends, shuffled and flipped anew each epoch.

    Parameters
    ----------
    arrays : BlendArrays
        The training blends (in memory or memory-mapped).
    batch_size : int
    seed : int
    targets : tuple of {"fluxes", "masks"}
        Which targets each batch carries.
    flips : bool
        Random flips (blend and masks together).
    drop_remainder : bool
        Skip the last partial batch, so that every step has the same shape (one compilation).
    """

    def __init__(self, arrays: BlendArrays, batch_size: int, seed: int, targets=("fluxes",), flips=True,
                 drop_remainder: bool = True):
        self.arrays = arrays
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.targets = tuple(targets)
        self.flips = bool(flips)
        n = len(arrays)
        self.steps_per_epoch = n // self.batch_size if drop_remainder else -(-n // self.batch_size)
        if self.steps_per_epoch == 0:
            raise InputError("training data", f"{n} blends are fewer than one batch of {self.batch_size}")

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, int(epoch), 1]).permutation(len(self.arrays))

    def batch(self, epoch: int, index: int, order: np.ndarray | None = None):
        """Batch *index* of *epoch*: ``(x, {"fluxes": ..., "masks": ...})``."""
        order = self.order(epoch) if order is None else order
        rows = np.sort(order[index * self.batch_size:(index + 1) * self.batch_size])
        masks = self.arrays.masks[rows] if "masks" in self.targets else None
        x, y_masks = to_network_layout(self.arrays.blends[rows], masks)
        if self.flips:
            x, y_masks = flip_batch(x, y_masks, np.random.default_rng([self.seed, int(epoch), 2, int(index)]))
        y = {}
        if "fluxes" in self.targets:
            y["fluxes"] = self.arrays.fluxes[rows].astype(np.float32)
        if "masks" in self.targets:
            y["masks"] = y_masks
        return x, y

    def epoch_batches(self, epoch: int):
        order = self.order(epoch)
        for index in range(self.steps_per_epoch):
            yield lambda index=index: self.batch(epoch, index, order)


class StreamBlends:
    """Blends made on the fly from isolated galaxies: new pairs and shifts every epoch.

    A thin batching layer over :class:`napari_blendphot.blend.stream.BlendStream`,
    whose pairs for epoch *e* are fixed by ``(seed, e, n)``; the flips of batch
    *i* come from ``default_rng([seed, e, 2, i])`` as for :class:`FixedBlends`.

    Parameters
    ----------
    stream : BlendStream
        Built from the (cleaned) training galaxies.
    blends_per_epoch, batch_size, seed, targets, flips
        As for :class:`FixedBlends`.
    """

    def __init__(self, stream, blends_per_epoch: int, batch_size: int, seed: int, targets=("fluxes",),
                 flips=True):
        self.stream = stream
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.targets = tuple(targets)
        self.flips = bool(flips)
        self.steps_per_epoch = int(blends_per_epoch) // self.batch_size
        if self.steps_per_epoch == 0:
            raise InputError("data.blends_per_epoch", f"{blends_per_epoch} is less than one batch")

    def batch(self, epoch: int, index: int, pairs=None):
        pairs = self.stream.epoch_pairs(epoch, self.steps_per_epoch * self.batch_size) if pairs is None else pairs
        part = self.stream.assemble(pairs.take(slice(index * self.batch_size, (index + 1) * self.batch_size)))
        x, y_masks = to_network_layout(part.blends, part.masks if "masks" in self.targets else None)
        if self.flips:
            x, y_masks = flip_batch(x, y_masks, np.random.default_rng([self.seed, int(epoch), 2, int(index)]))
        y = {}
        if "fluxes" in self.targets:
            y["fluxes"] = np.asarray(part.fluxes, np.float32)
        if "masks" in self.targets:
            y["masks"] = y_masks
        return x, y

    def epoch_batches(self, epoch: int):
        pairs = self.stream.epoch_pairs(epoch, self.steps_per_epoch * self.batch_size)
        for index in range(self.steps_per_epoch):
            yield lambda index=index: self.batch(epoch, index, pairs)


class BatchFeeder:
    """An endless, ordered generator of batches, prepared ahead by worker threads.

    ``iter(feeder)`` yields the batches of ``start_epoch``, then of the next
    epoch, and so on; ``model.fit(feeder_generator, steps_per_epoch=...)`` then
    sees epoch *e* exactly when Keras runs epoch *e*.

    Parameters
    ----------
    source : FixedBlends or StreamBlends
    start_epoch : int
    workers : int
        Threads assembling batches (0: in the consumer's thread).
    prefetch : int
        Batches kept in flight ahead of the consumer.
    structure : callable, optional
        Maps ``(x, y_dict)`` to what the model's ``fit`` expects (e.g. picks the
        single target of a one-output model).
    """

    def __init__(self, source, start_epoch: int = 0, workers: int = 4, prefetch: int = 8, structure=None):
        self.source = source
        self.start_epoch = int(start_epoch)
        self.workers = int(workers)
        self.prefetch = max(1, int(prefetch))
        self.structure = structure or (lambda x, y: (x, y))
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="batches") if self.workers > 0 else None

    @property
    def steps_per_epoch(self) -> int:
        return self.source.steps_per_epoch

    def __iter__(self):
        epoch = self.start_epoch
        while True:
            tasks = self.source.epoch_batches(epoch)
            if self._pool is None:
                for task in tasks:
                    yield self.structure(*task())
            else:
                pending = deque()
                for task in tasks:
                    pending.append(self._pool.submit(task))
                    if len(pending) >= self.prefetch:
                        yield self.structure(*pending.popleft().result())
                while pending:
                    yield self.structure(*pending.popleft().result())
            epoch += 1

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def validation_arrays(arrays: BlendArrays, targets) -> tuple[np.ndarray, dict]:
    """All validation blends in network layout (no flips)."""
    masks = arrays.masks[np.arange(len(arrays))] if "masks" in targets else None
    x, y_masks = to_network_layout(np.asarray(arrays.blends[np.arange(len(arrays))]), masks)
    y = {}
    if "fluxes" in targets:
        y["fluxes"] = arrays.fluxes.astype(np.float32)
    if "masks" in targets:
        y["masks"] = y_masks
    return x, y
