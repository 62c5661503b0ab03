"""CPU inference throughput of the networks, and the CPU budget of the 5,000-blend test set.

Run:
    python benchmarks/bench_cpu_inference.py                       # the three shipped (compact) configs
    python benchmarks/bench_cpu_inference.py --quick               # smoke run: tiny configs, two batch sizes
    python benchmarks/bench_cpu_inference.py --config training/configs/unet_d4_f16.json \
        --model "blend2flux:filters=32,depth=2,dense_widths=32;32" --paths predict,function,xla,engine
    python benchmarks/bench_cpu_inference.py --candidates --paths function   # cheaper alternatives

Each network is built with :mod:`napari_blendphot.models.networks` (random
weights: the speed does not depend on them), saved to a temporary ``.keras``
file and loaded back through :func:`napari_blendphot.models.io.load_model`
(as the plugin does); ``--shipped`` times the trained shipped models with
their own weights instead.  Keras/TensorFlow run only in child processes
started by this script (one per network, one for all with ``--quick``) and
in the engine's worker, never in this process.  Per batch size the child
measures:

* ``predict``   ``model.predict(x, batch_size=B)`` (Keras' own loop);
* ``on_batch``  ``model.predict_on_batch(x)`` (what the engine's wrappers call);
* ``function``  ``tf.function(lambda x: model(x, training=False))``;
* ``xla``       the same with ``jit_compile=True`` (XLA on the CPU);
* ``bf16``      ``function`` with the network rebuilt under the
  ``mixed_bfloat16`` policy with the same weights (variables float32,
  compute bfloat16); its outputs are compared with float32's (relative flux
  and |dmag| differences, mask probability differences and pixels flipped
  at 0.5);

and this process measures ``engine``: the saved file run through
:class:`napari_blendphot.deblend.engine.InferenceEngine` (worker process,
pipe transport, the method wrapper's post-processing) with
``method_options={name: {"weights": file, "batch_size": B}}``.
``--sep-blends N`` also times SEP two-pass through the engine in a worker
that has the networks loaded (its default process pool against ``n_jobs=1``).

Throughput is blends per second of the median call after a warm-up call
(at least ``--min-seconds`` of timed work per cell), and **CPU ms per
blend** (all threads; for ``engine`` this process plus the worker): on a
shared machine the CPU time is the load-independent cost.  Inputs are
synthetic blends (noise plus two Gaussian galaxies), or the test blends of
``--blends DIR``.  The analytic cost counts the multiply-accumulates of
every Conv2D, Conv2DTranspose and Dense layer from its input/output shapes
(GFLOP = 2 x MAC / 1e9); pooling, activations, normalisation and
concatenation are left out (< 2 %).

The budget at the end adds, per network, the best direct float32 path, the
best engine cell, and the engine's CPU time at its default batch size
divided by the number of cores (the idle-machine estimate), plus SEP
(``--sep-ms-per-blend`` per blend per core on ``--sep-processes``), for
``--n-blends`` (5,000) against ``--target-seconds`` (120).  Give one
configuration per method for a meaningful total.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_helpers import parse_value, process_cpu_seconds, toy_blends


#: The configurations the plugin ships (training/configs/*.json), in method order.
SHIPPED_CONFIGS = ("blend2flux_f64.json", "unet_d4_f16.json", "blend2mask2flux_compact.json")

#: Cheaper alternatives explored with --candidates (builder kwargs per method).
CANDIDATES = (
    ("blend2flux", {"filters": 32, "depth": 2, "dense_widths": [32, 32]}),
    ("blend2flux", {"filters": 16, "depth": 2, "dense_widths": [64, 64]}),
    ("unet", {"depth": 4, "filters": 12}),
    ("unet", {"depth": 4, "filters": 8}),
    ("unet", {"depth": 3, "filters": 8}),
    ("blend2mask2flux", {"unet_depth": 4, "unet_filters": 12, "head_filters": 16, "head_depth": 2,
                         "head_dense": [64, 64]}),
    ("blend2mask2flux", {"unet_depth": 4, "unet_filters": 8, "head_filters": 16, "head_depth": 2,
                         "head_dense": [64, 64]}),
)

#: Tiny configurations for --quick (seconds, not science models).
QUICK_CONFIGS = (
    ("blend2flux", {"filters": 4, "depth": 2, "dense_widths": [16, 16]}),
    ("unet", {"depth": 2, "filters": 4}),
    ("blend2mask2flux", {"unet_depth": 2, "unet_filters": 4, "head_filters": 4, "head_depth": 2,
                         "head_dense": [16, 16]}),
)

ALL_PATHS = ("predict", "on_batch", "function", "xla", "bf16", "engine")
DEFAULT_PATHS = ["predict", "on_batch", "function", "xla", "engine"]
#: The engine's default batch size per method (deblend/networks.py).
ENGINE_BATCH = {"blend2flux": 64, "unet": 32, "blend2mask2flux": 32}
#: Training-config keys that are not builder arguments.
# --------------------------------------------------------------------------- configs
def _config_dir() -> Path:
    """The training configurations of the installed package."""
    from napari_blendphot.training.config import CONFIG_DIR

    return CONFIG_DIR


def spec_from_config_file(path: Path) -> dict:
    """A training config JSON (``{"model": {"kind": ..., builder kwargs}}``) -> a model spec."""
    with open(path) as handle:
        config = json.load(handle)
    model = dict(config.get("model") or {})
    if "kind" not in model:
        raise SystemExit(f"{path}: no model.kind in this training config")
    method = model["kind"]
    from napari_blendphot.training.train import model_arguments  # the builder's arguments, as training uses

    kwargs = {key: (list(v) if isinstance(v, tuple) else v) for key, v in model_arguments(model).items()}
    return {"label": config.get("name", path.stem), "method": method, "kwargs": kwargs}


def spec_from_text(text: str) -> dict:
    """``"unet:depth=4,filters=8"`` -> a model spec."""
    method, _, rest = text.partition(":")
    kwargs = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        kwargs[key.strip()] = parse_value(value.strip())
    return {"label": describe(method, kwargs), "method": method.strip(), "kwargs": kwargs}


def describe(method: str, kwargs: dict) -> str:
    short = {"filters": "f", "depth": "d", "dense_widths": "dense", "unet_depth": "ud", "unet_filters": "uf",
             "head_filters": "hf", "head_depth": "hd", "head_dense": "hdense"}
    parts = []
    for key, value in kwargs.items():
        if isinstance(value, (list, tuple)):
            value = "x".join(str(v) for v in value)
        parts.append(f"{short.get(key, key)}{value}")
    return f"{method}[{','.join(parts)}]"


# --------------------------------------------------------------------------- FLOPs
def count_macs(model) -> int:
    """Multiply-accumulates of one blend through the Conv2D / Conv2DTranspose / Dense layers."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            # Each input pixel scatters a kernel_h x kernel_w x c_out patch per input channel.
            _, height, width, c_in = layer.input.shape
            kh, kw = layer.kernel_size
            total += height * width * c_in * layer.filters * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            _, height, width, c_out = layer.output.shape
            c_in = layer.input.shape[-1]
            kh, kw = layer.kernel_size
            total += height * width * c_out * c_in * kh * kw
        elif isinstance(layer, keras.layers.Dense):
            total += int(layer.input.shape[-1]) * layer.units
    return int(total)


