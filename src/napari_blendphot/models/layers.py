"""Custom Keras 3 layers that put the physical units inside the models.

A saved model takes raw stamps in the data's units (e-/s for CANDELS F160W)
and returns fluxes in the same units, so no caller has to remember a scaling
convention.  Two layers do this, with their constants in ``get_config`` (not
as weights, so the parameter counts are the paper's):

* :class:`StampNormalization` divides each stamp by a scale ``s`` and adds the
  channel axis.  ``mode="rms"`` (the default) uses the stamp's own root mean
  square, ``mode="fixed"`` a constant ``input_scale``.
* :class:`FluxOutput` turns the network's two linear outputs ``z`` into
  positive fluxes ``s * flux_scale * exp(z)``, with the *same* ``s``.

With ``mode="rms"`` the model is exactly flux-equivariant: multiplying a stamp
by ``a > 0`` multiplies ``s`` by ``a``, leaves the normalised image unchanged
and multiplies both predicted fluxes by ``a``.  Nothing is lost: the map from
a stamp to (normalised stamp, s) is invertible, and the noise level remains
visible to the network in the normalised image.

The layers use ``keras.ops`` only, so they run under the TensorFlow, JAX and
PyTorch backends, and they are registered under the package name
``"blendphot"`` so that :func:`napari_blendphot.models.io.load_model` can load
them in safe mode.
"""

from __future__ import annotations

import keras
from keras import ops

NORMALIZATION_MODES = ("rms", "fixed")


@keras.saving.register_keras_serializable(package="blendphot")
class StampNormalization(keras.layers.Layer):
    """Divide stamps by a per-stamp or fixed scale; return (normalised, scale).

    Parameters
    ----------
    mode : {"rms", "fixed"}
        ``"rms"``: ``s = sqrt(mean(stamp**2) + epsilon)`` per stamp (makes the
        model flux-equivariant).  ``"fixed"``: ``s = input_scale`` for all.
    input_scale : float
        The constant of ``mode="fixed"`` (data units, e.g. e-/s).
    epsilon : float
        Added under the square root so that an all-zero stamp gives a finite,
        tiny scale (then a flux of ~0) instead of NaN.  It is far below any
        real stamp's mean square (~1e-4 (e-/s)^2 for CANDELS noise alone).

    Call
    ----
    stamps : (N, H, W) or (N, H, W, 1) tensor
        Returns ``(stamps / s)`` with shape (N, H, W, 1) and ``s`` with shape (N, 1).
    """

    def __init__(self, mode: str = "rms", input_scale: float = 1.0, epsilon: float = 1e-30, **kwargs):
        super().__init__(**kwargs)
        if mode not in NORMALIZATION_MODES:
            raise ValueError(f"StampNormalization mode must be one of {NORMALIZATION_MODES}, got {mode!r}")
        if not float(input_scale) > 0:
            raise ValueError(f"StampNormalization input_scale must be > 0, got {input_scale!r}")
        self.mode = mode
        self.input_scale = float(input_scale)
        self.epsilon = float(epsilon)

    def call(self, stamps):
        if len(stamps.shape) == 3:
            stamps = ops.expand_dims(stamps, axis=-1)
        if self.mode == "rms":
            mean_square = ops.mean(ops.square(stamps), axis=(1, 2, 3))
            scale = ops.sqrt(mean_square + self.epsilon)
            scale = ops.expand_dims(scale, axis=-1)
        else:
            # ones_like keeps the (dynamic) batch size and dtype on every backend.
            scale = ops.ones_like(stamps[:, 0, 0, :]) * self.input_scale
        normalised = stamps / ops.reshape(scale, (-1, 1, 1, 1))
        return normalised, scale

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) == 3:
            shape = (*shape, 1)
        return shape, (shape[0], 1)

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode, input_scale=self.input_scale, epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package="blendphot")
class FluxOutput(keras.layers.Layer):
    """Positive fluxes in the stamp's units: ``scale * flux_scale * exp(z)``.

    Parameters
    ----------
    flux_scale : float
        Typical flux in units of the input scale ``s`` (so that ``z ~ 0`` at
        initialisation gives fluxes of the right order).  For ``mode="rms"``
        the ratio flux / rms of a CANDELS-like 128x128 stamp is ~500-2500
        (median ~1000); for ``mode="fixed"`` it is the typical flux divided
        by ``input_scale``.
    max_log : float
        ``z`` is clipped to [-max_log, max_log] before the exponential, so a
        wild prediction cannot overflow float32.

    Call
    ----
    [z, scale] : (N, k) and (N, 1) tensors; returns (N, k).
    """

    def __init__(self, flux_scale: float = 1000.0, max_log: float = 20.0, **kwargs):
        super().__init__(**kwargs)
        if not float(flux_scale) > 0:
            raise ValueError(f"FluxOutput flux_scale must be > 0, got {flux_scale!r}")
        self.flux_scale = float(flux_scale)
        self.max_log = float(max_log)

    def call(self, inputs):
        log_ratio, scale = inputs
        log_ratio = ops.clip(log_ratio, -self.max_log, self.max_log)
        return scale * self.flux_scale * ops.exp(log_ratio)

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[0])

    def get_config(self):
        config = super().get_config()
        config.update(flux_scale=self.flux_scale, max_log=self.max_log)
        return config


