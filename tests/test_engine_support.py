"""Helpers for the engine tests: tiny Keras models made inside the worker process.

The test process itself never imports TensorFlow or Keras: the models are built
and saved by :func:`build_tiny_models`, run in the inference worker through
``InferenceEngine.call``.  The worker also returns the raw Keras predictions on
a given batch so that the tests can check the wrappers' layout conversions
(channel order, "ogg" masks, flux in mask) against the networks themselves.
"""

from __future__ import annotations

import numpy as np

from napari_blendphot.constants import STAMP_SIZE


def toy_blends(n: int, seed: int = 0) -> np.ndarray:
    """*n* blends of two toy galaxies with noise: float32 (n, 128, 128)."""
    from napari_blendphot.sample.toy import sersic_stamp

    rng = np.random.default_rng(seed)
    out = np.empty((n, STAMP_SIZE, STAMP_SIZE), np.float32)
    for i in range(n):
        dy, dx = rng.integers(-20, 21, size=2)
        out[i] = (sersic_stamp(rng.uniform(20, 200), rng.uniform(2, 6), 1.0)
                  + sersic_stamp(rng.uniform(10, 100), rng.uniform(2, 5), 1.0, dy=dy, dx=dx)
                  + rng.normal(0, 0.01, (STAMP_SIZE, STAMP_SIZE)).astype(np.float32))
    return out


def build_tiny_models(folder: str, probe: np.ndarray) -> dict:
    """Build, save and run tiny versions of the networks (runs in the worker).

    Returns ``{name: path}`` under ``"paths"`` and the raw predictions of each
    model on *probe* under ``"raw"``.
    """
    import os

    import keras

    from napari_blendphot.models.io import save_model
    from napari_blendphot.models.networks import build_blend2flux, build_blend2mask2flux, build_unet

    keras.utils.set_random_seed(0)
    models = {
        "blend2flux": build_blend2flux(filters=2, depth=1, dense_widths=(4,)),
        "unet": build_unet(depth=2, filters=2),
        "ogg": build_unet(depth=2, filters=2, encoding="ogg"),
        "blend2mask2flux": build_blend2mask2flux(unet_depth=2, unet_filters=2, head_filters=2, head_depth=1,
                                                 head_dense=(4,)),
    }
    paths, raw = {}, {}
    for name, model in models.items():
        paths[name] = str(save_model(model, os.path.join(folder, f"{name}.keras")))
        output = model.predict(probe, verbose=0)
        raw[name] = {k: np.asarray(v) for k, v in output.items()} if isinstance(output, dict) else np.asarray(output)
    return {"paths": paths, "raw": raw, "backend": keras.backend.backend()}


def crash_worker(code: int) -> None:
    """Leave the worker process at once with exit *code* (simulates a crash)."""
    import os

    os._exit(code)


def slow_identity(seconds: float) -> float:
    """Sleep in the worker (lets a test kill it while busy)."""
    import time

    time.sleep(seconds)
    return seconds


class SlowDeblender:
    """A deterministic stand-in method that takes *seconds_per_blend* per blend.

    Fluxes are [sum of the blend, its maximum]; used to test chunking,
    cancellation and worker deaths with timings under control.
    """

    name = "slow"
    label = "slow stand-in"
    makes_masks = False
    needs_worker = False

    def __init__(self, seconds_per_blend: float = 0.02):
        self.seconds_per_blend = float(seconds_per_blend)

    def deblend(self, blends, context=None, progress=None):
        import time

        from napari_blendphot.deblend.base import DeblendOutput, check_blends

        blends = check_blends(blends)
        time.sleep(self.seconds_per_blend * len(blends))
        fluxes = np.column_stack([blends.sum(axis=(1, 2), dtype=np.float64), blends.max(axis=(1, 2))])
        return DeblendOutput(self.name, fluxes, None, {"index_check": np.arange(len(blends))},
                             {"seconds_per_blend": self.seconds_per_blend})


def flux_totals(outputs: dict, scale: float = 1.0) -> dict:
    """``{method: scale * sum of its fluxes}``: a stand-in post-processing step for ``run_then``."""
    return {name: scale * float(np.nansum(output.fluxes)) for name, output in outputs.items()}


def environment_variables(*names: str) -> dict:
    """``{name: value or None}`` of the process this runs in (the worker, through ``InferenceEngine.call``)."""
    import os

    return {name: os.environ.get(name) for name in names}


def refuse_outputs(outputs: dict) -> None:
    """A post-processing step that fails (``run_then`` must keep the outputs)."""
    from napari_blendphot.errors import InputError

    raise InputError("outputs", f"refused {sorted(outputs)}")


def expected_slow_fluxes(blends) -> np.ndarray:
    blends = np.asarray(blends, np.float32)
    return np.column_stack([blends.sum(axis=(1, 2), dtype=np.float64), blends.max(axis=(1, 2))])


#: The batch the tiny models' reference predictions are made on.
PROBE_SEED, PROBE_SIZE = 7, 5


def tiny_models(tmp_path_factory, engine=None) -> dict:
    """Tiny models of :func:`build_tiny_models`, built once per test session and cached.

    Built by *engine*'s worker if given (saving a worker start), otherwise by a
    throwaway TensorFlow worker.  Returns ``{"paths", "raw", "backend", "probe"}``.
    """
    import pickle

    from napari_blendphot.deblend.engine import InferenceEngine

    folder = tmp_path_factory.getbasetemp() / "tiny_models"
    record = folder / "built.pickle"
    if record.is_file():
        with open(record, "rb") as handle:
            return pickle.load(handle)
    folder.mkdir(exist_ok=True)
    probe = toy_blends(PROBE_SIZE, seed=PROBE_SEED)
    if engine is None:
        with InferenceEngine(["sep"], backend="tensorflow") as own_engine:
            built = own_engine.call(build_tiny_models, str(folder), probe)
    else:
        built = engine.call(build_tiny_models, str(folder), probe)
    built["probe"] = probe
    with open(record, "wb") as handle:
        pickle.dump(built, handle)
    return built
