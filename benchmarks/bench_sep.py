"""Throughput of the SEP two-pass baseline against the floor of one bare ``sep.extract``.

Usage::

    python benchmarks/bench_sep.py                 # 2000 toy blends
    python benchmarks/bench_sep.py --quick         # 200 blends, one repeat (CI)
    python benchmarks/bench_sep.py DATASET_DIR     # the first --n blends of a blend dataset folder

Prints, in blends per second and CPU ms per blend (best of ``--repeats``
runs, interleaved, to damp the noise of a shared machine; the load average is
printed with every figure):

* two floors, each a bare loop of one cold-pass ``sep.extract`` per blend with
  the method's settings (threshold in units of the global rms, minarea,
  deblending, segmentation map, the same float32 C-contiguous stamps), the rms
  computed beforehand and not timed:

  - ``floor, sep defaults``: sep as it ships (a 300,000-entry pixel stack,
    allocated and linked on every call): the floor of issue 8 as first
    measured;
  - ``floor, stamp-sized stack``: the same calls with the stamp-sized pixel
    stack the two-pass itself uses (``sep_baseline.stamp_sized_pixel_stack``):
    the like-for-like floor;

* the two-pass on one process (``n_jobs=1``) and its ratio to both floors
  (target >= 2/3), on CPU time (load-independent) and wall time;
* with ``--breakdown``: CPU ms per blend of each stage of the two-pass
  (background, cold pass, hot pass, Kron photometry, assignment, masks) timed
  inside one run that follows the method step by step, and the Python glue
  left over against the method's own total;
* the two-pass on ``--jobs`` processes: the first call (pool start-up
  included) and warm calls (the pool is kept between calls), scaling against
  one process on wall time, and the CPU time of the parent and the workers
  (the load-independent cost of going parallel);
* with ``--engine-chunks``: the batch sent in 256-blend chunks, as the
  inference engine does, with a pool started per chunk (the old behaviour)
  and with the kept pool, for the ``fork`` and ``spawn`` start methods
  (``spawn`` is what a worker with TensorFlow loaded gets);
* what fraction of a chunk's time pickling its input and output costs.

``--only PART`` runs one part once and prints nothing, for counting
instructions under valgrind, which does not depend on the machine's load::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python benchmarks/bench_sep.py DATASET_DIR --n 300 --only floor

``base`` (the set-up: blends, rms), ``floor``, ``floor-stack``, ``two-pass``,
``pool-start`` (set-up, then a 2-process pool started on 16 blends) and
``pool-warm`` (the same, then the whole batch through the started pool; run
with ``--trace-children=yes`` and sum the processes' counts): a part's cost
is its count minus ``base`` (or ``pool-start``).

Toy blends: Sersic galaxies drawn with :func:`napari_blendphot.sample.toy.sersic_stamp`
(CANDELS-like magnitudes and radii, some faint neighbours), paired at random
with the published shift rule of SPEC §4.4 (integer shift, zero padding),
plus Gaussian noise of rms 0.01 (CANDELS depth).  Numpy and sep only.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time

import numpy as np
from bench_helpers import best_time, dataset_blends, interleaved_times, process_cpu_seconds, toy_blends


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def floor_loop(blends, rms):
    """One cold-pass ``sep.extract`` per blend, with the two-pass's own settings and inputs."""
    import sep

    from napari_blendphot.deblend.sep_baseline import COLD_PASS

    for stamp, sigma in zip(blends, rms):
        sep.extract(stamp, COLD_PASS.threshold, err=sigma, minarea=COLD_PASS.minarea,
                    deblend_cont=COLD_PASS.deblend_cont, deblend_nthresh=COLD_PASS.deblend_nthresh,
                    segmentation_map=True)


def floor_loop_stamp_stack(blends, rms):
    from napari_blendphot.deblend.sep_baseline import stamp_sized_pixel_stack

    with stamp_sized_pixel_stack(blends.shape[1] * blends.shape[2]):
        floor_loop(blends, rms)