# --------------------------------------------------------------------------- child
#: Blend dataset folder whose test blends replace the synthetic ones (--blends).
REAL_BLENDS_DIR = os.environ.get("BENCH_CPU_BLENDS")


def make_blends(n: int, seed: int = 0) -> np.ndarray:
    """*n* blends: the test blends of ``--blends DIR`` (from offset ``seed * n``) if given, else
    noise plus two Gaussian galaxies per stamp (realistic value ranges; speed does not depend on pixels)."""
    if REAL_BLENDS_DIR:
        from napari_blendphot.blend.dataset import BlendDataset

        test = BlendDataset(REAL_BLENDS_DIR).select(split="test")
        start = (seed * n) % max(1, len(test.blends) - n)
        return np.ascontiguousarray(test.blends[start:start + n], dtype=np.float32)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:128, :128].astype(np.float32)
    stamps = rng.normal(0.0, 0.01, size=(n, 128, 128)).astype(np.float32)
    for index in range(n):
        for cy, cx, amp, sigma in ((64, 64, 1.0, 4.0), (64 + rng.integers(-20, 21), 64 + rng.integers(-20, 21),
                                                          0.5, 3.0)):
            stamps[index] += amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return stamps


def timed(call, n_per_call: int, min_seconds: float, max_calls: int = 50, cpu_clock=time.process_time) -> dict:
    """Warm up once, then repeat *call* until *min_seconds* elapsed (at least once).

    Also returns the CPU time (all threads; *cpu_clock* may add other
    processes') per blend: on a machine shared with other jobs it is the
    load-independent cost, and CPU ms / n_cores is the wall time to expect
    on an idle machine if the work scales across its cores.
    """
    call()
    times = []
    start = time.perf_counter()
    cpu_start = cpu_clock()
    while not times or (time.perf_counter() - start < min_seconds and len(times) < max_calls):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    cpu = cpu_clock() - cpu_start
    # The median call is robust to a neighbour's burst on the shared machine.
    per_call = float(np.median(times))
    return {"blends_per_s": n_per_call / per_call, "ms_per_blend": 1e3 * per_call / n_per_call,
            "cpu_ms_per_blend": 1e3 * cpu / (len(times) * n_per_call), "calls": len(times)}


