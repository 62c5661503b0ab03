"""The paper's three networks as Keras 3 functional models (any backend).

* :func:`build_blend2flux` -- a CNN regressing the two fluxes from the blend.
* :func:`build_unet` -- a U-Net predicting the segmentation masks.
* :func:`build_blend2mask2flux` -- the U-Net followed by a smaller flux CNN
  reading [blend, central mask, companion mask].

Every model takes raw stamps, shape (N, 128, 128) in the data's units, and
scales them inside (:class:`~napari_blendphot.models.layers.StampNormalization`);
the flux models return fluxes (N, 2) [central, companion] in the same units
(:class:`~napari_blendphot.models.layers.FluxOutput`).  Masks are
channels-last probabilities (N, 128, 128, n_masks).  Only ``keras.ops`` and
``keras.layers`` are used, so the same code runs under TensorFlow, JAX and
PyTorch, and ``.keras`` files move between them.

Layer names are fixed (``unet_enc0_conv1``...) because
:func:`load_unet_weights` copies a trained U-Net into blend2mask2flux by name.
"""

from __future__ import annotations

import keras

from napari_blendphot.constants import STAMP_SIZE
from napari_blendphot.errors import InputError
from napari_blendphot.models.layers import (
    BlockMaxPool2D,
    EnsembleMixture,
    FluxOutput,
    FluxUncertainty,
    SelectChannels,
    StampNormalization,
    StopGradient,
)

#: Mask encodings of the paper (SPEC §4.7): channel order of the U-Net output.
MASK_ENCODINGS = {
    "two": ("central", "companion"),
    "ogg": ("overlap", "central", "companion"),
}

#: Head of blend2mask2flux in the paper's configuration (see docs/models.md):
#: blend2flux's own rule (two dense layers as wide as the first level) at 128
#: filters and depth 3; with the depth-5, 32-filter U-Net it gives 18,467,140
#: parameters in all, the paper's "about 18.5 M".
DEFAULT_HEAD = {"head_filters": 128, "head_depth": 3, "head_dense": (128, 128)}


#: 2x2 max-pooling implementations (same outputs): Keras' MaxPooling2D, or reshape + max
#: (:class:`~napari_blendphot.models.layers.BlockMaxPool2D`, a faster gradient under XLA).
POOLINGS = ("window", "reshape")


def _max_pool(pooling: str, name: str):
    if pooling == "reshape":
        return BlockMaxPool2D(name=name)
    return keras.layers.MaxPooling2D(2, name=name)


def _check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    return pooling


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


#: Width of the hidden layer of the flux-uncertainty branch.
UNCERTAINTY_WIDTH = 64


def _flux_cnn(x, filters: int, depth: int, dense_widths, prefix: str, pooling: str = "window",
              return_hidden: bool = False):
    """Convolution stack + dense layers shared by blend2flux and the b2m2f head.

    Returns the (N, 2) linear output ``z`` (log flux ratios), and with
    ``return_hidden`` also the last hidden layer (what the uncertainty branch reads).
    """
    for level in range(depth):
        width = filters * 2**level
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"{prefix}_conv{level}a")(x)
        x = _max_pool(pooling, f"{prefix}_pool{level}a")(x)
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"{prefix}_conv{level}b")(x)
        x = _max_pool(pooling, f"{prefix}_pool{level}b")(x)
    x = keras.layers.Conv2D(
        filters * 2**depth, 3, padding="same", activation="relu", name=f"{prefix}_conv_top"
    )(x)
    x = keras.layers.Flatten(name=f"{prefix}_flatten")(x)
    for index, width in enumerate(dense_widths):
        # SELU wants LeCun-normal initialisation to be self-normalising.
        x = keras.layers.Dense(
            int(width), activation="selu", kernel_initializer="lecun_normal", name=f"{prefix}_dense{index}"
        )(x)
    log_flux = keras.layers.Dense(2, activation=None, name=f"{prefix}_log_flux")(x)
    return (log_flux, x) if return_hidden else log_flux


