"""Inference and training throughput of the networks over batch sizes and precisions.

Prints one table row per (model, precision, mode, batch size): blends per
second, milliseconds per batch, achieved TFLOP/s (counted from the layer shapes:
:func:`model_flops`; training = 3x forward), the fraction of the bf16 dense peak
and the ratio to the reference throughputs of a straightforward Keras 3/JAX
implementation on the same kind of GPU.  Writes the rows to ``--json`` too.

Two backends:

* ``--backend jax`` (the GPU machine): a jitted *stateless* forward pass or
  training step (``model.stateless_call`` + ``optimizer.stateless_apply``)
  over a pool of batches resident on the device, timed with
  ``block_until_ready`` after a warm-up; precision ``float32`` or
  ``bfloat16`` (Keras' ``mixed_bfloat16`` dtype policy; normalisation and outputs kept in
  float32 as in training).
* ``--backend tensorflow`` (CPU laptops): ``model.predict_on_batch`` and
  ``model.train_on_batch``; the numbers say what a user without a GPU gets.

Inputs are realistic blends (two Sersic-like blobs plus noise), never zeros,
and a different batch is used at each repetition so nothing is cached.

Examples::

    python benchmarks/bench_models.py --backend jax --models b2f64 b2f256 unet b2m2f \\
        --precisions float32 bfloat16 --json out/bench.json
    python benchmarks/bench_models.py --backend tensorflow --models b2f64 --batch-sizes 32 --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np


#: Model configurations benchmarked (training/configs names).
MODELS = {
    "b2f64": "blend2flux_f64",
    "b2f256": "blend2flux_f256",
    "b2f512": "blend2flux_f512",
    "unet": "unet_d5_f32",
    "b2m2f": "blend2mask2flux",
    "unet_small": "unet_d4_f16",
    "b2m2f_small": "blend2mask2flux_compact",
    "tiny_b2f": "tiny_blend2flux",
    "tiny_b2m2f": "tiny_blend2mask2flux",
}
#: Throughput of a straightforward Keras 3 / JAX float32 implementation on an H100 (blends/s).
REFERENCE = {("b2f256", "inference"): 33000.0, ("b2f256", "training"): 7700.0, ("unet", "inference"): 7300.0}
#: Targets of the performance issue (blends/s).
TARGETS = {("b2f256", "inference"): 40000.0, ("b2f256", "training"): 12000.0, ("unet", "inference"): 15000.0}
#: Dense bf16 tensor-core peak of an H100 SXM, FLOP/s (measured ~798 TFLOP/s on this machine kind).
PEAK_BF16 = 800e12


def realistic_blends(n: int, seed: int, size: int = 128) -> np.ndarray:
    """*n* stamps with two elliptical exponential blobs (fluxes 20-1500) plus noise of rms 0.01."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    out = rng.normal(0.0, 0.01, (n, size, size)).astype(np.float32)
    for i in range(n):
        for cy, cx in ((64.0, 64.0), (64.0 + rng.uniform(-30, 30), 64.0 + rng.uniform(-30, 30))):
            radius = rng.uniform(1.5, 10.0)
            q = rng.uniform(0.4, 1.0)
            r = np.hypot(x - cx, (y - cy) / q)
            blob = np.exp(-1.68 * r / radius)
            out[i] += (rng.uniform(20, 1500) / blob.sum()) * blob
    return out


#: Max-pooling implementation of the benchmarked models (``--pooling``; see models.networks.POOLINGS).
POOLING = {"value": "window"}


def build(name: str, precision: str):
    from napari_blendphot.training.config import load_config
    from napari_blendphot.training.train import build_network, compile_network

    overrides = {"training.precision": precision}
    if POOLING["value"] != "window":
        overrides["model.pooling"] = POOLING["value"]
    config = load_config(MODELS[name], overrides)
    model = build_network(config, precision)
    compile_network(model, config)
    return model, config


def targets_for(kind: str, blends: np.ndarray, rng) -> object:
    n = len(blends)
    fluxes = rng.uniform(20, 1500, (n, 2)).astype(np.float32)
    masks = (blends[..., None] > 0.05).repeat(2, -1).astype(np.float32)
    if kind == "blend2flux":
        return fluxes
    if kind == "unet":
        return masks
    return {"fluxes": fluxes, "masks": masks}


