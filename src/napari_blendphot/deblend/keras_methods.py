"""Deblenders wrapping the paper's trained Keras networks.

These classes load a ``.keras`` model when they are created, which imports
Keras (and its backend, TensorFlow by default).  They are registered with
``needs_worker=True``: the inference engine creates them inside its worker
process only, never in a process that runs napari (SPEC §8).  Importing this
module does not import Keras.

Weights
-------
``weights=`` is a shipped model name, a manifest ``.json`` or a path to a
``.keras`` file, resolved by :func:`napari_blendphot.models.manifests.resolve_weights`
(which checks the sha256 of files that have a manifest); without it the
method's default shipped model (:func:`~napari_blendphot.models.manifests.default_model`)
is used.  Models load through :func:`napari_blendphot.models.io.load_model`
in safe mode with the role checked (a U-Net file given to blend2flux is refused).

Masks: the U-Net's channels are [central, companion] ("two") or [overlap,
central only, companion only] ("ogg", SPEC §4.7), taken from the manifest's
``architecture["encoding"]`` or, without a manifest, from the number of
channels.  "ogg" becomes the two masks ``max(central, overlap)`` and
``max(companion, overlap)`` (:func:`napari_blendphot.models.networks.decode_masks`,
shared with training).

The models of :mod:`napari_blendphot.models` take raw stamps (N, 128, 128),
scale them inside and return fluxes in the stamps' units, so no scaling
happens here.  A model with a trailing channel axis (N, 128, 128, 1) is fed
one.  Outputs may be a single tensor (fluxes (B, 2) or masks (B, H, W, C)), a
list/tuple of both, or a dict (``{"masks", "fluxes"}``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_blendphot.constants import STAMP_SIZE
from napari_blendphot.deblend.base import BlendContext, DeblendOutput, ProgressCallback, check_blends
from napari_blendphot.errors import InputError

#: Mask probability above which a pixel belongs to a galaxy (paper's threshold).
MASK_THRESHOLD = 0.5


def _load_weights(method: str, network: str | None, weights):
    """Resolve *weights* (name, path or None) and load the model: (model, path, manifest dict).

    *network* is the architecture the file must hold (and whose shipped model
    is the default), or None for a method without a shipped model.
    """
    import dataclasses

    from napari_blendphot.models.io import load_model
    from napari_blendphot.models.manifests import default_model, resolve_weights

    role = network
    if weights is None:
        shipped = default_model(role) if role else None
        if shipped is None:
            raise InputError(f"method {method!r}", "no weights given and no shipped model is installed for it",
                             f"pass weights=PATH, or --weights {method}=PATH on the command line")
        weights = shipped.name
    path, manifest = resolve_weights(weights, expect=role)
    record = {}
    if manifest is not None:
        record = {key: value for key, value in dataclasses.asdict(manifest).items() if key != "manifest_path"}
    model = load_model(path, safe_mode=True, compile=False, expect=role)
    return model, Path(path), record


class KerasDeblender:
    """Base of the network deblenders: weights loading, batched prediction, metadata.

    Parameters
    ----------
    weights : str or path, optional
        Shipped model name or ``.keras`` path (default: the method's shipped model).
    batch_size : int, optional
        Blends per forward pass (default :attr:`default_batch_size`); bounds
        the memory of activations, not the number of blends per call.
    precision : {"float32", "bfloat16", "auto"}
        Compute precision (:mod:`napari_blendphot.models.precision`): float32
        (default, the precision of the published test metrics), bfloat16
        (weights stay float32; about twice as fast on CPUs with native
        bfloat16, fluxes within a few thousandths of a magnitude), or auto
        (bfloat16 where the CPU has it natively).  The precision used is in
        :meth:`metadata`.
    """

    name = "keras"
    label = "Keras network"
    makes_masks = False
    # Capabilities (napari_blendphot.deblend.registry): inherited by every Keras method,
    # third-party subclasses included, so that the GUI offers a weights file and a precision.
    needs_worker = True
    uses_keras = True
    accepts_weights = True
    precisions = ("float32", "bfloat16", "auto")
    wants_gpu = True
    #: Architecture of the weights (whose shipped model is the default); None: the user chooses a file.
    network = None
    default_batch_size = 32

    def __init__(self, weights=None, batch_size: int | None = None, precision: str = "float32"):
        from napari_blendphot.models.precision import resolve_precision, set_compute_precision

        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
            raise InputError(f"option batch_size of {self.name}", f"{batch_size!r} is not a positive integer")
        self.batch_size = int(batch_size or self.default_batch_size)
        self.requested_precision = precision
        self.precision = resolve_precision(precision, source=f"option precision of {self.name}")
        self.model, self.weights_path, self.manifest = _load_weights(self.name, self.network, weights)
        if self.precision != "float32":
            set_compute_precision(self.model, self.precision)
        encoding = (self.manifest.get("architecture") or {}).get("encoding")
        self.mask_encoding = None if encoding is None else str(encoding).lower()
        if self.mask_encoding not in (None, "two", "ogg"):
            raise InputError(self.weights_path, f"manifest architecture encoding {self.mask_encoding!r} unknown",
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
    def _split_outputs(raw) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """(fluxes (B, 2), masks (B, H, W, C), flux uncertainty (B, 4) or None) from the model's outputs.

        Dict outputs are read by name; unnamed ones by shape: (B, 2) fluxes,
        (B, 4) ``[ln f_c, ln f_k, ln sigma_c, ln sigma_k]``, 4-D masks.
        """
        if isinstance(raw, dict):
            named = {key: np.asarray(value) for key, value in raw.items()}
            if {"fluxes", "masks", "flux_uncertainty"} & set(named):
                return named.get("fluxes"), named.get("masks"), named.get("flux_uncertainty")
            items = list(named.values())
        elif isinstance(raw, (list, tuple)):
            items = list(raw)
        else:
            items = [raw]
        fluxes = masks = uncertainty = None
        for item in items:
            array = np.asarray(item)
            if array.ndim == 2 and array.shape[1] == 4:
                uncertainty = array
            elif array.ndim == 2:
                fluxes = array
            elif array.ndim == 4:
                masks = array
        return fluxes, masks, uncertainty

    def _to_two_masks(self, masks: np.ndarray) -> np.ndarray:
        """Network mask channels -> (B, 2, H, W) float32 [central, companion].

        Decoding is :func:`napari_blendphot.models.networks.decode_masks`, the
        one the training code uses, so metrics agree between the two.
        """
        from napari_blendphot.models.networks import decode_masks

        if masks.shape[-1] not in (2, 3) and masks.shape[1] in (2, 3):
            masks = np.moveaxis(masks, 1, -1)  # channels-first model
        channels = masks.shape[-1]
        encoding = self.mask_encoding or ("ogg" if channels == 3 else "two")
        if channels != (3 if encoding == "ogg" else 2):
            raise InputError(self.weights_path, f"the model gives {channels} mask channels, but encoding "
                             f"{encoding!r} has {3 if encoding == 'ogg' else 2}")
        return np.ascontiguousarray(decode_masks(masks, encoding), dtype=np.float32)

    def _predict(self, blends: np.ndarray, progress: ProgressCallback | None):
        """Run the model over *blends* in batches.

        Returns (fluxes (N, 2) or None, masks (N, 2, H, W) or None, relative
        1-sigma flux errors (N, 2) or None): the last from a model with the
        flux-uncertainty output, ``exp(ln sigma)`` before any calibration.
        """
        n = len(blends)
        fluxes = masks = relative = None
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            batch_fluxes, batch_masks, batch_sigma = self._split_outputs(self._forward(blends[start:stop]))
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
            if batch_sigma is not None:
                if relative is None:
                    relative = np.empty((n, 2), np.float64)
                relative[start:stop] = np.exp(np.asarray(batch_sigma, np.float64)[:, 2:4])
            if progress is not None:
                progress(stop, n)
        return fluxes, masks, relative

    def _flux_errors(self, fluxes, relative) -> np.ndarray | None:
        """Calibrated 1-sigma flux errors in the stamp's units (NaN where no flux), from relative sigmas."""
        if relative is None or fluxes is None:
            return None
        return self._calibrated(fluxes, np.abs(fluxes) * relative)

    def _calibrated(self, fluxes, raw) -> np.ndarray:
        """``sqrt((a raw)^2 + (b |flux|)^2)`` per galaxy role with the manifest's ``(a, b)`` (docs/uncertainty.md).

        Without a calibration in the manifest the raw errors are returned.
        Never infinite or negative: NaN where the flux is not measured.
        """
        parameters = (self.manifest.get("flux_error_calibration") or {}).get("parameters")
        errors = np.array(raw, dtype=np.float64)
        if parameters:
            for slot, role in enumerate(("central", "companion")):
                p = parameters.get(role) or {}
                try:
                    a, b = float(p.get("a", 1.0)), float(p.get("b", 0.0))
                except (TypeError, ValueError):
                    raise InputError(self.weights_path, f"manifest flux_error_calibration of the {role}: a and b "
                                     "must be numbers") from None
                if not (np.isfinite(a) and np.isfinite(b) and a >= 0 and b >= 0):
                    raise InputError(self.weights_path, f"manifest flux_error_calibration of the {role}: a and b "
                                     "must be finite and not negative")
                errors[:, slot] = np.sqrt((a * errors[:, slot]) ** 2 + (b * np.abs(fluxes[:, slot])) ** 2)
        errors[~(np.isfinite(errors) & np.isfinite(fluxes))] = np.nan
        return errors

    def metadata(self) -> dict:
        import keras

        record = self._metadata_record(keras)
        calibration = self.manifest.get("flux_error_calibration") or {}
        parameters = calibration.get("parameters") or {}
        k95 = {role: float(p["k95"]) for role, p in parameters.items() if isinstance(p, dict) and "k95" in p}
        if k95:  # the calibrated 95% interval is flux +- k95 x flux_err
            record["flux_error_k95"] = k95
        if calibration:
            record["flux_error_calibration"] = {"model": calibration.get("model", ""),
                                                "fitted_on": (calibration.get("provenance") or {}).get("fitted_on")}
        return record

    def _metadata_record(self, keras) -> dict:
        return {
            "method": self.name,
            "label": self.label,
            "weights": str(self.weights_path),
            "sha256": self.weights_sha256,
            "model_name": self.manifest.get("name", self.weights_path.stem),
            "config": self.manifest.get("architecture", {}),
            "mask_encoding": self.mask_encoding or "from the number of mask channels",
            "parameters": int(self.model.count_params()),
            "keras_backend": keras.backend.backend(),
            "keras": keras.__version__,
            "batch_size": self.batch_size,
            "precision": self.precision,
            "precision_requested": self.requested_precision,
        }

    def warm_up(self) -> None:
        """One forward pass on an empty stamp, so that the first real call is not slowed by tracing."""
        self._forward(np.zeros((1, STAMP_SIZE, STAMP_SIZE), np.float32))

    def _checked(self, blends) -> np.ndarray:
        return check_blends(blends, source=f"blends for {self.name}")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(weights={str(self.weights_path)!r}, batch_size={self.batch_size}, "
                f"precision={self.precision!r})")


class Blend2FluxDeblender(KerasDeblender):
    """blend2flux: a CNN regressing [central, companion] fluxes (no masks)."""

    name = "blend2flux"
    label = "blend2flux (CNN)"
    makes_masks = False
    network = "blend2flux"
    default_batch_size = 64

    def deblend(self, blends, context: BlendContext | None = None,
                progress: ProgressCallback | None = None) -> DeblendOutput:
        blends = self._checked(blends)
        fluxes, _, relative = self._predict(blends, progress)
        if fluxes is None:
            raise InputError(self.weights_path, "the model does not output fluxes (B, 2): not a blend2flux model")
        return DeblendOutput(self.name, fluxes, None, {}, self.metadata(), self._flux_errors(fluxes, relative))


class UNetDeblender(KerasDeblender):
    """U-Net masks; each galaxy's flux is the blend summed over its mask (> 0.5).

    Pixels in both masks count for both galaxies: this is the simple
    segmentation photometry baseline, not a flux-sharing scheme.
    """

    name = "unet"
    label = "U-Net masks + flux in mask"
    makes_masks = True
    network = "unet"

    def deblend(self, blends, context: BlendContext | None = None,
                progress: ProgressCallback | None = None) -> DeblendOutput:
        blends = self._checked(blends)
        _, masks, _ = self._predict(blends, progress)
        if masks is None:
            raise InputError(self.weights_path, "the model does not output masks (B, H, W, C): not a U-Net")
        inside = masks > MASK_THRESHOLD
        pixels = blends.astype(np.float64)
        fluxes = np.einsum("nkij,nij->nk", inside, pixels, dtype=np.float64)
        # An empty mask means the network did not find that galaxy.
        fluxes[~inside.any(axis=(2, 3))] = np.nan
        metadata = self.metadata()
        metadata["flux_rule"] = f"sum of blend pixels with mask > {MASK_THRESHOLD}"
        errors = self._mask_flux_errors(pixels, masks, inside, fluxes)
        metadata["flux_error_rule"] = ("raw = sqrt(npix rms^2 + ((F(p>0.25) - F(p>0.75)) / 2)^2), rms from the pixels "
                                       "outside both masks; calibrated as sqrt((a raw)^2 + (b F)^2) with the "
                                       "manifest's flux_error_calibration (docs/uncertainty.md)")
        return DeblendOutput(self.name, fluxes, masks, {}, metadata, errors)

    def _mask_flux_errors(self, pixels, masks, inside, fluxes) -> np.ndarray:
        """Errors of mask-sum fluxes: the noise in the mask and how much the flux depends on the mask's edge."""
        import warnings

        from astropy.stats import mad_std

        background = (masks < 0.25).all(axis=1)
        values = np.where(background, pixels, np.nan).reshape(len(pixels), -1)
        with warnings.catch_warnings():  # a blend with no background pixel left gives NaN: rms 0 below
            warnings.simplefilter("ignore", RuntimeWarning)
            rms = np.asarray(mad_std(values, axis=1, ignore_nan=True), np.float64)
        rms = np.where(np.isfinite(rms), rms, 0.0)
        npix = inside.sum(axis=(2, 3))
        wide = np.einsum("nkij,nij->nk", masks > 0.25, pixels, dtype=np.float64)
        tight = np.einsum("nkij,nij->nk", masks > 0.75, pixels, dtype=np.float64)
        raw = np.sqrt(npix * rms[:, None] ** 2 + (0.5 * (wide - tight)) ** 2)
        errors = self._calibrated(fluxes, raw)
        # A zero error (empty background, exact mask) is never claimed: one pixel's noise at least.
        floor = np.maximum(rms, 1e-12)[:, None]
        return np.where(np.isfinite(errors), np.maximum(errors, floor), np.nan)


class Blend2Mask2FluxDeblender(KerasDeblender):
    """blend2mask2flux: U-Net masks, then a CNN on [blend, masks] for the fluxes."""

    name = "blend2mask2flux"
    label = "blend2mask2flux (U-Net + CNN)"
    makes_masks = True
    network = "blend2mask2flux"

    def deblend(self, blends, context: BlendContext | None = None,
                progress: ProgressCallback | None = None) -> DeblendOutput:
        blends = self._checked(blends)
        fluxes, masks, relative = self._predict(blends, progress)
        if fluxes is None or masks is None:
            raise InputError(self.weights_path, "the model must output both fluxes (B, 2) and masks "
                             "(B, H, W, C): not a blend2mask2flux model")
        return DeblendOutput(self.name, fluxes, masks, {}, self.metadata(), self._flux_errors(fluxes, relative))
