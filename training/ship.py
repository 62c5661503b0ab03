"""Shipping a trained run: copy its ``model.keras`` into the package with a manifest.

The manifest (:func:`napari_blendphot.models.manifests.write_manifest`) records
the architecture (the builder's arguments, so the network can be rebuilt),
what the model was trained on (sample and dataset digests, or for a synth-mode
run the galaxy bank and the sample it was cut from; seed(s); the earlier runs
it started from), its test metrics and the file's sha256, and optionally the
calibration of its flux errors (``blendphot calibrate-errors fit``).

An ensemble run made with ``--share`` (``python -m training ensemble``) ships
without its shared members: the file written holds only the others
(:func:`~napari_blendphot.models.networks.stored_members_model`, weights bit
for bit the run's), the manifest's ``architecture.shared_members`` names the
shipped files that complete it, and they must be in the target folder with
the sha256 the run recorded.  The manifest's ``sha256`` is the written file's.

Test metrics come either from the run's ``evaluation/summary.json``
(``python -m training evaluate``) or from a results table written by
``blendphot predict`` with this very model (``test_results``): the table's
metadata records each network's sha256, which must be the run's model's.
"""

from __future__ import annotations

import json
from pathlib import Path

from napari_blendphot.errors import InputError, check_output_path


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not a readable JSON file: {exc}") from None


def _data_description(record: dict, config: dict) -> dict:
    """What the run trained on: a blend dataset, or (synth mode) a galaxy bank."""
    data = record.get("data", {})
    if data.get("mode") == "synth":
        bank = data.get("bank", {})
        made_by = bank.get("made_by", {})
        return {
            "mode": "synth",
            "bank": {"path": Path(str(bank.get("path", "?"))).name, "sha256": bank.get("sha256"),
                     "seed": made_by.get("seed"), "inputs": made_by.get("inputs")},
            "sample": (made_by.get("inputs") or {}).get("sample"),
            "n_train_galaxies": data.get("n_train_galaxies"),
            "n_validation_galaxies": data.get("n_validation_galaxies"),
            "n_validation": data.get("n_validation"),
            "blends_per_epoch": data.get("blends_per_epoch"),
            "augmentation": data.get("augmentation"),
        }
    dataset = data.get("dataset", {})
    provenance = dataset.get("provenance", {}) if isinstance(dataset.get("provenance"), dict) else {}
    return {
        "dataset_blends_sha256": dataset.get("blends_sha256"),
        "sample": (provenance.get("inputs") or {}).get("sample"),
        "dataset_seed": provenance.get("seed"),
        "n_train": data.get("n_train"),
        "n_validation": data.get("n_validation"),
    }


def _stage(run_dir) -> dict:
    """A short record of an earlier run this model started from (weights, head or frozen U-Net)."""
    run_dir = Path(run_dir)
    record = _read_json(run_dir / "run.json")
    config = _read_json(run_dir / "config.json")
    return {"run": run_dir.name, "config": config.get("name"), "kind": record.get("kind"),
            "epochs": record.get("epochs_completed"), "best_epoch": record.get("best_epoch"),
            "best_val_loss": record.get("best_val_loss"), "stopped": record.get("stopped"),
            "wall_time_s": record.get("wall_time_s"), "backend": record.get("backend"),
            "devices": record.get("devices"), "precision": config.get("training", {}).get("precision")}


def _results_of_model(results, method: str, model_sha256: str, whose: str = "the run's model"):
    """``(table, method record)`` of a ``blendphot predict`` table whose *method* ran with this very model."""
    from napari_blendphot.report.results import read_results

    table = read_results(results)
    if method not in (table.meta.get("methods") or []):
        raise InputError(results, f"has no method {method!r}", f"methods: {', '.join(table.meta.get('methods') or [])}")
    recorded = ((((table.meta.get("provenance") or {}).get("parameters") or {}).get("method_metadata") or {})
                .get(method) or {})
    sha = recorded.get("sha256")
    if sha != model_sha256:
        raise InputError(results, f"its {method} was not this model (sha256 {str(sha)[:12]}..., "
                                  f"{whose} {model_sha256[:12]}...)")
    return table, recorded


