"""Shipping a trained run: copy its ``model.keras`` into the package with a manifest.

The manifest (:func:`napari_blendphot.models.manifests.write_manifest`) records
the architecture (the builder's arguments, so the network can be rebuilt),
what the model was trained on (sample and dataset digests, seed, split sizes),
its test metrics (``evaluation/summary.json`` of the run) and the file's sha256.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from napari_blendphot.errors import InputError, check_output_path


def ship_run(run_dir, name: str, default: bool = False, description: str = "", notes: str = "",
             weights_dir=None, overwrite: bool = False):
    """Copy *run_dir*'s model to ``<weights_dir>/<name>.keras`` and write ``<name>.json``; return the manifest."""
    from napari_blendphot.models.manifests import WEIGHTS_DIR, write_manifest
    from .train import model_arguments

    run_dir = Path(run_dir)
    model = run_dir / "model.keras"
    summary_path = run_dir / "evaluation" / "summary.json"
    for path in (model, run_dir / "config.json", run_dir / "run.json", summary_path):
        if not path.is_file():
            raise InputError(path, "missing: train and evaluate the run before shipping it")
    config = json.loads((run_dir / "config.json").read_text())
    record = json.loads((run_dir / "run.json").read_text())
    summary = json.loads(summary_path.read_text())
    target_dir = Path(weights_dir) if weights_dir else WEIGHTS_DIR
    target = target_dir / f"{name}.keras"
    check_output_path(target, overwrite)
    check_output_path(target.with_suffix(".json"), overwrite)
    data = record.get("data", {})
    dataset = data.get("dataset", {})
    provenance = dataset.get("provenance", {}) if isinstance(dataset.get("provenance"), dict) else {}
    trained_on = {
        "description": description or f"blend dataset {Path(dataset.get('path', '?')).name}",
        "dataset_blends_sha256": dataset.get("blends_sha256"),
        "sample": (provenance.get("inputs") or {}).get("sample"),
        "dataset_seed": provenance.get("seed"),
        "training_seed": record.get("seed"),
        "n_train": data.get("n_train"),
        "n_validation": data.get("n_validation"),
        "epochs": record.get("epochs_completed"),
        "best_epoch": record.get("best_epoch"),
        "stopped": record.get("stopped"),
        "precision": config["training"]["precision"],
        "batch_size": config["training"]["batch_size"],
        "backend": record.get("backend"),
        "devices": record.get("devices"),
        "config": config["name"],
    }
    metrics = {key: summary[key] for key in ("flux_mape_pct", "mean_iou") if summary.get(key) is not None}
    for galaxy in ("central", "companion"):
        metrics[galaxy] = summary[galaxy]
    metrics["test_split"] = {"n_blends": summary["n_blends"], "split": summary["split"]}
    target_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, target)
    return write_manifest(target, config["model"]["kind"], model_arguments(config["model"]), trained_on, metrics,
                          name=name, backend=record.get("backend"), default=default, notes=notes,
                          overwrite=overwrite)
