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
is used.  Models load through :func:`napari_blendphot.models.manifests.load_manifest_model`
(:func:`napari_blendphot.models.io.load_model`) in safe mode with the role
checked (a U-Net file given to blend2flux is refused); an ensemble whose
manifest lists shared members (another shipped model's file holds them) is
put back together from those files, and its metadata lists them.

Masks: the U-Net's channels are [central, companion] ("two") or [overlap,
central only, companion only] ("ogg", SPEC §4.7), taken from the manifest's
``architecture["encoding"]`` or, without a manifest, from the number of
channels.  "ogg" becomes the two masks ``max(central, overlap)`` and
``max(companion, overlap)`` (:func:`napari_blendphot.models.networks.decode_masks`,
shared with training).

Shared U-Net pass: blend2mask2flux computes the U-Net's masks on its way to
the fluxes.  It keeps the last ones it computed (one batch of blends, in this
process); the ``unet`` method, asked next for the same blends with a U-Net of
the same fingerprint (:func:`napari_blendphot.models.networks.unet_fingerprint`),
the same precision and backend, takes them instead of running the U-Net
again (the registry's ``reuses_masks_of``; callers order the methods with
:func:`~napari_blendphot.deblend.registry.execution_order`).  The shipped
``unet`` and blend2mask2flux hold the same U-Net, so running both costs one
U-Net pass.

Test-time symmetries: ``tta=2, 4 or 8`` runs the network on the blend turned
and mirrored about the central galaxy's pixel (64, 64) (:func:`square_symmetry`;
the networks were trained on blends of galaxies in all 8 orientations),
turns the masks back and averages fluxes, relative flux errors and mask
probabilities.  It costs ``tta`` forward passes; on held-out mock v2 blends
blend2flux's flux MAPE goes from 5.86% to 5.45% with 8 (docs/results.md).

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


def _load_weights(method: str, network: str | None, weights, default_name: str | None = None):
    """Resolve *weights* (name, path or None) and load the model: (model, path, manifest dict).

    *network* is the architecture the file must hold (and whose shipped model
    is the default), or None for a method without a shipped model;
    *default_name* a shipped model to use instead of the network's default.
    """
    import dataclasses

    from napari_blendphot.models.manifests import default_model, load_manifest_model, resolve_weights, shipped_model

    role = network
    if weights is None:
        if default_name is not None:
            shipped = shipped_model(default_name)
        else:
            shipped = default_model(role) if role else None
        if shipped is None:
            raise InputError(f"method {method!r}", "no weights given and no shipped model is installed for it",
                             f"pass weights=PATH, or --weights {method}=PATH on the command line")
        weights = shipped.name
    path, manifest = resolve_weights(weights, expect=role)
    record = {}
    if manifest is not None:
        record = {key: value for key, value in dataclasses.asdict(manifest).items() if key != "manifest_path"}
    # An ensemble that shares members with other shipped models is put back together from their files.
    model = load_manifest_model(path, manifest, expect=role)
    return model, Path(path), record


#: astropy.stats.mad_std's factor: the standard deviation of a Gaussian from its median absolute deviation.
MAD_TO_STD = 1.482602218505602


