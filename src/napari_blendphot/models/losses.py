"""Training losses of the paper, written with ``keras.ops`` (any backend).

* :func:`flux_mape` -- mean absolute percentage error on the fluxes, the
  paper's loss for blend2flux (equal to ``keras.losses.MeanAbsolutePercentageError``).
* :func:`mask_bce` -- binary cross-entropy on mask probabilities (equal to
  ``keras.losses.BinaryCrossentropy``).
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
    if method == "blend2flux":
        model.compile(optimizer=optimizer, loss=flux_mape)
    elif method == "unet":
        model.compile(optimizer=optimizer, loss=mask_bce)
    elif method == "blend2mask2flux":
        model.compile(
            optimizer=optimizer,
            loss={"fluxes": flux_mape, "masks": mask_bce},
            loss_weights={"fluxes": 1.0, "masks": float(mask_weight)},
        )
    else:
        raise ValueError(f"unknown network {method!r}; choose blend2flux, unet or blend2mask2flux")
    return model
