"""Deblenders wrapping the paper's trained Keras networks.

These classes load a ``.keras`` model when they are created, which imports
Keras (and its backend, TensorFlow by default).  They are registered with
``needs_worker=True``: the inference engine creates them inside its worker
process only, never in a process that runs napari (SPEC §8).  Importing this
module does not import Keras.

Weights
-------
``weights=`` is a shipped model name or a path to a ``.keras`` file, resolved
by :func:`napari_blendphot.models.registry.resolve_weights` into a path and
its JSON manifest; without it the method's default shipped model
(:func:`napari_blendphot.models.registry.default_model`) is used.  Manifest
keys read here (all optional):

``mask_encoding``
    ``"two"``: mask channels [central, companion];
    ``"ogg"``: three channels [overlap, central only, companion only] (SPEC
    §4.7), turned into the two masks ``clip(overlap + central)`` and
    ``clip(overlap + companion)``.  Without this key a model with 3 mask
    channels is read as ``"ogg"``, one with 2 as ``"two"``.
``config``
    Architecture parameters, copied into the output metadata.

The models of :mod:`napari_blendphot.models` take raw stamps (N, 128, 128) and
scale them inside, and return fluxes in the stamps' units, so no scaling
happens here.  A model with a trailing channel axis (N, 128, 128, 1) is fed
one.  Outputs are channels-last Keras tensors; a model may return a single tensor
(fluxes (B, 2) or masks (B, 128, 128, C)), a list/tuple of both, or a dict
with ``fluxes``/``masks`` entries.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_blendphot.constants import STAMP_SIZE
from napari_blendphot.deblend.base import BlendContext, DeblendOutput, ProgressCallback, check_blends
from napari_blendphot.errors import InputError

#: Mask probability above which a pixel belongs to a galaxy (paper's threshold).
MASK_THRESHOLD = 0.5


def _load_weights(method: str, weights):
    """Resolve *weights* (name, path or None) and load the model: (model, path, manifest)."""
    import json

    manifest: dict = {}
    try:
        from napari_blendphot.models import registry as model_registry
    except ImportError:
        model_registry = None
    if weights is None:
        if model_registry is None or not hasattr(model_registry, "default_model"):
            raise InputError(f"method {method!r}", "no weights given and no shipped model is available",
                             f"pass weights=PATH (CLI: --weights {method}=PATH)")
        weights = model_registry.default_model(method)
    if model_registry is not None and hasattr(model_registry, "resolve_weights"):
        path, manifest = model_registry.resolve_weights(weights, expect=method)
        path = Path(path)
        manifest = dict(manifest or {})
    else:  # models.registry not available: accept a plain path (and a sidecar manifest)
        path = Path(os.fspath(weights)).expanduser()
        if not path.is_file():
            raise InputError(path, f"weights file for method {method!r} not found")
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            manifest = json.loads(sidecar.read_text())
    try:
        from napari_blendphot.models.io import load_model
    except ImportError:
        load_model = None
    if load_model is not None:
        from napari_blendphot.models.io import ROLES

        model = load_model(path, safe_mode=True, compile=False, expect=method if method in ROLES else None)
    else:
        model = _load_keras(path, method)
    return model, path, manifest


def _load_keras(path: Path, method: str):
    """Plain ``keras.saving.load_model`` with errors turned into InputError."""
    import keras

    if path.suffix != ".keras":
        raise InputError(path, f"weights for method {method!r} must be a Keras 3 '.keras' file")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # zip/h5/config errors come in many types
        raise InputError(path, f"cannot load as a Keras model: {type(exc).__name__}: {exc}",
                         "is it a .keras file saved by Keras 3?") from None


class KerasDeblender:
    """Base of the network deblenders: weights loading, batched prediction, metadata.

    Parameters
    ----------
    weights : str or path, optional
        Shipped model name or ``.keras`` path (default: the method's shipped model).
    batch_size : int, optional
        Blends per forward pass (default :attr:`default_batch_size`); bounds
        the memory of activations, not the number of blends per call.
    """

    name = "keras"
    label = "Keras network"
    makes_masks = False
    needs_worker = True
    default_batch_size = 32

    def __init__(self, weights=None, batch_size: int | None = None):
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
            raise InputError(f"option batch_size of {self.name}", f"{batch_size!r} is not a positive integer")
        self.batch_size = int(batch_size or self.default_batch_size)
        self.model, self.weights_path, self.manifest = _load_weights(self.name, weights)
        encoding = self.manifest.get("mask_encoding")
        self.mask_encoding = None if encoding is None else str(encoding).lower()
        if self.mask_encoding not in (None, "two", "ogg"):
            raise InputError(self.weights_path, f"manifest mask_encoding {self.mask_encoding!r} unknown",
                             "expected 'two' or 'ogg'")
        self._channel_axis = self._input_layout()
        from napari_blendphot.provenance import sha256_file

        self.weights_sha256 = sha256_file(self.weights_path)

    # ----------------------------------------------------------------- model I/O
    def _input_layout(self) -> bool:
        """Whether the model wants a trailing channel axis; refuses other stamp sizes."""
        shape = tuple(self.model.inputs[0].shape)[1:]
        if shape in ((STAMP_SIZE, STAMP_SIZE, 1), (None, None, 1)):
            return True
        if shape in ((STAMP_SIZE, STAMP_SIZE), (None, None)):
            return False
        raise InputError(self.weights_path, f"model input shape {shape} does not take "
                         f"{STAMP_SIZE}x{STAMP_SIZE} single-band stamps")

    def _forward(self, batch: np.ndarray):
        x = batch
        if self._channel_axis:
            x = x[..., None]
        return self.model.predict_on_batch(x)

    @staticmethod
    def _split_outputs(raw) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(fluxes (B, 2), masks (B, H, W, C)) from whatever structure the model returns."""
        if isinstance(raw, dict):
            items = list(raw.values())
        elif isinstance(raw, (list, tuple)):
            items = list(raw)
        else:
            items = [raw]
        fluxes = masks = None
        for item in items:
            array = np.asarray(item)
            if array.ndim == 2:
                fluxes = array
            elif array.ndim == 4:
                masks = array
        return fluxes, masks

    def _to_two_masks(self, masks: np.ndarray) -> np.ndarray:
        """Network mask channels -> (B, 2, H, W) float32 [central, companion]."""
        if masks.shape[-1] not in (2, 3) and masks.shape[1] in (2, 3):
            masks = np.moveaxis(masks, 1, -1)  # channels-first model
        channels = masks.shape[-1]
        encoding = self.mask_encoding or ("ogg" if channels == 3 else "two")
        if encoding == "ogg":
            if channels != 3:
                raise InputError(self.weights_path, f"manifest says 'ogg' masks but the model gives {channels} channels")
            overlap = masks[..., 0]
            central = np.clip(overlap + masks[..., 1], 0.0, 1.0)
            companion = np.clip(overlap + masks[..., 2], 0.0, 1.0)
            out = np.stack([central, companion], axis=1)
        else:
            if channels != 2:
                raise InputError(self.weights_path, f"model gives {channels} mask channels, expected 2 "
                                 "(or 3 with mask_encoding 'ogg' in the manifest)")
            out = np.moveaxis(masks, -1, 1)
        return np.ascontiguousarray(out, dtype=np.float32)

    def _predict(self, blends: np.ndarray, progress: ProgressCallback | None):
        """Run the model over *blends* in batches: (fluxes (N, 2) or None, masks (N, 2, H, W) or None)."""
        n = len(blends)
        fluxes = masks = None
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            batch_fluxes, batch_masks = self._split_outputs(self._forward(blends[start:stop]))
            if batch_fluxes is not None:
                if fluxes is None:
                    fluxes = np.empty((n, 2), np.float64)
                if batch_fluxes.shape != (stop - start, 2):
                    raise InputError(self.weights_path, f"model gives fluxes of shape {batch_fluxes.shape}, "
                                     f"expected ({stop - start}, 2)")
                fluxes[start:stop] = batch_fluxes
            if batch_masks is not None:
                if masks is None:
                    masks = np.empty((n, 2, STAMP_SIZE, STAMP_SIZE), np.float32)
                masks[start:stop] = self._to_two_masks(batch_masks)
            if progress is not None:
                progress(stop, n)
        return fluxes, masks

    def metadata(self) -> dict:
        import keras

        return {
            "method": self.name,
            "label": self.label,
            "weights": str(self.weights_path),
            "sha256": self.weights_sha256,
            "config": self.manifest.get("config", {}),
            "mask_encoding": self.mask_encoding or "from the number of mask channels",
            "parameters": int(self.model.count_params()),
            "keras_backend": keras.backend.backend(),
            "keras": keras.__version__,
            "batch_size": self.batch_size,
        }

    def warm_up(self) -> None:
        """One forward pass on an empty stamp, so that the first real call is not slowed by tracing."""
        self._forward(np.zeros((1, STAMP_SIZE, STAMP_SIZE), np.float32))

    def _checked(self, blends) -> np.ndarray:
        return check_blends(blends, source=f"blends for {self.name}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weights={str(self.weights_path)!r}, batch_size={self.batch_size})"


class Blend2FluxDeblender(KerasDeblender):
    """blend2flux: a CNN regressing [central, companion] fluxes (no masks)."""

    name = "blend2flux"
    label = "blend2flux (CNN)"
    makes_masks = False
    default_batch_size = 64

    def deblend(self, blends, context: BlendContext | None = None,
                progress: ProgressCallback | None = None) -> DeblendOutput:
        blends = self._checked(blends)
        fluxes, _ = self._predict(blends, progress)
        if fluxes is None:
            raise InputError(self.weights_path, "the model does not output fluxes (B, 2): not a blend2flux model")
        return DeblendOutput(self.name, fluxes, None, {}, self.metadata())


class UNetDeblender(KerasDeblender):
    """U-Net masks; each galaxy's flux is the blend summed over its mask (> 0.5).

    Pixels in both masks count for both galaxies: this is the simple
    segmentation photometry baseline, not a flux-sharing scheme.
    """

    name = "unet"
    label = "U-Net masks + flux in mask"
    makes_masks = True

    def deblend(self, blends, context: BlendContext | None = None,
                progress: ProgressCallback | None = None) -> DeblendOutput:
        blends = self._checked(blends)
        _, masks = self._predict(blends, progress)
        if masks is None:
            raise InputError(self.weights_path, "the model does not output masks (B, H, W, C): not a U-Net")
        inside = masks > MASK_THRESHOLD
        fluxes = np.einsum("nkij,nij->nk", inside, blends.astype(np.float64), dtype=np.float64)
        # An empty mask means the network did not find that galaxy.
        fluxes[~inside.any(axis=(2, 3))] = np.nan
        metadata = self.metadata()
        metadata["flux_rule"] = f"sum of blend pixels with mask > {MASK_THRESHOLD}"
        return DeblendOutput(self.name, fluxes, masks, {}, metadata)


class Blend2Mask2FluxDeblender(KerasDeblender):
    """blend2mask2flux: U-Net masks, then a CNN on [blend, masks] for the fluxes."""

    name = "blend2mask2flux"
    label = "blend2mask2flux (U-Net + CNN)"
    makes_masks = True

    def deblend(self, blends, context: BlendContext | None = None,
                progress: ProgressCallback | None = None) -> DeblendOutput:
        blends = self._checked(blends)
        fluxes, masks = self._predict(blends, progress)
        if fluxes is None or masks is None:
            raise InputError(self.weights_path, "the model must output both fluxes (B, 2) and masks "
                             "(B, H, W, C): not a blend2mask2flux model")
        return DeblendOutput(self.name, fluxes, masks, {}, self.metadata())
