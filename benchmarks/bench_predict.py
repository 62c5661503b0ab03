"""End-to-end ``predict`` throughput against the raw speed of the same models, measured in the same run.

For each network method alone, then all of them together (with the IoU
against the true masks), times ``napari_blendphot.predict`` over a blend
dataset (the worker reading the dataset itself, the table gathered) plus
writing the results table (CSV and FITS), and prints blends/s.  In the same
worker, with the same loaded model, batch size and precision, it times the
bare forward pass over device-resident batches (JAX: the compiled function
and ``block_until_ready``; other backends ``predict_on_batch``): the ratio of
the two is the share of the model's own speed the product path keeps.  The
worker's compilation counter is printed after warm-up and after the run:
``retraces after warm-up`` must be 0.

Run (the GPU machine; the dataset made first from the embedded sample)::

    blendphot blend embedded -n 20000 --test-fraction 1 --seed 0 -o /tmp/b20k
    KERAS_BACKEND=jax python benchmarks/bench_predict.py /tmp/b20k --backend jax --chunk-size 16384 \\
        --json bench_predict_h200.json

Add ``--precision float32`` for float32 (default: the worker's, bfloat16 on
a GPU with native bfloat16) and ``--batch-size N`` to override the
per-device default (1,024 on a GPU).  On a CPU: ``--backend tensorflow
--chunk-size 1024 --limit 2000``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

NETWORKS = ("blend2flux", "unet", "blend2mask2flux")


def raw_speed(name: str, seconds: float = 3.0) -> dict:
    """Blends/s of the bare forward pass of loaded method *name* (runs in the inference worker)."""
    import numpy as np

    from napari_blendphot.deblend.engine import _created
    from napari_blendphot.constants import STAMP_SIZE

    method = _created[name][1]
    rng = np.random.default_rng(0)
    shape = (method.batch_size, STAMP_SIZE, STAMP_SIZE) + ((1,) if method._channel_axis else ())
    batches = [rng.normal(0, 0.01, shape).astype(np.float32) for _ in range(4)]
    if method.keras_backend == "jax":
        import jax

        function, variables = method._jax_function(method.model, batches[0])
        batches = [jax.device_put(b) for b in batches]

        def run(batch):
            return function(variables[0], variables[1], batch)

        def block(out):
            jax.block_until_ready(out)
    else:
        def run(batch):
            return method.model.predict_on_batch(batch)

        def block(out):
            return out
    block(run(batches[0]))  # warm
    count, start = 0, time.perf_counter()
    out = None
    while time.perf_counter() - start < seconds:
        out = run(batches[count % len(batches)])
        count += 1
        if count % 8 == 0:
            block(out)
    block(out)
    elapsed = time.perf_counter() - start
    return {"blends_per_s": count * method.batch_size / elapsed, "batch_size": method.batch_size,
            "precision": method.precision, "device": method.device, "batches": count}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("blends_dir", type=Path)
    parser.add_argument("--methods", default=",".join(NETWORKS), help="network methods (comma-separated)")
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "jax"))
    parser.add_argument("--precision", choices=("float32", "bfloat16", "auto"), default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--chunk-size", type=int, default=16384)
    parser.add_argument("--split", default="all")
    parser.add_argument("--limit", type=int, default=None, help="only the first N blends of the split")
    parser.add_argument("--raw-seconds", type=float, default=3.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from napari_blendphot import predict
    from napari_blendphot.blend.dataset import BlendDataset
    from napari_blendphot.deblend.engine import InferenceEngine
    from napari_blendphot.report.results import write_results

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    dataset = BlendDataset(args.blends_dir)
    blends = dataset.select(args.split) if args.split != "all" else dataset
    if args.limit:
        blends = blends.select(index=range(min(args.limit, len(blends))))
    options = {m: {k: v for k, v in (("precision", args.precision), ("batch_size", args.batch_size)) if v}
               for m in methods}
    print(f"bench_predict: {len(blends)} blends of {args.blends_dir}, backend {args.backend}, "
          f"load {os.getloadavg()}", flush=True)
    rows = []
    with InferenceEngine(methods, backend=args.backend, method_options=options,
                         chunk_size=args.chunk_size) as engine:
        start = time.perf_counter()
        engine.warm_up(methods)
        warm_seconds = time.perf_counter() - start
        warm = engine.worker_stats()
        raw = {m: engine.call(raw_speed, m, args.raw_seconds) for m in methods}
        after_raw = engine.worker_stats()
        print(f"warm-up {warm_seconds:.1f} s; compilations after warm-up "
              f"{ {m: warm[m].get('compilations') for m in methods} }", flush=True)
        for group in [[m] for m in methods] + ([methods] if len(methods) > 1 else []):
            with tempfile.TemporaryDirectory() as folder:
                start = time.perf_counter()
                table = predict(blends, group, engine=engine, chunk_size=args.chunk_size)
                predicted = time.perf_counter() - start
                write_results(table, Path(folder) / "results")
                total = time.perf_counter() - start
            stats = engine.worker_stats()
            retraces = sum(stats[m].get("compilations", 0) - after_raw[m].get("compilations", 0) for m in group)
            slowest_raw = min(raw[m]["blends_per_s"] for m in group)
            # Several networks in one run: their raw speeds add as times (1 / sum of 1 / speed).
            combined_raw = 1.0 / sum(1.0 / raw[m]["blends_per_s"] for m in group)
            row = {"methods": group, "n": len(blends), "seconds": total, "predict_seconds": predicted,
                   "blends_per_s": len(blends) / total, "raw_blends_per_s": combined_raw,
                   "ratio_to_raw": len(blends) / total / combined_raw, "slowest_raw": slowest_raw,
                   "retraces_after_warm_up": retraces, "iou": any(c.startswith("g1_iou_") for c in table.colnames),
                   "raw": {m: raw[m] for m in group}}
            rows.append(row)
            where = ", ".join(f"{m}: batch {raw[m]['batch_size']} {raw[m]['precision']} on {raw[m]['device']}"
                              for m in group)
            print(f"{'+'.join(group):40s} {row['blends_per_s']:10.0f} blends/s end to end "
                  f"({total:.2f} s, predict {predicted:.2f} s)  raw {combined_raw:10.0f} blends/s  "
                  f"ratio {row['ratio_to_raw']:.3f}  retraces after warm-up {retraces}  [{where}]",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "argv": sys.argv, "load": os.getloadavg()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
