"""``predict()``: run deblending methods over a blend set and get the results table.

The one way the package turns blends into numbers: ``blendphot predict``,
the Deblend Inspector's blend-set run, training's evaluation and notebooks
all call :func:`predict` (exported as ``napari_blendphot.predict``)::

    from napari_blendphot import predict, evaluate

    table = predict("blends/", ["sep", "blend2flux"], split="test")
    report = evaluate(table)                 # statistics (report.summary), no files
    report = evaluate(table, "report/")      # the same, with report.md/html and figures

Blends in: a dataset folder, a :class:`~napari_blendphot.blend.blend_set.BlendSet`
(a dataset, a selection of it, in-memory blends) or an array.  Methods and
their options in.  The blends stream through the inference engine's worker
chunk by chunk (bounded memory), with progress and cancel; the results table
(docs/results_format.md) out, with the IoU of every mask-making method
against the true masks and the flux errors of the methods that give them.
Cancel keeps the chunks done (``Cancelled.partial`` is their table).
"""

from __future__ import annotations

import time
from typing import Iterator

import numpy as np

from napari_blendphot.deblend.engine import DEFAULT_CHUNK_SIZE, Cancelled, cancel_requested
from napari_blendphot.errors import InputError

__all__ = ["predict", "predict_chunks", "method_options_for", "finish_results"]

#: Mask threshold of the IoU columns (the paper's).
IOU_THRESHOLD = 0.5


def method_options_for(methods, weights: dict | None = None, precision: str | None = None,
                       method_options: dict | None = None, tta: int | None = None) -> dict:
    """``{method: options}`` for a run, checked before anything starts.

    *weights* ``{method: file or shipped model name}`` is allowed only for the
    methods that accept weights (their file is found and checked now, not
    after the first chunk); *precision* goes to every method that accepts
    precisions; *tta* (test-time symmetries, 1, 2, 4 or 8) to every method
    that takes it; *method_options* adds any other option.  A method with a
    shipped network and no weights given must have its shipped model installed.
    """
    from napari_blendphot.deblend.registry import method_info
    from napari_blendphot.models import manifests as shipped_models

    options = {name: dict(values) for name, values in (method_options or {}).items()}
    unknown = sorted(set(options) - set(methods))
    if unknown:
        raise InputError("method options", f"given for {', '.join(unknown)}, which is not among the methods "
                         f"{', '.join(methods)}")
    for name, value in (weights or {}).items():
        if name not in methods:
            raise InputError(f"weights of {name!r}", f"method {name!r} is not among the methods {', '.join(methods)}")
        info = method_info(name)
        if not info.accepts_weights:
            takers = [m for m in methods if method_info(m).accepts_weights]
            raise InputError(f"weights of {name!r}", f"method {name!r} takes no weights file",
                             f"of the methods chosen, {', '.join(takers)} do" if takers else
                             "only network methods do, and none is chosen")
        if info.network is not None:
            shipped_models.resolve_weights(value, expect=info.network)  # missing file, wrong network, bad checksum
        options.setdefault(name, {})["weights"] = str(value)
    for name in methods:
        info = method_info(name)
        if precision is not None and info.precisions:
            if precision not in info.precisions:
                raise InputError(f"precision of {name!r}", f"{precision!r} is not one of {', '.join(info.precisions)}")
            options.setdefault(name, {})["precision"] = precision
        if tta is not None and tta != 1 and info.tta:
            from napari_blendphot.deblend.keras_methods import check_tta

            options.setdefault(name, {})["tta"] = check_tta(tta, "tta")
        if info.accepts_weights and "weights" not in options.get(name, {}):
            from napari_blendphot.deblend.registry import shipped_model_of

            if info.network is None or shipped_model_of(name) is None:
                raise InputError(f"method {name!r}", "no shipped model is installed for it",
                                 f"give weights with --weights {name}=PATH")
    return options


def _method_provenance(metadata: dict) -> dict:
    """The reproducibility-relevant part of a method's metadata (no absolute paths)."""
    from pathlib import Path

    kept = {}
    for key, value in metadata.items():
        if key == "weights":
            kept["weights_file"] = Path(str(value)).name
        elif key in ("label", "method", "sha256", "model_name", "config", "keras_backend", "keras", "parameters",
                     "sep_version", "mask_encoding", "flux_rule", "precision", "tta", "unet_fingerprint",
                     "shared_members"):
            kept[key] = value
    return kept


def _chunk_catalog(chunk):
    from astropy.table import Table

    if chunk.catalog is not None:
        return chunk.catalog
    return Table({"id": np.arange(chunk.start, chunk.stop, dtype=np.int64)})


class _DatasetChunk:
    """A chunk of a dataset without its pixels: the rows the worker reads, the catalogue rows, the next rows."""

    masks = None  # the IoU comes computed from the worker

    def __init__(self, blend_set, start: int, stop: int, following):
        self.start, self.stop = start, stop
        self.rows = blend_set.worker_rows(start, stop)
        self.catalog = None if blend_set.catalog is None else blend_set.catalog[start:stop]
        self.following = following

    def __len__(self) -> int:
        return self.stop - self.start

    def context(self):
        from napari_blendphot.blend.blend_set import context_from_catalog

        return context_from_catalog(self.catalog)


