"""The one container for "some blends": :class:`BlendSet`.

A blend set is N blends (float32 stamps, 128x128) and, where known, their
truth: a catalogue row per blend (``id``, ``dy``, ``dx``, true fluxes, types...),
the two true masks and the two galaxies' own stamps.  Everything that runs
methods over blends (:func:`napari_blendphot.predict`, the Inspector's batch,
training's evaluation) takes one and reads it through two calls:

- :meth:`BlendSet.iter_chunks` yields the blends as in-memory
  :class:`~napari_blendphot.blend.assemble.BlendBatch` chunks (themselves
  blend sets), so memory stays bounded for any N;
- :meth:`BlendSet.context` gives the truth SEP's assignment uses (the
  companion shift and the central radius).

The kinds of blend set:

- :class:`~napari_blendphot.blend.dataset.BlendDataset`, a dataset folder
  (memory-mapped), or a selection of its rows (``dataset.select(split="test")``);
- :class:`~napari_blendphot.blend.assemble.BlendBatch`, arrays in memory (what
  :func:`~napari_blendphot.blend.assemble.make_blends` makes; bare blends
  without truth too).

:func:`~napari_blendphot.blend.dataset.as_blend_set` turns what a user has (a
folder, an array, a stamp) into one.

A blend set opens its inputs once: a dataset holds its memory maps and its
catalogue for as long as it lives, and :meth:`BlendSet.check_unchanged` says
whether the files it was opened from have been replaced or rewritten since
(a run checks it before writing results, so that a dataset replaced mid-run
gives an error, never a table that mixes two datasets).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from napari_blendphot.constants import STAMP_SIZE
from napari_blendphot.errors import InputError

__all__ = ["Blend", "BlendBatch", "BlendSet", "context_from_catalog"]

#: Default blends per chunk of :meth:`BlendSet.iter_chunks`.
DEFAULT_CHUNK = 1000


def context_from_catalog(catalog):
    """The :class:`~napari_blendphot.deblend.base.BlendContext` of catalogue rows (None without ``dy``/``dx``).

    ``companion_shift`` is ``[dy, dx]``; ``central_radius`` is ``g1_rad`` where
    every row has a finite one (else None: SEP then assigns without it).
    """
    from napari_blendphot.deblend.base import BlendContext

    if catalog is None or "dy" not in catalog.colnames or "dx" not in catalog.colnames:
        return None
    shift = np.column_stack([np.asarray(catalog["dy"], np.int64), np.asarray(catalog["dx"], np.int64)])
    radius = None
    if "g1_rad" in catalog.colnames:
        values = np.asarray(catalog["g1_rad"], np.float64)
        radius = values if np.all(np.isfinite(values)) else None
    return BlendContext(companion_shift=shift, central_radius=radius)


class BlendSet:
    """Blends and what is known about them.  Subclasses provide the storage.

    Attributes
    ----------
    catalog : astropy.table.Table or None
        One row per blend (the blend-catalogue columns, docs/architecture.md), or
        None for bare blends.
    source : str
        What the blends are, for messages and provenance (a folder, "in-memory blends").

    Subclasses implement ``__len__``, :meth:`_read` and :meth:`_subset`, and
    hold ``blends`` (N, 128, 128) and ``masks`` (N, 2, 128, 128, or None).
    """

    catalog = None
    source = "blends"

    # ------------------------------------------------------------------ storage (subclasses)
    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self, name: str, start: int, stop: int):
        """Rows ``start:stop`` of array *name* (``blends``, ``galaxy1``, ``galaxy2``, ``masks``) in memory, or None."""
        raise NotImplementedError  # pragma: no cover - abstract

    def _subset(self, positions: np.ndarray) -> "BlendSet":
        raise NotImplementedError  # pragma: no cover - abstract

    # ------------------------------------------------------------------ what every set offers
    @property
    def has_truth(self) -> bool:
        """Whether true fluxes are known (a catalogue with ``g1_flux`` and ``g2_flux``)."""
        return self.catalog is not None and "g1_flux" in self.catalog.colnames and "g2_flux" in self.catalog.colnames

    @property
    def fluxes(self) -> np.ndarray:
        """(N, 2) true fluxes [central, companion] (NaN where unknown)."""
        if not self.has_truth:
            return np.full((len(self), 2), np.nan)
        return np.column_stack([np.asarray(self.catalog["g1_flux"], np.float64),
                                np.asarray(self.catalog["g2_flux"], np.float64)])

    def context(self):
        """The truth SEP's assignment uses (:class:`~napari_blendphot.deblend.base.BlendContext`), or None."""
        return context_from_catalog(self.catalog)

    def iter_chunks(self, size: int = DEFAULT_CHUNK) -> Iterator:
        """Yield the blends in order as in-memory :class:`~napari_blendphot.blend.assemble.BlendBatch` chunks.

        Each chunk carries ``start`` and ``stop``, its position in this set.
        """
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise InputError("iter_chunks(size)", f"must be a positive integer, got {size!r}")
        for start in range(0, len(self), int(size)):
            stop = min(start + int(size), len(self))
            batch = BlendBatch(self._read("blends", start, stop), self._read("galaxy1", start, stop),
                               self._read("galaxy2", start, stop), self._read("masks", start, stop),
                               None if self.catalog is None else self.catalog[start:stop], source=self.source)
            batch.start, batch.stop = start, stop
            yield batch

    def select(self, split: str | None = None, index=None) -> "BlendSet":
        """The blends of *split* (catalogue column ``split``) and/or at *index* (positions in this set)."""
        positions = self.indices(split)
        if index is not None:
            index = np.asarray(index)
            if index.dtype == bool:
                if index.shape != (len(self),):
                    raise InputError("select(index)", f"boolean index of shape {index.shape} for {len(self)} blends")
                index = np.flatnonzero(index)
            index = np.asarray(index, np.int64)
            if index.size and (index.min() < -len(self) or index.max() >= len(self)):
                raise IndexError(f"blend index out of range for {len(self)} blends")
            index = index % max(len(self), 1)
            positions = np.intersect1d(positions, index) if split is not None else index
        return self._subset(positions)

    def indices(self, split: str | None = None) -> np.ndarray:
        """Positions of the blends of *split* (all blends for ``None``)."""
        if split is None:
            return np.arange(len(self))
        if self.catalog is None or "split" not in self.catalog.colnames:
            raise InputError(self.source, f"has no split column, so no blends of split {split!r}")
        splits = np.char.strip(np.asarray(self.catalog["split"]).astype(str))
        if split not in set(splits.tolist()):
            raise InputError(self.source, f"no blends with split {split!r}",
                             f"present: {', '.join(sorted(set(splits.tolist())))}")
        return np.flatnonzero(splits == split)

    def __getitem__(self, i):
        """Blend *i* with its truth (:class:`~napari_blendphot.blend.assemble.Blend`)."""
        n = len(self)
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"blend index must be an integer, got {type(i).__name__}")
        if not -n <= i < n:
            raise IndexError(f"blend index {i} out of range for {n} blends")
        i = int(i) % n
        row = {} if self.catalog is None else {name: _plain(self.catalog[i][name]) for name in self.catalog.colnames}
        blend, galaxy1, galaxy2, masks = (self._read(name, i, i + 1) for name in ("blends", "galaxy1", "galaxy2", "masks"))
        dy, dx = int(row.get("dy", 0)), int(row.get("dx", 0))
        return Blend(np.array(blend[0]), None if galaxy1 is None else np.array(galaxy1[0]),
                     None if galaxy2 is None else np.array(galaxy2[0]), None if masks is None else np.array(masks[0]),
                     dy, dx, float(row.get("distance", np.hypot(dy, dx))), row)

    # ------------------------------------------------------------------ provenance
    def fingerprint(self) -> dict:
        """What identifies the inputs this set was opened from (empty for sets held in memory)."""
        return {}

    def check_unchanged(self) -> None:
        """Raise :class:`InputError` if the files this set was opened from were replaced or rewritten since."""

    def describe_inputs(self) -> dict:
        """Digests of the inputs for a provenance record (empty for sets held in memory)."""
        return {}


