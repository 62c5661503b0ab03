"""CPU cost of the three networks as a set, through the product's predict path, for several weight sets.

Run:
    python benchmarks/bench_network_set.py scratch/realgal_blends --split all \
        --set "shipped=" \
        --set "round 2, two U-Nets=blend2mask2flux=scratch/gpu2/b2m2f_b.keras" \
        --set "round 1=blend2flux=r1/blend2flux_mock_f64.json,unet=r1/unet_mock_d4_f16.json,blend2mask2flux=r1/blend2mask2flux_mock_compact.json"

Each set runs ``napari_blendphot.predict(DIR, ["blend2flux", "unet",
"blend2mask2flux"], split=..., engine=engine)`` in a fresh
:class:`~napari_blendphot.deblend.engine.InferenceEngine` (TensorFlow worker,
float32 unless ``--precision``), after ``warm_up()``.  The figure is the CPU
time (user + system, all threads) the **worker** spends in the run, read
with psutil before and after: what the networks and their post-processing
cost, without the worker's start, Keras' import or the table writing of
this process (the same for every set).  Wall time is printed too; the
machine may be shared, so CPU time is the load-independent figure.  The
ratio is to the first set.  ``--set NAME=`` (nothing after '=') is the
shipped models; otherwise ``METHOD=WEIGHTS`` pairs separated by commas.
"""

from __future__ import annotations

import argparse
import json
import os
import time

METHODS = ("blend2flux", "unet", "blend2mask2flux")


def parse_set(text: str) -> tuple[str, dict]:
    name, _, spec = text.partition("=")
    weights = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        method, _, path = item.partition("=")
        if method not in METHODS or not path:
            raise SystemExit(f"--set {text!r}: expected METHOD=WEIGHTS pairs with METHOD in {METHODS}")
        weights[method] = path
    return name.strip(), weights


def measure(blends_dir: str, split: str, weights: dict, precision: str | None, chunk_size: int | None) -> dict:
    import psutil

    from napari_blendphot import predict
    from napari_blendphot.deblend.engine import InferenceEngine

    options = {method: {"weights": path} for method, path in weights.items()}
    if precision:
        for method in METHODS:
            options.setdefault(method, {})["precision"] = precision
    with InferenceEngine(list(METHODS), backend="tensorflow", method_options=options) as engine:
        engine.warm_up()
        worker = psutil.Process(engine.worker_pid)
        before, started = worker.cpu_times(), time.perf_counter()
        table = predict(blends_dir, list(METHODS), split=split, engine=engine, chunk_size=chunk_size,
                        method_options=options)
        after, wall = worker.cpu_times(), time.perf_counter() - started
        stats = engine.worker_stats()
    cpu = (after.user + after.system) - (before.user + before.system)
    used = table.meta["provenance"]["parameters"]["method_metadata"]
    return {"n": len(table), "cpu_s": cpu, "wall_s": wall, "cpu_ms_per_blend": 1000 * cpu / len(table),
            "reused_passes": stats.get("unet", {}).get("reused_passes", 0),
            "models": {method: (used.get(method) or {}).get("model_name") for method in METHODS}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("blends", help="a blend dataset folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--set", action="append", required=True, metavar="NAME=[METHOD=WEIGHTS,...]")
    parser.add_argument("--precision", choices=("float32", "bfloat16"))
    parser.add_argument("--chunk-size", type=int)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    sets = [parse_set(text) for text in args.set]
    print(f"load average before: {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs; {args.blends} ({args.split})")
    results = {}
    for name, weights in sets:
        results[name] = measure(args.blends, args.split, weights, args.precision, args.chunk_size)
        print(f"  {name}: {results[name]}", flush=True)
    first = results[sets[0][0]]["cpu_ms_per_blend"]
    print(f"\n| weights | blends | worker CPU ms/blend | wall s | U-Net passes reused | ratio to {sets[0][0]} |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {r['n']} | {r['cpu_ms_per_blend']:.2f} | {r['wall_s']:.1f} | {r['reused_passes']} | "
              f"{r['cpu_ms_per_blend'] / first:.2f} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
