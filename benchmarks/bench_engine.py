"""Inference engine timings: start, warm-up, single-blend latency, batch throughput, transport.

Run:  python benchmarks/bench_engine.py [--size tiny|paper|both] [--backend tensorflow] [--repeats 20]

"tiny" networks have a few hundred parameters (latency = engine overhead);
"paper" networks have the paper's fiducial sizes (blend2flux f=256 depth 2,
25.7 M parameters; U-Net depth 5 f=32, 8.6 M; blend2mask2flux 18.5 M) with
untrained weights (timings do not depend on the weights).  The models are
built and saved by the worker itself, so this process never imports Keras.
Timings on a shared machine are noisy: medians are printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
from bench_helpers import build_models  # module-level: the worker imports it by name

METHODS = ("sep", "blend2flux", "unet", "blend2mask2flux")


class EchoDeblender:
    """Returns constant fluxes and float masks: measures pure transport cost."""

    name = "echo"
    label = "echo"
    makes_masks = True
    needs_worker = False

    def deblend(self, blends, context=None, progress=None):
        from napari_blendphot.deblend.base import DeblendOutput

        n = len(blends)
        masks = np.broadcast_to(blends[:, None] * np.float32(0.5), (n, 2, 128, 128)).copy()
        return DeblendOutput("echo", np.zeros((n, 2)), masks)


def _blends(n: int, seed: int = 0) -> np.ndarray:
    from napari_blendphot.sample.toy import sersic_stamp

    rng = np.random.default_rng(seed)
    out = np.empty((n, 128, 128), np.float32)
    base = sersic_stamp(100.0, 4.0, 1.0) + sersic_stamp(40.0, 3.0, 1.0, dy=10, dx=-8)
    for i in range(n):
        out[i] = base + rng.normal(0, 0.01, (128, 128)).astype(np.float32)
    return out


def bench(size: str, backend: str, repeats: int, batch: int) -> None:
    from napari_blendphot.deblend.engine import InferenceEngine

    print(f"== {size} networks, backend {backend}")
    blends = _blends(max(batch, 1))
    with tempfile.TemporaryDirectory() as folder:
        engine = InferenceEngine(METHODS, backend=backend)
        t0 = time.perf_counter()
        engine.start()
        t1 = time.perf_counter()
        paths = engine.call(build_models, folder, size)
        for name, path in paths.items():
            engine.set_method_options(name, weights=path)
        t2 = time.perf_counter()
        engine.warm_up()
        t3 = time.perf_counter()
        print(f"worker start {t1 - t0:.2f} s; building models {t2 - t1:.1f} s; "
              f"warm-up (import Keras, load 3 models, first pass) {t3 - t2:.2f} s")
        one = blends[0]
        for methods in (METHODS, *[(m,) for m in METHODS]):
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                engine.run(one, methods=methods)
                times.append(time.perf_counter() - start)
            print(f"1 blend, {'+'.join(methods):40s} median {1000 * statistics.median(times):7.1f} ms "
                  f"(min {1000 * min(times):.1f})")
        start = time.perf_counter()
        engine.run(blends, methods=METHODS, chunk_size=256)
        elapsed = time.perf_counter() - start
        print(f"{batch} blends, all methods: {elapsed:.2f} s = {1000 * elapsed / batch:.1f} ms per blend")
        engine.close()


def bench_transport(chunks=(1, 16, 64, 256, 1024)) -> None:
    from napari_blendphot.deblend.engine import InferenceEngine
    from napari_blendphot.deblend.registry import register_method

    print("== transport (echo method: blends in, float32 masks out)")
    register_method("echo", EchoDeblender, needs_worker=False, makes_masks=True)
    blends = _blends(max(chunks))
    with InferenceEngine(["echo"]) as engine:
        engine.run(blends[:1])
        for n in chunks:
            times = []
            for _ in range(5):
                start = time.perf_counter()
                engine.run(blends[:n], chunk_size=n)
                times.append(time.perf_counter() - start)
            median = statistics.median(times)
            megabytes = n * 128 * 128 * 4 * 3 / 2**20
            print(f"chunk {n:5d}: {1000 * median:8.1f} ms round trip for {megabytes:7.1f} MiB "
                  f"({megabytes / median:.0f} MiB/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "paper", "both"), default="both")
    parser.add_argument("--backend", default="tensorflow")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--no-transport", action="store_true")
    args = parser.parse_args()
    if not args.no_transport:
        bench_transport()
    for size in (("tiny", "paper") if args.size == "both" else (args.size,)):
        bench(size, args.backend, args.repeats, args.batch)


if __name__ == "__main__":
    main()