def _uncertainty_branch(hidden, log_flux, scale, flux_scale: float, prefix: str):
    """The flux-uncertainty output: ``[ln f (no gradient), ln sigma]`` per galaxy (docs/uncertainty.md).

    The branch reads the flux network's last hidden layer and its log-flux
    output through stop-gradients, so training it (Gaussian NLL of the true
    log flux) never changes the fluxes.  Its bias starts at ln 0.05 (5 %
    errors), the right order for blended galaxies.
    """
    features = keras.layers.Concatenate(axis=-1, name=f"{prefix}_sigma_input")(
        [StopGradient(name=f"{prefix}_sigma_stop_hidden")(hidden), StopGradient(name=f"{prefix}_sigma_stop_z")(log_flux)]
    )
    x = keras.layers.Dense(UNCERTAINTY_WIDTH, activation="selu", kernel_initializer="lecun_normal",
                           name=f"{prefix}_sigma_dense")(features)
    log_sigma = keras.layers.Dense(2, activation=None, kernel_initializer="zeros",
                                   bias_initializer=keras.initializers.Constant(-3.0),
                                   name=f"{prefix}_log_sigma")(x)
    return FluxUncertainty(flux_scale, name="flux_uncertainty")([log_flux, scale, log_sigma])


def _check_flux_cnn(stamp_size: int, depth: int) -> None:
    reduction = 2 ** (2 * depth)
    if stamp_size % reduction or stamp_size // reduction < 1:
        raise ValueError(
            f"a flux CNN of depth {depth} pools {2 * depth} times: stamp size {stamp_size} "
            f"must be a multiple of {reduction}"
        )


def build_blend2flux(
    filters: int = 256,
    depth: int = 2,
    dense_widths=None,
    normalization: str = "rms",
    input_scale: float = 1.0,
    flux_scale: float = 1000.0,
    stamp_size: int = STAMP_SIZE,
    pooling: str = "window",
    uncertainty: bool = False,
    name: str = "blend2flux",
):
    """The blend2flux CNN (paper §3.2, Table 2).

    For each level ``d < depth``: conv3x3 (``filters * 2**d``, ReLU) -> max-pool 2
    -> conv3x3 (same) -> max-pool 2; then conv3x3 (``filters * 2**depth``,
    ReLU); flatten; dense layers (SELU); dense(2) linear; then
    ``FluxOutput``.  ``filters`` = 64 / 256 / 512 with ``depth=2`` give the
    paper's 1,607,106 / 25,696,002 / 102,772,226 parameters.

    Parameters
    ----------
    filters, depth : int
        Width of the first level and number of levels.
    dense_widths : sequence of int, optional
        Widths of the SELU dense layers; default two layers of ``filters``.
    normalization, input_scale : see :class:`StampNormalization`.
    flux_scale : see :class:`FluxOutput`.
    stamp_size : int
        Side of the square input stamps.
    pooling : {"window", "reshape"}
        2x2 max-pooling implementation: Keras' ``MaxPooling2D`` (default, the
        shipped models) or :class:`~napari_blendphot.models.layers.BlockMaxPool2D`
        (same outputs and weights, faster gradients under XLA).
    uncertainty : bool
        Add the flux-uncertainty output (:class:`FluxUncertainty`, docs/uncertainty.md).
    name : str
        Model name.

    Returns
    -------
    keras.Model
        Input (N, stamp_size, stamp_size) raw stamps; output (N, 2) fluxes
        [central, companion] in the stamps' units, from a layer named ``"fluxes"``;
        with ``uncertainty`` a dict ``{"fluxes", "flux_uncertainty"}`` (the
        latter (N, 4): ``[ln f_c, ln f_k, ln sigma_c, ln sigma_k]``).
    """
    filters = _check_positive_int("filters", filters)
    depth = _check_positive_int("depth", depth)
    _check_flux_cnn(stamp_size, depth)
    dense_widths = (filters, filters) if dense_widths is None else tuple(int(w) for w in dense_widths)
    stamps = keras.Input(shape=(stamp_size, stamp_size), name="stamps")
    normalised, scale = StampNormalization(normalization, input_scale, name="normalization")(stamps)
    log_flux, hidden = _flux_cnn(normalised, filters, depth, dense_widths, prefix="b2f",
                                 pooling=_check_pooling(pooling), return_hidden=True)
    fluxes = FluxOutput(flux_scale, name="fluxes")([log_flux, scale])
    if not uncertainty:
        return keras.Model(stamps, fluxes, name=name)
    errors = _uncertainty_branch(hidden, log_flux, scale, flux_scale, prefix="b2f")
    return keras.Model(stamps, {"fluxes": fluxes, "flux_uncertainty": errors}, name=name)


