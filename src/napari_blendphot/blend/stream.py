"""Blends made on the fly for training: new pairs and shifts every epoch.

The paper trained on a fixed set of 25,000 blends; drawing fresh pairs every
epoch from the same (train) galaxies is a cheap augmentation that a fixed
dataset cannot give.  This module needs numpy only (the GPU machine has no
astropy): it works on plain arrays, and :meth:`BlendStream.from_sample` or
:func:`stream_arrays` extract them from a :class:`GalaxySample` where astropy
is available.

Determinism: :meth:`BlendStream.epoch` draws the *n* pairs of epoch *e* from
a generator seeded by ``(seed, e)``, so blend *i* of epoch *e* is the same for
the same ``(seed, e, n, i)`` whatever the batch size; :meth:`BlendStream.batch`
uses the generator it is given.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from napari_blendphot.blend.assemble import assemble_pairs
from napari_blendphot.blend.pairing import MAX_DMAG, CompanionTable, Pairs, check_rule, draw_pairs
from napari_blendphot.constants import STAMP_SIZE, ZERO_POINT
from napari_blendphot.errors import InputError

#: Arrays a stream is built from (what :func:`stream_arrays` returns).
STREAM_KEYS = ("images", "masks", "mags", "radii", "ids", "fluxes")


class TrainingBatch(NamedTuple):
    """One batch of training examples.

    blends : (B, 128, 128) float32
    fluxes : (B, 2) float32 true isolated fluxes [central, companion]
    masks : (B, 2, 128, 128) uint8 [central, companion]
    """

    blends: np.ndarray
    fluxes: np.ndarray
    masks: np.ndarray


def stream_arrays(sample) -> dict:
    """The plain arrays of a :class:`GalaxySample` a :class:`BlendStream` needs.

    Returns ``{"images", "masks", "mags", "radii", "ids", "fluxes"}``: float32
    stamps, uint8 central masks (``seg == seg[64, 64]``), float64 magnitudes
    and radii, int64 ids and float64 fluxes at zero point 25.96.  Save them
    with ``numpy.savez`` to carry a sample to a machine without astropy.
    """
    from napari_blendphot.sample.galaxy_sample import central_segment, mag_to_flux

    mags = np.asarray(sample.catalog["mag"], np.float64)
    return {
        "images": np.ascontiguousarray(sample.images, np.float32),
        "masks": central_segment(sample.segmaps).astype(np.uint8),
        "mags": mags,
        "radii": np.asarray(sample.catalog["radius"], np.float64),
        "ids": np.asarray(sample.catalog["id"], np.int64),
        "fluxes": mag_to_flux(mags, ZERO_POINT),
    }


class BlendStream:
    """An endless source of freshly drawn blends of one set of galaxies.

    Parameters
    ----------
    sample : GalaxySample or mapping
        The (train) galaxies: a sample, or a mapping with the arrays of
        :func:`stream_arrays` (``images``, ``masks``, ``mags``, ``radii``;
        ``ids`` and ``fluxes`` optional, fluxes default to the magnitudes at
        zero point 25.96).
    seed : int
        Seed of :meth:`epoch`.
    rule : {"published", "paper-text"}
        Shift rule (:mod:`napari_blendphot.blend.pairing`).
    max_dmag : float
        Largest |mag_c - mag_k| of a pair.
    """

    def __init__(self, sample, seed: int = 0, rule: str = "published", max_dmag: float = MAX_DMAG):
        arrays = stream_arrays(sample) if hasattr(sample, "catalog") else dict(sample)
        missing = [k for k in ("images", "masks", "mags", "radii") if k not in arrays]
        if missing:
            raise InputError("BlendStream(sample)", f"missing array(s) {', '.join(missing)}",
                             "pass a GalaxySample or the dict of stream_arrays()")
        images = np.ascontiguousarray(arrays["images"], np.float32)
        masks = np.asarray(arrays["masks"])
        if images.ndim != 3 or images.shape[1:] != (STAMP_SIZE, STAMP_SIZE):
            raise InputError("BlendStream(images)", f"shape {images.shape}, expected (N, 128, 128)")
        if masks.shape != images.shape:
            raise InputError("BlendStream(masks)", f"shape {masks.shape}, images {images.shape}")
        if masks.dtype != np.uint8:
            masks = (masks != 0).astype(np.uint8)
        n = len(images)
        mags = np.asarray(arrays["mags"], np.float64)
        radii = np.asarray(arrays["radii"], np.float64)
        for name, values in (("mags", mags), ("radii", radii)):
            if values.shape != (n,):
                raise InputError(f"BlendStream({name})", f"shape {values.shape}, expected ({n},)")
        fluxes = arrays.get("fluxes")
        fluxes = 10.0 ** (-0.4 * (mags - ZERO_POINT)) if fluxes is None else np.asarray(fluxes, np.float64)
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InputError("seed", f"must be a non-negative integer, got {seed!r}")
        self.images = images
        self.masks = masks
        self.mags = mags
        self.radii = radii
        self.fluxes = fluxes
        self.ids = np.asarray(arrays["ids"], np.int64) if arrays.get("ids") is not None else np.arange(n)
        self.seed = int(seed)
        self.rule = check_rule(rule)
        self.max_dmag = float(max_dmag)
        self._companions = CompanionTable(mags, max_dmag)

    @classmethod
    def from_sample(cls, sample, seed: int = 0, rule: str = "published", max_dmag: float = MAX_DMAG):
        return cls(stream_arrays(sample), seed, rule, max_dmag)

    def __len__(self) -> int:
        """Number of galaxies the stream draws from."""
        return len(self.images)

    def draw(self, n: int, rng) -> Pairs:
        """*n* pairs and shifts drawn with *rng* (int seed or Generator)."""
        return draw_pairs(self.mags, self.radii, n, rng, self.rule, self.max_dmag, companions=self._companions)

    def assemble(self, pairs: Pairs) -> TrainingBatch:
        """Blends, true fluxes and masks of *pairs*."""
        out = assemble_pairs(self.images, self.masks, pairs.central, pairs.companion, pairs.dy, pairs.dx,
                             galaxy1=False, galaxy2=False)
        fluxes = np.column_stack([self.fluxes[pairs.central], self.fluxes[pairs.companion]]).astype(np.float32)
        return TrainingBatch(out["blends"], fluxes, out["masks"])

    def batch(self, size: int, rng) -> TrainingBatch:
        """One batch of *size* new blends drawn with *rng*."""
        return self.assemble(self.draw(size, rng))

    def epoch_pairs(self, epoch: int, n: int) -> Pairs:
        """The *n* pairs of epoch *epoch* (fixed by ``(seed, epoch, n)``)."""
        if isinstance(epoch, (bool, np.bool_)) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise InputError("epoch", f"must be a non-negative integer, got {epoch!r}")
        return self.draw(n, np.random.default_rng([self.seed, int(epoch)]))

    def epoch(self, epoch: int, n: int, batch_size: int = 32):
        """Yield the blends of epoch *epoch* as :class:`TrainingBatch` es of *batch_size*.

        The pairs are drawn once for the epoch (cheap: index arrays) and
        assembled batch by batch, so memory stays at one batch.
        """
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InputError("batch_size", f"must be a positive integer, got {batch_size!r}")
        pairs = self.epoch_pairs(epoch, n)
        for start in range(0, n, batch_size):
            yield self.assemble(pairs.take(slice(start, start + batch_size)))
