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

This module imports Keras only inside :func:`set_compute_precision`.
"""

from __future__ import annotations

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


def resolve_precision(precision: str, source: str = "option precision") -> str:
    """``"float32"`` or ``"bfloat16"`` for *precision* (``"auto"``: bfloat16 where the CPU has it natively).

    Raises
    ------
    InputError
        *precision* is not one of :data:`PRECISIONS`.
    """
    if not isinstance(precision, str) or precision.lower() not in PRECISIONS:
        raise InputError(source, f"{precision!r} is not a precision", f"use one of {', '.join(PRECISIONS)}")
    precision = precision.lower()
    if precision == "auto":
        return "bfloat16" if cpu_bfloat16_flags() else "float32"
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
