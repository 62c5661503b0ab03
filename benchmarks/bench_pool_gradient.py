"""Gradient cost of 2x2 max pooling under JAX/XLA: select_and_scatter against reshape + max.

blend2flux's first level (conv3x3 -> ReLU -> max-pool 2, twice) is timed as a
jitted gradient with the pooling written two ways:

* ``reduce_window``: what ``keras.layers.MaxPooling2D`` lowers to; XLA
  differentiates it with ``select_and_scatter``;
* ``reshape_max``: the (B, H/2, 2, W/2, 2, C) reshape and a max over the two
  window axes (``models.layers.BlockMaxPool2D`` under JAX); its gradient is
  a comparison and a broadcast.

Prints wall and CPU milliseconds per step for each, their ratio, and the
largest relative difference between the two gradients (0 unless the
maximum of a window is tied).  Runs on whatever device JAX picks
(``JAX_PLATFORMS=cpu`` for the CPU).

Example::

    JAX_PLATFORMS=cpu python benchmarks/bench_pool_gradient.py --batch 8 --filters 64 --steps 10
"""

from __future__ import annotations

import argparse
import os
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--size", type=int, default=128, help="stamp side (a multiple of 4)")
    parser.add_argument("--steps", type=int, default=10, help="timed gradient steps per variant")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    rng = np.random.default_rng(args.seed)
    stamps = jnp.asarray(rng.normal(size=(args.batch, args.size, args.size, 1)).astype(np.float32))
    kernels = (jnp.asarray(0.1 * rng.normal(size=(3, 3, 1, args.filters)).astype(np.float32)),
               jnp.asarray(0.05 * rng.normal(size=(3, 3, args.filters, args.filters)).astype(np.float32)))

    def conv(x, kernel):
        return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def pool_reduce_window(x):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    def pool_reshape_max(x):
        b, h, w, c = x.shape
        return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))

    def first_level(params, x, pool):
        y = pool(jax.nn.relu(conv(x, params[0])))
        y = pool(jax.nn.relu(conv(y, params[1])))
        return jnp.sum(y**2)

    print(f"bench_pool_gradient: JAX {jax.__version__} on {jax.devices()[0].platform}, batch {args.batch}, "
          f"{args.size}x{args.size}, {args.filters} filters, load average {os.getloadavg()[0]:.1f}")
    timings, gradients = {}, {}
    for name, pool in (("reduce_window", pool_reduce_window), ("reshape_max", pool_reshape_max)):
        step = jax.jit(jax.grad(lambda params, x, pool=pool: first_level(params, x, pool)))
        gradients[name] = jax.block_until_ready(step(kernels, stamps))  # compile + warm up
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            result = step(kernels, stamps)
        jax.block_until_ready(result)
        timings[name] = ((time.perf_counter() - wall) / args.steps * 1e3, (time.process_time() - cpu) / args.steps * 1e3)
        print(f"  {name:14s} {timings[name][0]:8.1f} ms/step wall {timings[name][1]:8.1f} ms/step CPU")
    ratio = timings["reduce_window"][1] / timings["reshape_max"][1]
    difference = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
                     for a, b in zip(gradients["reduce_window"], gradients["reshape_max"]))
    print(f"  reshape_max is {ratio:.2f}x faster on CPU time; largest relative gradient difference {difference:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
