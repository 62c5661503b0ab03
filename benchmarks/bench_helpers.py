"""Helpers shared by the benchmark scripts (``from bench_helpers import ...``).

The benchmarks import the installed package (``napari_blendphot``, its
training code included as ``napari_blendphot.training``) and this module,
which sits beside them (Python puts a script's own folder on its path), so
that no benchmark imports another one.  Functions that a worker process runs
(``build_models``) live here at module level: the worker imports them by name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

#: The paper's networks (architectures of :mod:`napari_blendphot.models.networks`).
NETWORKS = ("blend2flux", "unet", "blend2mask2flux")
#: Training configurations of the shipped models, by network.
SHIPPED_CONFIGS = {"blend2flux": "blend2flux_f64", "unet": "unet_d4_f16", "blend2mask2flux": "blend2mask2flux_compact"}
#: Tiny configurations, by network (fast random-weight models).
TINY_CONFIGS = {"blend2flux": {"filters": 4, "depth": 2, "dense_widths": [16, 16]},
                "unet": {"depth": 2, "filters": 4},
                "blend2mask2flux": {"unet_depth": 2, "unet_filters": 4, "head_filters": 4, "head_depth": 2,
                                    "head_dense": [16, 16]}}


def load_average() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process *pid* so far (psutil); NaN once it is gone."""
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return float("nan")
    return times.user + times.system