def instrumented_run(method, blends, context) -> dict:
    """CPU seconds of each stage over the batch, following ``SepTwoPass._measure_blend`` step by step.

    Uses the method's own helpers (``_extract``, ``_kron_flux``,
    ``_write_segment_mask``) so the stages cost what they cost in the method;
    the outputs are checked against the method's at the end, so the copy cannot
    drift from the real flow unnoticed.
    """
    from napari_blendphot.deblend.sep_baseline import _write_segment_mask, stamp_sized_pixel_stack
    from napari_blendphot.match.assign import assign_detections

    clock = time.process_time
    stages = dict.fromkeys(("constant-stamp check", "background (sep.Background)", "background subtraction",
                            "cold pass (sep.extract)", "hot pass (sep.extract)", "Kron radius + sums",
                            "assignment", "masks (segment -> float32)"), 0.0)
    names = list(stages)
    n = len(blends)
    fluxes = np.full((n, 2), np.nan)
    masks = np.zeros((n, 2) + blends.shape[1:], np.float32)
    with stamp_sized_pixel_stack(blends.shape[1] * blends.shape[2]):
        for index in range(n):
            stamp = blends[index]
            t0 = clock()
            constant = stamp.min() == stamp.max()
            t1 = clock()
            stages[names[0]] += t1 - t0
            if constant:
                continue
            background, rms = method._background(stamp)
            t2 = clock()
            stages[names[1]] += t2 - t1
            data = method._subtracted(stamp, background)
            t3 = clock()
            stages[names[2]] += t3 - t2
            objects, segmap = method._extract(data, rms, method.cold)
            t4 = clock()
            stages[names[3]] += t4 - t3
            if len(objects) == 1:
                objects, segmap = method._extract(data, rms, method.hot)
            t5 = clock()
            stages[names[4]] += t5 - t4
            if len(objects) == 0:
                continue
            if method.photometry == "auto":
                flux, _ = method._kron_flux(data, objects, segmap, rms)
            else:
                flux = objects["flux"].astype(np.float64)
            t6 = clock()
            stages[names[5]] += t6 - t5
            shift = None if context is None or context.companion_shift is None else context.companion_shift[index]
            radius = None if context is None or context.central_radius is None else context.central_radius[index]
            chosen = assign_detections(objects["x"], objects["y"], flux, companion_shift=shift, central_radius=radius)
            t7 = clock()
            stages[names[6]] += t7 - t6
            for slot, source in enumerate((chosen.central, chosen.companion)):
                if source >= 0:
                    fluxes[index, slot] = flux[source]
                    _write_segment_mask(segmap, objects[source], source + 1, masks[index, slot])
            stages[names[7]] += clock() - t7
    return stages, fluxes, masks


def print_breakdown(method, blends, context, result, repeats):
    """CPU ms per blend of each stage, from the best of *repeats* instrumented runs."""
    best_total, best = np.inf, None
    for _ in range(repeats):
        start = time.process_time()
        stages, fluxes, masks = instrumented_run(method, blends, context)
        total = time.process_time() - start
        if total < best_total:
            best_total, best = total, stages
    np.testing.assert_array_equal(fluxes, result.fluxes)  # the copy follows the method exactly
    np.testing.assert_array_equal(masks, result.masks)
    method_cpu = min(_cpu_seconds(lambda: method.deblend(blends, context)) for _ in range(repeats))
    n = len(blends)
    print(f"stages of the two-pass, CPU ms per blend (best of {repeats}; {load()}):")
    for name, seconds in best.items():
        print(f"  {name:34s} {1e3 * seconds / n:7.3f}")
    staged = sum(best.values())
    print(f"  {'sum of the stages':34s} {1e3 * staged / n:7.3f}   (instrumented run in all: "
          f"{1e3 * best_total / n:.3f}; the method itself: {1e3 * method_cpu / n:.3f}, of which "
          f"{1e3 * (method_cpu - staged) / n:+.3f} outside these stages: batch set-up, output arrays, Python glue)")


def _cpu_seconds(function) -> float:
    start = time.process_time()
    function()
    return time.process_time() - start


def _pool_cpu_seconds() -> float:
    """CPU seconds used so far by the live pool workers (NaN when one is gone)."""
    from napari_blendphot.deblend import parallel

    return sum(process_cpu_seconds(pid) for executor in list(parallel._pools.values())
               for pid in list(getattr(executor, "_processes", {}) or {}))


def time_pool(method, blends, context, repeats: int) -> dict:
    """Wall and CPU (parent, workers) seconds of the pooled two-pass: the first call, then the best warm one."""
    from napari_blendphot.deblend import parallel

    parallel.shutdown_pools()
    runs = []
    for _ in range(1 + repeats):
        workers_before = _pool_cpu_seconds() if runs else 0.0
        wall, parent = time.perf_counter(), time.process_time()
        method.deblend(blends, context)
        wall, parent = time.perf_counter() - wall, time.process_time() - parent
        runs.append((wall, parent, _pool_cpu_seconds() - workers_before))
    first, warm = runs[0], min(runs[1:])
    return {"first": first, "warm": warm}