def background_mad_std(pixels: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Per stamp, ``astropy.stats.mad_std`` of the pixels where *background* is true (NaN where there are none).

    The same numbers as ``mad_std(np.where(background, pixels, nan), axis=1,
    ignore_nan=True)`` (the same medians of the same values), ~10x faster:
    NaN-aware medians go row by row through Python, these take each row's
    background pixels once and use two O(n) partitions.
    """
    flat_pixels = pixels.reshape(len(pixels), -1)
    flat_background = background.reshape(len(pixels), -1)
    rms = np.full(len(pixels), np.nan)
    for row in range(len(pixels)):
        values = flat_pixels[row][flat_background[row]]
        if values.size:
            centre = _median(values)
            deviations = np.abs(values - centre, out=values)
            rms[row] = _median(deviations) * MAD_TO_STD
    return rms


def _median(values: np.ndarray) -> float:
    """``np.median`` of finite 1-D *values* (the same number: the mean of the middle pair), partitioning in place."""
    n = values.size
    low, high = (n - 1) // 2, n // 2
    values.partition([low, high] if low != high else low)
    if low == high:
        return values[low] / 1.0
    return np.mean(values[low:high + 1])


#: The masks of blend2mask2flux's last U-Net pass in this process: ``{"key", "blends", "masks"}``
#: (one batch: the blends are kept to compare, not trusted by identity, since a caller may edit them in place).
_last_unet_pass: dict = {}


#: ``tta`` values and the symmetries (:func:`square_symmetry` codes) each one averages over.
TTA_CODES = {1: (0,), 2: (0, 4), 4: (0, 2, 4, 6), 8: tuple(range(8))}


def check_tta(value, source: str) -> int:
    """*value* as a number of test-time symmetries (a key of :data:`TTA_CODES`), or a one-line InputError."""
    if isinstance(value, bool) or value not in TTA_CODES:
        raise InputError(source, f"{value!r} is not one of {', '.join(map(str, TTA_CODES))}")
    return int(value)


def square_symmetry(images: np.ndarray, code: int, inverse: bool = False) -> np.ndarray:
    """One of the 8 symmetries of the square, about pixel (64, 64), on the last two axes of *images*.

    *code* 0-3: that many quarter turns; 4-7: the same followed by a
    transpose.  The centre pixel stays where it is (the central galaxy stays
    central): the stamp is treated as periodic about it, so only its outer
    row and column wrap (noise).  ``inverse=True`` undoes *code*.
    """
    if code not in range(8):
        raise ValueError(f"symmetry code must be 0-7, got {code!r}")
    size = images.shape[-1]
    if images.shape[-2] != size:
        raise ValueError(f"square images needed, got {images.shape[-2:]}")
    centre, turned_index = size // 2, (-np.arange(size)) % size
    out = np.roll(images, (-centre, -centre), axis=(-2, -1))
    turns, transpose = code % 4, code >= 4
    if inverse:
        turns = (4 - turns) % 4
        if transpose:
            out = np.swapaxes(out, -1, -2)
    for _ in range(turns):  # (y, x) -> (x, -y) about the origin of the periodic stamp
        out = np.swapaxes(out, -1, -2)[..., turned_index]
    if transpose and not inverse:
        out = np.swapaxes(out, -1, -2)
    return np.ascontiguousarray(np.roll(out, (centre, centre), axis=(-2, -1)))


def _padded(batch: np.ndarray, rows: int) -> np.ndarray:
    """*batch* with its last row repeated up to *rows* rows (real pixels: no NaN in the padding rows)."""
    if rows <= len(batch):
        return batch
    return np.concatenate([batch, np.repeat(batch[-1:], rows - len(batch), axis=0)])


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
    tta : {1, 2, 4, 8}
        Test-time symmetries averaged over (module docstring); 1 (default) runs
        the network once.
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
    tta = True  # capability (registry): takes tta=1, 2, 4 or 8; the instance attribute holds the number
    #: Architecture of the weights (whose shipped model is the default); None: the user chooses a file.
    network = None
    #: A shipped model to load without ``weights=`` instead of the network's default (None: that default).
    default_weights = None
    #: Blends per forward pass on a CPU.  64 rather than 32: the U-Net's float32 pass is 7% faster
    #: per blend (12.6 -> 11.6 ms, 2 cores; 128 gains 1.5% more for twice the activations' memory).
    default_batch_size = 64

    #: Blends per forward pass on a GPU: XLA's convolutions fill an H100/H200 from ~1,000 blends on.
    gpu_batch_size = 1024

    def __init__(self, weights=None, batch_size: int | None = None, precision: str | None = None,
                 pad_batches: bool | None = None, tta: int = 1):
        from napari_blendphot.models.precision import (PRECISIONS, default_precision, keras_device,
                                                       resolve_precision, set_compute_precision)

        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
            raise InputError(f"option batch_size of {self.name}", f"{batch_size!r} is not a positive integer")
        #: Symmetries averaged over (1: none).
        self.tta = check_tta(tta, f"option tta of {self.name}")
        if precision is not None and (not isinstance(precision, str) or precision.lower() not in PRECISIONS):
            resolve_precision(precision, source=f"option precision of {self.name}")  # the one message
        self.requested_precision = precision
        self.model, self.weights_path, self.manifest = _load_weights(self.name, self.network, weights,
                                                                     self.default_weights)
        import keras

        self.keras_backend = keras.backend.backend()
        #: "gpu" or "cpu": where the backend computes (the default batch size and precision follow it).
        self.device = keras_device()
        self.batch_size = int(batch_size or (self.gpu_batch_size if self.device == "gpu" else self.default_batch_size))
        # Resolved once Keras is loaded: the default is bfloat16 on a GPU that has it, float32 elsewhere.
        self.precision = (default_precision() if precision is None
                          else resolve_precision(precision, source=f"option precision of {self.name}"))
        if self.precision != "float32":
            set_compute_precision(self.model, self.precision)
        # XLA compiles once per input shape: under JAX every batch is padded to a few fixed shapes.
        self.pad_batches = (self.keras_backend == "jax") if pad_batches is None else bool(pad_batches)
        self._compiled: dict = {}
        #: Forward functions compiled so far (one per padded batch shape; JAX only).
        self.compilations = 0
        encoding = (self.manifest.get("architecture") or {}).get("encoding")
        self.mask_encoding = None if encoding is None else str(encoding).lower()
        if self.mask_encoding not in (None, "two", "ogg"):
            raise InputError(self.weights_path, f"manifest architecture encoding {self.mask_encoding!r} unknown",
                             "expected 'two' or 'ogg'")
        self._channel_axis = self._input_layout()
        from napari_blendphot.models.networks import unet_fingerprint
        from napari_blendphot.provenance import sha256_file

        #: sha256 of the U-Net inside the model (None without one): equal fingerprints give equal masks.
        self.unet_fingerprint = unet_fingerprint(self.model)
        #: Calls served with another method's U-Net pass (:func:`_reused_masks`), for benchmarks and tests.
        self.reused_passes = 0

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
        """The model's outputs for *batch* on the host (numpy)."""
        return self._fetch(self._dispatch(batch))

    def _dispatch(self, batch: np.ndarray):
        """Start the forward pass of *batch*; under JAX it runs asynchronously until :meth:`_fetch`."""
        x = batch[..., None] if self._channel_axis else batch
        if self.keras_backend != "jax":
            return self.model.predict_on_batch(x)
        function, variables = self._jax_function(self.model, x)
        return function(variables[0], variables[1], x)

    def _fetch(self, outputs):
        if self.keras_backend != "jax":
            return outputs
        import jax

        return jax.device_get(outputs)

    def _jax_function(self, model, inputs):
        """(compiled forward pass, variables) of *model* for the shapes of *inputs*.

        Compiled ahead of time, once per model and input shape, and counted in
        :attr:`compilations` (a benchmark checks that a long run adds none
        after :meth:`warm_up`).
        """
        import jax

        arrays = inputs if isinstance(inputs, list) else [inputs]
        key = (id(model), tuple((tuple(a.shape), str(a.dtype)) for a in arrays))
        entry = self._compiled.get(key)
        if entry is None:
            functions = self.__dict__.setdefault("_jitted", {})
            if id(model) not in functions:

                def forward(trainable, non_trainable, stamps):
                    outputs, _ = model.stateless_call(trainable, non_trainable, stamps, training=False)
                    return outputs

                functions[id(model)] = (jax.jit(forward), ([v.value for v in model.trainable_variables],
                                                           [v.value for v in model.non_trainable_variables]))
            jitted, variables = functions[id(model)]
            specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in arrays]
            compiled = jitted.lower(*variables, specs if isinstance(inputs, list) else specs[0]).compile()
            entry = self._compiled[key] = (compiled, variables)
            self.compilations += 1
        return entry

    def _batch_shape(self, size: int, total: int) -> int:
        """Rows of the forward pass of a batch of *size* blends out of *total* in this call.

        Without padding, *size*.  With padding (JAX): the batch size whenever
        the call holds a full batch, so a long run compiles one shape and its
        last, partial batch reuses it; a small call (the GUI's one blend) the
        next power of two, so at most log2(batch size) + 1 shapes ever compile.
        """
        if not self.pad_batches:
            return size
        if total >= self.batch_size:
            return self.batch_size
        return min(self.batch_size, 1 << max(size - 1, 0).bit_length())

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
        """:meth:`_predict_once`, averaged over the :attr:`tta` symmetries of the blends (masks turned back)."""
        codes = TTA_CODES[self.tta]
        if len(codes) == 1:
            return self._predict_once(blends, progress)
        n, sums = len(blends), [None, None, None]
        for index, code in enumerate(codes):

            def report(done, _total, _index=index):
                if progress is not None:
                    progress((_index * n + done) // len(codes), n)

            outputs = list(self._predict_once(square_symmetry(blends, code), report))
            if outputs[1] is not None:
                outputs[1] = square_symmetry(outputs[1], code, inverse=True)
            for slot, value in enumerate(outputs):
                if value is not None:
                    sums[slot] = value.astype(np.float64) if sums[slot] is None else sums[slot] + value
        fluxes, masks, relative = (None if total is None else total / len(codes) for total in sums)
        return fluxes, None if masks is None else masks.astype(np.float32), relative

    def _predict_once(self, blends: np.ndarray, progress: ProgressCallback | None):
        """Run the model over *blends* in batches.

        Returns (fluxes (N, 2) or None, masks (N, 2, H, W) or None, relative
        1-sigma flux errors (N, 2) or None): the last from a model with the
        flux-uncertainty output, ``exp(ln sigma)`` before any calibration.

        Under JAX the batches are padded to fixed shapes (:meth:`_batch_shape`)
        and the next batch is dispatched before the outputs of the previous
        one are fetched and decoded, so the host's work overlaps the device's.
        """
        n = len(blends)
        fluxes = masks = relative = None
        pending = None  # the batch in flight: its outputs are fetched after the next one is dispatched
        starts = list(range(0, n, self.batch_size))
        for index in range(len(starts) + 1):
            launched = None
            if index < len(starts):
                start = starts[index]
                stop = min(start + self.batch_size, n)
                rows = self._batch_shape(stop - start, n)
                batch = _padded(blends[start:stop], rows)
                launched = (start, stop, self._dispatch(batch))
            if pending is not None:
                start, stop, handle = pending
                raw = self._fetch(handle)
                batch_fluxes, batch_masks, batch_sigma = self._split_outputs(raw)
                size = stop - start
                if batch_fluxes is not None:
                    batch_fluxes = np.asarray(batch_fluxes)[:size]
                    if fluxes is None:
                        fluxes = np.empty((n, 2), np.float64)
                    if batch_fluxes.shape != (size, 2):
                        raise InputError(self.weights_path, f"model gives fluxes of shape {batch_fluxes.shape}, "
                                         f"expected ({size}, 2)")
                    fluxes[start:stop] = batch_fluxes
                if batch_masks is not None:
                    batch_masks = np.asarray(batch_masks)[:size]
                    if masks is None:
                        masks = np.empty((n, 2, STAMP_SIZE, STAMP_SIZE), np.float32)
                    masks[start:stop] = self._to_two_masks(batch_masks)
                if batch_sigma is not None:
                    if relative is None:
                        relative = np.empty((n, 2), np.float64)
                    relative[start:stop] = np.exp(np.asarray(batch_sigma, np.float64)[:size, 2:4])
                if progress is not None:
                    progress(stop, n)
            pending = launched
        return fluxes, masks, relative

    def _flux_errors(self, fluxes, relative, outer=None) -> np.ndarray | None:
        """Calibrated 1-sigma flux errors in the stamp's units (NaN where no flux), from relative sigmas."""
        if relative is None or fluxes is None:
            return None
        return self._calibrated(fluxes, np.abs(fluxes) * relative, outer)

    def _outputs(self, blends, fluxes, masks, relative) -> DeblendOutput:
        """The method's output: fluxes, masks, calibrated errors and, per blend, the light near the
        stamp's edge that the error model uses (``outer_flux``, a results-table column)."""
        from napari_blendphot.metrics.calibration import OUTER_COLUMN, outer_light

        outer = outer_light(blends)
        return DeblendOutput(self.name, fluxes, masks, {OUTER_COLUMN: outer}, self.metadata(),
                             self._flux_errors(fluxes, relative, outer))

    def _calibrated(self, fluxes, raw, outer=None) -> np.ndarray:
        """The manifest's error calibration (metrics.calibration.calibrated_errors; docs/uncertainty.md).

        Without a calibration in the manifest the raw errors are returned.
        Never infinite or negative: NaN where the flux is not measured.
        *outer*: the blends' light near the stamp's edge (``outer_light``).
        """
        from napari_blendphot.metrics.calibration import calibrated_errors, check_dmag_bins

        parameters, _ = self._calibration_parameters()
        errors = np.array(raw, dtype=np.float64)
        if parameters:
            for role in ("central", "companion"):
                p = parameters.get(role) or {}
                try:
                    terms = [float(p.get(k, default)) for k, default in (("a", 1.0), ("b", 0.0), ("c", 0.0),
                                                                         ("d", 0.0))]
                except (TypeError, ValueError):
                    raise InputError(self.weights_path, f"manifest flux_error_calibration of the {role}: a, b, c "
                                     "and d must be numbers") from None
                if not all(np.isfinite(t) and t >= 0 for t in terms):
                    raise InputError(self.weights_path, f"manifest flux_error_calibration of the {role}: a, b, c "
                                     "and d must be finite and not negative")
                problem = check_dmag_bins(p)
                if problem:
                    raise InputError(self.weights_path, f"manifest flux_error_calibration of the {role}: {problem}")
            errors = calibrated_errors({role: parameters.get(role) or {} for role in ("central", "companion")},
                                       fluxes, errors, outer)
        errors[~(np.isfinite(errors) & np.isfinite(fluxes))] = np.nan
        return errors

    def _calibration_parameters(self) -> tuple[dict | None, int]:
        """The manifest's error calibration for this :attr:`tta` and the tta it was fitted with."""
        from napari_blendphot.metrics.calibration import calibration_for_tta

        return calibration_for_tta(self.manifest.get("flux_error_calibration"), getattr(self, "tta", 1))

    def metadata(self) -> dict:
        import keras

        record = self._metadata_record(keras)
        calibration = self.manifest.get("flux_error_calibration") or {}
        parameters, fitted_tta = self._calibration_parameters()
        parameters = parameters or {}
        k95 = {role: float(p["k95"]) for role, p in parameters.items() if isinstance(p, dict) and "k95" in p}
        if k95:  # the calibrated 95% interval is flux +- k95 x flux_err
            record["flux_error_k95"] = k95
        if calibration:
            record["flux_error_calibration"] = {"model": calibration.get("model", ""),
                                                "fitted_on": (calibration.get("provenance") or {}).get("fitted_on"),
                                                "fitted_with_tta": fitted_tta}
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
            "device": self.device,
            "padded_batches": self.pad_batches,
            "tta": self.tta,
            **({"unet_fingerprint": self.unet_fingerprint} if self.unet_fingerprint else {}),
            **self._shared_members_record(),
        }

    def _shared_members_record(self) -> dict:
        """``{"shared_members": [...]}`` for an ensemble whose file stores only some members, else ``{}``.

        ``sha256`` is the file's own; the shared members' files (checked
        against these sha256 when the model loaded) complete what ran.
        """
        shared = (self.manifest.get("architecture") or {}).get("shared_members") or []
        if not shared:
            return {}
        return {"shared_members": [{key: entry.get(key) for key in ("name", "file", "sha256", "position")}
                                   for entry in shared]}

    def warm_up(self) -> None:
        """Trace (or, under JAX, compile) the forward pass now, so that the first real call is not slowed.

        Under JAX the full-batch shape is compiled ahead of time, without
        computing: a long run then compiles nothing more.  Elsewhere one
        forward pass on an empty stamp.
        """
        if self.pad_batches and self.keras_backend == "jax":
            shape = (self.batch_size, STAMP_SIZE, STAMP_SIZE) + ((1,) if self._channel_axis else ())
            self._jax_function(self.model, np.zeros(shape, np.float32))
            return
        self._forward(np.zeros((1, STAMP_SIZE, STAMP_SIZE), np.float32))

    def _checked(self, blends) -> np.ndarray:
        return check_blends(blends, source=f"blends for {self.name}")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(weights={str(self.weights_path)!r}, batch_size={self.batch_size}, "
                f"precision={self.precision!r}, tta={self.tta})")