def metrics_from_results(results, method: str, model_sha256: str) -> dict:
    """Test metrics of *method* from a ``blendphot predict`` results table made with this model."""
    from napari_blendphot.report.evaluate import method_summary

    table, _ = _results_of_model(results, method, model_sha256)
    metrics = method_summary(table, method)
    dataset = ((table.meta.get("provenance") or {}).get("inputs") or {}).get("dataset")
    parameters = (table.meta.get("provenance") or {}).get("parameters") or {}
    metrics["test_split"] = {"n_blends": len(table), "split": parameters.get("split"),
                             "results": Path(str(results)).name, "dataset": dataset,
                             "sample": ((parameters.get("dataset_provenance") or {}).get("inputs") or {}).get("sample")}
    return metrics


def _write_stored_members(model_path, target: Path, name: str, architecture: dict, store: str | None) -> None:
    """Write to *target* the members of the ensemble *model_path* that it does not share, checked.

    The file is checked before it is installed: with the shared members'
    files in *target*'s folder it must give back the run's ensemble weight
    for weight (what :func:`~napari_blendphot.models.manifests.load_manifest_model`
    will load), else nothing is written.
    """
    import numpy as np

    from napari_blendphot.atomic import atomic_output
    from napari_blendphot.models.io import deflate_archive, load_model
    from napari_blendphot.models.manifests import Manifest, load_manifest_model, shared_members, verify_shared_members
    from napari_blendphot.models.networks import ensemble_members, stored_members_model

    # The manifest-to-be (in memory) says where the shared members are: beside it, in the target folder.
    manifest = Manifest(name=name, method="blend2flux", architecture=architecture, trained_on={}, test_metrics={},
                        file=target.name, sha256="", keras_version="", backend="",
                        manifest_path=target.with_suffix(".json"))
    entries = shared_members(manifest)
    verify_shared_members(manifest)  # shipped there already, and the very files the run was built with
    whole = load_model(model_path, safe_mode=True, compile=False, expect="blend2flux")
    n_members = len(ensemble_members(whole))
    if n_members != len(architecture.get("ensemble_members") or []):
        raise InputError(model_path, f"holds {n_members} ensemble members, its config.json lists "
                         f"{len(architecture.get('ensemble_members') or [])}")
    stored = stored_members_model(whole, [entry["position"] for entry in entries], name)
    with atomic_output(target) as temporary:
        stored.save(str(temporary))
        if store not in (None, "float32"):
            deflate_archive(temporary)  # stored as the run's model was: 16-bit weights, deflated
        rebuilt = load_manifest_model(temporary, manifest, expect="blend2flux")
        for variable, before, after in zip(whole.weights, whole.get_weights(), rebuilt.get_weights(), strict=True):
            if not np.array_equal(before, after):
                raise InputError(model_path, f"its ensemble differs from the stored members plus the shared "
                                 f"files in {target.parent} (weight {variable.path})",
                                 "was a shared member shipped again since the ensemble was built?")


