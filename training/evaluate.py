"""Evaluating trained runs on a blend dataset split, the SEP baseline, and merging results.

``evaluate_run`` predicts the blends of one split with a run's ``model.keras``
and writes ``RUN_DIR/evaluation/results.{csv,fits}`` (the results table of
docs/architecture.md, one method named after the run) and, through
:func:`napari_blendphot.report.evaluate.evaluate`, the evaluation report.
Predicted masks are used for the IoU columns and then dropped: the table is
small enough to travel back from a GPU machine.

A U-Net predicts masks only; its flux columns are the isophotal sums of the
blend over each predicted mask (the simplest photometry a segmentation gives,
which shows what the flux head of blend2mask2flux adds).

``evaluate_sep`` runs the SEP two-pass baseline on the same split and
``merge_results`` joins the tables of several methods on the blend ``id``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from napari_blendphot.errors import InputError, check_output_path


def _load_split(blends_dir, split: str):
    from napari_blendphot.blend.dataset import BlendDataset

    dataset = BlendDataset(blends_dir)
    view = dataset.select(None if split == "all" else split)
    if len(view) == 0:
        raise InputError(blends_dir, f"has no blends of split {split!r}")
    return dataset, view


def predict_blends(model, blends, batch_size: int = 256, chunk_size: int = 2048, kind: str | None = None):
    """Fluxes (N, 2) and thresholded masks (N, 2, H, W) uint8 (or None) of *model* on *blends*.

    Blends are read and predicted chunk by chunk (memory-mapped input is fine).
    Returns ``(fluxes, masks, seconds)``; *seconds* is the wall time of the
    predictions alone (data reading excluded).
    """
    n = len(blends)
    fluxes = np.full((n, 2), np.nan)
    masks = None
    seconds = 0.0
    for start in range(0, n, chunk_size):
        x = np.asarray(blends[start:start + chunk_size], np.float32)
        tic = time.perf_counter()
        out = model.predict(x, batch_size=batch_size, verbose=0)
        seconds += time.perf_counter() - tic
        if isinstance(out, dict):
            flux_part, mask_part = out.get("fluxes"), out.get("masks")
        elif kind == "unet":
            flux_part, mask_part = None, out
        else:
            flux_part, mask_part = out, None
        if mask_part is not None:
            mask_part = np.moveaxis(np.asarray(mask_part)[..., -2:] > 0.5, -1, 1).astype(np.uint8)
            if masks is None:
                masks = np.zeros((n, 2, *x.shape[1:]), np.uint8)
            masks[start:start + len(x)] = mask_part
            if flux_part is None:
                # Isophotal flux of each predicted segment.
                flux_part = np.einsum("nhw,nkhw->nk", x.astype(np.float64), mask_part.astype(np.float64))
        fluxes[start:start + len(x)] = np.asarray(flux_part, np.float64)
    return fluxes, masks, seconds


def evaluate_run(run_dir, blends_dir, split: str = "test", method: str | None = None, batch_size: int = 256,
                 backend: str | None = None, overwrite: bool = False, report: bool = True) -> dict:
    """Predict *split* of *blends_dir* with *run_dir*'s model; write the results table and report.

    Returns a summary dict (also written as ``evaluation/summary.json``).
    """
    from training.train import configure_backend

    run_dir = Path(run_dir)
    model_path = run_dir / "model.keras"
    if not model_path.is_file():
        raise InputError(run_dir, "has no model.keras yet", "train (or resume) the run until it has a best epoch")
    configure_backend(backend)
    from napari_blendphot.deblend.base import DeblendOutput
    from napari_blendphot.models.io import load_model
    from napari_blendphot.provenance import make_provenance, sha256_file
    from napari_blendphot.report.results import build_results_table, write_results

    config = json.loads((run_dir / "config.json").read_text())
    kind = config["model"]["kind"]
    method = method or config["name"]
    out_dir = run_dir / "evaluation"
    out_dir.mkdir(exist_ok=True)
    check_output_path(out_dir / "results.csv", overwrite)
    dataset, view = _load_split(blends_dir, split)
    model = load_model(model_path)
    blends = view.blends
    # Warm-up (compilation) outside the timing.
    model.predict(np.asarray(blends[:batch_size], np.float32), batch_size=batch_size, verbose=0)
    fluxes, masks, seconds = predict_blends(model, blends, batch_size=batch_size, kind=kind)
    output = DeblendOutput(method, fluxes, masks, metadata={"label": _label(config)})
    true_masks = view.masks if masks is not None else None
    provenance = make_provenance("training-evaluate", int(config["training"]["seed"]),
                                 inputs={"model": str(model_path), "blends": dataset_provenance_digest(blends_dir)},
                                 split=split, run=config["name"], kind=kind)
    table = build_results_table(view.catalog, [output], true_masks=true_masks, provenance=provenance)
    write_results(table, out_dir / "results", overwrite=overwrite)
    summary = summarise(table, method)
    summary.update(method=method, kind=kind, split=split, n_blends=len(view),
                   inference_s=round(seconds, 3), inference_blends_per_s=round(len(view) / max(seconds, 1e-9), 1),
                   batch_size=batch_size, model_sha256=sha256_file(model_path))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    if report:
        write_report(table, out_dir / "report", overwrite=overwrite)
    return summary


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


def summarise(table, method: str) -> dict:
    """Flux MAPE, dmag bias/sigma/outliers per galaxy and mean IoU of one method (plain numpy)."""
    from napari_blendphot.constants import OUTLIER_DMAG, ZERO_POINT
    from napari_blendphot.sample.galaxy_sample import flux_to_mag

    zp = float((table.meta.get("zero_points") or {}).get(method, ZERO_POINT))
    out = {}
    all_rel = []
    for g, name in (("g1", "central"), ("g2", "companion")):
        true = np.asarray(table[f"{g}_flux"], np.float64)
        pred = np.asarray(table[f"{g}_flux_{method}"], np.float64)
        found = np.isfinite(pred)
        rel = np.abs(pred[found] - true[found]) / true[found]
        all_rel.append(rel)
        dmag = flux_to_mag(pred[found], zp) - flux_to_mag(true[found], ZERO_POINT)
        dmag = dmag[np.isfinite(dmag)]
        out[name] = {
            "n": int(found.sum()),
            "flux_mape_pct": float(100 * rel.mean()) if rel.size else None,
            "bias_dmag": float(dmag.mean()) if dmag.size else None,
            "sigma_dmag": float(dmag.std()) if dmag.size else None,
            "outlier_fraction": float(np.mean(np.abs(dmag) > OUTLIER_DMAG)) if dmag.size else None,
        }
        if f"{g}_iou_{method}" in table.colnames:
            out[name]["mean_iou"] = float(np.nanmean(np.asarray(table[f"{g}_iou_{method}"], np.float64)))
    rel = np.concatenate(all_rel)
    out["flux_mape_pct"] = float(100 * rel.mean()) if rel.size else None
    if f"g1_iou_{method}" in table.colnames:
        ious = np.concatenate([np.asarray(table[f"{g}_iou_{method}"], np.float64) for g in ("g1", "g2")])
        out["mean_iou"] = float(np.nanmean(ious))
    return out


def write_report(table, out_dir, overwrite: bool = False):
    """The ``blendphot evaluate`` report of *table* in *out_dir* (if the report module is installed)."""
    try:
        from napari_blendphot.report.evaluate import evaluate
    except ModuleNotFoundError as exc:  # pragma: no cover - report module missing from an old install
        print(f"note: no evaluation report ({exc})")
        return None
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        check_output_path(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return evaluate(table, out_dir)
    except Exception as exc:  # the results table is written already; say loudly what failed
        message = f"evaluation report failed: {type(exc).__name__}: {exc}"
        print(f"warning: {message}", file=sys.stderr)
        (out_dir / "REPORT_FAILED.txt").write_text(message + "\n")
        return None


def evaluate_sep(blends_dir, out_path, split: str = "test", n_jobs: int | None = None, overwrite: bool = False,
                 progress=None):
    """Run the SEP two-pass baseline on *split*; write its results table; return the table."""
    from napari_blendphot.deblend.parallel import deblend_in_processes
    from napari_blendphot.deblend.sep_baseline import SepTwoPass
    from napari_blendphot.provenance import make_provenance
    from napari_blendphot.report.results import build_results_table, write_results

    _, view = _load_split(blends_dir, split)
    method = SepTwoPass()
    tic = time.perf_counter()
    output = deblend_in_processes(method, view.blends, view.context(), n_jobs=n_jobs, progress=progress)
    seconds = time.perf_counter() - tic
    table = build_results_table(view.catalog, [output], true_masks=view.masks,
                                provenance=make_provenance("training-evaluate-sep", None,
                                                           inputs={"blends": dataset_provenance_digest(blends_dir)},
                                                           split=split, seconds=round(seconds, 1)))
    write_results(table, out_path, overwrite=overwrite)
    return table


def merge_results(tables, provenance: dict | None = None):
    """One results table with the method columns of all *tables*, joined on the blend ``id``.

    Every table must hold the same blends (same ids and the same truth
    columns); method columns must not repeat.
    """
    from astropy.table import Table

    from napari_blendphot.report.results import methods_in

    tables = list(tables)
    if not tables:
        raise InputError("results tables", "nothing to merge")
    base = tables[0]
    ids = np.asarray(base["id"])
    merged = Table(base, copy=True)
    methods = list(methods_in(base))
    zero_points = dict(base.meta.get("zero_points") or {})
    labels = dict(base.meta.get("labels") or {})
    for index, table in enumerate(tables[1:], start=1):
        other_ids = np.asarray(table["id"])
        if set(other_ids.tolist()) != set(ids.tolist()) or len(other_ids) != len(ids):
            raise InputError(f"results table {index}", "holds other blends than the first table")
        order = np.argsort(other_ids)[np.searchsorted(np.sort(other_ids), ids)]
        for column in ("g1_flux", "g2_flux"):
            if not np.allclose(np.asarray(table[column])[order], np.asarray(base[column]), rtol=1e-6):
                raise InputError(f"results table {index}", f"column {column} differs from the first table's")
        for method in methods_in(table):
            if method in methods:
                raise InputError(f"results table {index}", f"method {method!r} appears twice")
            methods.append(method)
            zero_points[method] = (table.meta.get("zero_points") or {}).get(method, 25.96)
            if method in (table.meta.get("labels") or {}):
                labels[method] = table.meta["labels"][method]
            for column in table.colnames:
                if column.endswith(f"_{method}"):
                    merged[column] = np.asarray(table[column])[order]
    merged.meta = {"methods": methods, "zero_points": zero_points, "provenance": dict(provenance or {})}
    if labels:
        merged.meta["labels"] = labels
    return merged


def detection_case_table(table, detection_column: str = "detection_sep"):
    """Flux MAPE (%) of every method per SEP detection case, central and companion.

    Cases (SPEC §5): 0 only the central found, 1 only the companion, 2 both,
    3 more than two sources; -1 nothing assigned.  Networks are scored on every
    blend of a case (they always predict both fluxes); SEP only where it
    measured the galaxy.  Returns a list of dict rows.
    """
    from napari_blendphot.report.results import methods_in

    if detection_column not in table.colnames:
        raise InputError("results table", f"has no column {detection_column!r}")
    cases = np.asarray(table[detection_column])
    rows = []
    for method in methods_in(table):
        for case in sorted(set(cases.tolist())):
            keep = cases == case
            row = {"method": method, "case": int(case), "n_blends": int(keep.sum())}
            for g, name in (("g1", "central"), ("g2", "companion")):
                true = np.asarray(table[f"{g}_flux"], np.float64)[keep]
                pred = np.asarray(table[f"{g}_flux_{method}"], np.float64)[keep]
                found = np.isfinite(pred)
                row[f"{name}_n"] = int(found.sum())
                row[f"{name}_flux_mape_pct"] = (float(100 * np.mean(np.abs(pred[found] - true[found]) / true[found]))
                                                if found.any() else None)
            rows.append(row)
    return rows