class Blend2FluxDeblender(KerasDeblender):
    """blend2flux: a CNN regressing [central, companion] fluxes (no masks)."""

    name = "blend2flux"
    label = "blend2flux (CNN)"
    makes_masks = False
    network = "blend2flux"

    def deblend(self, blends, context: BlendContext | None = None,
                progress: ProgressCallback | None = None) -> DeblendOutput:
        blends = self._checked(blends)
        fluxes, _, relative = self._predict(blends, progress)
        if fluxes is None:
            raise InputError(self.weights_path, "the model does not output fluxes (B, 2): not a blend2flux model")
        return self._outputs(blends, fluxes, None, relative)


class EnsembleDeblender(Blend2FluxDeblender):
    """A deep ensemble of blend2flux networks, run as one model (``models.networks.build_ensemble``).

    The fluxes are the geometric mean of the members'; the 1-sigma error adds
    to the noise the members expect the spread between them (their
    disagreement: the model's own uncertainty, largest on blends unlike the
    training set), then the manifest's calibration (docs/uncertainty.md,
    "Deep ensemble").  Opt-in: it costs one blend2flux pass per member.
    """

    name = "ensemble"
    label = "blend2flux deep ensemble"
    default_weights = "blend2flux_ensemble_v5"

    def metadata(self) -> dict:
        record = super().metadata()
        from napari_blendphot.models.networks import ensemble_members

        record["members"] = len(ensemble_members(self.model))
        return record