def ship_run(run_dir, name: str, default: bool = False, description: str = "", notes: str = "",
             weights_dir=None, overwrite: bool = False, test_results=None, calibration=None, stages=()):
    """Copy *run_dir*'s model to ``<weights_dir>/<name>.keras`` and write ``<name>.json``; return the manifest.

    Parameters
    ----------
    test_results : path-like, optional
        A results table of held-out test blends predicted with this model
        (instead of the run's ``evaluation/summary.json``).
    calibration : path-like or sequence of path-like, optional
        ``blendphot calibrate-errors fit`` file(s) with this method's error
        calibration, stored in the manifest (used by every prediction): one
        fitted on single-pass predictions, and optionally more fitted on
        predictions made with ``--tta N``, used at that ``tta``.
    stages : sequence of path-like
        Earlier run folders this model started from, recorded in ``trained_on``.
    """
    from napari_blendphot.atomic import atomic_output
    from napari_blendphot.models.manifests import WEIGHTS_DIR, write_manifest
    from napari_blendphot.provenance import sha256_file

    from .train import model_arguments

    run_dir = Path(run_dir)
    model = run_dir / "model.keras"
    summary_path = run_dir / "evaluation" / "summary.json"
    required = [model, run_dir / "config.json", run_dir / "run.json"] + ([] if test_results else [summary_path])
    for path in required:
        if not path.is_file():
            raise InputError(path, "missing: train and evaluate the run before shipping it",
                             "or give test results predicted with its model")
    config = _read_json(run_dir / "config.json")
    record = _read_json(run_dir / "run.json")
    network = config["model"]["kind"]
    # The deblending method whose results and calibration belong to this model: the network's own, or the
    # one a combined model runs as (an ensemble of blend2flux networks is the 'ensemble' method).
    method = config.get("method") or network
    model_sha = sha256_file(model)
    flux_error_calibration = None
    if calibration:
        from napari_blendphot.metrics.calibration import FluxErrorCalibration, manifest_calibration

        paths = [calibration] if isinstance(calibration, (str, Path)) else list(calibration)
        flux_error_calibration = manifest_calibration([FluxErrorCalibration.load(p) for p in paths], method)
    if test_results:
        metrics = metrics_from_results(test_results, method, model_sha)
    else:
        summary = _read_json(summary_path)
        metrics = {key: summary[key] for key in ("flux_mape_pct", "mean_iou") if summary.get(key) is not None}
        for galaxy in ("central", "companion"):
            metrics[galaxy] = summary[galaxy]
        metrics["test_split"] = {"n_blends": summary["n_blends"], "split": summary["split"]}
    target_dir = Path(weights_dir) if weights_dir else WEIGHTS_DIR
    target = target_dir / f"{name}.keras"
    check_output_path(target, overwrite)
    check_output_path(target.with_suffix(".json"), overwrite)
    trained_on = {
        "description": description or "training run " + run_dir.name,
        **_data_description(record, config),
        "training_seed": record.get("seed"),
        "epochs": record.get("epochs_completed"),
        "best_epoch": record.get("best_epoch"),
        "stopped": record.get("stopped"),
        "precision": config["training"]["precision"],
        "batch_size": config["training"]["batch_size"],
        "backend": record.get("backend"),
        "devices": record.get("devices"),
        "config": config["name"],
    }
    for key in ("init_weights", "head_init", "unet_replaced", "members", "store", "spread_weight"):  # members: ensembles
        if record.get(key):
            trained_on[key] = record[key]
    if config["model"].get("freeze_unet"):
        trained_on["frozen_unet"] = Path(str(config["model"].get("unet_weights", ""))).name
    if stages:
        trained_on["stages"] = [_stage(stage) for stage in stages]
    architecture = model_arguments(config["model"])
    shared = record.get("shared_members") or []
    target_dir.mkdir(parents=True, exist_ok=True)
    if shared:  # an ensemble whose shipped members are kept by reference: store only the others
        architecture["shared_members"] = shared
        _write_stored_members(model, target, name, architecture, record.get("store"))
    else:
        with atomic_output(target) as temporary:
            Path(temporary).write_bytes(model.read_bytes())
    return write_manifest(target, network, architecture, trained_on, metrics,
                          name=name, backend=record.get("backend"), default=default, notes=notes,
                          overwrite=overwrite, flux_error_calibration=flux_error_calibration)