def engine_chunks(blends, context, jobs: int, repeats: int) -> None:
    """The batch in 256-blend chunks (as the inference engine sends it): pool per chunk against a kept pool."""
    from napari_blendphot.deblend import parallel
    from napari_blendphot.deblend.sep_baseline import SepTwoPass

    chunk = 256
    method = SepTwoPass(n_jobs=jobs)

    def run(**options):
        for start in range(0, len(blends), chunk):
            stop = min(start + chunk, len(blends))
            sub_context = None if context is None else context.subset(slice(start, stop))
            if options:
                parallel.deblend_in_processes(method, blends[start:stop], sub_context, n_jobs=jobs, **options)
            else:
                SepTwoPass(n_jobs=1).deblend(blends[start:stop], sub_context)

    n = len(blends)
    print(f"{n} blends in {chunk}-blend chunks, as the inference engine sends them ({jobs} processes):")
    serial = min(best_time(run, 1) for _ in range(repeats))
    print(f"  one process                         {n / serial:6.0f} blends/s wall ({load()})")
    for start_method in ("fork", "spawn"):
        per_chunk = best_time(lambda: run(start_method=start_method, keep_pool=False), 1)
        parallel.shutdown_pools()
        first = best_time(lambda: run(start_method=start_method), 1)
        warm = best_time(lambda: run(start_method=start_method), repeats)
        parallel.shutdown_pools()
        print(f"  {start_method:5s} pool started per chunk       {n / per_chunk:6.0f} blends/s wall "
              f"({serial / per_chunk:.2f}x one process; {load()})")
        print(f"  {start_method:5s} kept pool, first / warm   {n / first:6.0f} / {n / warm:.0f} blends/s wall "
              f"({serial / first:.2f}x / {serial / warm:.2f}x one process; {load()})")


ONLY_PARTS = ("base", "floor", "floor-stack", "two-pass", "pool-start", "pool-warm")