def file_fingerprint(path) -> tuple:
    """(device, inode, size, modification time in ns) of *path*: changes when the file is replaced or rewritten."""
    stat = os.stat(path)
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


@dataclass
class Blend:
    """One blend with its truth.

    Attributes
    ----------
    blend : (128, 128) float32
        ``galaxy1 + galaxy2``.
    galaxy1, galaxy2 : (128, 128) float32
        The central stamp and the shifted (and dmag-scaled) companion stamp.
    masks : (2, 128, 128) uint8
        True masks [central, companion] (0/1), companion shifted.
    dy, dx : int
        Companion shift along rows and columns (pixels).
    distance : float
        ``hypot(dy, dx)`` in pixels.
    row : dict
        Catalogue values of the blend (:data:`CATALOG_COLUMNS` except ``id``
        and ``split`` when made on its own).
    """

    blend: np.ndarray
    galaxy1: np.ndarray
    galaxy2: np.ndarray
    masks: np.ndarray
    dy: int
    dx: int
    distance: float
    row: dict = field(default_factory=dict)

    @property
    def fluxes(self) -> np.ndarray:
        """True fluxes [central, companion] at zero point 25.96 (float64)."""
        return np.array([self.row.get("g1_flux", np.nan), self.row.get("g2_flux", np.nan)], dtype=np.float64)

    @property
    def companion_position(self) -> tuple[int, int]:
        """Pixel [row, column] of the companion's centre."""
        centre = STAMP_SIZE // 2
        return centre + self.dy, centre + self.dx

    def as_catalog(self):
        """This blend's catalogue row as a one-row astropy Table (``id`` 0 when unknown)."""
        from astropy.table import Table

        row = dict(self.row)
        row.setdefault("id", 0)
        row.setdefault("distance", float(self.distance))
        row.setdefault("dy", int(self.dy))
        row.setdefault("dx", int(self.dx))
        return Table(rows=[row], names=list(row))

    def context(self):
        """The :class:`~napari_blendphot.deblend.base.BlendContext` SEP uses to assign its detections."""
        return context_from_catalog(self.as_catalog())


