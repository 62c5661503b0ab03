"""``blendphot predict``: run deblending methods over a blend dataset and write the results table.

The dataset is streamed in chunks through the inference engine (one worker
process holding the networks), so memory stays bounded for any number of
blends: per chunk the blends and true masks are read from the memory maps,
every method runs, the IoU of mask-making methods is computed against the
true masks, and only the table rows are kept (the masks are dropped).
"""

from __future__ import annotations

import sys

import numpy as np

from napari_blendphot.cli._common import add_overwrite, progress_printer

_BUILTIN_METHODS = "sep,blend2flux,unet,blend2mask2flux"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="deblend a blend dataset with SEP and/or the networks; write a results table (CSV + FITS)",
        description="Run deblending methods over the blends of a dataset folder (made by 'blendphot blend') "
                    "in a separate worker process, chunk by chunk, and write one row per blend with the "
                    "true and predicted fluxes of both galaxies and, for methods that make masks, the IoU "
                    "with the true masks. The table is written as CSV and FITS beside each other and is "
                    "read by 'blendphot evaluate'.",
    )
    parser.add_argument("blends_dir", metavar="BLENDS_DIR", help="blend dataset folder")
    parser.add_argument("--methods", default=_BUILTIN_METHODS,
                        help=f"comma-separated method names (default {_BUILTIN_METHODS}); "
                             "third-party methods registered through the 'napari_blendphot.methods' "
                             "entry points are accepted too")
    parser.add_argument("-o", "--output", required=True, metavar="RESULTS",
                        help="results table: RESULTS.csv or RESULTS.fits (both are written) or a stem")
    parser.add_argument("--split", choices=("test", "train", "all"), default="test",
                        help="which blends to deblend (default test)")
    parser.add_argument("--weights", action="append", default=[], metavar="METHOD=PATH",
                        help="weights of a network: a .keras file or a shipped model name "
                             "(repeatable; default the shipped model of each method)")
    parser.add_argument("--precision", choices=("float32", "bfloat16", "auto"), default="float32",
                        help="compute precision of the networks (default float32, the precision of the "
                             "published test metrics); bfloat16 keeps float32 weights, is about twice as fast "
                             "on CPUs with native bfloat16 (avx512_bf16/amx_bf16) and moves fluxes by a few "
                             "thousandths of a magnitude; auto = bfloat16 where the CPU has it natively")
    parser.add_argument("--chunk-size", type=int, default=256,
                        help="blends per chunk sent to the worker (default 256; bounds memory)")
    parser.add_argument("--backend", choices=("tensorflow", "jax", "torch"), default=None,
                        help="Keras backend of the worker (default $KERAS_BACKEND or tensorflow)")
    add_overwrite(parser)
    parser.set_defaults(func=run)


class _RowReader:
    """Array-like over some rows of a ``.npy`` file, read slice by slice.

    Each read maps the file afresh and drops the map afterwards, so pages
    read for earlier chunks do not pile up in this process's resident memory
    (a long-lived memory map keeps every page it touched mapped).
    """

    def __init__(self, path, rows):
        self.path = path
        self.rows = np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), *np.load(path, mmap_mode="r").shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        rows = self.rows[key]
        array = np.load(self.path, mmap_mode="r")
        try:
            if rows.ndim == 1 and rows.size and np.all(np.diff(rows) == 1):
                return np.array(array[rows[0]:rows[-1] + 1])  # contiguous: one read
            return np.array(array[rows])
        finally:
            del array


def parse_weights(items, methods) -> dict:
    """``["unet=a.keras", ...]`` -> ``{"unet": "a.keras"}``, checking names and files early."""
    from napari_blendphot.errors import InputError
    from napari_blendphot.models.registry import METHODS, default_model, resolve_weights

    weights = {}
    for item in items:
        method, sep, value = str(item).partition("=")
        method, value = method.strip(), value.strip()
        if not sep or not method or not value:
            raise InputError(f"argument --weights {item}", "expected METHOD=PATH", "e.g. --weights unet=my_unet.keras")
        if method not in methods:
            raise InputError(f"argument --weights {item}", f"method {method!r} is not among --methods "
                             f"{','.join(methods)}")
        if method in weights:
            raise InputError(f"argument --weights {item}", f"weights for {method!r} given twice")
        if method in METHODS:
            # Fail now (missing file, wrong network, bad checksum) rather than after the first chunk.
            resolve_weights(value, expect=method)
        weights[method] = value
    for method in methods:
        if method in METHODS and method not in weights and default_model(method) is None:
            raise InputError(f"method {method!r}", "no shipped model is installed for it",
                             f"give weights with --weights {method}=PATH")
    return weights