def shift_stamp(stamp: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Shift by whole pixels with zero padding (no wrap-around)."""
    out = np.zeros_like(stamp)
    size = stamp.shape[0]
    src_y = slice(max(0, -dy), min(size, size - dy))
    dst_y = slice(max(0, dy), min(size, size + dy))
    src_x = slice(max(0, -dx), min(size, size - dx))
    dst_x = slice(max(0, dx), min(size, size + dx))
    out[dst_y, dst_x] = stamp[src_y, src_x]
    return out


def toy_galaxies(n: int, rng: np.random.Generator):
    """*n* noiseless toy galaxies: (stamps, mags, radii).

    Sersic profiles (n = 4, 1 or 2 by type), magnitudes 19-23 and effective
    radii 1.3-15 px log-uniform (the span of SPEC §2), random axis ratio and
    angle; a tenth carry a faint neighbour that cleaning left behind.  Numpy only, so
    the benchmark runs where astropy or GalSim are missing.
    """
    from napari_blendphot.sample.galaxy_sample import mag_to_flux
    from napari_blendphot.sample.toy import sersic_stamp

    mags = rng.uniform(19.0, 23.0, size=n)
    radii = np.exp(rng.uniform(np.log(1.3), np.log(15.0), size=n))
    sersic_index = rng.choice([4.0, 1.0, 2.0, 1.0], size=n)
    stamps = np.empty((n, 128, 128), np.float32)
    for i in range(n):
        stamps[i] = sersic_stamp(mag_to_flux(mags[i]), radii[i], sersic_index[i], q=rng.uniform(0.3, 1.0),
                                 theta=rng.uniform(0, np.pi))
        if rng.random() < 0.1:
            dy, dx = rng.uniform(-55, 55, size=2)
            stamps[i] += sersic_stamp(mag_to_flux(rng.uniform(24.0, 26.0)), rng.uniform(1.3, 4.0), 1.0,
                                      dy=dy, dx=dx)
    return stamps, mags, radii


def toy_blends(n: int, seed: int = 0, noise_rms: float = 0.01):
    """*n* blends paired with the published shift rule of SPEC §4.4; returns (blends, context)."""
    from napari_blendphot.deblend.base import BlendContext

    rng = np.random.default_rng(seed)
    n_galaxies = max(50, n // 4)
    images, mags, radii = toy_galaxies(n_galaxies, rng)
    blends = np.empty((n, 128, 128), np.float32)
    shifts = np.empty((n, 2), np.int64)
    central_radii = np.empty(n, np.float64)
    made = 0
    while made < n:
        central, companion = rng.integers(0, n_galaxies, size=2)
        if central == companion or abs(mags[central] - mags[companion]) >= 2:
            continue
        r_min = max(radii[central], radii[companion])
        r_max = min(4 * min(radii[central], radii[companion]), 64)
        if r_min >= r_max:
            r_min = 0.8 * r_max
        limit = int(np.ceil(r_max))
        for _ in range(25):
            dy, dx = (int(v) for v in rng.integers(-limit, limit + 1, size=2))
            if r_min <= np.hypot(dy, dx) <= r_max:
                break
        else:
            continue
        noise = rng.normal(0.0, noise_rms, (128, 128)).astype(np.float32)
        blends[made] = images[central] + shift_stamp(images[companion], dy, dx) + noise
        shifts[made] = (dy, dx)
        central_radii[made] = radii[central]
        made += 1
    return blends, BlendContext(shifts, central_radii)


def dataset_blends(path, n: int):
    from napari_blendphot.blend.dataset import BlendDataset

    dataset = BlendDataset(path)
    n = min(n, len(dataset))
    # A copy: the dataset is memory-mapped read-only and sep needs writable buffers.
    return np.array(dataset.blends[:n], dtype=np.float32), dataset.context().subset(slice(0, n))


def best_time(function, repeats: int) -> float:
    """Best wall-clock time of *repeats* calls."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def interleaved_times(functions: dict, repeats: int) -> dict:
    """Best (wall, cpu) seconds of each function, the runs interleaved so load swings hit all alike.

    CPU time (this process only) is what a single-process loop costs regardless
    of how many other jobs share the cores; it is the fair basis for the ratio
    to the floor.  Wall time is the basis for the multi-process scaling.
    """
    best = {name: [np.inf, np.inf] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            wall, cpu = time.perf_counter(), time.process_time()
            function()
            best[name][0] = min(best[name][0], time.perf_counter() - wall)
            best[name][1] = min(best[name][1], time.process_time() - cpu)
    return best


def parse_value(text: str):
    """'32' -> 32, '1e-3' -> 0.001, '32;32' -> [32, 32], 'ogg' -> 'ogg'."""
    if ";" in text:
        return [parse_value(part) for part in text.split(";") if part]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def build_models(folder: str, size: str) -> dict:
    """Build and save the three networks in the worker; returns {method: path}."""
    import os

    import keras

    from napari_blendphot.models.io import save_model
    from napari_blendphot.models.networks import build_blend2flux, build_blend2mask2flux, build_unet

    keras.utils.set_random_seed(0)
    if size == "tiny":
        models = {"blend2flux": build_blend2flux(filters=2, depth=1, dense_widths=(4,)),
                  "unet": build_unet(depth=2, filters=2),
                  "blend2mask2flux": build_blend2mask2flux(unet_depth=2, unet_filters=2, head_filters=2,
                                                           head_depth=1, head_dense=(4,))}
    else:
        models = {"blend2flux": build_blend2flux(), "unet": build_unet(), "blend2mask2flux": build_blend2mask2flux()}
    paths = {}
    for name, model in models.items():
        paths[name] = str(save_model(model, os.path.join(folder, f"{name}-{size}.keras")))
        print(f"  {name} ({size}): {model.count_params():,} parameters", flush=True)
    return paths


def shipped_weights() -> dict:
    """{method: manifest name} of the shipped models (no Keras import)."""
    from napari_blendphot.models.manifests import default_model

    found = {}
    for method in NETWORKS:
        manifest = default_model(method)
        if manifest is not None:
            found[method] = manifest.name
    return found


_BUILD_SCRIPT = """
import json, sys
import keras
from napari_blendphot.models.io import save_model
from napari_blendphot.models.networks import build_model
keras.utils.set_random_seed(0)
for method, kwargs, path in json.loads(sys.argv[1]):
    model = build_model(method, **kwargs)
    save_model(model, path)
    print(method, model.count_params(), path)
"""


def build_random_models(methods, folder: Path, tiny: bool, overrides: dict | None = None) -> dict:
    """Random-weight models of the shipped configs (or tiny ones, or *overrides*), built in a subprocess."""
    jobs = []
    for method in methods:
        if overrides and method in overrides:
            kwargs = overrides[method]
        elif tiny:
            kwargs = TINY_CONFIGS[method]
        else:
            from napari_blendphot.training.config import CONFIG_DIR

            with open(CONFIG_DIR / f"{SHIPPED_CONFIGS[method]}.json") as handle:
                model = json.load(handle)["model"]
            kwargs = {key: value for key, value in model.items() if key not in ("kind", "unet_config")}
        jobs.append((method, kwargs, str(folder / f"random_{method}.keras")))
    environment = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "tensorflow"),
                       TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run([sys.executable, "-c", _BUILD_SCRIPT, json.dumps(jobs)], check=True, env=environment,
                   stdout=subprocess.DEVNULL)
    return {method: path for method, _, path in jobs}