def exclusive_masks(masks: np.ndarray, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """Each pixel to at most one galaxy (N, K, H, W) bool: the one whose mask is highest there, if > *threshold*.

    Ties go to the first galaxy (the central).  This is how a segmentation map
    (SExtractor's, sep's) shares a blend's pixels.
    """
    above = masks > threshold
    if masks.shape[1] == 2:  # the usual pair: one comparison, 10x faster than argmax
        central = masks[:, 0] >= masks[:, 1]
        return np.stack([above[:, 0] & central, above[:, 1] & ~central], axis=1)
    owner = np.argmax(masks, axis=1)
    galaxies = np.arange(masks.shape[1]).reshape(1, -1, 1, 1)
    return above & (galaxies == owner[:, None])


class UNetDeblender(KerasDeblender):
    """U-Net masks; each galaxy's flux is the blend summed over the pixels its mask claims.

    A pixel belongs to the galaxy whose mask is highest there, if above 0.5
    (:func:`exclusive_masks`): segmentation photometry, as SExtractor shares
    pixels.  (Until round 5 a pixel in both masks counted for both galaxies,
    so a faint galaxy beside a bright one took much of its neighbour's light:
    flux MAPE 46% on the mock v2 test blends, 20% with one owner per pixel.)
    Mask sums miss the light outside the mask, more so beside a brighter
    neighbour: a manifest's ``flux_correction`` (:mod:`napari_blendphot.metrics.flux_correction`,
    fitted on held-out mock blends) multiplies each by a factor of its
    predicted pair magnitude difference, before the errors are calibrated.
    """

    name = "unet"
    label = "U-Net masks + flux in mask"
    makes_masks = True
    network = "unet"

    def deblend(self, blends, context: BlendContext | None = None,
                progress: ProgressCallback | None = None) -> DeblendOutput:
        from napari_blendphot.metrics.calibration import OUTER_COLUMN, outer_light

        blends = self._checked(blends)
        masks = self._reused_masks(blends)
        if masks is not None:
            if progress is not None:
                progress(len(blends), len(blends))
        else:
            _, masks, _ = self._predict(blends, progress)
        if masks is None:
            raise InputError(self.weights_path, "the model does not output masks (B, H, W, C): not a U-Net")
        inside = exclusive_masks(masks)
        pixels = blends.astype(np.float64)
        fluxes = np.einsum("nkij,nij->nk", inside, pixels, dtype=np.float64)
        # No pixel claimed means the network did not find that galaxy.
        fluxes[~inside.any(axis=(2, 3))] = np.nan
        metadata = self.metadata()
        metadata["flux_rule"] = (f"sum of blend pixels whose mask is > {MASK_THRESHOLD} and the highest of the "
                                 "galaxies' (one galaxy per pixel)")
        factors = self._flux_correction_factors(fluxes)
        if factors is not None:
            metadata["flux_rule"] += ", times the manifest's flux_correction (metrics.flux_correction)"
            metadata["flux_correction"] = self.manifest["flux_correction"]
        outer = outer_light(pixels)
        errors = self._mask_flux_errors(pixels, masks, inside, fluxes, factors, outer)
        if factors is not None:
            fluxes = fluxes * factors
        metadata["flux_error_rule"] = ("raw = sqrt(npix rms^2 + ((F(p>0.25) - F(p>0.75)) / 2)^2), rms from the pixels "
                                       "outside both masks; calibrated with the manifest's flux_error_calibration "
                                       "(metrics.calibration.MODEL, docs/uncertainty.md)")
        return DeblendOutput(self.name, fluxes, masks, {OUTER_COLUMN: outer}, metadata, errors)

    def _reused_masks(self, blends: np.ndarray) -> np.ndarray | None:
        """A copy of blend2mask2flux's masks of these very blends from the same U-Net, or None."""
        last = _last_unet_pass
        if not last or last["key"] != _unet_pass_key(self) or last["blends"].shape != blends.shape:
            return None
        if not np.array_equal(last["blends"], blends):
            return None
        self.reused_passes += 1
        return last["masks"].copy()

    def _flux_correction_factors(self, fluxes) -> np.ndarray | None:
        """(N, 2) factors of the manifest's ``flux_correction`` for these mask sums, or None without one."""
        from napari_blendphot.metrics.flux_correction import check_flux_correction, correction_factors

        correction = self.manifest.get("flux_correction") or {}
        if not correction:
            return None
        parameters = correction.get("parameters")
        problem = "has no 'parameters'" if not isinstance(parameters, dict) else check_flux_correction(parameters)
        if problem:
            raise InputError(self.weights_path, f"manifest flux_correction: {problem}")
        return correction_factors(parameters, fluxes)

    def _mask_flux_errors(self, pixels, masks, inside, fluxes, factors=None, outer=None) -> np.ndarray:
        """Errors of mask-sum fluxes: the noise in the mask and how much the flux depends on the mask's edge.

        With flux-correction *factors* the raw errors and the fluxes are scaled
        alike before the calibration, which was fitted on corrected fluxes.
        """
        background = (masks < 0.25).all(axis=1)
        rms = background_mad_std(pixels, background)
        rms = np.where(np.isfinite(rms), rms, 0.0)
        npix = inside.sum(axis=(2, 3))
        wide = np.einsum("nkij,nij->nk", masks > 0.25, pixels, dtype=np.float64)
        tight = np.einsum("nkij,nij->nk", masks > 0.75, pixels, dtype=np.float64)
        raw = np.sqrt(npix * rms[:, None] ** 2 + (0.5 * (wide - tight)) ** 2)
        if factors is not None:
            raw, fluxes = raw * factors, fluxes * factors
        errors = self._calibrated(fluxes, raw, outer)
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
        _last_unet_pass.clear()
        if self.unet_fingerprint is not None:
            _last_unet_pass.update(key=_unet_pass_key(self), blends=np.array(blends, copy=True), masks=masks.copy())
        return self._outputs(blends, fluxes, masks, relative)


def _unet_pass_key(method: KerasDeblender) -> tuple:
    """What must agree for one U-Net pass to stand for another: the U-Net, the precision, the backend, the symmetries."""
    return (method.unet_fingerprint, method.precision, method.keras_backend, method.tta)