def _unet_masks(normalised, depth: int, filters: int, n_masks: int, up_kernel_size: int, pooling: str = "window"):
    """U-Net layers on a normalised (N, H, W, 1) tensor; returns the sigmoid masks."""
    skips = []
    x = normalised
    for level in range(depth):
        width = filters * 2**level
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"unet_enc{level}_conv1")(x)
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"unet_enc{level}_conv2")(x)
        if level < depth - 1:
            skips.append(x)
            x = _max_pool(pooling, f"unet_enc{level}_pool")(x)
    for level in reversed(range(depth - 1)):
        width = filters * 2**level
        x = keras.layers.Conv2DTranspose(
            width, up_kernel_size, strides=2, padding="same", name=f"unet_dec{level}_up"
        )(x)
        x = keras.layers.Concatenate(axis=-1, name=f"unet_dec{level}_concat")([x, skips[level]])
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"unet_dec{level}_conv1")(x)
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"unet_dec{level}_conv2")(x)
    return keras.layers.Conv2D(n_masks, 1, activation="sigmoid", name="masks")(x)


def _check_unet(stamp_size: int, depth: int, encoding: str, n_masks) -> int:
    if encoding not in MASK_ENCODINGS:
        raise ValueError(f"mask encoding must be one of {sorted(MASK_ENCODINGS)}, got {encoding!r}")
    expected = len(MASK_ENCODINGS[encoding])
    if n_masks is not None and int(n_masks) != expected:
        raise ValueError(f"encoding {encoding!r} has {expected} mask channels, not n_masks={n_masks}")
    if stamp_size % 2 ** (depth - 1):
        raise ValueError(
            f"a U-Net of depth {depth} pools {depth - 1} times: stamp size {stamp_size} "
            f"must be a multiple of {2 ** (depth - 1)}"
        )
    return expected


def build_unet(
    depth: int = 5,
    filters: int = 32,
    n_masks: int | None = None,
    encoding: str = "two",
    up_kernel_size: int = 3,
    normalization: str = "rms",
    input_scale: float = 1.0,
    stamp_size: int = STAMP_SIZE,
    pooling: str = "window",
    name: str = "unet",
):
    """The segmentation U-Net (paper §3.3).

    ``depth`` counts resolution levels: ``depth`` blocks of two conv3x3 (ReLU)
    with ``filters * 2**level`` filters on the way down, ``depth - 1``
    max-poolings, ``depth - 1`` transposed convolutions (stride 2) each
    followed by concatenation with the skip of the same level and a block of
    two conv3x3; then a 1x1 convolution with a sigmoid.  The paper's fiducial
    (depth 5, 32 filters, 3x3 transposed convolutions) has 8,629,954
    parameters, the paper's "about 8.6 M"; ``up_kernel_size=2`` gives 7,759,554.

    Parameters
    ----------
    depth, filters : int
        Resolution levels and filters of the first level.
    n_masks : int, optional
        Number of output channels; implied by ``encoding`` (checked if given).
    encoding : {"two", "ogg"}
        ``"two"``: channels [central, companion]; ``"ogg"``: [overlap, central, companion].
    up_kernel_size : int
        Kernel of the transposed convolutions.
    normalization, input_scale : see :class:`StampNormalization`.
    pooling : {"window", "reshape"}
        See :func:`build_blend2flux`.

    Returns
    -------
    keras.Model
        Input (N, H, W) raw stamps; output (N, H, W, n_masks) probabilities
        from a layer named ``"masks"``.
    """
    depth = _check_positive_int("depth", depth)
    filters = _check_positive_int("filters", filters)
    n_masks = _check_unet(stamp_size, depth, encoding, n_masks)
    stamps = keras.Input(shape=(stamp_size, stamp_size), name="stamps")
    normalised, _ = StampNormalization(normalization, input_scale, name="normalization")(stamps)
    masks = _unet_masks(normalised, depth, filters, n_masks, _check_positive_int("up_kernel_size", up_kernel_size),
                        pooling=_check_pooling(pooling))
    return keras.Model(stamps, masks, name=name)


