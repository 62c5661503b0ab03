"""Scoring trained runs on a blend dataset split (``python -m training evaluate``, ``sep``, ``merge``).

Everything here is the library's one path: :func:`napari_blendphot.predict`
runs the run's ``model.keras`` (as the registered method of its network, with
that file as its weights) in the inference worker, and
:mod:`napari_blendphot.report` computes every statistic.  So the numbers of
a run's ``evaluation/`` folder, of ``blendphot evaluate`` and of
docs/results.md are the same numbers: the U-Net's flux is the blend summed
inside each predicted mask, NaN (not measured) where a mask is empty.

``evaluate_run`` writes ``RUN_DIR/evaluation/results.{csv,fits}`` (the results
table, one method named after the run), ``summary.json`` and the evaluation
report.  Predicted masks are used for the IoU columns and then dropped: the
table is small enough to travel back from a GPU machine.  ``evaluate_sep``
runs the SEP two-pass baseline on the same split.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from napari_blendphot.atomic import write_text_atomic
from napari_blendphot.errors import InputError, check_output_path
from napari_blendphot.report.evaluate import method_summary as summarise
from napari_blendphot.report.results import merge_results

__all__ = ["evaluate_run", "evaluate_sep", "merge_results", "summarise", "write_report"]

#: Blends per chunk sent to the worker (a GPU wants big batches; masks are dropped per chunk).
CHUNK_SIZE = 1024


def method_of_network(kind: str) -> str:
    """The registered method that runs a network of architecture *kind* (its ``network`` capability)."""
    from napari_blendphot.deblend.registry import methods_with

    names = methods_with(network=kind)
    if not names:
        raise InputError(f"network {kind!r}", "no registered method runs it")
    return names[0]


def dataset_provenance_digest(blends_dir) -> dict:
    from napari_blendphot.provenance import sha256_file

    folder = Path(blends_dir)
    return {"path": folder.name, "catalog_sha256": sha256_file(folder / "catalog.csv")}


def _label(config: dict) -> str:
    model = config["model"]
    if model["kind"] == "blend2flux":
        return f"blend2flux ({model.get('filters', 256)} filters)"
    if model["kind"] == "unet":
        return f"U-Net depth {model.get('depth', 5)} / {model.get('filters', 32)} filters (isophotal fluxes)"
    return f"blend2mask2flux (U-Net {model.get('unet_depth', 5)}/{model.get('unet_filters', 32)})"


def evaluate_run(run_dir, blends_dir, split: str = "test", method: str | None = None, batch_size: int = 256,
                 backend: str | None = None, overwrite: bool = False, report: bool = True) -> dict:
    """Predict *split* of *blends_dir* with *run_dir*'s model; write the results table and report.

    Returns a summary dict (also written as ``evaluation/summary.json``).
    """
    from napari_blendphot.deblend.engine import InferenceEngine
    from napari_blendphot.prediction import predict
    from napari_blendphot.provenance import sha256_file
    from napari_blendphot.report.results import rename_method, write_results

    run_dir = Path(run_dir)
    model_path = run_dir / "model.keras"
    if not model_path.is_file():
        raise InputError(run_dir, "has no model.keras yet", "train (or resume) the run until it has a best epoch")
    config = json.loads((run_dir / "config.json").read_text())
    kind = config["model"]["kind"]
    name = method or config["name"]
    runner = method_of_network(kind)
    out_dir = run_dir / "evaluation"
    out_dir.mkdir(exist_ok=True)
    check_output_path(out_dir / "results.csv", overwrite)
    options = {runner: {"weights": str(model_path), "batch_size": int(batch_size)}}
    timings: dict = {}
    with InferenceEngine([runner], backend=backend) as engine:
        engine.warm_up([runner], method_options=options)  # loads and traces the model outside the timing
        table = predict(blends_dir, [runner], split=split, method_options=options, engine=engine,
                        chunk_size=max(CHUNK_SIZE, int(batch_size)), step="training-evaluate", run_info=timings)
    table = rename_method(table, runner, name, label=_label(config))
    table.meta["provenance"]["parameters"].update(run=config["name"], kind=kind, model_sha256=sha256_file(model_path))
    write_results(table, out_dir / "results", overwrite=overwrite)
    seconds = float(timings["compute_seconds"].get(runner, float("nan")))
    summary = summarise(table, name)
    summary.update(method=name, kind=kind, split=split, n_blends=len(table), inference_s=round(seconds, 3),
                   inference_blends_per_s=round(len(table) / max(seconds, 1e-9), 1), batch_size=batch_size,
                   model_sha256=sha256_file(model_path))
    write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    if report:
        write_report(table, out_dir / "report", overwrite=overwrite)
    return summary


def write_report(table, out_dir, overwrite: bool = False):
    """The ``blendphot evaluate`` report of *table* in *out_dir*."""
    from napari_blendphot.report.evaluate import evaluate

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        check_output_path(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return evaluate(table, out_dir, overwrite=overwrite)
    except Exception as exc:  # the results table is written already; say loudly what failed
        message = f"evaluation report failed: {type(exc).__name__}: {exc}"
        print(f"warning: {message}", file=sys.stderr)
        write_text_atomic(out_dir / "REPORT_FAILED.txt", message + "\n")
        return None


def evaluate_sep(blends_dir, out_path, split: str = "test", n_jobs: int | None = None, overwrite: bool = False,
                 progress=None):
    """Run the SEP two-pass baseline on *split*; write its results table; return the table."""
    from napari_blendphot.prediction import predict
    from napari_blendphot.report.results import write_results

    table = predict(blends_dir, ["sep"], split=split, method_options={"sep": {"n_jobs": n_jobs}}, progress=progress,
                    step="training-evaluate-sep")
    write_results(table, out_path, overwrite=overwrite)
    return table