def compare_outputs(model, other, blends: np.ndarray) -> dict:
    """Largest relative flux difference and mask probability difference of *other* against *model*."""
    def split(raw):
        items = list(raw.values()) if isinstance(raw, dict) else [raw]
        arrays = [np.asarray(item, np.float64) for item in items]
        return ([a for a in arrays if a.ndim == 2] or [None])[0], ([a for a in arrays if a.ndim == 4] or [None])[0]

    fluxes, masks = split(model.predict_on_batch(blends))
    other_fluxes, other_masks = split(other.predict_on_batch(blends))
    found = {}
    if fluxes is not None:
        relative = np.abs(other_fluxes - fluxes) / np.maximum(np.abs(fluxes), 1e-30)
        dmag = 2.5 * np.abs(np.log10(np.maximum(other_fluxes, 1e-30) / np.maximum(fluxes, 1e-30)))
        found.update(flux_rel_median=float(np.median(relative)), flux_rel_max=float(relative.max()),
                     dmag_abs_median=float(np.median(dmag)), dmag_abs_max=float(dmag.max()))
    if masks is not None:
        found.update(mask_abs_max=float(np.abs(other_masks - masks).max()),
                     mask_flips_at_0_5=float(np.mean((other_masks > 0.5) != (masks > 0.5))))
    return found


