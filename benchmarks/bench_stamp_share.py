"""Flux error against the share of a galaxy's light that its blend stamp holds (any blend set).

The true flux of a galaxy is its catalogue flux, all of its light; a blend
stamp (128 x 128) holds less of it when the galaxy is large or its shift
puts part of it beyond the edge, and a method must then guess the rest.  The
share is the sum of the galaxy's own image in the blend (``galaxy1.npy`` /
``galaxy2.npy`` of the blend folder, noise included) over its true flux;
only galaxies brighter than ``--min-flux`` are kept so that the noise on the
sum moves the share by little (0.0106 e-/s rms per pixel: 1.4 e-/s on the sum).

    python benchmarks/bench_stamp_share.py BLENDS_DIR RESULTS.csv [--method blend2flux] [--min-flux 60]

prints the flux MAPE and the median predicted / true flux per bin of true
half-light radius and of the share (below 1: the light beyond the edge
missed; above: more light guessed than there is).
"""

from __future__ import annotations

import argparse

import numpy as np

RADIUS_EDGES = (0.0, 10.0, 21.0, np.inf)
SHARE_EDGES = (0.0, 0.8, 0.9, 0.95, np.inf)


def stamp_shares(blends_dir, ids) -> np.ndarray:
    """(N, 2) share of each galaxy's true flux inside its blend, for the blends *ids* (rows of the catalogue)."""
    from napari_blendphot.blend.dataset import BlendDataset

    dataset = BlendDataset(blends_dir)
    rows = np.searchsorted(np.asarray(dataset.catalog["id"]), ids)
    sums = np.empty((len(ids), 2))
    for slot, name in enumerate(("galaxy1.npy", "galaxy2.npy")):
        images = np.load(dataset.path / name, mmap_mode="r")
        for start in range(0, len(rows), 512):
            chunk = rows[start:start + 512]
            sums[start:start + 512, slot] = np.asarray(images[chunk], np.float64).sum(axis=(1, 2))
    true = np.column_stack([np.asarray(dataset.catalog[f"g{k}_flux"], np.float64)[rows] for k in (1, 2)])
    return sums / true


def main(argv=None) -> int:
    from napari_blendphot.report.results import read_results

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("blends", help="blend dataset folder")
    parser.add_argument("results", help="'blendphot predict' table of (some of) its blends")
    parser.add_argument("--method", default="blend2flux")
    parser.add_argument("--min-flux", type=float, default=60.0)
    args = parser.parse_args(argv)
    table = read_results(args.results)
    ids = np.asarray(table["id"])
    share = stamp_shares(args.blends, ids).T.ravel()
    true = np.concatenate([np.asarray(table["g1_flux"], float), np.asarray(table["g2_flux"], float)])
    pred = np.concatenate([np.asarray(table[f"g1_flux_{args.method}"], float),
                           np.asarray(table[f"g2_flux_{args.method}"], float)])
    radius = np.concatenate([np.asarray(table["g1_rad"], float), np.asarray(table["g2_rad"], float)])
    keep = (true > args.min_flux) & np.isfinite(pred)
    ape = 100 * np.abs(pred / true - 1)
    print(f"{args.method}: {keep.sum()} galaxies brighter than {args.min_flux:g} e-/s "
          f"(flux MAPE per radius bin and share of the true flux inside the stamp; galaxies in brackets)")
    print("radius px   " + "".join(f"share {lo:g}-{hi:g}".ljust(18) for lo, hi in zip(SHARE_EDGES, SHARE_EDGES[1:])))
    ratio = pred / true
    for title, cell in (("flux MAPE %", lambda inside: f"{ape[inside].mean():6.2f} ({inside.sum()})"),
                        ("median predicted / true", lambda inside: f"{np.median(ratio[inside]):6.3f}")):
        print(f"{title}:")
        for r_lo, r_hi in zip(RADIUS_EDGES, RADIUS_EDGES[1:]):
            cells = []
            for s_lo, s_hi in zip(SHARE_EDGES, SHARE_EDGES[1:]):
                inside = keep & (radius > r_lo) & (radius <= r_hi) & (share > s_lo) & (share <= s_hi)
                cells.append((cell(inside) if inside.any() else "     -").ljust(18))
            print(f"{r_lo:g}-{r_hi:g}".ljust(12) + "".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
