"""Realism check of the mock: statmorph statistics of mock v1, mock v2 and the real galaxies.

Draws N galaxies of mock v1 and mock v2 (candels, broad, wide) without
neighbours, measures them and the real galaxies of ../shared/realgal (validation
only: measured, never fitted) with statmorph, prints the per-statistic table
(KS distance, share of real galaxies outside each mock's 1-99 % range) as
Markdown and writes the figure.

    PYTHONPATH=src python benchmarks/bench_mock_realism.py -n 300 --seed 2024 \
        --figure docs/img/mock_realism.png --cache scratch/realism

Measurements are cached as ECSV under --cache (one file per set, named by its
parameters), so a second run only redraws the table and the figure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from napari_blendphot.sample import mock, mock_realism  # noqa: E402
from napari_blendphot.sample.io import load_sample  # noqa: E402


def _measured(name, make, cache: Path | None):
    from astropy.table import Table

    path = cache / f"{name}.ecsv" if cache else None
    if path is not None and path.exists():
        return Table.read(path)
    start = time.process_time()
    sample = make()
    drawn = time.process_time() - start
    table = mock_realism.measure_morphology(sample)
    print(f"{name}: {len(sample)} galaxies, drawn in {drawn:.0f} s CPU, measured in "
          f"{time.process_time() - start - drawn:.0f} s CPU", file=sys.stderr)
    if path is not None:
        from napari_blendphot.atomic import atomic_output

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            table.write(tmp, format="ascii.ecsv")
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=300, help="galaxies per mock (default 300)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--real", default=str(next((p / "shared" / "realgal" for p in (REPO.parent, REPO.parent.parent)
                                                    if (p / "shared" / "realgal").exists()),
                                                   REPO.parent / "shared" / "realgal")),
                        help="folder of real galaxies (default ../shared/realgal)")
    parser.add_argument("--figure", default=None, help="write the histogram figure here (PNG)")
    parser.add_argument("--cache", default=None, help="folder caching the measurements")
    args = parser.parse_args(argv)
    cache = Path(args.cache) if args.cache else None
    real_path = Path(args.real)

    real = _measured("realgal", lambda: load_sample(real_path), cache)
    mocks = {
        "v1": _measured(f"v1_n{args.n}_s{args.seed}",
                        lambda: mock.make_mock_sample(args.n, args.seed, mock_version=1, neighbour_fraction=0.0),
                        cache),
        "v2 candels": _measured(f"v2candels_n{args.n}_s{args.seed}",
                                lambda: mock.make_mock_sample(args.n, args.seed, neighbour_fraction=0.0), cache),
        "v2 broad": _measured(f"v2broad_n{args.n}_s{args.seed}",
                              lambda: mock.make_mock_sample(args.n, args.seed, population="broad",
                                                            neighbour_fraction=0.0), cache),
        "v2 wide": _measured(f"v2wide_n{args.n}_s{args.seed}",
                             lambda: mock.make_mock_sample(args.n, args.seed, population="wide",
                                                           neighbour_fraction=0.0), cache),
    }
    table = mock_realism.compare(real, mocks)
    print("| statistic | real median | " + " | ".join(f"{m}: median / KS D / outside 1-99% / outside range"
                                                      for m in mocks) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in mocks) + " |")
    for name in mock_realism.STATISTICS:
        rows = table[table["statistic"] == name]
        cells = [f"{r['mock_median']:.3g} / {r['ks_d']:.2f} / {100 * r['outside_1_99']:.0f}% / "
                 f"{100 * r['outside_range']:.0f}%" for r in rows]
        print(f"| {name} | {rows['real_median'][0]:.3g} | " + " | ".join(cells) + " |")
    flagged = {k: int(np.sum(np.asarray(t["flag"]) > 1)) for k, t in {"real": real, **mocks}.items()}
    print(f"\nflag > 1 (left out): {flagged}; N real usable per statistic: "
          f"{dict(zip(table['statistic'][::len(mocks)], table['n_real'][::len(mocks)]))}")
    if args.figure:
        mock_realism.save_realism_figure(real, mocks, args.figure, overwrite=True)
        print(f"wrote {args.figure}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