@dataclass
class BlendBatch(BlendSet):
    """Many blends in memory (or memory-mapped): arrays plus, where known, their truth.

    ``blends``: (N, 128, 128) float32; ``galaxy1``, ``galaxy2``: (N, 128, 128)
    float32 or None; ``masks``: (N, 2, 128, 128) uint8 or None; ``catalog``:
    astropy Table with :data:`CATALOG_COLUMNS`, or None for bare blends.  A
    :class:`~napari_blendphot.blend.blend_set.BlendSet`: chunks of every other
    blend set are BlendBatches.
    """

    blends: np.ndarray
    galaxy1: np.ndarray | None = None
    galaxy2: np.ndarray | None = None
    masks: np.ndarray | None = None
    catalog: object = None
    source: str = "in-memory blends"

    def __len__(self) -> int:
        return len(self.blends)

    def _read(self, name: str, start: int, stop: int):
        array = getattr(self, name)
        if array is None:
            return None
        part = array[start:stop]
        return part if type(part) is np.ndarray else np.array(part)

    def _subset(self, positions) -> "BlendBatch":
        positions = np.asarray(positions, np.int64)

        def take(array):
            return None if array is None else np.asarray(array[positions])

        return BlendBatch(take(self.blends), take(self.galaxy1), take(self.galaxy2), take(self.masks),
                          None if self.catalog is None else self.catalog[positions], self.source)


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value