def _dataset_chunks(blend_set, chunk_size: int):
    total = len(blend_set)
    for start in range(0, total, chunk_size):
        stop = min(start + chunk_size, total)
        following = blend_set.worker_rows(stop, min(stop + chunk_size, total)) if stop < total else None
        yield _DatasetChunk(blend_set, start, stop, following)


#: Batches of the largest GPU batch per chunk when the chunk size is chosen (chunk_size=None).
GPU_BATCHES_PER_CHUNK = 16


def auto_chunk_size(engine, methods, options: dict) -> int:
    """Blends per chunk for *methods* in *engine*'s worker: 256 on a CPU, 16 batches of the networks on a GPU.

    The networks are loaded (and compiled) now, in the worker, which knows
    its device and batch sizes; a GPU then gets chunks long enough to keep
    it busy while the next chunk is read.
    """
    from napari_blendphot.deblend.registry import method_info

    networks = [name for name in methods if method_info(name).uses_keras]
    if not networks:
        return DEFAULT_CHUNK_SIZE
    # Options as the run will send them (none given: the engine's own), so the models loaded now are reused.
    loaded = engine.warm_up(networks, {name: options[name] for name in networks if name in options})
    gpu_batches = [int(record.get("batch_size") or 0) for record in loaded.values()
                   if isinstance(record, dict) and record.get("device") == "gpu"]
    return max([DEFAULT_CHUNK_SIZE] + [GPU_BATCHES_PER_CHUNK * size for size in gpu_batches])


def predict_chunks(blends, methods=None, *, split: str | None = None, weights: dict | None = None,
                   precision: str | None = None, method_options: dict | None = None, engine=None,
                   backend: str | None = None, chunk_size: int | None = None, progress=None, cancel=None,
                   run_info: dict | None = None, on_outputs=None) -> Iterator:
    """Like :func:`predict`, but yield the results table of each chunk as soon as it is done.

    *run_info*, when given, receives ``blend_set``, ``methods``, ``metadata``
    (each method's first metadata), ``backend``, ``seconds`` and
    ``compute_seconds`` as the run goes.
    """
    from napari_blendphot.blend.dataset import as_blend_set
    from napari_blendphot.deblend.engine import InferenceEngine
    from napari_blendphot.deblend.registry import default_methods, parse_method_list
    from napari_blendphot.report.results import build_results_table

    blend_set = as_blend_set(blends, split)
    if methods is None:
        methods = list(default_methods())
    methods = parse_method_list(methods if isinstance(methods, str) else ",".join(methods))
    options = method_options_for(methods, weights, precision, method_options)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer))
                                   or chunk_size < 1):
        raise InputError("chunk size", f"must be a positive integer, got {chunk_size!r}")
    total = len(blend_set)
    if total == 0:
        raise InputError(blend_set.source, "holds no blends" + ("" if split in (None, "all") else f" of split {split!r}"))
    info = run_info if run_info is not None else {}
    info.update(blend_set=blend_set, methods=methods, metadata={}, seconds=0.0, compute_seconds={})
    own_engine = engine is None
    if own_engine:
        engine = InferenceEngine(methods, backend=backend, chunk_size=chunk_size or DEFAULT_CHUNK_SIZE)
    info["backend"] = engine.backend
    if chunk_size is None:
        chunk_size = auto_chunk_size(engine, methods, options)
    start_time = time.perf_counter()
    done = 0
    # A dataset on disk is read by the worker itself (row numbers through the pipe, not pixels; the
    # next chunk read while this one computes; the IoU computed there, so the masks stay there), unless
    # the caller wants the masks back (on_outputs).
    direct = on_outputs is None and hasattr(blend_set, "worker_rows")
    chunks = _dataset_chunks(blend_set, chunk_size) if direct else blend_set.iter_chunks(chunk_size)
    try:
        for chunk in chunks:
            if cancel_requested(cancel):
                raise Cancelled(f"cancelled after {done} of {total} blends", done=done, total=total)
            if direct:
                outputs = engine.run(chunk.rows, chunk.context(), methods=methods, chunk_size=len(chunk),
                                     method_options=options, true_masks=True if chunk.rows.has_masks else None,
                                     keep_masks=False, iou_threshold=IOU_THRESHOLD, prefetch=chunk.following)
            else:
                outputs = engine.run(chunk.blends, chunk.context(), methods=methods, chunk_size=len(chunk),
                                     method_options=options)
            for name, seconds in engine.last_compute_seconds.items():
                info["compute_seconds"][name] = info["compute_seconds"].get(name, 0.0) + seconds
            for name, output in outputs.items():
                info["metadata"].setdefault(name, output.metadata)
            if on_outputs is not None:
                on_outputs(chunk, outputs)
            table = build_results_table(_chunk_catalog(chunk), outputs, true_masks=chunk.masks,
                                        iou_threshold=IOU_THRESHOLD)
            done = chunk.stop
            info["seconds"] = time.perf_counter() - start_time
            if progress is not None:
                progress(done, total)
            yield table
    finally:
        if own_engine:
            engine.close()