def run_only(part: str, blends, context, photometry: str) -> None:
    """One part of the benchmark, once, after the common set-up (see the module docstring)."""
    import sep

    from napari_blendphot.deblend import parallel
    from napari_blendphot.deblend.sep_baseline import SepTwoPass

    rms = np.array([sep.Background(stamp, bw=128, bh=128, fw=1, fh=1).globalrms for stamp in blends])
    method = SepTwoPass(photometry=photometry, n_jobs=1)
    if part == "floor":
        floor_loop(blends, rms)
    elif part == "floor-stack":
        floor_loop_stamp_stack(blends, rms)
    elif part == "two-pass":
        method.deblend(blends, context)
    elif part.startswith("pool"):
        head = slice(0, 16)
        parallel.deblend_in_processes(method, blends[head], None if context is None else context.subset(head),
                                      n_jobs=2, start_method="fork")
        if part == "pool-warm":
            parallel.deblend_in_processes(method, blends, context, n_jobs=2)
        parallel.shutdown_pools()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", nargs="?", help="blend dataset folder (default: toy blends)")
    parser.add_argument("--n", type=int, default=2000, help="number of blends (default 2000)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[2],
                        help="process counts for the parallel runs (default 2)")
    parser.add_argument("--breakdown", action="store_true", help="also time each stage of the two-pass")
    parser.add_argument("--engine-chunks", action="store_true",
                        help="also time 256-blend chunks through a pool per chunk and a kept pool")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--photometry", choices=("auto", "iso"), default="auto")
    parser.add_argument("--quick", action="store_true", help="200 blends, one repeat")
    parser.add_argument("--only", choices=ONLY_PARTS,
                        help="run only this part, once, silently (for instruction counts under valgrind)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.repeats = min(args.n, 200), 1

    import sep

    from napari_blendphot.deblend import parallel
    from napari_blendphot.deblend.base import pack_masks
    from napari_blendphot.deblend.parallel import _run_chunk
    from napari_blendphot.deblend.sep_baseline import PARALLEL_MIN_BLENDS, SepTwoPass

    parallel.set_keep_pools(True)  # as in the inference worker, which deblends chunk after chunk

    start = time.perf_counter()
    if args.dataset:
        blends, context = dataset_blends(args.dataset, args.n)
        source = args.dataset
    else:
        blends, context = toy_blends(args.n, args.seed)
        source = f"toy blends (seed {args.seed})"
    n = len(blends)
    if args.only:
        run_only(args.only, blends, context, args.photometry)
        return 0
    print(f"{n} blends from {source}, made in {time.perf_counter() - start:.1f} s; "
          f"{len(os.sched_getaffinity(0))} cores usable, {load()}; sep {sep.__version__}, "
          f"default pixel stack {sep.get_extract_pixstack()}")

    rms = np.array([sep.Background(stamp, bw=128, bh=128, fw=1, fh=1).globalrms for stamp in blends])
    serial_method = SepTwoPass(photometry=args.photometry, n_jobs=1)
    result = serial_method.deblend(blends, context)
    times = interleaved_times({
        "floor": lambda: floor_loop(blends, rms),
        "floor_stack": lambda: floor_loop_stamp_stack(blends, rms),
        "serial": lambda: serial_method.deblend(blends, context),
    }, args.repeats)
    serial_wall, serial_cpu = times["serial"]

    passes = result.extra["pass"]
    detection = result.extra["detection"]
    print(f"cold-only {np.mean(passes == 0):.1%}, hot {np.mean(passes == 1):.1%}; detection 2: "
          f"{np.mean(detection == 2):.1%}, 0/1: {np.mean((detection == 0) | (detection == 1)):.1%}, "
          f"3: {np.mean(detection == 3):.1%}, none: {np.mean(detection == -1):.1%}")
    print(f"one process ({load()} after the runs)  wall blends/s   cpu blends/s   cpu ms/blend")
    for label, key in (("floor, sep defaults", "floor"), ("floor, stamp-sized stack", "floor_stack"),
                       ("two-pass, 1 process", "serial")):
        wall, cpu = times[key]
        print(f"{label:32s} {n / wall:12.0f}   {n / cpu:12.0f}   {1e3 * cpu / n:10.3f}")
    for label, key in (("sep defaults", "floor"), ("stamp-sized stack", "floor_stack")):
        floor_wall, floor_cpu = times[key]
        print(f"two-pass / floor ({label}) throughput: {floor_cpu / serial_cpu:.2f} on CPU time, "
              f"{floor_wall / serial_wall:.2f} on wall time (target >= 0.67)")
    if args.breakdown:
        print_breakdown(serial_method, blends, context, result, args.repeats)

    for jobs in args.jobs:
        method = SepTwoPass(photometry=args.photometry, n_jobs=jobs)
        if n < PARALLEL_MIN_BLENDS:
            wall = best_time(lambda: method.deblend(blends, context), args.repeats)
            print(f"two-pass, {jobs} processes: NOT pooled (fewer than {PARALLEL_MIN_BLENDS} blends): "
                  f"{n / wall:.0f} blends/s wall, {serial_wall / wall:.2f}x one process ({load()})")
            continue
        pool = time_pool(method, blends, context, args.repeats)
        for label, (wall, parent, workers) in (("first call, pool start-up included", pool["first"]),
                                               ("warm pool (kept between calls)", pool["warm"])):
            print(f"two-pass, {jobs} processes, {label}: {n / wall:.0f} blends/s wall, scaling "
                  f"{serial_wall / wall:.2f}x over 1 process (ideal {jobs}x; {load()}); CPU ms/blend: parent "
                  f"{1e3 * parent / n:.3f}, workers {1e3 * workers / n:.3f} (one process: {1e3 * serial_cpu / n:.3f}; "
                  f"CPU-bound scaling on free cores <= {jobs * serial_cpu / (parent + workers):.2f}x)")
        parallel.shutdown_pools()
    if args.engine_chunks:
        engine_chunks(blends, context, max(args.jobs), args.repeats)

    chunk = blends[:256]
    chunk_context = context.subset(slice(0, len(chunk))) if context is not None else None
    compute = best_time(lambda: _run_chunk(serial_method, chunk, chunk_context), 1)
    payload = _run_chunk(serial_method, chunk, chunk_context)
    pickling = best_time(lambda: pickle.loads(pickle.dumps((serial_method, chunk, chunk_context), protocol=5)), 3)
    pickling += best_time(lambda: pickle.loads(pickle.dumps(payload, protocol=5)), 3)
    unpacked = result.masks[:len(chunk)]
    raw_masks = best_time(lambda: pickle.loads(pickle.dumps(unpacked, protocol=5)), 3)
    print(f"transfer of a {len(chunk)}-blend chunk: pickling in+out {1e3 * pickling:.1f} ms "
          f"({pickling / compute:.1%} of its {1e3 * compute:.0f} ms compute); float32 masks unpacked "
          f"would cost {1e3 * raw_masks:.1f} ms; packing {1e3 * best_time(lambda: pack_masks(unpacked), 3):.1f} ms")
    print("(shared machine: timings are noisy; best of", args.repeats, "runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
