"""The one interface every deblending method implements.

A method takes a batch of blends (N, 128, 128) and returns a
:class:`DeblendOutput`: per blend the fluxes of the central and the companion
galaxy (in the stamp's units; NaN where the method found no such galaxy), the
two masks where the method makes them, and per-blend extra columns (SEP's
``detection`` case, for instance).  Methods are registered by name in
:mod:`napari_blendphot.deblend.registry`; the name becomes the column suffix
of the results table (``g1_flux_<name>``), so a new method shows up in the
CLI, the reports and the GUI without further code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from napari_blendphot.constants import STAMP_SIZE
from napari_blendphot.errors import InputError

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)``; may raise to cancel."""


@dataclass
class BlendContext:
    """What is known about the blends besides their pixels (all optional).

    ``companion_shift`` is (N, 2) integer [dy, dx] of the companion relative to
    the stamp centre; ``central_radius`` (N,) is the central galaxy's effective
    radius in pixels.  SEP uses them to assign its detections the paper's way;
    without them it falls back to distance and brightness and says so.
    """

    companion_shift: np.ndarray | None = None
    central_radius: np.ndarray | None = None

    def subset(self, index) -> "BlendContext":
        return BlendContext(
            None if self.companion_shift is None else np.asarray(self.companion_shift)[index],
            None if self.central_radius is None else np.asarray(self.central_radius)[index],
        )


@dataclass
class DeblendOutput:
    """A method's results for N blends.

    fluxes : (N, 2) float64, [central, companion]; NaN = not detected.
    masks : (N, 2, 128, 128) float32 in [0, 1] (probabilities or 0/1), or None.
    extra : per-blend arrays of length N (e.g. ``{"detection": int8}``).
    metadata : method name, configuration, weights digest, notes.
    flux_errors : (N, 2) float64 1-sigma flux uncertainties [central, companion]
        in the stamp's units, or None for a method that gives none.  Finite and
        positive where the flux is measured, NaN where it is not (never inf).
    iou : (N, 2) float64 IoU of the masks with the true masks, or None: set by
        the inference engine when it was given the true masks (it computes
        the IoU where the masks are, and may then drop the masks).
    """

    method: str
    fluxes: np.ndarray
    masks: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    flux_errors: np.ndarray | None = None
    iou: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.fluxes)

    def __getstate__(self) -> dict:
        # Pickled between processes (the inference worker, SEP's pool): 0/1 masks travel bit-packed.
        state = dict(self.__dict__)
        state["masks"] = pack_masks(self.masks)
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        state.setdefault("iou", None)
        state["masks"] = unpack_masks(state["masks"])
        self.__dict__.update(state)

    @staticmethod
    def concatenate(parts: list["DeblendOutput"]) -> "DeblendOutput":
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]
        masks = None if first.masks is None else np.concatenate([p.masks for p in parts])
        extra = {k: np.concatenate([p.extra[k] for p in parts]) for k in first.extra}
        errors = None if first.flux_errors is None else np.concatenate([p.flux_errors for p in parts])
        iou = None if getattr(first, "iou", None) is None else np.concatenate([p.iou for p in parts])
        return DeblendOutput(first.method, np.concatenate([p.fluxes for p in parts]), masks, extra,
                             dict(first.metadata), errors, iou)


def pack_masks(masks):
    """Masks for the trip to another process: 0/1 masks bit-packed (32x smaller), others as they are.

    Returns None, ``("bits", shape, packed bytes)`` or ``("raw", shape, array)``;
    :func:`unpack_masks` is the inverse.  The one codec of the package: the
    inference worker and SEP's pool both send masks through it.
    """
    if masks is None:
        return None
    masks = np.asarray(masks)
    if masks.dtype == np.float32:
        # Masks are mostly zeros: only the nonzero pixels need the test for 1.
        nonzero = masks != 0
        if np.all(masks[nonzero] == 1):
            return ("bits", masks.shape, np.packbits(nonzero, axis=None))
    return ("raw", masks.shape, masks)


def unpack_masks(packed, out: np.ndarray | None = None):
    """Inverse of :func:`pack_masks`; with *out*, written into it (cast to its dtype) and returned."""
    if packed is None:
        return None
    kind, shape, payload = packed
    if kind == "bits":
        values = np.unpackbits(payload, count=int(np.prod(shape))).reshape(shape)
        if out is None:
            return values.astype(np.float32)
    else:
        values = payload
        if out is None:
            return values
    out[...] = values
    return out


@runtime_checkable
class Deblender(Protocol):
    """A deblending method.

    Attributes
    ----------
    name : str
        Short identifier, used as the results-table column suffix.
    label : str
        Human-readable name for reports and the GUI.
    makes_masks : bool
        Whether :meth:`deblend` returns masks.
    needs_worker : bool
        True for methods that import Keras/TensorFlow: they run only in the
        inference worker process, never in the napari process.
    """

    name: str
    label: str
    makes_masks: bool
    needs_worker: bool

    def deblend(self, blends: np.ndarray, context: BlendContext | None = None,
                progress: ProgressCallback | None = None) -> DeblendOutput:
        ...


def check_blends(blends, source: str = "blends", allow_single: bool = True) -> np.ndarray:
    """Validate and normalise a batch of blends to native float32 (N, 128, 128).

    A single 2-D stamp becomes a batch of one; float64 and big-endian input is
    converted; wrong shapes, empty batches and non-finite pixels are refused.
    """
    from napari_blendphot.tables import as_native

    array = as_native(np.asarray(blends))
    if array.dtype.kind not in "fiu":
        raise InputError(source, f"dtype {array.dtype} is not numeric")
    if array.ndim == 2 and allow_single:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (STAMP_SIZE, STAMP_SIZE):
        raise InputError(source, f"shape {array.shape}, expected (N, {STAMP_SIZE}, {STAMP_SIZE}) or a single "
                         f"({STAMP_SIZE}, {STAMP_SIZE}) stamp")
    if array.shape[0] == 0:
        raise InputError(source, "the batch is empty")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not array.flags.writeable:
        # Read-only input (a memory-mapped blend dataset): sep needs a writable
        # buffer and fails on every blend otherwise.
        array = array.copy()
    # A sum is finite when every pixel is (NaN and inf propagate); only stamps whose sum is not
    # (a non-finite pixel, or finite pixels summing past float32's range) are checked pixel by pixel.
    with np.errstate(over="ignore", invalid="ignore"):
        finite = np.isfinite(array.reshape(len(array), -1).sum(axis=1))
    if not finite.all():
        suspects = np.flatnonzero(~finite)
        finite[suspects] = np.isfinite(array[suspects]).reshape(len(suspects), -1).all(axis=1)
    if not finite.all():
        raise InputError(source, f"{int((~finite).sum())} blend(s) contain NaN or infinite pixels "
                         f"(first: index {int(np.flatnonzero(~finite)[0])})")
    return array