def _output_targets(output):
    from pathlib import Path

    path = Path(output)
    stem = path.with_suffix("") if path.suffix in (".csv", ".fits") else path
    return [stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".fits")]


def _dataset_inputs(dataset) -> dict:
    """Digests that identify the dataset cheaply: its provenance and catalogue files."""
    from napari_blendphot.provenance import sha256_file

    record = {}
    for name in ("provenance.json", "catalog.fits", "catalog.csv"):
        path = dataset.path / name
        if path.is_file():
            record[name] = sha256_file(path)
    return record


def _method_provenance(metadata: dict) -> dict:
    """The reproducibility-relevant part of a method's metadata (no absolute paths)."""
    from pathlib import Path

    kept = {}
    for key, value in metadata.items():
        if key == "weights":
            kept["weights_file"] = Path(str(value)).name
        elif key in ("label", "method", "sha256", "model_name", "config", "keras_backend", "keras", "parameters",
                     "sep_version", "mask_encoding", "flux_rule", "precision"):
            kept[key] = value
    return kept


def run(args) -> int:
    import time

    from napari_blendphot.blend.dataset import BlendDataset, BlendDatasetView
    from napari_blendphot.deblend.engine import InferenceEngine
    from napari_blendphot.deblend.registry import method_info, parse_method_list
    from napari_blendphot.errors import InputError, check_output_path
    from napari_blendphot.models.registry import METHODS as NETWORK_METHODS
    from napari_blendphot.provenance import make_provenance
    from napari_blendphot.report.results import build_results_table, concatenate_results, write_results

    methods = parse_method_list(args.methods)
    weights = parse_weights(args.weights, methods)
    if args.chunk_size < 1:
        raise InputError("argument --chunk-size", f"must be a positive integer, got {args.chunk_size}")
    targets = _output_targets(args.output)
    for target in targets:  # refuse before hours of work, not after
        check_output_path(target, args.overwrite)
    if not targets[0].parent.is_dir():
        raise InputError(f"argument -o {args.output}", f"output folder {str(targets[0].parent)!r} does not exist")

    dataset = BlendDataset(args.blends_dir)
    rows = dataset.indices(None if args.split == "all" else args.split)
    view = BlendDatasetView(dataset, rows)
    blends = _RowReader(dataset.path / "blends.npy", rows)
    true_masks = _RowReader(dataset.path / "masks.npy", rows)
    context = view.context()
    print(f"predict: {len(rows)} {args.split} blends of {dataset.path} with {', '.join(methods)}", file=sys.stderr)

    start_time = time.perf_counter()
    tables = []
    metadata = {}
    options = {method: {"weights": path} for method, path in weights.items()}
    for method in methods:
        if method in NETWORK_METHODS:  # the shipped network methods take it; third-party ones may not
            options.setdefault(method, {})["precision"] = args.precision
    with InferenceEngine(methods, method_options=options, backend=args.backend, chunk_size=args.chunk_size) as engine:
        for chunk in engine.stream(blends, context, progress=progress_printer("predict")):
            for name, output in chunk.outputs.items():
                metadata.setdefault(name, output.metadata)
            tables.append(build_results_table(view.catalog[chunk.start:chunk.stop], chunk.outputs,
                                              true_masks=true_masks[chunk.start:chunk.stop]))
        backend = engine.backend
    elapsed = time.perf_counter() - start_time
    table = concatenate_results(tables)
    table.meta["provenance"] = make_provenance(
        "predict", None,
        inputs={"dataset": _dataset_inputs(dataset)},
        dataset_provenance=dataset.provenance,
        split=args.split,
        n_blends=int(len(rows)),
        methods=methods,
        method_metadata={name: _method_provenance(meta) for name, meta in metadata.items()},
        # The backend shapes the numbers only when a network ran.
        keras_backend=backend if any(method_info(m).needs_worker for m in methods) else None,
        iou_threshold=0.5,
    )
    written = write_results(table, args.output, overwrite=args.overwrite)
    _print_summary(table, methods, elapsed)
    print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


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
        print(line)