@keras.saving.register_keras_serializable(package="blendphot")
class SelectChannels(keras.layers.Layer):
    """Keep the listed channels of a channels-last tensor (no weights).

    Used by blend2mask2flux to pass the central and companion masks of the
    U-Net to the flux head whatever the mask encoding.
    """

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = [int(c) for c in channels]

    def call(self, inputs):
        return ops.take(inputs, self.channels, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], len(self.channels))

    def get_config(self):
        config = super().get_config()
        config.update(channels=list(self.channels))
        return config


@keras.saving.register_keras_serializable(package="blendphot")
class BlockMaxPool2D(keras.layers.Layer):
    """2x2 max pooling with stride 2 whose gradient avoids XLA's select_and_scatter (no weights).

    The same output as ``keras.layers.MaxPooling2D(2)`` on even-sized
    channels-last inputs.  Under the JAX backend it is computed as a reshape
    and a max, so its gradient is that of a max reduction (a comparison and a
    broadcast) instead of XLA's ``select_and_scatter``, which is slow: a
    jitted JAX training step of blend2flux f=64 ran ~3x faster with it on the
    CPU machine of this project (docs/benchmarks.md).  Other backends use
    their native pooling op (``keras.ops.max_pool``): under TensorFlow on CPU
    the reshape form made inference 2.7x slower.  Selected by the builders'
    ``pooling="reshape"``.  Where several inputs of a window tie for the
    maximum, JAX shares their gradient instead of giving it to one of them;
    after ReLU such ties are zeros, whose gradient is zero either way.
    """

    def call(self, inputs):
        if keras.backend.backend() != "jax":
            return ops.max_pool(inputs, pool_size=2, strides=2, padding="valid")
        height, width, channels = (int(size) for size in inputs.shape[1:])
        blocks = ops.reshape(inputs, (-1, height // 2, 2, width // 2, 2, channels))
        return ops.max(blocks, axis=(2, 4))

    def build(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None or height % 2 or width % 2:
            raise ValueError(f"{self.name}: needs even, known height and width, got input shape {input_shape}")
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] // 2, input_shape[2] // 2, input_shape[3])


CUSTOM_OBJECTS = {
    "blendphot>StampNormalization": StampNormalization,
    "blendphot>FluxOutput": FluxOutput,
    "blendphot>SelectChannels": SelectChannels,
    "blendphot>BlockMaxPool2D": BlockMaxPool2D,
}


@keras.saving.register_keras_serializable(package="blendphot")
class FluxUncertainty(keras.layers.Layer):
    """Log fluxes and their log uncertainties, ``(N, 4)``: ``[ln f_c, ln f_k, ln s_c, ln s_k]``.

    ``s`` is the predicted standard deviation of ``ln(flux)`` (a relative
    1-sigma flux error: ``flux_err = flux * s``).  The first two columns repeat
    the network's log fluxes, ``ln(scale * flux_scale) + clip(z)``, with the
    gradient stopped: the loss on this output (a Gaussian negative log
    likelihood of the true log flux, :func:`~napari_blendphot.models.losses.log_flux_nll`)
    then trains only the uncertainty branch and never moves the fluxes, which
    stay trained on the paper's MAPE.  ``ln s`` is clipped to
    ``[min_log_sigma, max_log_sigma]`` (1e-3 to e^2 relative error) so that an
    untrained or wild branch cannot give zero or overflowing errors.

    Call
    ----
    [z, scale, log_sigma] : (N, k), (N, 1) and (N, k) tensors; returns (N, 2k).
    """

    def __init__(self, flux_scale: float = 1000.0, max_log: float = 20.0, min_log_sigma: float = -6.9,
                 max_log_sigma: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.flux_scale = float(flux_scale)
        self.max_log = float(max_log)
        self.min_log_sigma = float(min_log_sigma)
        self.max_log_sigma = float(max_log_sigma)

    def call(self, inputs):
        log_ratio, scale, log_sigma = inputs
        log_ratio = ops.clip(ops.cast(log_ratio, "float32"), -self.max_log, self.max_log)
        scale = ops.cast(scale, "float32")
        log_flux = ops.log(scale * self.flux_scale) + log_ratio
        log_sigma = ops.clip(ops.cast(log_sigma, "float32"), self.min_log_sigma, self.max_log_sigma)
        return ops.concatenate([ops.stop_gradient(log_flux), log_sigma], axis=-1)

    def compute_output_shape(self, input_shapes):
        shape = tuple(input_shapes[0])
        return (*shape[:-1], 2 * shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(flux_scale=self.flux_scale, max_log=self.max_log, min_log_sigma=self.min_log_sigma,
                      max_log_sigma=self.max_log_sigma)
        return config


@keras.saving.register_keras_serializable(package="blendphot")
class StopGradient(keras.layers.Layer):
    """Identity whose gradient is zero (no weights): a branch trained on top of it cannot move what is below."""

    def call(self, inputs):
        return ops.stop_gradient(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


@keras.saving.register_keras_serializable(package="blendphot")
class EnsembleMixture(keras.layers.Layer):
    """A deep ensemble's fluxes and their uncertainty from its members' ``flux_uncertainty`` outputs.

    Each member ``i`` gives ``[ln f_i, ln s_i]`` per galaxy (:class:`FluxUncertainty`):
    a Gaussian in ``ln(flux)``.  The ensemble is their equal-weight mixture
    (Lakshminarayanan et al. 2017), summarised by its mean and variance::

        ln f = mean_i ln f_i
        s^2  = mean_i s_i^2  +  w * mean_i (ln f_i - ln f)^2

    The first term is the noise the members expect (aleatoric); the second,
    how much independently trained members disagree: the model's own
    uncertainty, which grows on blends unlike the training set.  ``w``
    (``spread_weight``, 1 for the plain mixture) lets the spread keep its
    face value through an error calibration that scales the whole error by
    ``a``: with ``w = 1 / a^2`` only the aleatoric part is rescaled in effect
    (docs/uncertainty.md, "Deep ensemble").  Returns
    ``[fluxes (N, k), flux_uncertainty (N, 2k)]`` with ``fluxes = exp(ln f)``
    (a geometric mean: averaging log fluxes is what MAPE-trained networks'
    errors, relative ones, call for) and ``flux_uncertainty = [ln f, ln s]``,
    the members' own convention, so the ensemble is read, calibrated and
    checked exactly like one network.  The spread term alone is also kept
    apart by :meth:`components` for tests and diagnostics.

    Call
    ----
    list of M >= 2 tensors (N, 2k); returns [(N, k), (N, 2k)].
    """

    def __init__(self, spread_weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if not float(spread_weight) >= 0:
            raise ValueError(f"EnsembleMixture spread_weight must be >= 0, got {spread_weight!r}")
        self.spread_weight = float(spread_weight)

    def call(self, inputs):
        log_flux, aleatoric_variance, spread_variance = self.components(inputs)
        log_sigma = 0.5 * ops.log(aleatoric_variance + self.spread_weight * spread_variance)
        return [ops.exp(log_flux), ops.concatenate([log_flux, log_sigma], axis=-1)]

    @staticmethod
    def components(inputs):
        """(mean log flux, mean member variance, variance of the members' log fluxes), each (N, k)."""
        if not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
            raise ValueError("EnsembleMixture needs the outputs of at least two members")
        stacked = ops.stack([ops.cast(member, "float32") for member in inputs], axis=0)  # (M, N, 2k)
        k = stacked.shape[-1] // 2
        log_fluxes, log_sigmas = stacked[..., :k], stacked[..., k:]
        log_flux = ops.mean(log_fluxes, axis=0)
        aleatoric_variance = ops.mean(ops.exp(2.0 * log_sigmas), axis=0)
        spread_variance = ops.mean(ops.square(log_fluxes - log_flux[None]), axis=0)
        return log_flux, aleatoric_variance, spread_variance

    def compute_output_shape(self, input_shapes):
        shape = tuple(input_shapes[0])
        return [(*shape[:-1], shape[-1] // 2), shape]

    def get_config(self):
        config = super().get_config()
        config.update(spread_weight=self.spread_weight)
        return config