def recalibrate_model(manifest_path, calibrations, overwrite: bool = False, test_results=None,
                      keep_other_tta: bool = False):
    """Replace a shipped model's flux-error calibration with *calibrations*; the model file is untouched.

    With *test_results* (a ``blendphot predict`` table made with this very
    model, checked by sha256) the manifest's test metrics are measured again
    from it too: for when the method's measurement changed, not the weights.

    *calibrations*: ``blendphot calibrate-errors fit`` files of the model's
    method (one fitted on single-pass predictions, optionally others fitted
    with ``--tta N``: :func:`napari_blendphot.metrics.calibration.manifest_calibration`).
    A manifest that already has a calibration is replaced only with
    *overwrite*.  With *keep_other_tta* the manifest's calibrations for the
    ``tta`` values *calibrations* do not fit again (``by_tta``) are kept.
    Returns the rewritten :class:`~napari_blendphot.models.manifests.Manifest`.
    """
    from dataclasses import replace

    from napari_blendphot.atomic import write_text_atomic
    from napari_blendphot.metrics.calibration import FluxErrorCalibration, manifest_calibration
    from napari_blendphot.models.manifests import Manifest, verify

    manifest = Manifest.read(manifest_path)
    verify(manifest)  # the calibration belongs to these very weights
    if manifest.flux_error_calibration and not overwrite:
        raise InputError(manifest_path, "already has a flux-error calibration", "pass overwrite to replace it")
    fitted = [FluxErrorCalibration.load(path) for path in calibrations]
    method = "ensemble" if manifest.architecture.get("ensemble_members") else manifest.method
    entry = manifest_calibration(fitted, method)
    if keep_other_tta:
        kept = {tta: value for tta, value in (manifest.flux_error_calibration.get("by_tta") or {}).items()
                if tta not in (entry.get("by_tta") or {})}
        if kept:
            entry["by_tta"] = dict(sorted({**(entry.get("by_tta") or {}), **kept}.items(), key=lambda i: int(i[0])))
    updated = replace(manifest, flux_error_calibration=entry)
    if test_results is not None:
        updated = replace(updated, test_metrics=metrics_from_results(test_results, method, manifest.sha256))
    write_text_atomic(Path(manifest_path), updated.to_json())
    return updated


def correct_model_fluxes(manifest_path, results, overwrite: bool = False):
    """Fit a shipped model's ``flux_correction`` on held-out blends and write it into its manifest.

    *results*: a ``blendphot predict`` table of held-out (calibration) blends
    made with this very model (sha256 checked), single pass, *without* a
    flux correction (a table made with a corrected model would fit a
    correction of a correction).  The model's flux-error calibration was
    fitted on uncorrected fluxes, so it is removed: fit a new one on blends
    predicted with the corrected model and add it with ``recalibrate``.
    A manifest that already has a correction or a calibration is rewritten
    only with *overwrite*.  Returns the rewritten manifest.
    """
    from dataclasses import replace

    import numpy as np

    from napari_blendphot.atomic import write_text_atomic
    from napari_blendphot.metrics.calibration import table_tta
    from napari_blendphot.metrics.flux_correction import MODEL, fit_flux_correction
    from napari_blendphot.models.manifests import Manifest, verify
    from napari_blendphot.provenance import make_provenance

    manifest = Manifest.read(manifest_path)
    verify(manifest)
    if (manifest.flux_correction or manifest.flux_error_calibration) and not overwrite:
        have = "a flux correction" if manifest.flux_correction else "a flux-error calibration"
        raise InputError(manifest_path, f"already has {have}", "pass overwrite to replace it (and drop the calibration)")
    method = manifest.method
    table, recorded = _results_of_model(results, method, manifest.sha256, whose="the manifest's")
    if recorded.get("flux_correction"):
        raise InputError(results, f"its {method} fluxes were corrected already",
                         "predict with the .keras file alone (no manifest) for uncorrected fluxes")
    if table_tta(table, method) != 1:
        raise InputError(results, f"was predicted with --tta {table_tta(table, method)}: fit on single-pass fluxes")
    true = np.column_stack([np.asarray(table["g1_flux"], np.float64), np.asarray(table["g2_flux"], np.float64)])
    pred = np.column_stack([np.asarray(table[f"g1_flux_{method}"], np.float64),
                            np.asarray(table[f"g2_flux_{method}"], np.float64)])
    parameters = fit_flux_correction(true, pred)
    provenance = make_provenance("training flux-correction", inputs={"results": str(results)},
                                 method=method, n_blends=len(table))
    provenance["fitted_on"] = Path(str(results)).name
    updated = replace(manifest, flux_correction={"model": MODEL, "parameters": parameters, "provenance": provenance},
                      flux_error_calibration={})
    write_text_atomic(Path(manifest_path), updated.to_json())
    return updated
