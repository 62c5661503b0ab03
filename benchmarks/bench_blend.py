"""Time and memory of making the paper's 30,000 blends from a 2,000-galaxy sample.

Usage::

    python benchmarks/bench_blend.py                  # toy sample of 2000 galaxies, 30,000 blends
    python benchmarks/bench_blend.py SAMPLE.fits      # any sample load_sample reads ('embedded' too)
    python benchmarks/bench_blend.py --quick          # 200 galaxies, 500 blends (CI smoke)

Steps timed separately (wall clock, one run; the machine is shared, so
expect noise):

* drawing the pairs and shifts of all blends (:func:`draw_pairs`);
* writing the dataset folder (:func:`write_blend_dataset`: split, draw,
  assemble in chunks, ``.npy`` through memory maps, CSV + FITS catalogues);
* one :func:`make_blend` (the Blend Builder's per-drag call), median of 2000;
* a training batch of 32 from :class:`BlendStream`, median of 50.

Memory: the process's peak resident set (``ru_maxrss``, and ``VmHWM`` from
``/proc``), and the peak of Python-traced allocations during the dataset
write (``tracemalloc``; numpy buffers are traced, memory maps are not).  The
dataset goes to a temporary folder beside ``--workdir`` that is deleted
afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def proc_status(field: str) -> float | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def median_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sample", nargs="?", default=None,
                        help="sample to blend (default: a toy sample of --galaxies galaxies)")
    parser.add_argument("-n", "--n-blends", type=int, default=30000, help="blends to make (default 30000)")
    parser.add_argument("--galaxies", type=int, default=2000, help="toy sample size (default 2000)")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--rule", default="published", choices=("published", "paper-text"))
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--workdir", default=None, help="where the dataset is written (default: system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the written dataset")
    parser.add_argument("--quick", action="store_true", help="200 galaxies, 500 blends (CI smoke)")
    args = parser.parse_args(argv)
    if args.quick:
        args.galaxies, args.n_blends = 200, 500

    from napari_blendphot.blend.assemble import make_blend
    from napari_blendphot.blend.dataset import BlendDataset, summarize_blends, write_blend_dataset
    from napari_blendphot.blend.pairing import draw_pairs
    from napari_blendphot.blend.stream import BlendStream

    print(f"machine: {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.2f} "
          f"(shared: timings are noisy)")
    start = time.perf_counter()
    if args.sample:
        from napari_blendphot.sample.io import load_sample

        sample = load_sample(args.sample)
    else:
        from napari_blendphot.sample.toy import make_toy_sample

        sample = make_toy_sample(args.galaxies, seed=args.seed)
    print(f"sample: {len(sample)} galaxies from {sample.source} ({time.perf_counter() - start:.1f} s to "
          f"load/make); rss after loading {peak_rss_mb():.0f} MB")

    mags = np.asarray(sample.catalog["mag"])
    radii = np.asarray(sample.catalog["radius"])
    draw_time = median_time(lambda: draw_pairs(mags, radii, args.n_blends, args.seed, args.rule), 3)
    print(f"draw {args.n_blends} pairs + shifts: {draw_time * 1e3:.1f} ms (median of 3)")

    workdir = Path(args.workdir or tempfile.gettempdir())
    workdir.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="bench-blend-", dir=workdir)) / "dataset"
    try:
        tracemalloc.start()
        start = time.perf_counter()
        write_blend_dataset(sample, out, n=args.n_blends, test_fraction=0.2, seed=args.seed, rule=args.rule,
                            chunk_size=args.chunk_size)
        write_time = time.perf_counter() - start
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        size = sum(f.stat().st_size for f in out.iterdir())
        print(f"write_blend_dataset {args.n_blends} blends: {write_time:.1f} s "
              f"({args.n_blends / write_time:.0f} blends/s), {size / 1e9:.2f} GB on disk")
        print(f"  traced peak allocations during the write: {traced_peak / 2**20:.0f} MB "
              f"(chunk of {args.chunk_size})")
        dataset = BlendDataset(out)
        print(summarize_blends(dataset.catalog))
    finally:
        if not args.keep:
            shutil.rmtree(out.parent, ignore_errors=True)
        else:
            print(f"kept {out}")

    central, companion = sample[0], sample[1]
    per_blend = median_time(lambda: make_blend(central, companion, 7, -12, dmag=0.3), 2000)
    print(f"make_blend (one pair, GUI drag): {per_blend * 1e3:.3f} ms (median of 2000)")

    stream = BlendStream(sample, seed=args.seed, rule=args.rule)
    rng = np.random.default_rng(args.seed)
    per_batch = median_time(lambda: stream.batch(32, rng), 50)
    print(f"BlendStream batch of 32: {per_batch * 1e3:.1f} ms (median of 50)")

    print(f"peak RSS (ru_maxrss): {peak_rss_mb():.0f} MB; VmHWM {proc_status('VmHWM') or float('nan'):.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