def build_blend2mask2flux(
    unet_depth: int = 5,
    unet_filters: int = 32,
    head_filters: int = DEFAULT_HEAD["head_filters"],
    head_depth: int = DEFAULT_HEAD["head_depth"],
    head_dense=DEFAULT_HEAD["head_dense"],
    encoding: str = "two",
    up_kernel_size: int = 3,
    normalization: str = "rms",
    input_scale: float = 1.0,
    flux_scale: float = 1000.0,
    stamp_size: int = STAMP_SIZE,
    pooling: str = "window",
    uncertainty: bool = False,
    name: str = "blend2mask2flux",
):
    """blend2mask2flux: U-Net masks, then a flux CNN on [blend, masks] (paper §3.3).

    The U-Net is :func:`build_unet`'s, with the same layer names (so
    :func:`load_unet_weights` can copy a trained one in).  The head is the
    blend2flux CNN (``head_filters``, ``head_depth``, ``head_dense``) reading
    the normalised blend concatenated with the central and companion mask
    probabilities (3 channels; with ``encoding="ogg"`` the overlap channel
    is not passed on).  The default head (128 filters, depth 3, two dense
    layers of 128) gives 18,467,140 parameters in all with the paper's U-Net,
    the paper's "about 18.5 M".  ``pooling`` is :func:`build_blend2flux`'s,
    for the U-Net and the head.

    ``uncertainty`` adds the ``"flux_uncertainty"`` output of :func:`build_blend2flux`.

    Returns
    -------
    keras.Model
        Input (N, H, W) raw stamps; outputs a dict ``{"masks": (N, H, W,
        n_masks), "fluxes": (N, 2)}`` (fluxes in the stamps' units), plus
        ``"flux_uncertainty"`` with ``uncertainty``.
    """
    unet_depth = _check_positive_int("unet_depth", unet_depth)
    unet_filters = _check_positive_int("unet_filters", unet_filters)
    head_filters = _check_positive_int("head_filters", head_filters)
    head_depth = _check_positive_int("head_depth", head_depth)
    n_masks = _check_unet(stamp_size, unet_depth, encoding, None)
    _check_flux_cnn(stamp_size, head_depth)
    channels = MASK_ENCODINGS[encoding]
    stamps = keras.Input(shape=(stamp_size, stamp_size), name="stamps")
    normalised, scale = StampNormalization(normalization, input_scale, name="normalization")(stamps)
    masks = _unet_masks(normalised, unet_depth, unet_filters, n_masks, _check_positive_int("up_kernel_size", up_kernel_size),
                        pooling=_check_pooling(pooling))
    pair = SelectChannels([channels.index("central"), channels.index("companion")], name="head_masks")(masks)
    head_input = keras.layers.Concatenate(axis=-1, name="head_input")([normalised, pair])
    log_flux, hidden = _flux_cnn(head_input, head_filters, head_depth, tuple(int(w) for w in head_dense),
                                 prefix="head", pooling=pooling, return_hidden=True)
    fluxes = FluxOutput(flux_scale, name="fluxes")([log_flux, scale])
    outputs = {"masks": masks, "fluxes": fluxes}
    if uncertainty:
        outputs["flux_uncertainty"] = _uncertainty_branch(hidden, log_flux, scale, flux_scale, prefix="head")
    return keras.Model(stamps, outputs, name=name)


def load_unet_weights(b2m2f_model, unet_model) -> list[str]:
    """Copy a trained U-Net's weights into a blend2mask2flux model, layer by layer.

    Layers are matched by name (``unet_*`` and ``masks``); every weighted
    layer of ``unet_model`` must exist in ``b2m2f_model`` with the same
    shapes, so an incompatible U-Net fails loudly instead of half-loading.

    Returns
    -------
    list of str
        Names of the layers copied.
    """
    target_layers = {layer.name: layer for layer in b2m2f_model.layers}
    copied = []
    for layer in unet_model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        target = target_layers.get(layer.name)
        if target is None:
            raise InputError(
                f"U-Net model '{unet_model.name}'",
                f"layer {layer.name!r} has no counterpart in '{b2m2f_model.name}'",
                "build blend2mask2flux with the U-Net's depth, filters, encoding and up_kernel_size",
            )
        target_shapes = [tuple(w.shape) for w in target.get_weights()]
        source_shapes = [tuple(w.shape) for w in weights]
        if target_shapes != source_shapes:
            raise InputError(
                f"U-Net model '{unet_model.name}'",
                f"layer {layer.name!r} has weights {source_shapes}, '{b2m2f_model.name}' expects {target_shapes}",
                "build blend2mask2flux with the U-Net's depth, filters, encoding and up_kernel_size",
            )
        target.set_weights(weights)
        copied.append(layer.name)
    if not copied:
        raise InputError(f"U-Net model '{unet_model.name}'", "has no weighted layers to copy")
    return copied


