"""Training losses of the paper, written with ``keras.ops`` (any backend).

* :func:`flux_mape` -- mean absolute percentage error on the fluxes, the
  paper's loss for blend2flux (equal to ``keras.losses.MeanAbsolutePercentageError``).
* :func:`mask_bce` -- binary cross-entropy on mask probabilities (equal to
  ``keras.losses.BinaryCrossentropy``).
* :func:`log_flux_nll` -- Gaussian negative log likelihood of the true log
  flux under the predicted ``(ln f, ln sigma)`` of the flux-uncertainty output
  (the fluxes' own gradient is stopped in the model, so it trains only the
  uncertainty branch; docs/uncertainty.md).
* :func:`compile_model` -- Adam + the right loss(es) for each network;
  blend2mask2flux is trained end to end on ``MAPE(flux) + 0.1 * BCE(masks)``.

Both loss functions are registered (package ``"blendphot"``) so a model saved
compiled can be reloaded with ``compile=True``.
"""

from __future__ import annotations

import keras
from keras import ops

#: Weight of the mask loss in blend2mask2flux's end-to-end loss (paper §3.3).
MASK_LOSS_WEIGHT = 0.1
#: Learning rate of the paper (Adam).
LEARNING_RATE = 1e-4


@keras.saving.register_keras_serializable(package="blendphot")
def flux_mape(y_true, y_pred):
    """Per-sample mean absolute percentage error (percent) over the two fluxes.

    ``100 * mean(|y_true - y_pred| / max(|y_true|, epsilon))``; the floor
    keeps a zero true flux from dividing by zero (true fluxes are > 0 here).
    """
    y_true = ops.convert_to_tensor(y_true)
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    relative = ops.abs(y_true - y_pred) / ops.maximum(ops.abs(y_true), keras.config.epsilon())
    return 100.0 * ops.mean(relative, axis=-1)


@keras.saving.register_keras_serializable(package="blendphot")
def mask_bce(y_true, y_pred):
    """Per-pixel binary cross-entropy of mask probabilities, averaged over channels.

    Returns one value per pixel (N, H, W); Keras then averages over the batch
    and the pixels.  Probabilities are clipped to [eps, 1 - eps] by
    ``keras.ops.binary_crossentropy``.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(ops.convert_to_tensor(y_true), y_pred.dtype)
    return ops.mean(ops.binary_crossentropy(y_true, y_pred, from_logits=False), axis=-1)


@keras.saving.register_keras_serializable(package="blendphot")
def log_flux_nll(y_true, y_pred):
    """Gaussian NLL of ``ln(true flux)`` per sample, averaged over the two galaxies.

    ``y_true`` (N, 2) true fluxes; ``y_pred`` (N, 4) ``[ln f_c, ln f_k, ln s_c,
    ln s_k]`` from :class:`~napari_blendphot.models.layers.FluxUncertainty`.
    ``0.5 * ((ln f_true - ln f) / s)**2 + ln s`` (the constant dropped).
    Computed in float32 whatever the compute policy.
    """
    y_pred = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    y_true = ops.cast(ops.convert_to_tensor(y_true), "float32")
    log_true = ops.log(ops.maximum(y_true, keras.config.epsilon()))
    log_flux, log_sigma = y_pred[:, :2], y_pred[:, 2:]
    residual = (log_true - log_flux) * ops.exp(-log_sigma)
    return ops.mean(0.5 * ops.square(residual) + log_sigma, axis=-1)


#: Weight of the uncertainty NLL in the total loss.  It only scales the
#: uncertainty branch's gradients (the fluxes do not see this loss).
UNCERTAINTY_LOSS_WEIGHT = 1.0


def compile_model(model, method: str, learning_rate: float = LEARNING_RATE, mask_weight: float = MASK_LOSS_WEIGHT):
    """Compile ``model`` for training with the paper's optimiser and losses.

    Parameters
    ----------
    model : keras.Model
        Built by :mod:`napari_blendphot.models.networks`.
    method : {"blend2flux", "unet", "blend2mask2flux"}
        Which network it is.
    learning_rate : float
        Adam learning rate (paper: 1e-4, halved on plateau by the trainer).
    mask_weight : float
        Weight of BCE(masks) against MAPE(fluxes) for blend2mask2flux.

    Returns
    -------
    keras.Model
        The same model, compiled.
    """
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    with_errors = "flux_uncertainty" in (getattr(model, "output_names", None) or [])
    if method == "blend2flux" and not with_errors:
        model.compile(optimizer=optimizer, loss=flux_mape)
    elif method == "unet":
        model.compile(optimizer=optimizer, loss=mask_bce)
    elif method in ("blend2flux", "blend2mask2flux"):
        losses = {"fluxes": flux_mape}
        weights = {"fluxes": 1.0}
        if method == "blend2mask2flux":
            losses["masks"] = mask_bce
            weights["masks"] = float(mask_weight)
        if with_errors:
            losses["flux_uncertainty"] = log_flux_nll
            weights["flux_uncertainty"] = UNCERTAINTY_LOSS_WEIGHT
        model.compile(optimizer=optimizer, loss=losses, loss_weights=weights)
    else:
        raise ValueError(f"unknown network {method!r}; choose blend2flux, unet or blend2mask2flux")
    return model
