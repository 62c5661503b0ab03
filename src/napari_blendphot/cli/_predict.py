"""``blendphot predict``: run deblending methods over a blend dataset and write the results table.

A thin front over :func:`napari_blendphot.predict`: it parses the options,
checks that the outputs can be written before hours of work, runs
``predict`` with a progress bar and writes the table (CSV and FITS).
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np

from napari_blendphot.cli._common import add_overwrite, progress_printer


def register(subparsers) -> None:
    from napari_blendphot.deblend.registry import default_methods

    defaults = ",".join(default_methods())
    parser = subparsers.add_parser(
        "predict",
        help="deblend a blend dataset with SEP and/or the networks; write a results table (CSV + FITS)",
        description="Run deblending methods over the blends of a dataset folder (made by 'blendphot blend') "
                    "in a separate worker process, chunk by chunk, and write one row per blend with the "
                    "true and predicted fluxes of both galaxies (and their errors where a method gives them) "
                    "and, for methods that make masks, the IoU with the true masks. The table is written as "
                    "CSV and FITS beside each other and is read by 'blendphot evaluate'.",
    )
    parser.add_argument("blends_dir", metavar="BLENDS_DIR", help="blend dataset folder")
    parser.add_argument("--methods", default=defaults,
                        help=f"comma-separated method names (default {defaults}); "
                             "third-party methods registered through the 'napari_blendphot.methods' "
                             "entry points are accepted too")
    parser.add_argument("-o", "--output", required=True, metavar="RESULTS",
                        help="results table: RESULTS.csv or RESULTS.fits (both are written) or a stem")
    parser.add_argument("--split", choices=("test", "train", "all"), default="test",
                        help="which blends to deblend (default test)")
    parser.add_argument("--weights", action="append", default=[], metavar="METHOD=PATH",
                        help="weights of a network method: a .keras file or a shipped model name "
                             "(repeatable; default the shipped model of each method)")
    parser.add_argument("--precision", choices=("float32", "bfloat16", "auto"), default=None,
                        help="compute precision of the networks (default: bfloat16 on a GPU with native "
                             "bfloat16, such as an A100/H100/H200, float32 elsewhere, the precision of the "
                             "published test metrics); bfloat16 keeps float32 weights, is about twice as fast "
                             "on such GPUs and on CPUs with native bfloat16 (avx512_bf16/amx_bf16) and moves "
                             "fluxes by a few thousandths of a magnitude; auto = bfloat16 wherever the GPU or "
                             "the CPU has it natively")
    parser.add_argument("--tta", type=int, choices=(1, 2, 4, 8), default=1,
                        help="test-time symmetries: run each network on the blend turned and mirrored about "
                             "the central galaxy this many times and average (default 1: once); 8 lowers "
                             "blend2flux's flux MAPE by ~6-7%% and costs 8 network passes")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="blends per chunk sent to the worker (bounds memory; default 256 on a CPU, "
                             "16 network batches, 16,384 blends, on a GPU)")
    parser.add_argument("--scheduler", metavar="ADDRESS", default=None,
                        help="run on the Dask distributed cluster of this scheduler (tcp://host:8786): the "
                             "blends in partitions, the methods loaded once per Dask worker, each partition's "
                             "results written as Parquet beside RESULTS (RESULTS.partitions/) and gathered "
                             "into the usual CSV and FITS; the dataset must be readable by every worker")
    parser.add_argument("--partition-size", type=int, default=4096,
                        help="blends per partition with --scheduler (default 4096)")
    parser.add_argument("--backend", choices=("tensorflow", "jax", "torch"), default=None,
                        help="Keras backend of the worker (default $KERAS_BACKEND or tensorflow)")
    add_overwrite(parser)
    parser.set_defaults(func=run)


def parse_weights(items) -> dict:
    """``["unet=a.keras", ...]`` -> ``{"unet": "a.keras"}`` (checked against the methods by ``predict``)."""
    from napari_blendphot.errors import InputError

    weights = {}
    for item in items:
        method, sep, value = str(item).partition("=")
        method, value = method.strip(), value.strip()
        if not sep or not method or not value:
            raise InputError(f"argument --weights {item}", "expected METHOD=PATH", "e.g. --weights unet=my_unet.keras")
        if method in weights:
            raise InputError(f"argument --weights {item}", f"weights for {method!r} given twice")
        weights[method] = value
    return weights


def _output_targets(output):
    from pathlib import Path

    path = Path(output)
    stem = path.with_suffix("") if path.suffix in (".csv", ".fits") else path
    return [stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".fits")]


def run(args) -> int:
    import time

    from napari_blendphot.blend.dataset import BlendDataset
    from napari_blendphot.deblend.registry import method_info, parse_method_list
    from napari_blendphot.errors import InputError, check_output_path
    from napari_blendphot.prediction import method_options_for, predict
    from napari_blendphot.report.results import write_results

    methods = parse_method_list(args.methods)
    weights = parse_weights(args.weights)
    for method, _ in weights.items():
        if method not in methods:
            raise InputError(f"argument --weights {method}={weights[method]}",
                             f"method {method!r} is not among --methods {','.join(methods)}")
    # Missing weights fail now, not after a worker started; --tta goes to every method that takes it.
    tta_options = {name: {"tta": args.tta} for name in methods if args.tta != 1 and method_info(name).tta}
    if args.tta != 1 and not tta_options:
        raise InputError(f"argument --tta {args.tta}", f"none of the methods {','.join(methods)} takes it",
                         "it applies to the network methods")
    method_options_for(methods, weights, args.precision, tta_options)
    if args.chunk_size is not None and args.chunk_size < 1:
        raise InputError("argument --chunk-size", f"must be a positive integer, got {args.chunk_size}")
    targets = _output_targets(args.output)
    for target in targets:  # refuse before hours of work, not after
        check_output_path(target, args.overwrite)
    if not targets[0].parent.is_dir():
        raise InputError(f"argument -o {args.output}", f"output folder {str(targets[0].parent)!r} does not exist")

    dataset = BlendDataset(args.blends_dir)
    split = None if args.split == "all" else args.split
    n_blends = len(dataset.indices(split))
    print(f"predict: {n_blends} {args.split} blends of {dataset.path} with {', '.join(methods)}", file=sys.stderr)
    start_time = time.perf_counter()
    if args.scheduler is not None:
        from napari_blendphot.distributed import predict_on_cluster

        partitions = targets[0].with_name(targets[0].stem + ".partitions")
        table = predict_on_cluster(dataset.path, methods, scheduler=args.scheduler, partitions_dir=partitions,
                                   split=args.split, weights=weights, precision=args.precision,
                                   backend=args.backend, partition_size=args.partition_size,
                                   method_options=tta_options,
                                   progress=progress_printer("partitions"), overwrite=args.overwrite)
    else:
        with _stopped_cleanly_by_sigterm():
            table = predict(dataset, methods, split=args.split, weights=weights, precision=args.precision,
                            method_options=tta_options, backend=args.backend, chunk_size=args.chunk_size,
                            progress=progress_printer("predict"))
    elapsed = time.perf_counter() - start_time
    written = write_results(table, args.output, overwrite=args.overwrite)
    _print_summary(table, methods, elapsed)
    print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _stopped_cleanly_by_sigterm():
    """SIGTERM (a scheduler's stop) leaves like Ctrl-C: one line, the workers stopped, exit status 143.

    Without it the interpreter dies at once; the workers still end with it
    (they die with their parent), but the semaphores of their queues are left
    for multiprocessing's resource tracker to report.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        print("blendphot predict: terminated", file=sys.stderr)
        sys.unraisablehook = _quiet_broken_pipes(sys.unraisablehook)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _quiet_broken_pipes(previous):
    """An ``sys.unraisablehook`` that drops broken pipes and passes anything else to *previous*.

    Installed once SIGTERM has stopped the run: at interpreter exit
    ``concurrent.futures`` wakes every process pool's manager thread through a
    pipe, and for a pool whose processes the signal already ended that pipe
    may be broken.  CPython reports it as an ignored exception (a traceback
    under the "terminated" line, seen once in a fresh-clone `make test`); nothing is
    lost by it, so it is not printed.
    """

    def hook(unraisable):
        if isinstance(unraisable.exc_value, BrokenPipeError):
            return
        previous(unraisable)

    return hook


def _print_summary(table, methods, elapsed: float) -> None:
    n = len(table)
    print(f"{n} blends in {elapsed:.1f} s ({1000 * elapsed / max(n, 1):.1f} ms per blend, all methods)")
    for name in methods:
        g1 = np.asarray(table[f"g1_flux_{name}"], np.float64)
        g2 = np.asarray(table[f"g2_flux_{name}"], np.float64)
        line = f"  {name}: central found {np.isfinite(g1).sum()}/{n}, companion found {np.isfinite(g2).sum()}/{n}"
        if f"g1_iou_{name}" in table.colnames:
            iou = np.concatenate([np.asarray(table[f"g1_iou_{name}"]), np.asarray(table[f"g2_iou_{name}"])])
            if np.isfinite(iou).any():
                line += f", mean IoU {np.nanmean(iou):.3f}"
        if f"g1_mag_err_{name}" in table.colnames:
            errors = np.concatenate([np.asarray(table[f"g1_mag_err_{name}"]), np.asarray(table[f"g2_mag_err_{name}"])])
            if np.isfinite(errors).any():
                line += f", median mag error {np.nanmedian(errors):.3f}"
        line += _accuracy_text(table, name)
        print(line)


def _accuracy_text(table, name: str) -> str:
    """", flux MAPE x%, errors cover 68% y%, 95% z%" over every galaxy of both roles (not only SEP-detected ones)."""
    from napari_blendphot.metrics.binned import galaxy_measurements, zero_point_of
    from napari_blendphot.metrics.calibration import coverage, error_column
    from napari_blendphot.metrics.photometry import photometry_stats

    if "g1_flux" not in table.colnames:  # no true fluxes: nothing to compare with
        return ""
    data = galaxy_measurements(table, name, "both", "all")  # every galaxy, as python -m training results
    text = ""
    if len(data):
        stats = photometry_stats(data["true_flux"], data["pred_flux"], zp_pred=zero_point_of(table, name),
                                 source=f"method {name}")
        text += f", flux MAPE {stats.flux_mape:.1f}%"
    if error_column(name, "central") in table.colnames:
        both = coverage(table, name)
        both = both[both["galaxy"] == "both"]
        if len(both) and int(both["n"][0]):
            text += (f", errors cover {100 * float(both['coverage_68'][0]):.0f}% at 68%"
                     f" and {100 * float(both['coverage_95'][0]):.0f}% at 95%")
    else:
        text += ", no flux errors"
    return text