def unet_fingerprint(model) -> str | None:
    """sha256 of the U-Net inside *model* (a U-Net or a blend2mask2flux), None if it holds none.

    Hashes what decides the masks: the input normalisation's settings and the
    configuration and weights of every ``unet_*`` layer and of ``masks``
    (names as :func:`build_unet` gives them; trainability and dtype policy
    left out: a frozen U-Net is the same U-Net, precision is the caller's
    business).  Two models with the same fingerprint give the same masks.
    """
    import hashlib
    import json

    import numpy as np

    digest = hashlib.sha256()
    has_masks = False
    for layer in sorted(model.layers, key=lambda item: item.name):
        if not (layer.name.startswith("unet_") or layer.name in ("masks", "normalization")):
            continue
        config = {key: value for key, value in layer.get_config().items() if key not in ("name", "trainable", "dtype")}
        digest.update(f"{layer.name}|{type(layer).__name__}|".encode())
        digest.update(json.dumps(config, sort_keys=True, default=str).encode())
        for weight in layer.get_weights():
            array = np.ascontiguousarray(weight)
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(array.tobytes())
        has_masks = has_masks or layer.name == "masks"
    return digest.hexdigest() if has_masks else None


def copy_matching_weights(target, source, rename=None) -> list[str]:
    """Copy weights layer by layer from *source* into *target* where names (after *rename*) and shapes match.

    Used to continue training from a saved model of the same architecture
    (every weighted layer must then match: anything else fails loudly).
    Returns the names of the layers copied.
    """
    rename = rename or (lambda name: name)
    target_layers = {layer.name: layer for layer in target.layers}
    copied = []
    for layer in source.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        twin = target_layers.get(rename(layer.name))
        if twin is None or [w.shape for w in twin.get_weights()] != [w.shape for w in weights]:
            raise InputError(f"model '{source.name}'", f"layer {layer.name!r} has no counterpart of the same shape "
                             f"in '{target.name}'", "initialise only from a model of the same architecture")
        twin.set_weights(weights)
        copied.append(twin.name)
    return copied


def init_head_from_blend2flux(b2m2f_model, b2f_model) -> list[str]:
    """Start blend2mask2flux's flux head from a trained blend2flux of the same shape.

    The head is blend2flux's CNN reading 3 channels [blend, central mask,
    companion mask]; the blend channel's first-layer filters are copied and
    the mask channels' start at zero, so the head starts out computing exactly
    blend2flux's fluxes (and uncertainties) and training can only add what the
    masks tell.  Needs ``head_filters``, ``head_depth`` and ``head_dense`` equal
    to blend2flux's ``filters``, ``depth`` and ``dense_widths``.
    """
    import numpy as np

    targets = {layer.name: layer for layer in b2m2f_model.layers}
    copied = []
    for layer in b2f_model.layers:
        weights = layer.get_weights()
        if not weights or not layer.name.startswith("b2f_"):
            continue
        name = "head_" + layer.name[len("b2f_"):]
        twin = targets.get(name)
        if twin is None:
            raise InputError(f"model '{b2f_model.name}'", f"layer {layer.name!r} has no counterpart {name!r}",
                             "build the head with blend2flux's filters, depth and dense widths")
        wanted = twin.get_weights()
        if name == "head_conv0a" and wanted[0].shape[3] == weights[0].shape[3] and weights[0].shape[2] == 1:
            kernel = np.zeros_like(wanted[0])
            kernel[:, :, :1, :] = weights[0]
            weights = [kernel, weights[1]]
        if [w.shape for w in wanted] != [w.shape for w in weights]:
            raise InputError(f"model '{b2f_model.name}'", f"layer {layer.name!r} has weights "
                             f"{[w.shape for w in weights]}, {name!r} expects {[w.shape for w in wanted]}",
                             "build the head with blend2flux's filters, depth and dense widths")
        twin.set_weights(weights)
        copied.append(name)
    return copied