def child_main(specs, out_dir: str, batch_sizes, paths, min_seconds: float, threads: int | None) -> None:
    """Build, save, load and time each network; prints one JSON line per network starting with 'RESULT '."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    # One trace per batch shape is expected here; TF's retracing warning would only add noise.
    tf.get_logger().setLevel("ERROR")
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    for spec in [specs] if isinstance(specs, dict) else specs:
        result = time_network(spec, out_dir, batch_sizes, paths, min_seconds)
        if "bf16_vs_float32" in result:
            print(f"  {spec['label']}: bfloat16 against float32, same weights, 64 blends: "
                  + ", ".join(f"{k} {v:.3g}" for k, v in result["bf16_vs_float32"].items()), flush=True)
        print("RESULT " + json.dumps(result), flush=True)


def time_network(spec: dict, out_dir: str, batch_sizes, paths, min_seconds: float) -> dict:
    """Cells of one network (see the module docstring); runs in the child process."""
    import keras
    import tensorflow as tf

    from napari_blendphot.models.io import load_model, save_model
    from napari_blendphot.models.networks import build_model

    keras.utils.set_random_seed(0)
    t0 = time.perf_counter()
    if spec.get("weights_file"):  # a trained model (--shipped): its own weights, through its manifest
        from napari_blendphot.models.manifests import load_registered_model

        path = Path(spec["weights_file"])
        model = load_registered_model(path, expect=spec["method"])[0]  # shared ensemble members put back too
    else:
        built = build_model(spec["method"], **spec["kwargs"])
        digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
        path = Path(out_dir) / f"{spec['method']}-{digest}.keras"
        save_model(built, path, overwrite=True)
        model = load_model(path, expect=spec["method"])
    result = {"spec": spec, "path": str(path), "parameters": int(model.count_params()),
              "gflop_per_blend": 2 * count_macs(model) / 1e9, "build_save_load_s": time.perf_counter() - t0,
              "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
              "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(), "cells": []}
    plain = tf.function(lambda x: model(x, training=False))
    xla = tf.function(lambda x: model(x, training=False), jit_compile=True)
    bf16_call = None
    if "bf16" in paths:
        keras.config.set_dtype_policy("mixed_bfloat16")
        bf16_model = build_model(spec["method"], **spec["kwargs"])
        keras.config.set_dtype_policy("float32")
        # Same weights as the float32 model (variables stay float32 under the mixed policy).
        bf16_model.set_weights(model.get_weights())
        bf16_call = tf.function(lambda x: bf16_model(x, training=False))
        result["bf16_vs_float32"] = compare_outputs(model, bf16_model, make_blends(64, seed=1))
    for batch in batch_sizes:
        x = make_blends(batch)
        calls = {
            "predict": lambda: model.predict(x, batch_size=batch, verbose=0),
            "on_batch": lambda: model.predict_on_batch(x),
            "function": lambda: plain(tf.constant(x)),
            "xla": lambda: xla(tf.constant(x)),
            "bf16": lambda: bf16_call(tf.constant(x)),
        }
        for name in paths:
            if name not in calls:
                continue
            try:
                cell = timed(calls[name], batch, min_seconds)
            except Exception as error:  # e.g. XLA refusing an op: report, keep going
                cell = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
            cell.update(path=name, batch=batch)
            result["cells"].append(cell)
            print("  " + format_cell(result, cell), flush=True)
    return result


# --------------------------------------------------------------------------- parent
def format_cell(result: dict, cell: dict) -> str:
    head = f"{result['spec']['label']:<40s} {cell['path']:<9s} B={cell['batch']:<4d}"
    if "error" in cell:
        return f"{head} failed: {cell['error']}"
    gflops = result["gflop_per_blend"] * cell["blends_per_s"]
    cpu = cell.get("cpu_ms_per_blend", float("nan"))
    return (f"{head} {cell['blends_per_s']:8.1f} blends/s {cell['ms_per_blend']:8.2f} ms/blend "
            f"{gflops:7.1f} GFLOP/s  cpu {cpu:8.2f} ms/blend")


def run_children(specs: list[dict], out_dir: str, args) -> list[dict]:
    """Time *specs* in child processes (one per network, or one for all with --quick)."""
    groups = [specs] if args.quick else [[spec] for spec in specs]
    results = []
    for group in groups:
        command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(group), "--out-dir", out_dir,
                   "--batch-sizes", ",".join(map(str, args.batch_sizes)),
                   "--paths", ",".join(p for p in args.paths if p != "engine"),
                   "--min-seconds", str(args.min_seconds)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        # Stream the child's per-cell lines as they come; a 'RESULT ' line ends each network.
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as child:
            for line in child.stdout:
                if line.startswith("RESULT "):
                    result = json.loads(line[len("RESULT "):])
                    results.append(result)
                    print(f"{result['spec']['label']}: {result['spec']['method']} {result['spec']['kwargs']}: "
                          f"{result['parameters']:,} parameters, {result['gflop_per_blend']:.3f} GFLOP/blend, "
                          f"TF threads intra {result['intra_op_threads']} inter {result['inter_op_threads']} "
                          "(0 = TF's default)", flush=True)
                else:
                    print(line, end="", flush=True)
        if child.returncode != 0:
            raise SystemExit(f"benchmark child for {[s['label'] for s in group]} failed "
                             f"with exit code {child.returncode}")
    return results


def engine_cells(results: list[dict], args) -> None:
    """Time each saved model through one InferenceEngine at each batch size; adds 'engine' cells.

    The worker is started and warmed up first; each request runs one method
    over ``--engine-blends`` blends (whole chunks, so one request = one pipe
    round trip per chunk).  CPU time counts this process and the worker.
    """
    from napari_blendphot.deblend.engine import InferenceEngine

    methods = sorted({result["spec"]["method"] for result in results})
    chunk = max(256, max(args.batch_sizes))
    with InferenceEngine(methods, chunk_size=chunk) as engine:
        engine.start()
        for result in results:
            method = result["spec"]["method"]
            for batch in args.batch_sizes:
                n = max(batch, args.engine_blends)
                blends = make_blends(n)
                engine.set_method_options(method, weights=result["path"], batch_size=batch)
                engine.warm_up([method])
                cell = timed(lambda: engine.run(blends, methods=[method]), n, args.min_seconds, max_calls=10,
                             cpu_clock=_cpu_clock_with(engine.worker_pid))
                cell.update(path="engine", batch=batch)
                result["cells"].append(cell)
                print("  " + format_cell(result, cell), flush=True)


def sep_engine_cells(results: list[dict], args) -> list[dict]:
    """SEP two-pass through the engine, in a worker that has the networks loaded (as in ``blendphot predict``).

    Compares the engine's default (``n_jobs=None``: a process pool of all
    cores, started afresh for every chunk) with ``n_jobs=1``.  Toy blends of
    ``bench_sep.py`` (Sersic pairs, published shift rule) with their context.
    """

    from napari_blendphot.deblend.engine import InferenceEngine

    blends, context = toy_blends(args.sep_blends)
    options = {result["spec"]["method"]: {"weights": result["path"]} for result in results}
    methods = ["sep"] + sorted(options)
    cells = []
    with InferenceEngine(methods, method_options=options, chunk_size=256) as engine:
        engine.warm_up()  # TensorFlow loaded in the worker, as in predict: the SEP pool then spawns
        for label, sep_options in (("n_jobs=None (a process pool kept across chunks)", {}), ("n_jobs=1", {"n_jobs": 1})):
            engine.set_method_options("sep", **sep_options)
            engine.warm_up(["sep"])
            cell = timed(lambda: engine.run(blends, context, methods=["sep"]), len(blends), args.min_seconds,
                         max_calls=5, cpu_clock=_cpu_clock_with(engine.worker_pid))
            cell.update(path="engine", option=label, chunks=-(-len(blends) // 256))
            cells.append(cell)
            print(f"  sep two-pass through the engine, {label:<28s} {cell['blends_per_s']:8.1f} blends/s "
                  f"{cell['ms_per_blend']:7.2f} ms/blend (chunks of 256; CPU of caller + worker "
                  f"{cell['cpu_ms_per_blend']:.2f} ms/blend, pool processes not counted)", flush=True)
    return cells


def _cpu_clock_with(pid: int):
    """CPU seconds of this process plus process *pid* (the engine's worker)."""
    def clock() -> float:
        own = time.process_time()
        worker = process_cpu_seconds(pid)
        return own + (worker if worker == worker else 0.0)  # the worker gone: count ours only
    return clock


def best_ms(result: dict, batch: int | None = None, exclude=("bf16",)) -> tuple[float, str, int]:
    """Fastest (ms/blend, path, batch) among the measured cells (optionally at one batch size)."""
    options = [(c["ms_per_blend"], c["path"], c["batch"]) for c in result["cells"]
               if "error" not in c and c["path"] not in exclude and (batch is None or c["batch"] == batch)]
    return min(options) if options else (float("nan"), "-", 0)


def load_average() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def print_budget(results: list[dict], args) -> None:
    """Three totals: the best direct path, through the engine, and the idle-machine estimate from CPU time."""
    n_cores = os.cpu_count() or 1
    # The engine runs SEP's process pool between the networks, not beside them.
    sep_seconds = args.n_blends * args.sep_ms_per_blend / 1e3 / args.sep_processes
    print(f"\nBudget for {args.n_blends} blends (target {args.target_seconds:.0f} s, {n_cores} cores):")
    print(f"  SEP two-pass: {args.sep_ms_per_blend:.2f} ms/blend/core on {args.sep_processes} processes "
          f"-> {sep_seconds:.1f} s")
    totals = {"best direct path": sep_seconds, "engine": sep_seconds,
              "idle estimate (engine CPU time, else direct float32 CPU time, / cores)": sep_seconds}
    for result in results:
        ms, path, batch = best_ms(result)
        engine = [c for c in result["cells"] if c["path"] == "engine" and "error" not in c]
        engine_ms = min((c["ms_per_blend"] for c in engine), default=float("nan"))
        engine_default = [c for c in engine if c["batch"] == ENGINE_BATCH.get(result["spec"]["method"])]
        cpu_cells = engine_default or engine or [c for c in result["cells"]
                                                 if "cpu_ms_per_blend" in c and c["path"] != "bf16"]
        cpu_ms = min((c["cpu_ms_per_blend"] for c in cpu_cells if "cpu_ms_per_blend" in c), default=float("nan"))
        totals["best direct path"] += args.n_blends * ms / 1e3
        totals["engine"] += args.n_blends * engine_ms / 1e3
        totals["idle estimate (engine CPU time, else direct float32 CPU time, / cores)"] += (
            args.n_blends * cpu_ms / 1e3 / n_cores)
        print(f"  {result['spec']['label']:<40s} {result['gflop_per_blend']:.3f} GFLOP/blend; best {ms:.2f} ms/blend "
              f"({path}, B={batch}); engine best {engine_ms:.2f} ms/blend; CPU {cpu_ms:.2f} ms/blend "
              f"-> {args.n_blends * ms / 1e3:.0f} / {args.n_blends * engine_ms / 1e3:.0f} / "
              f"{args.n_blends * cpu_ms / 1e3 / n_cores:.0f} s")
    methods = [result["spec"]["method"] for result in results]
    if len(methods) != len(set(methods)):
        print("  (several networks of one method: the totals add them all; pass one config per method for a budget)")
    for name, total in totals.items():
        if np.isnan(total):
            print(f"  total, {name}: not measured (add the path to --paths)")
            continue
        verdict = "meets" if total <= args.target_seconds else "MISSES"
        print(f"  total, {name}: {total:.1f} s -> {verdict} the {args.target_seconds:.0f} s target "
              f"({total / args.target_seconds:.2f} x target; compute only, no start-up, I/O or evaluate)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", default=[], type=Path,
                        help="training config JSON (repeatable); default: the shipped compact configs")
    parser.add_argument("--model", action="append", default=[],
                        help='builder kwargs, e.g. "unet:depth=4,filters=8" (lists with ";": dense_widths=32;32)')
    parser.add_argument("--candidates", action="store_true", help="also time the cheaper alternatives")
    parser.add_argument("--shipped", action="store_true",
                        help="time the trained shipped models (src/napari_blendphot/models/weights) with their weights")
    parser.add_argument("--blends", type=Path, help="blend dataset folder: use its test blends as inputs "
                        "(the bf16 comparison then runs on real blends)")
    parser.add_argument("--quick", action="store_true", help="tiny networks, batch sizes 1 and 8, short timing")
    parser.add_argument("--batch-sizes", default="1,8,32,64,128,256")
    parser.add_argument("--paths", default=",".join(DEFAULT_PATHS),
                        help=f"comma-separated among {','.join(ALL_PATHS)}")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="timed work per cell")
    parser.add_argument("--threads", type=int, default=None, help="TF intra/inter-op threads (default: TF's)")
    parser.add_argument("--engine-blends", type=int, default=256, help="blends per engine request")
    parser.add_argument("--n-blends", type=int, default=5000)
    parser.add_argument("--target-seconds", type=float, default=120.0)
    parser.add_argument("--sep-ms-per-blend", type=float, default=1.85,
                        help="SEP two-pass ms per blend per core (default: measured through the engine here)")
    parser.add_argument("--sep-processes", type=int, default=2)
    parser.add_argument("--sep-blends", type=int, default=0,
                        help="also time SEP through the engine (pool vs n_jobs=1) on this many toy blends")
    parser.add_argument("--json", type=Path, help="also write all results to this JSON file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = set(args.paths) - set(ALL_PATHS)
    if unknown:
        parser.error(f"unknown paths {sorted(unknown)}; choose among {ALL_PATHS}")
    if args.blends:
        # Children and the engine worker read it from the environment (set before they start).
        os.environ["BENCH_CPU_BLENDS"] = str(args.blends.resolve())
        globals()["REAL_BLENDS_DIR"] = os.environ["BENCH_CPU_BLENDS"]
    if args.child:
        child_main(json.loads(args.child), args.out_dir, args.batch_sizes, args.paths, args.min_seconds,
                   args.threads)
        return 0

    if args.quick:
        specs = [{"label": describe(m, k), "method": m, "kwargs": k} for m, k in QUICK_CONFIGS]
        if args.batch_sizes == [1, 8, 32, 64, 128, 256]:
            args.batch_sizes = [1, 8]
        if args.paths == DEFAULT_PATHS:
            args.paths = ["on_batch", "function", "engine"]
        args.min_seconds = min(args.min_seconds, 0.2)
        args.engine_blends = min(args.engine_blends, 16)
    else:
        configs = args.config or ([] if (args.model or args.shipped) else [_config_dir() / n for n in SHIPPED_CONFIGS])
        specs = [spec_from_config_file(path) for path in configs] + [spec_from_text(t) for t in args.model]
        if args.shipped:
            from napari_blendphot.models.manifests import list_shipped_models

            specs += [{"label": m.name, "method": m.method, "kwargs": dict(m.architecture),
                       "weights_file": str(m.path)} for m in list_shipped_models()]
        if args.candidates:
            specs += [{"label": describe(m, k), "method": m, "kwargs": k} for m, k in CANDIDATES]
    print(f"CPU inference benchmark: {os.cpu_count()} CPUs, load average {load_average()}, "
          f"batch sizes {args.batch_sizes}, paths {args.paths}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_cpu_inference_") as folder:
        results = run_children(specs, folder, args)
        if "engine" in args.paths:
            engine_cells(results, args)
        sep_cells = sep_engine_cells(results, args) if args.sep_blends else []
    print(f"load average after: {load_average()}")
    print_budget(results, args)
    if args.json:
        args.json.write_text(json.dumps({"load_average_end": load_average(), "results": results,
                                         "sep_engine": sep_cells}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