# ---------------------------------------------------------------------------
# JAX: jitted stateless steps, data resident on the device
# ---------------------------------------------------------------------------
def jax_bench(name, precision, batch_sizes, modes, repeats, pool, min_time):
    import jax
    import jax.numpy as jnp

    model, config = build(name, precision)
    kind = config["model"]["kind"]
    forward_flops = model_flops(model)
    rows = []
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]

    def forward(tv, ntv, x):
        out, _ = model.stateless_call(tv, ntv, x, training=False)
        return out

    fwd = jax.jit(forward)
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    ov = [v.value for v in optimizer.variables]

    from napari_blendphot.models.losses import flux_mape, mask_bce

    def loss_of(outputs, y):
        if kind == "blend2flux":
            return jnp.mean(flux_mape(y, outputs))
        if kind == "unet":
            return jnp.mean(mask_bce(y, outputs))
        return jnp.mean(flux_mape(y["fluxes"], outputs["fluxes"])) + 0.1 * jnp.mean(mask_bce(y["masks"], outputs["masks"]))

    def train_step(tv, ntv, ov, x, y):
        def compute(tv):
            outputs, new_ntv = model.stateless_call(tv, ntv, x, training=True)
            return loss_of(outputs, y), new_ntv

        (loss, new_ntv), grads = jax.value_and_grad(compute, has_aux=True)(tv)
        new_tv, new_ov = optimizer.stateless_apply(ov, grads, tv)
        return new_tv, new_ntv, new_ov, loss

    step = jax.jit(train_step, donate_argnums=(0, 1, 2))
    rng = np.random.default_rng(1)
    for batch in batch_sizes:
        for mode in modes:
            try:
                xs_host = realistic_blends(batch, seed=batch)
                # A pool of distinct batches on the device (rolled copies: cheap to make, not cached).
                xs = [jax.device_put(np.roll(xs_host, k * 7, axis=(1, 2))) for k in range(pool)]
                if mode == "inference":
                    flops = forward_flops * batch
                    jax.block_until_ready(fwd(tv, ntv, xs[0]))
                    times = _time(lambda k: fwd(tv, ntv, xs[k % pool]), repeats, min_time)
                else:
                    y_host = targets_for(kind, xs_host, rng)
                    ys = jax.device_put(y_host)
                    # Backward pass ~ 2x the forward (gradients of inputs and weights).
                    flops = 3 * forward_flops * batch
                    state = {"tv": [jnp.array(v) for v in tv], "ntv": [jnp.array(v) for v in ntv],
                             "ov": [jnp.array(v) for v in ov]}

                    def run(k):
                        state["tv"], state["ntv"], state["ov"], loss = step(state["tv"], state["ntv"], state["ov"],
                                                                            xs[k % pool], ys)
                        return loss

                    jax.block_until_ready(run(0))
                    times = _time(run, repeats, min_time)
                rows.append(_row(name, precision, mode, batch, times, flops))
                print(_format(rows[-1]), flush=True)
            except Exception as exc:  # out of memory at large batches: record and go on
                rows.append({"model": name, "precision": precision, "mode": mode, "batch": batch,
                             "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
                print(f"{name:7s} {precision:15s} {mode:9s} {batch:6d}  failed: {rows[-1]['error']}", flush=True)
    return rows


def model_flops(model) -> float:
    """Multiply-add FLOPs (x2) of one blend's forward pass: convolutions, transposed convolutions, dense.

    Counted from the layers' shapes, because XLA's ``cost_analysis`` leaves out
    the cuDNN convolutions (custom calls) and reports almost nothing for
    convolutional networks.  Pooling, activations and normalisation are
    ignored (well under 1% here).
    """
    import keras

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            _, h, w, cin = layer.input.shape
            kh, kw = layer.kernel_size
            total += 2.0 * h * w * kh * kw * cin * layer.filters
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, cout = layer.output.shape
            kh, kw = layer.kernel_size
            total += 2.0 * h * w * kh * kw * layer.input.shape[-1] * cout
        elif isinstance(layer, keras.layers.Dense):
            total += 2.0 * layer.input.shape[-1] * layer.units
    return total


def _time(fn, repeats, min_time):
    """Median seconds per call over *repeats* timed blocks of calls lasting >= *min_time* s each."""
    import jax

    # Calibrate the calls per block.
    tic = time.perf_counter()
    jax.block_until_ready(fn(1))
    once = max(time.perf_counter() - tic, 1e-6)
    calls = max(1, int(min_time / once))
    per_call = []
    k = 0
    for _ in range(repeats):
        tic = time.perf_counter()
        out = None
        for _ in range(calls):
            out = fn(k)
            k += 1
        jax.block_until_ready(out)
        per_call.append((time.perf_counter() - tic) / calls)
    return per_call


def _row(name, precision, mode, batch, times, flops):
    median = statistics.median(times)
    spread = (max(times) - min(times)) / median if median else float("nan")
    rate = batch / median
    tflops = flops / median / 1e12 if np.isfinite(flops) else float("nan")
    row = {"model": name, "precision": precision, "mode": mode, "batch": batch, "ms_per_batch": 1e3 * median,
           "spread": spread, "blends_per_s": rate, "gflop_per_blend": flops / batch / 1e9 if np.isfinite(flops) else None,
           "tflops": tflops, "peak_fraction_bf16": tflops * 1e12 / PEAK_BF16 if np.isfinite(tflops) else None}
    if (name, mode) in REFERENCE:
        row["ratio_to_reference"] = rate / REFERENCE[(name, mode)]
        row["target"] = TARGETS[(name, mode)]
    return row


def _format(row) -> str:
    text = (f"{row['model']:7s} {row['precision']:15s} {row['mode']:9s} {row['batch']:6d} "
            f"{row['blends_per_s']:10.0f} blends/s {row['ms_per_batch']:9.2f} ms/batch")
    if row.get("tflops") is not None and np.isfinite(row["tflops"]):
        text += f" {row['tflops']:6.1f} TFLOP/s ({100 * row['peak_fraction_bf16']:4.1f}% of bf16 peak)"
    if "ratio_to_reference" in row:
        text += f"  x{row['ratio_to_reference']:.2f} of reference, target {row['target']:.0f}"
    return text


# ---------------------------------------------------------------------------
# TensorFlow (or any backend) through the Keras API
# ---------------------------------------------------------------------------
def keras_bench(name, precision, batch_sizes, modes, repeats, min_time):
    model, config = build(name, precision)
    kind = config["model"]["kind"]
    rows = []
    rng = np.random.default_rng(1)
    for batch in batch_sizes:
        x = realistic_blends(batch, seed=batch)
        y = targets_for(kind, x, rng)
        for mode in modes:
            fn = (lambda: model.predict_on_batch(x)) if mode == "inference" else (lambda: model.train_on_batch(x, y))
            fn()
            times = []
            for _ in range(repeats):
                tic = time.perf_counter()
                calls = 0
                while True:
                    fn()
                    calls += 1
                    if time.perf_counter() - tic >= min_time:
                        break
                times.append((time.perf_counter() - tic) / calls)
            flops = model_flops(model) * batch * (1 if mode == "inference" else 3)
            rows.append(_row(name, precision, mode, batch, times, flops))
            print(_format(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"),
                        choices=("jax", "tensorflow", "torch"))
    parser.add_argument("--models", nargs="+", default=["b2f64", "b2f256", "unet", "b2m2f"], choices=sorted(MODELS))
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--modes", nargs="+", default=["inference", "training"], choices=("inference", "training"))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 256, 1024, 4096])
    parser.add_argument("--train-batch-sizes", nargs="+", type=int, help="batch sizes of the training mode "
                        "(default: those of --batch-sizes up to 1024)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds per timed block")
    parser.add_argument("--pool", type=int, default=4, help="distinct device batches cycled through (jax)")
    parser.add_argument("--pooling", choices=("window", "reshape"), default="window",
                        help="max-pooling implementation (reshape: same model, max-reduction gradient "
                             "instead of XLA's select_and_scatter)")
    parser.add_argument("--json", help="write all rows to this JSON file")
    args = parser.parse_args(argv)
    POOLING["value"] = args.pooling
    os.environ["KERAS_BACKEND"] = args.backend
    import keras

    info = {"backend": keras.backend.backend(), "keras": keras.__version__, "pooling": args.pooling}
    if args.backend == "jax":
        import jax

        info.update(jax=jax.__version__, devices=[str(d) for d in jax.devices()],
                    device_kind=jax.devices()[0].device_kind)
    print(json.dumps(info), flush=True)
    rows = []
    train_sizes = args.train_batch_sizes or [b for b in args.batch_sizes if b <= 1024]
    for name in args.models:
        for precision in args.precisions:
            for mode in args.modes:
                sizes = args.batch_sizes if mode == "inference" else train_sizes
                if args.backend == "jax":
                    rows += jax_bench(name, precision, sizes, [mode], args.repeats, args.pool, args.min_time)
                else:
                    rows += keras_bench(name, precision, sizes, [mode], args.repeats, args.min_time)
    best = {}
    for row in rows:
        if "error" in row:
            continue
        key = (row["model"], row["mode"])
        if key not in best or row["blends_per_s"] > best[key]["blends_per_s"]:
            best[key] = row
    print("\nbest per model and mode:")
    for key, row in sorted(best.items()):
        print("  " + _format(row))
    for key, target in TARGETS.items():
        if key in best:
            got = best[key]["blends_per_s"]
            print(f"target {key[0]} {key[1]}: {got:.0f} blends/s vs {target:.0f} -> "
                  f"{'MET' if got >= target else 'MISSED by ' + format(1 - got / target, '.0%')}")
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