def encode_masks(masks, encoding: str = "two"):
    """Turn true masks (N, 2, H, W) [central, companion] into U-Net targets (N, H, W, C).

    ``"two"``: channels [central, companion] as they are.  ``"ogg"``:
    [overlap, central only, companion only], where overlap = both masks, so
    the three channels never overlap.  Returns float32 0/1 (numpy only).
    """
    import numpy as np

    masks = np.asarray(masks)
    if masks.ndim != 4 or masks.shape[1] != 2:
        raise InputError("masks", f"expected (N, 2, H, W) [central, companion], got shape {masks.shape}")
    central, companion = masks[:, 0] > 0.5, masks[:, 1] > 0.5
    if encoding == "two":
        channels = (central, companion)
    elif encoding == "ogg":
        channels = (central & companion, central & ~companion, companion & ~central)
    else:
        raise ValueError(f"mask encoding must be one of {sorted(MASK_ENCODINGS)}, got {encoding!r}")
    return np.stack(channels, axis=-1).astype(np.float32)


def decode_masks(predicted, encoding: str = "two"):
    """Turn U-Net outputs (N, H, W, C) into probabilities (N, 2, H, W) [central, companion].

    The inverse of :func:`encode_masks`: for ``"ogg"`` a galaxy's mask is its
    own channel or the overlap, ``max(own, overlap)`` on probabilities (the
    data contract of ``DeblendOutput.masks``).  Numpy only.
    """
    import numpy as np

    predicted = np.asarray(predicted)
    expected = len(MASK_ENCODINGS.get(encoding, ()))
    if not expected:
        raise ValueError(f"mask encoding must be one of {sorted(MASK_ENCODINGS)}, got {encoding!r}")
    if predicted.ndim != 4 or predicted.shape[-1] != expected:
        raise InputError("predicted masks", f"expected (N, H, W, {expected}) for encoding {encoding!r}, got {predicted.shape}")
    if encoding == "two":
        pair = (predicted[..., 0], predicted[..., 1])
    else:
        overlap = predicted[..., 0]
        pair = (np.maximum(predicted[..., 1], overlap), np.maximum(predicted[..., 2], overlap))
    return np.stack(pair, axis=1).astype(np.float32)


def build_ensemble(members, name: str = "blend2flux_ensemble", spread_weight: float = 1.0):
    """One model that runs independently trained flux networks side by side: a deep ensemble.

    Each member must have the flux-uncertainty output (``uncertainty=True``)
    and take raw stamps; their outputs are combined by
    :class:`~napari_blendphot.models.layers.EnsembleMixture` into the outputs
    of a single blend2flux, ``{"fluxes": (N, 2), "flux_uncertainty": (N, 4)}``,
    so everything that runs, calibrates or checks blend2flux takes the
    ensemble as it is.  The members are copied in (renamed ``member_1``...,
    weights identical), so one ``.keras`` file holds the whole ensemble.
    *spread_weight*: see :class:`~napari_blendphot.models.layers.EnsembleMixture`.
    """
    members = list(members)
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
    input_shape = tuple(members[0].inputs[0].shape)[1:]
    stamps = keras.Input(shape=input_shape, name="stamps")
    member_outputs = []
    for index, member in enumerate(members, 1):
        if len(member.inputs) != 1 or tuple(member.inputs[0].shape)[1:] != input_shape:
            raise ValueError(f"member {index} takes {[tuple(t.shape) for t in member.inputs]}, the first "
                             f"member (None, *{input_shape})")
        outputs = member.output
        if not (isinstance(outputs, dict) and "flux_uncertainty" in outputs and "fluxes" in outputs):
            raise ValueError(f"member {index} ({member.name!r}) has no flux-uncertainty output: train it with "
                             "uncertainty=True")
        copy = _renamed_copy(member, f"member_{index}")
        member_outputs.append(copy(stamps)["flux_uncertainty"])
    fluxes, uncertainty = EnsembleMixture(spread_weight, name="ensemble")(member_outputs)
    return keras.Model(stamps, {"fluxes": fluxes, "flux_uncertainty": uncertainty}, name=name)


def ensemble_members(model) -> list:
    """The member models inside an ensemble built by :func:`build_ensemble` (empty for a single network)."""
    return [layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name.startswith("member_")]


def _renamed_copy(model, name: str):
    """A copy of the functional *model* called *name*, with the very same weights (bit for bit)."""
    import numpy as np

    config = model.get_config()
    config["name"] = name
    copy = type(model).from_config(config)
    copy.set_weights([np.asarray(w) for w in model.get_weights()])
    return copy


