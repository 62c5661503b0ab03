"""The deblending methods side by side: speed per blend, results tables with flux errors, error coverage.

Usage::

    # every method on a blend dataset, in this process, timed; a results table with
    # g1_flux_err_<m>/g2_flux_err_<m> columns (the methods' DeblendOutput.flux_errors)
    python benchmarks/bench_methods.py run DATASET --split test --methods sep,seppaper,sextractor,photutils \
        -o OUT [--n N] [--chunk 500]

    # coverage of the errors at 68/95% (overall, per pair-dmag bin), then the calibration
    # fitted on a seeded half of the blends and checked on the other half; --save writes it,
    # --apply checks a saved calibration on other blends (mock-fitted -> real galaxies)
    python benchmarks/bench_methods.py coverage OUT/results.fits [--seed 0] [--save CAL.json] [--apply CAL.json]

    # speed only, on toy blends made with numpy (benchmarks/bench_sep.py), e.g. scarlet2 on a GPU
    python benchmarks/bench_methods.py speed --methods scarlet2 --n 2048 [--option scarlet2:batch_size=512]

    # flux MAPE of each method on the paper's selection (galaxies the reference detection column
    # found), the column taken from another table of the same blends where needed
    python benchmarks/bench_methods.py selection OUT/results.fits [--detection-from OTHER/results.fits]

    # how much a method's fluxes move between two identical runs, and when the same blends
    # come in another order (SExtractor shares deblended pixels with rand(), one sequence per run)
    python benchmarks/bench_methods.py repeat DATASET --split test --n 2000 --methods sextractor

    python benchmarks/bench_methods.py --quick      # CI smoke: 24 toy blends, the fast methods

Timings: wall and CPU seconds per blend of ``method.deblend`` on the whole
batch (CPU time includes child processes: the SExtractor binary), after one
warm-up call on 8 blends (imports, JAX compilation for the first batch shape
is *not* excluded for scarlet2: ``speed`` reports its first and second calls
separately).  The load average is printed with every figure.

On the GPU machine (JAX with CUDA, no astropy or sep), ``speed --methods
scarlet2`` needs these wheels carried (cp312, ``pip install --no-deps``):
scarlet2, equinox, jaxtyping, wadler_lindig, optax, numpyro, multipledispatch,
varname, executing, colorama, absl-py, tqdm, sortedcontainers, sep, astropy,
astropy-iers-data, pyerfa, PyYAML, packaging, plus this project's source (src/).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def load() -> str:
    return "load %.1f" % os.getloadavg()[0]


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def parse_options(items) -> dict:
    """``["scarlet2:batch_size=64", ...]`` -> ``{"scarlet2": {"batch_size": 64}}``."""
    from bench_cpu_inference import parse_value

    options: dict = {}
    for item in items or ():
        method, _, assignment = item.partition(":")
        key, _, value = assignment.partition("=")
        if not (method and key and value):
            raise SystemExit(f"--option {item!r}: expected METHOD:KEY=VALUE")
        options.setdefault(method, {})[key] = parse_value(value)
    return options


def timed(method, blends, context) -> tuple:
    cpu, wall = cpu_seconds(), time.perf_counter()
    output = method.deblend(blends, context)
    return output, time.perf_counter() - wall, cpu_seconds() - cpu


def create(names, options):
    from napari_blendphot.deblend.registry import check_available, create_method

    methods = {}
    for name in names:
        check_available(name)
        methods[name] = create_method(name, **options.get(name, {}))
    return methods


# ------------------------------------------------------------------------------------- run
def run(args) -> int:
    from napari_blendphot.blend.dataset import BlendDataset
    from napari_blendphot.provenance import make_provenance
    from napari_blendphot.report.results import build_results_table, concatenate_results, write_results

    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    methods = create(names, parse_options(args.option))
    dataset = BlendDataset(args.dataset)
    rows = dataset.indices(None if args.split == "all" else args.split)
    if args.n:
        rows = rows[:args.n]
    view = dataset.select(index=rows)
    context = view.context()
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"{len(rows)} {args.split} blends of {dataset.path}; {load()}", flush=True)
    warm = np.array(np.load(dataset.path / "blends.npy", mmap_mode="r")[rows[:8]])
    for method in methods.values():
        method.deblend(warm, context.subset(slice(0, len(warm))))
    timing = {name: {"wall_s": 0.0, "cpu_s": 0.0} for name in names}
    tables = []
    for start in range(0, len(rows), args.chunk):
        stop = min(start + args.chunk, len(rows))
        blends = np.array(np.load(dataset.path / "blends.npy", mmap_mode="r")[rows[start:stop]])
        true_masks = np.array(np.load(dataset.path / "masks.npy", mmap_mode="r")[rows[start:stop]])
        chunk_context = context.subset(slice(start, stop))
        outputs = {}
        for name, method in methods.items():
            output, wall, cpu = timed(method, blends, chunk_context)
            timing[name]["wall_s"] += wall
            timing[name]["cpu_s"] += cpu
            outputs[name] = output
        table = build_results_table(view.catalog[start:stop], outputs, true_masks=true_masks)
        for name, output in outputs.items():
            if output.flux_errors is not None:  # what `blendphot predict` will write (issue 13)
                table[f"g1_flux_err_{name}"] = output.flux_errors[:, 0]
                table[f"g2_flux_err_{name}"] = output.flux_errors[:, 1]
        tables.append(table)
        print(f"  {stop}/{len(rows)} blends; {load()}", flush=True)
    table = concatenate_results(tables)
    table.meta["provenance"] = make_provenance("bench_methods run", None, inputs={}, dataset=str(dataset.path),
                                               split=args.split, n_blends=int(len(rows)), methods=names,
                                               options=parse_options(args.option))
    write_results(table, out_dir / "results", overwrite=args.overwrite)
    n = len(rows)
    for name in names:
        timing[name].update(n_blends=n, wall_ms_per_blend=1e3 * timing[name]["wall_s"] / n,
                            cpu_ms_per_blend=1e3 * timing[name]["cpu_s"] / n)
        print(f"{name:>11}: {timing[name]['wall_ms_per_blend']:8.2f} ms/blend wall, "
              f"{timing[name]['cpu_ms_per_blend']:8.2f} CPU ms/blend ({n} blends)")
    (out_dir / "timing.json").write_text(json.dumps({"load": os.getloadavg()[0], "methods": timing}, indent=2))
    print(f"wrote {out_dir / 'results.csv'}, results.fits, timing.json; {load()}")
    return 0


# -------------------------------------------------------------------------------- coverage
def _markdown(stats, title) -> str:
    lines = [f"{title}", "", "| galaxy | bin | n | 68% | 95% | median abs z | Spearman |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in stats:
        low, high = row["bin_low"], row["bin_high"]
        label = "all" if not np.isfinite(low) else f"{low:+.2f} .. {high:+.2f}"
        lines.append(f"| {row['galaxy']} | {label} | {row['n']} | {100 * row['coverage_68']:.1f}% | "
                     f"{100 * row['coverage_95']:.1f}% | {row['median_abs_z']:.2f} | {row['spearman']:.2f} |")
    return "\n".join(lines)


def coverage_report(args) -> int:
    from napari_blendphot.metrics.calibration import FluxErrorCalibration, coverage, fit_calibration, split_blends
    from napari_blendphot.provenance import sha256_file
    from napari_blendphot.report.results import methods_in, read_results

    table = read_results(args.results)
    methods = [m for m in methods_in(table) if f"g1_flux_err_{m}" in table.colnames]
    if args.methods:
        methods = [m for m in args.methods.split(",") if m in methods]
    print(f"{args.results}: {len(table)} blends, methods with errors: {', '.join(methods)}\n")
    for method in methods:
        print(_markdown(coverage(table, method), f"### {method}: raw errors, all galaxies"), "\n")
        print(_markdown(coverage(table, method, by="pair_dmag"), f"### {method}: raw errors per pair dmag"), "\n")
    if args.apply:
        calibration = FluxErrorCalibration.load(args.apply)
        applied = calibration.apply(table)
        for method in methods:
            if method in calibration.parameters:
                print(_markdown(coverage(applied, method), f"### {method}: calibrated with {args.apply}"), "\n")
                print(_markdown(coverage(applied, method, by="pair_dmag"),
                                f"### {method}: calibrated with {args.apply}, per pair dmag"), "\n")
        return 0
    fit_rows, check_rows = split_blends(len(table), args.fraction, seed=args.seed)
    calibration = fit_calibration(table[fit_rows], methods, provenance={
        "fitted_on": {"results": Path(args.results).name, "sha256": sha256_file(args.results),
                      "rows": "split_blends(n=%d, fraction=%g, seed=%d)[0]" % (len(table), args.fraction, args.seed),
                      "n_blends": int(len(fit_rows))},
        "dataset": table.meta.get("provenance", {}).get("parameters", {}).get("dataset")})
    checked = calibration.apply(table[check_rows])
    for method in methods:
        for role, p in calibration.parameters[method].items():
            prefix = "g1" if role == "central" else "g2"
            residual = np.abs(np.asarray(checked[f"{prefix}_flux_{method}"], dtype=float)
                              - np.asarray(checked[f"{prefix}_flux"], dtype=float))
            err = np.asarray(checked[f"{prefix}_flux_err_{method}"], dtype=float)
            usable = np.isfinite(residual) & np.isfinite(err)
            within = float(np.mean(residual[usable] <= p["k95"] * err[usable]))
            print(f"{method} {role}: a = {p['a']:.3g}, b = {p['b']:.3g}, k95 = {p['k95']:.2f} "
                  f"(fitted on {p['n']} galaxies); held-out within +-k95 err: {100 * within:.1f}%")
        print(_markdown(coverage(checked, method), f"### {method}: calibrated, held-out half"), "\n")
        print(_markdown(coverage(checked, method, by="pair_dmag"),
                        f"### {method}: calibrated, held-out half, per pair dmag"), "\n")
    if args.save:
        calibration.save(args.save, overwrite=args.overwrite)
        print(f"wrote {args.save}")
    return 0


# ----------------------------------------------------------------------------------- speed
def speed(args) -> int:
    from bench_sep import toy_blends

    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    methods = create(names, parse_options(args.option))
    blends, context = toy_blends(args.n, seed=args.seed)
    print(f"{args.n} toy blends; {load()}")
    for name, method in methods.items():
        first, wall1, cpu1 = timed(method, blends, context)
        second, wall2, cpu2 = timed(method, blends, context)
        extra = ""
        if "jax_device" in first.metadata:
            extra = f", {first.metadata['jax_device']}, batch {first.metadata['batch_size_used']}"
        print(f"{name:>11}: first call {1e3 * wall1 / args.n:8.2f} ms/blend, then {1e3 * wall2 / args.n:8.2f} "
              f"ms/blend wall, {1e3 * cpu2 / args.n:8.2f} CPU ms/blend; measured "
              f"{int(np.isfinite(second.fluxes).sum())} of {2 * args.n} galaxies{extra}; {load()}", flush=True)
    return 0


# ------------------------------------------------------------------------------- selection
def paper_selection(args) -> int:
    from napari_blendphot.metrics import photometry as phot
    from napari_blendphot.metrics.binned import galaxy_measurements
    from napari_blendphot.report.results import methods_in, read_results

    table = read_results(args.results)
    column = args.detection_column
    if args.detection_from:
        other = read_results(args.detection_from)
        ids = {int(i): row for row, i in enumerate(np.asarray(other["id"]))}
        missing = [int(i) for i in np.asarray(table["id"]) if int(i) not in ids]
        if missing:
            raise SystemExit(f"{args.detection_from}: no rows for blend ids {missing[:5]}...")
        table[column] = np.asarray(other[column])[[ids[int(i)] for i in np.asarray(table["id"])]]
    print(f"{args.results}: {len(table)} blends; selection by {column}")
    for method in methods_in(table):
        parts = []
        for galaxy in ("central", "companion"):
            rows = galaxy_measurements(table, method, galaxy, "detected", detection_column=column)
            found = np.asarray(rows["detected"])
            mape = phot.flux_mape(np.asarray(rows["true_flux"])[found], np.asarray(rows["pred_flux"])[found])
            parts.append(f"{galaxy} {mape:.2f}% ({int(found.sum())} of {len(rows)} measured)")
        print(f"  {method}: flux MAPE " + ", ".join(parts))
    return 0


# ---------------------------------------------------------------------------------- repeat
def _compare(first, second, label: str) -> None:
    a, b = first.fluxes, second.fluxes
    both = np.isfinite(a) & np.isfinite(b)
    relative = np.abs(a[both] - b[both]) / np.abs(b[both])
    changed = int((first.extra["detection"] != second.extra["detection"]).sum()) if "detection" in first.extra else 0
    print(f"  {label}: {len(a)} blends, {int(both.sum())} galaxies measured in both; identical "
          f"{100 * np.mean(a[both] == b[both]):.1f}%; |relative change| median {np.median(relative):.2e}, "
          f"p90 {np.percentile(relative, 90):.2e}, p99 {np.percentile(relative, 99):.2e}, max {relative.max():.2e}; "
          f"> 1%: {100 * np.mean(relative > 0.01):.1f}%, > 5%: {100 * np.mean(relative > 0.05):.2f}%; "
          f"detection case changed in {changed} blends; same NaN pattern: "
          f"{np.array_equal(np.isnan(a), np.isnan(b))}")


def repeat(args) -> int:
    from napari_blendphot.blend.dataset import BlendDataset
    from napari_blendphot.deblend.base import DeblendOutput

    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    methods = create(names, parse_options(args.option))
    dataset = BlendDataset(args.dataset)
    rows = dataset.indices(None if args.split == "all" else args.split)[:args.n]
    context = dataset.select(index=rows).context()
    blends = np.array(np.load(dataset.path / "blends.npy", mmap_mode="r")[rows])
    order = np.random.default_rng(args.seed).permutation(len(rows))
    back = np.argsort(order)
    for name, method in methods.items():
        print(f"{name} on {len(rows)} {args.split} blends of {dataset.path}; {load()}")
        first = method.deblend(blends, context)
        _compare(first, method.deblend(blends, context), "identical runs")
        shuffled = method.deblend(blends[order], context.subset(order))
        unshuffled = DeblendOutput(name, shuffled.fluxes[back],
                                   extra={k: v[back] for k, v in shuffled.extra.items()})
        _compare(first, unshuffled, f"same blends in another order (seed {args.seed})")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke: speed of the fast methods on 24 toy blends")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("run", help="run methods on a blend dataset: timing and a results table with flux errors")
    p.add_argument("dataset")
    p.add_argument("--split", choices=("test", "train", "all"), default="test")
    p.add_argument("--methods", default="sep,seppaper,sextractor,photutils")
    p.add_argument("--n", type=int, default=0, help="first N blends of the split (default all)")
    p.add_argument("--chunk", type=int, default=500)
    p.add_argument("--option", action="append", metavar="METHOD:KEY=VALUE")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)
    p = sub.add_parser("coverage", help="coverage of the flux errors, and their calibration on held-out blends")
    p.add_argument("results")
    p.add_argument("--methods", default="")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fraction", type=float, default=0.5, help="share of blends the calibration is fitted on")
    p.add_argument("--save", help="write the calibration fitted here (JSON)")
    p.add_argument("--apply", help="check a saved calibration on these blends instead of fitting one")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=coverage_report)
    p = sub.add_parser("speed", help="speed on toy blends (numpy only), e.g. scarlet2 on a GPU")
    p.add_argument("--methods", default="sep,seppaper,sextractor,photutils")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--option", action="append", metavar="METHOD:KEY=VALUE")
    p.set_defaults(func=speed)
    p = sub.add_parser("selection", help="flux MAPE on the paper's selection by a chosen detection column")
    p.add_argument("results")
    p.add_argument("--detection-column", default="detection_sep")
    p.add_argument("--detection-from", help="take the detection column from this table (same blend ids)")
    p.set_defaults(func=paper_selection)
    p = sub.add_parser("repeat", help="how much fluxes move between identical runs and with the order of the blends")
    p.add_argument("dataset")
    p.add_argument("--split", choices=("test", "train", "all"), default="test")
    p.add_argument("--methods", default="sextractor")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--option", action="append", metavar="METHOD:KEY=VALUE")
    p.set_defaults(func=repeat)
    args = parser.parse_args(argv)
    if args.quick:
        from napari_blendphot.deblend.registry import unavailable_reason

        fast = [m for m in ("sep", "seppaper", "sextractor", "photutils") if unavailable_reason(m) is None]
        return speed(parser.parse_args(["speed", "--methods", ",".join(fast), "--n", "24"]))
    if not args.command:
        parser.error("choose run, coverage, selection, speed or repeat (or --quick)")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
