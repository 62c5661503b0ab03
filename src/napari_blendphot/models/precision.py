"""Compute precision of a loaded network: float32, or bfloat16 with float32 weights.

A model saved in float32 can run its convolutions and dense layers in
bfloat16 (Keras' ``mixed_bfloat16`` policy: variables stay float32, the
computation is bfloat16).  On CPUs with native bfloat16 instructions
(``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``: Intel Sapphire Rapids
and later, AMD Zen 4 and later) oneDNN runs such layers about twice as fast;
on CPUs without them bfloat16 is emulated and *slower*, which is why
``"auto"`` only picks it where the CPU has the instructions.

The layers that set the data's scale stay float32, as in mixed-precision
training (``training/train.py``): the per-stamp normalisation (its RMS and
the exponential of the log fluxes would lose two significant digits in
bfloat16), the flux output and the sigmoid masks.  With the shipped models
bfloat16 changes the fluxes by ~0.004 mag (median) and flips ~0.01 % of the
mask pixels at the 0.5 threshold (docs/benchmarks.md); results record the
precision used.

On a GPU with native bfloat16 (compute capability 8.0 and later: A100,
H100, H200) the *default* precision (``precision=None``) is bfloat16: the
tensor cores run it at twice the float32 (TF32) rate and the published
accuracy moves by thousandths of a magnitude; on a CPU the default stays
float32, the precision of the published test metrics.  ``"auto"`` picks
bfloat16 on such a GPU and on a CPU with native bfloat16.

This module imports Keras only inside :func:`set_compute_precision`; the
accelerator is looked at only where the Keras backend is loaded already (the
inference worker), never imported for the question.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

from napari_blendphot.errors import InputError

#: Precisions a network method accepts (``"auto"`` resolves to one of the other two).
PRECISIONS = ("float32", "bfloat16", "auto")
#: Precisions of training, by their one name (Keras calls the mixed ones "mixed_bfloat16", "mixed_float16").
TRAINING_PRECISIONS = ("float32", "bfloat16", "float16")
#: The Keras dtype policy of each precision.
KERAS_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}

#: Layers kept in float32 under a bfloat16 policy (names used by :mod:`napari_blendphot.models.networks`).
FLOAT32_LAYERS = ("normalization", "fluxes", "masks", "flux_uncertainty")

#: CPU flags (Linux ``/proc/cpuinfo``) of native bfloat16 arithmetic.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_bfloat16_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, ...]:
    """The native-bfloat16 flags this CPU advertises (empty where unknown, e.g. not Linux)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return ()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return tuple(flag for flag in NATIVE_BF16_FLAGS if flag in flags)
    return ()


def keras_device() -> str:
    """``"gpu"`` where the loaded Keras backend computes on a GPU, else ``"cpu"``.

    Only a backend that is imported already is asked (the inference worker,
    training): in any other process the answer is ``"cpu"`` without importing
    anything.
    """
    return "gpu" if _loaded_backend_gpu() is not None else "cpu"


def accelerator_bfloat16() -> bool:
    """Whether the loaded Keras backend computes on a GPU with native bfloat16 (compute capability >= 8.0)."""
    capability = _loaded_backend_gpu()
    return capability is not None and capability >= (8, 0)


def _loaded_backend_gpu():
    """The compute capability ``(major, minor)`` of the loaded backend's first GPU, or None (no GPU, or not loaded).

    A GPU whose capability cannot be read counts as (0, 0): a GPU, without native bfloat16.
    """
    keras = sys.modules.get("keras")
    if keras is None:
        return None
    try:
        backend = keras.backend.backend()
    except Exception:  # a partly imported Keras
        return None
    try:
        if backend == "jax" and "jax" in sys.modules:
            import jax

            if jax.default_backend() != "gpu":
                return None
            text = str(getattr(jax.devices()[0], "compute_capability", "0.0"))
            major, _, minor = text.partition(".")
            return int(major or 0), int(minor or 0)
        if backend == "tensorflow" and "tensorflow" in sys.modules:
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if not gpus:
                return None
            details = tf.config.experimental.get_device_details(gpus[0])
            return tuple(details.get("compute_capability") or (0, 0))
        if backend == "torch" and "torch" in sys.modules:
            import torch

            if not torch.cuda.is_available():
                return None
            return tuple(torch.cuda.get_device_capability(0))
    except Exception:  # a driver that does not answer: compute as on a CPU
        return None
    return None


def default_precision() -> str:
    """The precision of a network given none: bfloat16 on a GPU with native bfloat16, float32 elsewhere."""
    return "bfloat16" if accelerator_bfloat16() else "float32"


def resolve_precision(precision: str, source: str = "option precision") -> str:
    """``"float32"`` or ``"bfloat16"`` for *precision*.

    ``"auto"``: bfloat16 on a GPU with native bfloat16 or a CPU with native
    bfloat16 (:func:`cpu_bfloat16_flags`), float32 elsewhere.

    Raises
    ------
    InputError
        *precision* is not one of :data:`PRECISIONS`.
    """
    if not isinstance(precision, str) or precision.lower() not in PRECISIONS:
        raise InputError(source, f"{precision!r} is not a precision", f"use one of {', '.join(PRECISIONS)}")
    precision = precision.lower()
    if precision == "auto":
        return "bfloat16" if cpu_bfloat16_flags() or accelerator_bfloat16() else "float32"
    return precision


def canonical_precision(precision: str, source: str = "precision") -> str:
    """The one name of a training precision: ``"float32"``, ``"bfloat16"`` or ``"float16"``.

    Keras' policy names (``"mixed_bfloat16"``, ``"mixed_float16"``), which
    older run configurations hold, are accepted and translated.
    """
    aliases = {policy: name for name, policy in KERAS_POLICIES.items()}
    name = aliases.get(str(precision), str(precision))
    if name not in TRAINING_PRECISIONS:
        raise InputError(source, f"{precision!r} is not a precision", f"use one of {', '.join(TRAINING_PRECISIONS)}")
    return name


def keras_policy(precision: str) -> str:
    """The Keras dtype policy (``keras.config.set_dtype_policy``) of a precision."""
    return KERAS_POLICIES[canonical_precision(precision)]


def _all_layers(model):
    """Every layer of *model*, nested models' layers included."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def set_compute_precision(model, precision: str):
    """Make *model* compute in *precision* (``"float32"`` or ``"bfloat16"``), in place; returns it.

    Weights are not touched (they stay float32); only the layers' compute
    dtype changes, except :data:`FLOAT32_LAYERS`.  Call it before the first
    prediction: Keras traces its predict function once.
    """
    import keras

    precision = resolve_precision(precision)
    policy_name = keras_policy(precision)
    for layer in _all_layers(model):
        if layer.name in FLOAT32_LAYERS or isinstance(layer, keras.layers.InputLayer):
            continue
        if getattr(layer, "weights", None) is not None and any(w.dtype != "float32" for w in layer.weights):
            continue  # a layer saved with other variables (float16, int8 quantised): leave it as it is
        layer.dtype_policy = keras.DTypePolicy(policy_name)
    return model