def stored_members_model(ensemble, shared_positions, name: str):
    """The part of *ensemble* that its own file stores when the members at *shared_positions* are shared.

    *shared_positions*: 0-based indices, in :func:`ensemble_members` order, of
    the members kept by reference to shipped models (not stored again).  The
    others, weights unchanged, make an ensemble of their own (two or more) or
    are the one member left; either way the model is named
    ``STORED_MEMBERS_PREFIX + name`` so that it is never loaded as the whole
    ensemble by mistake (:func:`~napari_blendphot.models.io.load_model`).
    """
    from napari_blendphot.models import STORED_MEMBERS_PREFIX

    members = ensemble_members(ensemble)
    shared = set(shared_positions)
    if not members or not shared or not shared <= set(range(len(members))):
        raise ValueError(f"shared positions {sorted(shared)} do not pick members of an ensemble of "
                         f"{len(members)} members")
    stored = [member for index, member in enumerate(members) if index not in shared]
    if not stored:
        raise ValueError("every member is shared: the ensemble's file would store none")
    mixture = ensemble.get_layer("ensemble")
    if len(stored) == 1:
        return _renamed_copy(stored[0], STORED_MEMBERS_PREFIX + name)
    return build_ensemble(stored, name=STORED_MEMBERS_PREFIX + name, spread_weight=mixture.spread_weight)


def rebuild_ensemble(stored, shared: dict, name: str, spread_weight: float):
    """The whole ensemble from the model its file stores and its *shared* members ``{position: model}``.

    *stored*: what :func:`stored_members_model` made (an ensemble of the
    stored members, or the single stored member).  The members go back in
    their recorded order, so the result is the ensemble that was split,
    weights and predictions alike.
    """
    stored_members = ensemble_members(stored) or [stored]
    total = len(stored_members) + len(shared)
    if not set(shared) <= set(range(total)):
        raise ValueError(f"shared positions {sorted(shared)} do not fit an ensemble of {total} members")
    remaining = iter(stored_members)
    members = [shared[index] if index in shared else next(remaining) for index in range(total)]
    return build_ensemble(members, name=name, spread_weight=spread_weight)


def round_weights(model, precision: str = "bfloat16", min_size: int = 1024, keep=None) -> int:
    """Round the large float32 weight arrays of *model* to the nearest *precision* value, in place.

    Returns how many arrays were rounded.  The weights stay float32 arrays
    (the model is unchanged in kind and runs as before), but their last 16
    bits (bfloat16) become zero, so a deflated ``.keras`` archive
    (:func:`napari_blendphot.models.io.save_model` with ``compress=True``)
    stores them in about half the bytes: 16-bit storage, widened on load by
    nothing more than reading the file.  ``"float16"`` keeps 3 more bits of
    mantissa and compresses less.  Arrays of fewer than *min_size* values
    (biases, the last layers) stay exact: they are a negligible share of the
    bytes, and a rounded bias shifts every prediction the same way (a
    systematic flux offset of up to 0.2% that rounding the kernels, whose
    errors average out, does not give).  *keep*, a predicate on a weight's
    path (``"layer/name"``), names further weights to leave exact.
    """
    import numpy as np

    if precision not in ("bfloat16", "float16"):
        raise ValueError(f"precision must be 'bfloat16' or 'float16', got {precision!r}")
    rounded = 0
    for variable in model.weights:
        value = np.asarray(keras.ops.convert_to_numpy(variable.value))
        if value.dtype != np.float32 or value.size < min_size or (keep is not None and keep(variable.path)):
            continue
        if precision == "float16":
            new = value.astype(np.float16).astype(np.float32)
        else:  # round to nearest, ties to even, on the upper 16 bits
            bits = value.view(np.uint32).astype(np.uint64)
            bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
            new = np.where(np.isfinite(value), bits.astype(np.uint32).view(np.float32), value)
        variable.assign(new.astype(np.float32))
        rounded += 1
    return rounded


BUILDERS = {
    "blend2flux": build_blend2flux,
    "unet": build_unet,
    "blend2mask2flux": build_blend2mask2flux,
}


def build_model(method: str, **config):
    """Build one of :data:`BUILDERS` by name with the given builder arguments."""
    if method not in BUILDERS:
        raise ValueError(f"unknown network {method!r}; choose one of {sorted(BUILDERS)}")
    return BUILDERS[method](**config)
