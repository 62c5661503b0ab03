"""Stand-in methods, toy blends and tiny networks for tests (no Keras imported here).

Third-party method authors can use them too: :class:`SlowDeblender` is a
deterministic method with controllable timing (chunking, cancel, worker deaths),
:func:`toy_blends` makes blends of two toy galaxies with noise, and
:func:`tiny_models` builds tiny versions of the paper's networks *inside an
inference worker* (the calling process never imports TensorFlow or Keras) and
returns their paths and raw predictions, so that tests can compare the Keras
methods' layout conversions with the networks themselves.
"""

from __future__ import annotations

import os

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


def gaussian_pair_stamps(n: int, seed: int, first: tuple, second: tuple, noise: float = 0.01) -> np.ndarray:
    """*n* noisy stamps of two Gaussian blobs, float32 (n, 128, 128): quick network inputs for tests.

    *first* and *second* are ``(y, x, width, (low, high))``: a blob
    ``A exp(-((y' - y)^2 + (x' - x)^2) / width)`` with A uniform in [low, high)
    per stamp.  Draw order (noise, then each blob's amplitudes) fixes the bytes per seed.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:STAMP_SIZE, :STAMP_SIZE]
    stamps = rng.normal(0.0, noise, (n, STAMP_SIZE, STAMP_SIZE))
    for y, x, width, (low, high) in (first, second):
        stamps += rng.uniform(low, high, (n, 1, 1)) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / width)
    return stamps.astype("float32")


def build_tiny_models(folder: str, probe: np.ndarray) -> dict:
    """Build, save and run tiny versions of the networks (runs in an inference worker: imports Keras).

    Returns ``{name: path}`` under ``"paths"`` and the raw predictions of each
    model on *probe* under ``"raw"``.
    """
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


class DyingDeblender(SlowDeblender):
    """The slow stand-in, whose process dies (exit 1, no goodbye) on a batch of *die_on_size* blends.

    It dies *times* times in all, counted in the file *tally* (shared by the
    processes of a test): a worker death at scale, once or for good.  Other
    batches take *seconds_per_blend* each.
    """

    def __init__(self, die_on_size: int, tally: str, times: int = 1, seconds_per_blend: float = 0.0):
        super().__init__(seconds_per_blend)
        self.die_on_size, self.tally, self.times = int(die_on_size), str(tally), int(times)

    def deblend(self, blends, context=None, progress=None):
        if len(blends) == self.die_on_size:
            with open(self.tally, "a+") as file:
                file.seek(0)
                deaths = len(file.read().splitlines())
                if deaths < self.times:
                    file.write("died\n")
                    file.flush()
                    os._exit(1)
        return super().deblend(blends, context, progress)


def flux_totals(outputs: dict, scale: float = 1.0) -> dict:
    """``{method: scale * sum of its fluxes}``: a stand-in post-processing step for ``run_then``."""
    return {name: scale * float(np.nansum(output.fluxes)) for name, output in outputs.items()}


def environment_variables(*names: str) -> dict:
    """``{name: value or None}`` of the process this runs in (the worker, through ``InferenceEngine.call``)."""
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


def tiny_models(folder, engine=None) -> dict:
    """Tiny models of :func:`build_tiny_models` in *folder*, built once and cached there.

    *folder* may be a pytest ``tmp_path_factory`` (its session folder is used).
    Built by *engine*'s worker if given (saving a worker start), otherwise by a
    throwaway TensorFlow worker.  Returns ``{"paths", "raw", "backend", "probe"}``.
    """
    import json
    from pathlib import Path

    from napari_blendphot.deblend.engine import InferenceEngine

    if hasattr(folder, "getbasetemp"):
        folder = folder.getbasetemp()
    folder = Path(folder) / "tiny_models"
    record, arrays = folder / "built.json", folder / "raw.npz"
    if record.is_file() and arrays.is_file():
        built = json.loads(record.read_text())
        with np.load(arrays, allow_pickle=False) as stored:
            raw = {}
            for key in stored.files:
                name, _, output = key.partition("/")
                if output:
                    raw.setdefault(name, {})[output] = stored[key]
                else:
                    raw[name] = stored[key]
        return {**built, "raw": raw, "probe": toy_blends(PROBE_SIZE, seed=PROBE_SEED)}
    folder.mkdir(exist_ok=True)
    probe = toy_blends(PROBE_SIZE, seed=PROBE_SEED)
    if engine is None:
        with InferenceEngine(["sep"], backend="tensorflow") as own_engine:
            built = own_engine.call(build_tiny_models, str(folder), probe)
    else:
        built = engine.call(build_tiny_models, str(folder), probe)
    flat = {}
    for name, value in built["raw"].items():
        if isinstance(value, dict):
            flat.update({f"{name}/{key}": array for key, array in value.items()})
        else:
            flat[name] = value
    np.savez(arrays, **flat)
    record.write_text(json.dumps({"paths": built["paths"], "backend": built["backend"]}))
    built["probe"] = probe
    return built


class WorkerPid:
    """A stand-in method that reports which process deblended each blend (extra ``pid``).

    A blend whose pixel [0, 0] is negative makes the process leave at once
    (exit code 3), as a crash would.
    """

    name, label, makes_masks, needs_worker = "pid", "worker pid", False, False

    def deblend(self, blends, context=None, progress=None):
        from napari_blendphot.deblend.base import DeblendOutput

        if (blends[:, 0, 0] < 0).any():
            os._exit(3)
        pids = np.full(len(blends), os.getpid(), np.int64)
        return DeblendOutput(self.name, np.zeros((len(blends), 2)), None, {"pid": pids}, {})


class ErrorBarDeblender:
    """A stand-in method with flux errors: :class:`SlowDeblender`'s fluxes, 10% errors.

    The companion of every odd-numbered blend of a call is not measured (NaN
    flux and error), so that both cases reach the results table.
    """

    name, label, makes_masks, needs_worker, flux_errors = "witherrors", "with errors", False, False, True

    def deblend(self, blends, context=None, progress=None):
        from napari_blendphot.deblend.base import DeblendOutput, check_blends

        blends = check_blends(blends)
        fluxes = expected_slow_fluxes(blends)
        fluxes[1::2, 1] = np.nan
        return DeblendOutput(self.name, fluxes, None, {}, {}, flux_errors=0.1 * np.abs(fluxes))


class RaisingDeblender:
    """A stand-in third-party method that fails with an exception type of its own."""

    name, label, makes_masks, needs_worker = "raising", "raising stand-in", False, False

    def deblend(self, blends, context=None, progress=None):
        raise StandInFailure("the stand-in method gave up")


class StandInFailure(Exception):
    """The exception :class:`RaisingDeblender` raises (not one of this package's errors)."""


def make_results(folder, n_blends: int = 40, seed: int = 5):
    """A toy blend dataset, SEP plus a noisy stand-in network on it, written as results.

    Returns ``(results CSV path, BlendDataset)``.
    """
    from pathlib import Path

    from napari_blendphot.blend.dataset import BlendDataset, write_blend_dataset
    from napari_blendphot.clean.neighbours import clean_sample
    from napari_blendphot.deblend.base import DeblendOutput
    from napari_blendphot.deblend.sep_baseline import SepTwoPass
    from napari_blendphot.report.results import build_results_table, write_results
    from napari_blendphot.sample.toy import make_toy_sample

    folder = Path(folder)
    sample = clean_sample(make_toy_sample(60, seed=seed), seed=seed)
    dataset = BlendDataset(write_blend_dataset(sample, folder / "blends", n=n_blends, test_fraction=0.5, seed=seed))
    view = dataset.select(split="test")
    sep = SepTwoPass().deblend(view.blends, view.context())
    rng = np.random.default_rng(seed)
    noisy = DeblendOutput("net", view.fluxes * np.exp(rng.normal(0, 0.1, view.fluxes.shape)))
    table = build_results_table(view.catalog, [sep, noisy], true_masks=view.masks)
    write_results(table, folder / "results")
    return folder / "results.csv", dataset