def predict(blends, methods=None, *, split: str | None = None, weights: dict | None = None,
            precision: str | None = None, method_options: dict | None = None, engine=None, backend: str | None = None,
            chunk_size: int | None = None, progress=None, cancel=None, step: str = "predict",
            run_info: dict | None = None, on_outputs=None):
    """Run deblending methods over blends; return the results table.

    Parameters
    ----------
    blends : path, BlendSet or array
        A blend dataset folder, a :class:`~napari_blendphot.blend.blend_set.BlendSet`
        (``BlendDataset``, ``dataset.select(...)``, ``BlendBatch``), or blends
        (N, 128, 128) / one (128, 128) stamp without truth.
    methods : str or sequence of str, optional
        Registered method names (default: the built-in ones).
    split : str, optional
        Only the blends of this split (``"test"``, ``"train"``; None or
        ``"all"``: every blend).
    weights : dict, optional
        ``{method: .keras file or shipped model name}`` for methods that take weights.
    precision : {"float32", "bfloat16", "auto"}, optional
        Compute precision of every method that accepts one (default: theirs: bfloat16 on a GPU with native
        bfloat16, float32 elsewhere).
    method_options : dict, optional
        ``{method: {option: value}}``, any other option of a method's factory.
    engine : InferenceEngine, optional
        Run in this engine's worker (its loaded models are reused; it stays
        open).  Default: a worker for this call, stopped at the end.
    backend : {"tensorflow", "jax", "torch"}, optional
        Keras backend of the worker this call starts.
    chunk_size : int, optional
        Blends per chunk (bounds memory; progress and cancel act per chunk).
        Default: :func:`auto_chunk_size` (256 on a CPU, 16 network batches on a GPU).
    progress : callable(done, total), optional
        Called after each chunk.
    cancel : threading.Event or callable() -> bool, optional
        Checked between chunks.
    step : str
        Name of the step in the table's provenance.
    run_info : dict, optional
        Filled as the run goes: ``seconds`` (wall time), ``compute_seconds``
        (``{method: seconds}`` of the methods' own work in the worker),
        ``metadata`` (each method's), ``backend``, ``blend_set``, ``methods``.
    on_outputs : callable(chunk, outputs), optional
        Called with each chunk (a :class:`~napari_blendphot.blend.assemble.BlendBatch`)
        and its ``{method: DeblendOutput}`` before the masks are dropped (the
        failure browser draws the masks it asked for).

    Returns
    -------
    astropy.table.Table
        The results table (docs/results_format.md): the blend catalogue (or
        ``id`` alone for bare blends), per method ``g1_flux_<m>``,
        ``g2_flux_<m>``, their errors where the method gives them, the IoU of
        mask-making methods where true masks are known, the methods' extra
        columns; ``meta`` holds the methods, zero points, labels and provenance.

    Raises
    ------
    Cancelled
        With ``.partial`` (the results table of the chunks done, or None),
        ``.done`` and ``.total``.
    WorkerError, InputError
        With ``.partial`` as well.  An ``InputError`` is also raised when the
        dataset's files changed during the run (no table would be right).
    """
    from napari_blendphot.report.results import concatenate_results

    info: dict = {} if run_info is None else run_info
    tables = []
    try:
        for table in predict_chunks(blends, methods, split=split, weights=weights, precision=precision,
                                    method_options=method_options, engine=engine, backend=backend,
                                    chunk_size=chunk_size, progress=progress, cancel=cancel, run_info=info,
                                    on_outputs=on_outputs):
            tables.append(table)
    except BaseException as exc:
        if "blend_set" in info:  # started: keep what was done
            exc.partial = concatenate_results(tables) if tables else None
            exc.done = sum(len(t) for t in tables)
            exc.total = len(info["blend_set"])
        raise
    return finish_results(concatenate_results(tables), info, step, split)


def finish_results(table, info: dict, step: str, split: str | None):
    """The gathered results *table* with its provenance (a local run's and a cluster run's alike).

    *info*: ``blend_set``, ``methods``, ``metadata`` (each method's first) and ``backend``.
    """
    from napari_blendphot.deblend.registry import method_info
    from napari_blendphot.provenance import make_provenance

    blend_set = info["blend_set"]
    blend_set.check_unchanged()
    methods = info["methods"]
    dataset_provenance = getattr(blend_set, "provenance", None)
    table.meta["provenance"] = make_provenance(
        step, None,
        inputs={"dataset": blend_set.describe_inputs()},
        dataset_provenance=dataset_provenance if dataset_provenance is not None else {},
        split=split or "all",
        n_blends=int(len(table)),
        methods=methods,
        method_metadata={name: _method_provenance(meta) for name, meta in info["metadata"].items()},
        # The backend shapes the numbers only when a network ran.
        keras_backend=info["backend"] if any(method_info(m).uses_keras for m in methods) else None,
        iou_threshold=IOU_THRESHOLD,
    )
    return table
