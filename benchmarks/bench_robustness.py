"""Stress test of the flux networks on light the mock rarely shows (mock galaxies only).

Blends of a galaxy bank (``python -m training bank``, noiseless models) are made
with the training synthesis (``training/synth.py``) at a fixed noise level,
once as they are and once per stress: a central point source holding 20% of
each galaxy's light (an unresolved nucleus), compact clumps holding 10-30%,
and every galaxy's outer light tapered beyond 3 half-light radii.  The true
fluxes count what a stress adds or removes.  For each method: flux MAPE, the
median ratio predicted / true and the share beyond |dmag| > 0.75.

    python benchmarks/bench_robustness.py BANK.npz --methods blend2flux,blend2mask2flux \
        [--model LABEL=METHOD:PATH.keras ...] [--n 3000] [--seed 77]

Make a bank of galaxies no network trained on, e.g. (seed 2023 is not a
training seed)::

    blendphot make-sample -n 1000 --population broad --seed 2023 --quantize 16 \
        --models-out stress_models.npz -o stress.fits
    python -m training bank stress.fits --models stress_models.npz --seed 2023 --test-fraction 0 -o stress_bank.npz
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: The stresses: name -> the Augmentation fields that make it (on top of :data:`FIXED`).
STRESSES = {
    "as drawn": {},
    "nucleus 20%": {"compact_fraction": 1.0, "compact_count": 1, "compact_flux": (0.2, 0.2), "compact_reach": 0.0,
                    "compact_sigma_px": (1.3, 1.3)},
    "clumps 10-30%": {"compact_fraction": 1.0, "compact_count": 3, "compact_flux": (0.1, 0.3)},
    "taper 3 r_half": {"taper_fraction": 1.0, "taper_radius": (3.0, 3.0)},
}

#: No flux rescaling or extra blur; white background at the level of a blend of two noisy stamps.
FIXED = {"pair_flux_mag": 0.0, "galaxy_flux_mag": 0.0, "blur_sigma_px": (0.0, 0.0),
         "noise_rms": (0.015, 0.015), "correlated_fraction": 0.0}


def stress_blends(bank: dict, stress: dict, n: int, seed: int):
    """*n* blends of the bank under one stress, and their true fluxes (n, 2)."""
    from training.synth import Augmentation, SynthBlends

    augmentation = Augmentation(**FIXED, **stress)
    blends, truth = SynthBlends(bank, n, 100, seed, augmentation=augmentation).fixed_set(n, seed)
    return blends, truth["fluxes"]


def scores(fluxes: np.ndarray, truth: np.ndarray) -> dict:
    ratio = np.asarray(fluxes, np.float64) / truth
    dmag = -2.5 * np.log10(np.clip(ratio, 1e-6, None))
    return {"mape": 100 * float(np.mean(np.abs(ratio - 1))), "median_ratio": float(np.median(ratio)),
            "outliers": 100 * float(np.mean(np.abs(dmag) > 0.75))}


def main(argv=None) -> int:
    from napari_blendphot.deblend.registry import create_method, parse_method_list
    from training.synth import load_bank

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bank")
    parser.add_argument("--methods", default="blend2flux,blend2mask2flux")
    parser.add_argument("--model", action="append", default=[], metavar="LABEL=METHOD:PATH",
                        help="another model of a method, shown as LABEL (repeatable)")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=77)
    args = parser.parse_args(argv)

    runs = {name: (name, None) for name in parse_method_list(args.methods)}
    for item in args.model:
        label, equals, rest = item.partition("=")
        method, colon, path = rest.partition(":")
        if not (equals and colon and label and method and path):
            parser.error(f"--model {item!r}: expected LABEL=METHOD:PATH")
        runs[label] = (method, path)
    bank = load_bank(args.bank)
    print(f"bank {args.bank}: {len(bank['ids'])} galaxies; {args.n} blends per stress, seed {args.seed}")
    deblenders = {label: create_method(method, **({"weights": path} if path else {}))
                  for label, (method, path) in runs.items()}
    print("%-16s %-22s %8s %8s %9s" % ("stress", "method", "MAPE %", "median", "outl. %"))
    for stress_name, stress in STRESSES.items():
        blends, truth = stress_blends(bank, stress, args.n, args.seed)
        for label, deblender in deblenders.items():
            start = time.perf_counter()
            out = deblender.deblend(blends)
            s = scores(out.fluxes, truth)
            print("%-16s %-22s %8.2f %8.4f %9.2f   (%.0f s)" % (stress_name, label, s["mape"], s["median_ratio"],
                                                              s["outliers"], time.perf_counter() - start),
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
