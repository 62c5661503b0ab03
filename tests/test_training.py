"""The training package: configurations, deterministic batches, and a tiny train/resume/evaluate run.

Training is installed with the package (``napari_blendphot.training``, from
the top-level ``training/`` folder).  Keras runs only in a subprocess, so this
test process never loads TensorFlow (napari tests may share it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from napari_blendphot.errors import InputError



@pytest.fixture(scope="module")
def blends_dir(tmp_path_factory, toy_sample):
    """96 blends (80 train, 16 test) of the 60-galaxy toy sample."""
    from napari_blendphot.blend.dataset import write_blend_dataset

    out = tmp_path_factory.mktemp("training") / "blends"
    write_blend_dataset(toy_sample, out, n=96, test_fraction=0.2, n_test=16, seed=5)
    return out


# ---------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------
def test_shipped_configs_load_with_the_paper_protocol():
    from napari_blendphot.training.config import CONFIG_DIR, load_config

    names = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
    assert {"blend2flux_f64", "blend2flux_f256", "blend2flux_f512", "unet_d5_f32", "blend2mask2flux"} <= set(names)
    for name in names:
        config = load_config(name)
        assert config["model"]["kind"] in ("blend2flux", "unet", "blend2mask2flux")
    fiducial = load_config("blend2flux_f256")["training"]
    assert (fiducial["learning_rate"], fiducial["batch_size"], fiducial["lr_plateau_factor"],
            fiducial["lr_plateau_patience"], fiducial["early_stopping_patience"]) == (1e-4, 32, 0.5, 5, 10)
    assert load_config("blend2mask2flux")["training"]["loss_weights"] == {"fluxes": 1.0, "masks": 0.1}


def test_config_errors_name_the_problem(tmp_path):
    from napari_blendphot.training.config import load_config

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": {"kind": "blend2flux"}, "training": {"learnig_rate": 1e-3}}))
    with pytest.raises(InputError, match="learnig_rate"):
        load_config(bad)
    bad.write_text(json.dumps({"model": {"kind": "resnet"}}))
    with pytest.raises(InputError, match="model.kind"):
        load_config(bad)
    bad.write_text(json.dumps({"model": {"kind": "blend2mask2flux"}}))
    with pytest.raises(InputError, match="unet_weights or model.unet_config"):
        load_config(bad)
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "missing.json")
    assert load_config("tiny_blend2flux", {"training.max_epochs": 7})["training"]["max_epochs"] == 7


# ---------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------
def _batches(source, epoch, workers):
    from napari_blendphot.training.data import BatchFeeder

    feeder = BatchFeeder(source, start_epoch=epoch, workers=workers, prefetch=3)
    iterator = iter(feeder)
    out = [next(iterator) for _ in range(source.steps_per_epoch)]
    feeder.close()
    return out


def test_fixed_batches_depend_only_on_seed_and_epoch(blends_dir):
    from napari_blendphot.training.data import FixedBlends, read_split

    train = read_split(blends_dir, "train").load()
    assert len(train) == 80
    source = FixedBlends(train, batch_size=16, seed=3, targets=("fluxes", "masks"), flips=True)
    serial = _batches(source, epoch=4, workers=0)
    threaded = _batches(source, epoch=4, workers=3)
    for (x0, y0), (x1, y1) in zip(serial, threaded):
        np.testing.assert_array_equal(x0, x1)
        np.testing.assert_array_equal(y0["masks"], y1["masks"])
        np.testing.assert_array_equal(y0["fluxes"], y1["fluxes"])
    other_epoch = _batches(source, epoch=5, workers=0)
    assert not np.array_equal(serial[0][0], other_epoch[0][0])
    assert serial[0][0].shape == (16, 128, 128) and serial[0][1]["masks"].shape == (16, 128, 128, 2)


def test_flips_move_blend_and_masks_together(blends_dir):
    from napari_blendphot.training.data import FixedBlends, read_split

    train = read_split(blends_dir, "train").load()
    source = FixedBlends(train, batch_size=40, seed=11, targets=("fluxes", "masks"), flips=True)
    order = source.order(0)
    x, y = source.batch(0, 0, order)
    rows = np.sort(order[:40])
    flips_seen = set()
    for i, row in enumerate(rows):
        blend, masks = train.blends[row], np.moveaxis(train.masks[row], 0, -1)
        for flip_y in (False, True):
            for flip_x in (False, True):
                view = (slice(None, None, -1 if flip_y else 1), slice(None, None, -1 if flip_x else 1))
                if np.array_equal(x[i], blend[view]):
                    np.testing.assert_array_equal(y["masks"][i], masks[view])
                    flips_seen.add((flip_y, flip_x))
                    break
            else:
                continue
            break
        else:
            pytest.fail(f"batch blend {i} is not a flip of dataset blend {row}")
        np.testing.assert_allclose(y["fluxes"][i], train.fluxes[row].astype(np.float32))
    assert len(flips_seen) >= 3  # all four flips are equally likely among 40 blends


def test_stream_batches_are_new_each_epoch_and_reproducible(toy_sample):
    from napari_blendphot.blend.stream import BlendStream
    from napari_blendphot.training.data import StreamBlends

    source = StreamBlends(BlendStream(toy_sample, seed=9), blends_per_epoch=48, batch_size=16, seed=9,
                          targets=("fluxes", "masks"))
    first = _batches(source, epoch=0, workers=2)
    again = _batches(source, epoch=0, workers=0)
    later = _batches(source, epoch=1, workers=2)
    np.testing.assert_array_equal(first[2][0], again[2][0])
    assert not np.array_equal(first[0][0], later[0][0])
    assert first[0][1]["fluxes"].shape == (16, 2)


def test_stream_mode_holds_out_validation_galaxies(toy_sample, tmp_path):
    from napari_blendphot.sample.io_native import write_native
    from napari_blendphot.training.config import load_config
    from napari_blendphot.training.train import prepare_data

    sample_path = write_native(toy_sample, tmp_path / "toy.fits")
    config = load_config("tiny_blend2mask2flux", {"data.mode": "stream", "data.blends_per_epoch": 32,
                                                  "data.validation_blends": 12, "data.validation_fraction": 0.2})
    source, (x_val, y_val), provenance = prepare_data(config, sample_path=sample_path)
    assert provenance["mode"] == "stream" and provenance["n_validation_galaxies"] >= 2
    assert source.steps_per_epoch == 4 and x_val.shape == (12, 128, 128)
    assert y_val["masks"].shape == (12, 128, 128, 2) and y_val["fluxes"].shape == (12, 2)
    # Validation galaxies never enter the training stream.
    train_ids = set(source.stream.ids.tolist())
    assert provenance["n_train_galaxies"] == len(train_ids)
    assert not train_ids & set(provenance["validation_galaxy_ids"])
    assert provenance["n_train_galaxies"] + provenance["n_validation_galaxies"] <= len(toy_sample)
    x, y = source.batch(0, 0)
    assert x.shape == (8, 128, 128) and y["masks"].shape == (8, 128, 128, 2)


def test_validation_split_is_seeded_and_disjoint():
    from napari_blendphot.training.data import validation_split

    fit, val = validation_split(100, 0.1, seed=1)
    assert len(val) == 10 and len(fit) == 90 and not set(fit) & set(val)
    np.testing.assert_array_equal(val, validation_split(100, 0.1, seed=1)[1])
    with pytest.raises(InputError):
        validation_split(1, 0.5, seed=1)


# ---------------------------------------------------------------------------
# A whole run, in a TensorFlow subprocess
# ---------------------------------------------------------------------------
_DRIVER = """
import shutil
import sys
from napari_blendphot.training.cli import main
for argv in {commands!r}:
    if argv[0] == "copy":  # snapshot a file between two commands
        shutil.copyfile(argv[1], argv[2])
        continue
    code = main(argv)
    if code:
        sys.exit(code)
"""


def _run_cli(commands, cwd, with_stderr=False):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", _DRIVER.format(commands=commands)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + (result.stderr if with_stderr else "")


def _log(run_dir):
    import csv

    with open(run_dir / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_train_resume_evaluate(blends_dir, tmp_path):
    from napari_blendphot.report.results import read_results

    run = tmp_path / "run"
    snapshot = tmp_path / "state_after_train.json"
    # Train 2 epochs, snapshot the checkpoint state, resume to 3 epochs, evaluate: one TensorFlow process.
    out = _run_cli([["train", "tiny_blend2flux", "--blends", str(blends_dir), "--run-dir", str(run), "--epochs", "2"],
                    ["copy", str(run / "checkpoints" / "state.json"), str(snapshot)],
                    ["resume", str(run), "--epochs", "3"],
                    ["evaluate", str(run), "--blends", str(blends_dir), "--split", "test"]], tmp_path,
                   with_stderr=True)
    state = json.loads(snapshot.read_text())
    assert state["epochs_completed"] == 2
    log = _log(run)
    assert [int(r["epoch"]) for r in log] == [0, 1, 2]
    assert float(log[1]["loss"]) < float(log[0]["loss"])
    for name in ("config.json", "run.json", "loss_curve.png", "model.keras", "checkpoints/last.weights.h5",
                 "checkpoints/best.weights.h5", "checkpoints/last.optimizer.npz"):
        assert (run / name).is_file(), name
    record = json.loads((run / "run.json").read_text())
    assert record["seed"] == 2020 and record["data"]["mode"] == "fixed"
    assert record["data"]["dataset"]["blends_sha256"]
    # The resumed model started from exactly the checkpoint's weights, at the next epoch.
    assert record["resumes"][0] == {"epoch": 2, "weights_sha256": state["last_weights_sha256"],
                                    "backend": "tensorflow"}
    assert json.loads((run / "checkpoints" / "state.json").read_text())["epochs_completed"] == 3
    assert "resumed" in out
    # Keras warns that it skipped the optimizer's variables in the checkpoint; restore_optimizer sets them all
    # just after, so the warning only misled (a helper once reported the Adam moments lost).
    assert "Skipping variable loading for optimizer" not in out
    results = read_results(run / "evaluation" / "results.csv")
    assert len(results) == 16 and "g1_flux_tiny_blend2flux" in results.colnames
    assert np.all(np.isfinite(results["g1_flux_tiny_blend2flux"]))
    summary = json.loads((run / "evaluation" / "summary.json").read_text())
    assert summary["n_blends"] == 16 and summary["flux_mape_pct"] > 0
    assert (run / "evaluation" / "report").is_dir()


def test_synth_mode_bank_train_and_resume_elsewhere(toy_sample, tmp_path):
    """A galaxy bank of the train split, a synth-mode run with the uncertainty output, resumed from a moved bank."""
    from napari_blendphot.blend.dataset import BlendDataset, write_blend_dataset
    from napari_blendphot.sample.io_native import write_native

    sample_path = tmp_path / "toy.fits"
    write_native(toy_sample, sample_path)
    models = tmp_path / "models.npz"
    np.savez(models, models=toy_sample.images, ids=np.asarray(toy_sample.catalog["id"]))
    config = tmp_path / "synth.json"
    config.write_text(json.dumps({
        "name": "tiny_synth", "model": {"kind": "blend2flux", "filters": 4, "dense_widths": [8, 8],
                                        "uncertainty": True},
        "training": {"batch_size": 8, "max_epochs": 3, "learning_rate": 1e-3, "monitor": "val_fluxes_loss"},
        "data": {"mode": "synth", "blends_per_epoch": 32, "validation_blends": 16}}))
    bank, moved, run = tmp_path / "bank.npz", tmp_path / "elsewhere" / "bank.npz", tmp_path / "run"
    moved.parent.mkdir()
    _run_cli([["bank", str(sample_path), "--models", str(models), "-o", str(bank), "--seed", "5"],
              ["train", str(config), "--bank", str(bank), "--run-dir", str(run), "--epochs", "2"],
              ["copy", str(bank), str(moved)],
              ["resume", str(run), "--epochs", "3", "--bank", str(moved)]], tmp_path)
    # The bank holds exactly the train split of `blendphot blend --seed 5 --test-fraction 0.2`.
    blends = tmp_path / "blends"
    write_blend_dataset(toy_sample, blends, n=40, test_fraction=0.2, n_test=10, seed=5)
    test_ids = set(np.asarray(BlendDataset(blends).select("test").catalog["g1_id"]).tolist())
    with np.load(bank) as saved:
        bank_ids = set(saved["ids"].tolist())
        assert saved["models_q"].dtype == np.int32 and json.loads(str(saved["provenance"]))["step"] == "bank"
    from napari_blendphot.training.synth import load_bank

    loaded = load_bank(bank)  # dequantised: within half a step (plus the dither) of the models
    rows = np.searchsorted(np.asarray(toy_sample.catalog["id"]), loaded["ids"])
    assert np.abs(loaded["models"] - toy_sample.images[rows]).max() <= 0.0106 / 8 + 1e-6
    assert bank_ids and not bank_ids & test_ids
    assert len(bank_ids) + len({int(i) for i in toy_sample.catalog["id"]} - bank_ids) == len(toy_sample)
    record = json.loads((run / "run.json").read_text())
    assert record["data"]["mode"] == "synth" and record["resumes"][0]["epoch"] == 2
    assert json.loads((run / "config.json").read_text())["data"]["bank"] == str(moved.resolve())
    assert [int(r["epoch"]) for r in _log(run)] == [0, 1, 2]
    assert "fluxes_loss" in _log(run)[0] and "flux_uncertainty_loss" in _log(run)[0]


@pytest.mark.slow
def test_blend2mask2flux_trains_its_unet_first(blends_dir, tmp_path):
    from napari_blendphot.report.results import read_results

    run = tmp_path / "b2m2f"
    _run_cli([["train", "tiny_blend2mask2flux", "--blends", str(blends_dir), "--run-dir", str(run),
               "--epochs", "1"],
              ["evaluate", str(run), "--blends", str(blends_dir), "--no-report"]], tmp_path)
    assert json.loads((run / "unet_stage" / "run.json").read_text())["status"] == "finished"
    record = json.loads((run / "run.json").read_text())
    assert record["unet_layers_copied"] > 0
    results = read_results(run / "evaluation" / "results.csv")
    iou = np.asarray(results["g1_iou_tiny_blend2mask2flux"], float)
    assert np.all((iou[np.isfinite(iou)] >= 0) & (iou[np.isfinite(iou)] <= 1))


# ---------------------------------------------------------------------------
# Results tables: merging methods, summaries, shipping
# ---------------------------------------------------------------------------
def _results(blends_dir, method, fluxes_scale, with_masks=False):
    from napari_blendphot.blend.dataset import BlendDataset
    from napari_blendphot.deblend.base import DeblendOutput
    from napari_blendphot.report.results import build_results_table

    view = BlendDataset(blends_dir).select("test")
    true = view.fluxes
    masks = view.masks.astype(np.float32) if with_masks else None
    output = DeblendOutput(method, true * fluxes_scale, masks)
    return build_results_table(view.catalog, [output], true_masks=view.masks if with_masks else None)


def test_merge_joins_methods_on_blend_id(blends_dir):
    from napari_blendphot.training.scoring import merge_results, summarise

    first = _results(blends_dir, "alpha", 1.1)
    second = _results(blends_dir, "beta", 0.95, with_masks=True)
    shuffled = second[np.random.default_rng(0).permutation(len(second))]
    merged = merge_results([first, shuffled])
    assert merged.meta["methods"] == ["alpha", "beta"]
    np.testing.assert_allclose(merged["g1_flux_beta"], 0.95 * np.asarray(merged["g1_flux"]))
    np.testing.assert_allclose(merged["g2_iou_beta"], 1.0)
    alpha = summarise(merged, "alpha")
    assert alpha["flux_mape_pct"] == pytest.approx(10.0)
    assert alpha["central"]["bias_dmag"] == pytest.approx(-2.5 * np.log10(1.1))
    assert summarise(merged, "beta")["mean_iou"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="twice"):
        merge_results([first, first])
    with pytest.raises(InputError, match="other blends"):
        merge_results([first, second[:5]])


def test_merge_keeps_each_methods_error_interval_and_provenance(blends_dir):
    """A merged table must still measure 95% coverage at the method's calibrated k95, and know its tta."""
    from napari_blendphot.metrics.calibration import coverage, table_tta
    from napari_blendphot.training.scoring import merge_results

    first = _results(blends_dir, "alpha", 1.0)
    second = _results(blends_dir, "beta", 1.0)
    for table, method in ((first, "alpha"), (second, "beta")):
        for prefix in ("g1", "g2"):
            table[f"{prefix}_flux_err_{method}"] = 0.5 * np.abs(np.asarray(table[f"{prefix}_flux"]))
    second.meta["flux_error_k95"] = {"beta": {"central": 2.5, "companion": 2.4}}
    second.meta["provenance"] = {"parameters": {"method_metadata": {"beta": {"tta": 8, "sha256": "ab" * 32}}}}
    merged = merge_results([first, second], {"step": "training-merge"})
    assert merged.meta["flux_error_k95"] == {"beta": {"central": 2.5, "companion": 2.4}}
    assert table_tta(merged, "beta") == 8 and table_tta(merged, "alpha") == 1
    assert merged.meta["provenance"]["parameters"]["method_metadata"]["beta"]["sha256"] == "ab" * 32
    assert merged.meta["provenance"]["step"] == "training-merge"
    np.testing.assert_allclose(coverage(merged, "beta")["coverage_95"], coverage(second, "beta")["coverage_95"])


def test_ship_writes_a_manifest_with_test_metrics(tmp_path):
    from napari_blendphot.models.manifests import list_shipped_models
    from napari_blendphot.training.config import load_config, save_config
    from napari_blendphot.training.ship import ship_run

    run = tmp_path / "run"
    (run / "evaluation").mkdir(parents=True)
    (run / "model.keras").write_bytes(b"stand-in for a saved model")
    save_config(load_config("blend2flux_f64"), run / "config.json")
    (run / "run.json").write_text(json.dumps({"seed": 2020, "backend": "jax", "epochs_completed": 97,
                                              "best_epoch": 86, "data": {"n_train": 22500}}))
    galaxy = {"n": 5000, "flux_mape_pct": 4.6, "bias_dmag": 0.0, "sigma_dmag": 0.08, "outlier_fraction": 0.001}
    (run / "evaluation" / "summary.json").write_text(json.dumps(
        {"flux_mape_pct": 4.6, "central": galaxy, "companion": galaxy, "n_blends": 5000, "split": "test"}))
    weights = tmp_path / "weights"
    manifest = ship_run(run, "b2f_test", default=True, description="mock", weights_dir=weights)
    assert manifest.method == "blend2flux" and manifest.architecture["filters"] == 64
    assert manifest.test_metrics["flux_mape_pct"] == 4.6
    assert [m.name for m in list_shipped_models(weights)] == ["b2f_test"]
    with pytest.raises(FileExistsError):
        ship_run(run, "b2f_test", weights_dir=weights)


def test_ship_a_synth_run_with_test_results_calibration_and_stages(tmp_path, blends_dir):
    """Synth-mode runs have no evaluation folder: metrics come from a predict table made with the model."""
    from napari_blendphot.metrics.calibration import FluxErrorCalibration
    from napari_blendphot.provenance import sha256_file
    from napari_blendphot.training.config import load_config, save_config
    from napari_blendphot.training.ship import ship_run

    earlier = tmp_path / "call1"
    earlier.mkdir()
    save_config(load_config("blend2flux_f64"), earlier / "config.json")
    (earlier / "run.json").write_text(json.dumps({"kind": "blend2flux", "epochs_completed": 40, "best_val_loss": 7.1}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"stand-in for a saved model")
    save_config(load_config("blend2flux_f64"), run / "config.json")
    bank = {"path": "/elsewhere/bank_v2.npz", "sha256": "ab" * 32,
            "made_by": {"seed": 2021, "inputs": {"sample": {"path": "train_v2.fits", "sha256": "cd" * 32}}}}
    (run / "run.json").write_text(json.dumps({"seed": 2021, "backend": "jax", "epochs_completed": 93,
                                              "init_weights": {"file": "b2f_v2a.keras", "sha256": "ef" * 32},
                                              "data": {"mode": "synth", "bank": bank, "n_train_galaxies": 5625}}))
    table = _results(blends_dir, "blend2flux", 1.1)
    table.meta["provenance"] = {"parameters": {"split": "test", "method_metadata": {
        "blend2flux": {"sha256": sha256_file(run / "model.keras")}}}}
    from napari_blendphot.report.results import write_results

    results = write_results(table, tmp_path / "test_results")[0]
    role = {"a": 1.2, "b": 0.01, "k95": 2.1, "n": 100, "coverage_68": 0.683, "coverage_95": 0.95}
    calibration = FluxErrorCalibration({"blend2flux": {"central": role, "companion": role}},
                                       {"step": "calibrate-errors"}).save(tmp_path / "calib.json")

    manifest = ship_run(run, "b2f_v2", weights_dir=tmp_path / "weights", test_results=results,
                        calibration=calibration, stages=[earlier])
    assert manifest.test_metrics["flux_mape_pct"] == pytest.approx(10.0)
    assert manifest.test_metrics["test_split"]["n_blends"] == len(table)
    assert manifest.trained_on["mode"] == "synth" and manifest.trained_on["bank"]["path"] == "bank_v2.npz"
    assert manifest.trained_on["sample"]["path"] == "train_v2.fits"
    assert manifest.trained_on["init_weights"]["file"] == "b2f_v2a.keras"
    assert manifest.trained_on["stages"][0]["epochs"] == 40
    assert manifest.flux_error_calibration["parameters"]["central"]["a"] == 1.2
    assert (tmp_path / "weights" / "b2f_v2.keras").read_bytes() == b"stand-in for a saved model"

    # A table predicted with another model is refused, by name.
    table.meta["provenance"]["parameters"]["method_metadata"]["blend2flux"]["sha256"] = "0" * 64
    results = write_results(table, tmp_path / "test_results", overwrite=True)[0]
    with pytest.raises(InputError, match="was not this model"):
        ship_run(run, "b2f_other", weights_dir=tmp_path / "weights", test_results=results)
    # A calibration without this method is refused.
    FluxErrorCalibration({"unet": {"central": role, "companion": role}}).save(tmp_path / "unet.json")
    with pytest.raises(InputError, match="has no calibration of 'blend2flux'"):
        ship_run(run, "b2f_other", weights_dir=tmp_path / "weights", calibration=tmp_path / "unet.json",
                 test_results=tmp_path / "none.fits")


def test_ship_an_ensemble_run_as_a_blend2flux_model_of_the_ensemble_method(tmp_path, blends_dir, capsys):
    """`python -m training ensemble` writes a run whose results and calibration are the 'ensemble' method's;
    the manifest says blend2flux (what the file holds) and records the members; recalibrate finds them too."""
    from napari_blendphot.metrics.calibration import FluxErrorCalibration
    from napari_blendphot.models.manifests import Manifest
    from napari_blendphot.provenance import sha256_file
    from napari_blendphot.report.results import write_results
    from napari_blendphot.training.cli import main
    from napari_blendphot.training.ship import ship_run

    run = tmp_path / "ens"
    run.mkdir()
    (run / "model.keras").write_bytes(b"stand-in for an ensemble")
    members = [{"name": "blend2flux_v2", "sha256": "ab" * 32}, {"name": "e1", "sha256": "cd" * 32,
                                                                 "run": {"epochs": 150}}]
    (run / "config.json").write_text(json.dumps({
        "name": "ens", "method": "ensemble", "training": {"precision": "bfloat16 storage", "batch_size": None},
        "model": {"kind": "blend2flux", "ensemble_members": ["blend2flux_v2", "e1"], "spread_weight": 1.8}}))
    (run / "run.json").write_text(json.dumps({"kind": "blend2flux", "members": members, "store": "bfloat16", "backend": "jax",
                                              "spread_weight": 1.8, "data": {"mode": "synth", "bank": {}}}))
    table = _results(blends_dir, "ensemble", 1.05)
    table.meta["provenance"] = {"parameters": {"split": "test", "method_metadata": {
        "ensemble": {"sha256": sha256_file(run / "model.keras")}}}}
    results = write_results(table, tmp_path / "test_results")[0]
    role = {"a": 0.75, "b": 0.0, "k95": 2.4, "n": 100}
    one = FluxErrorCalibration({"ensemble": {"central": role, "companion": role}},
                               {"tta": {"ensemble": 1}}).save(tmp_path / "calib.json")
    manifest = ship_run(run, "blend2flux_ensemble_test", weights_dir=tmp_path / "weights", test_results=results,
                        calibration=[one])
    assert manifest.method == "blend2flux" and manifest.architecture["ensemble_members"] == ["blend2flux_v2", "e1"]
    assert manifest.test_metrics["flux_mape_pct"] == pytest.approx(5.0)
    assert [m["name"] for m in manifest.trained_on["members"]] == ["blend2flux_v2", "e1"]
    assert manifest.trained_on["store"] == "bfloat16" and manifest.trained_on["spread_weight"] == 1.8
    assert manifest.flux_error_calibration["parameters"]["central"]["a"] == 0.75
    eight = FluxErrorCalibration({"ensemble": {"central": {**role, "a": 0.7}, "companion": role}},
                                 {"tta": {"ensemble": 8}}).save(tmp_path / "calib8.json")
    path = tmp_path / "weights" / "blend2flux_ensemble_test.json"
    assert main(["recalibrate", str(path), "--calibration", str(one), "--calibration", str(eight), "--overwrite"]) == 0
    capsys.readouterr()
    assert Manifest.read(path).flux_error_calibration["by_tta"]["8"]["parameters"]["central"]["a"] == 0.7


def test_ship_stores_one_calibration_per_tta(tmp_path, blends_dir):
    """Errors calibrated on --tta 8 predictions go under by_tta["8"]; the single-pass one stays the default."""
    from napari_blendphot.metrics.calibration import FluxErrorCalibration, calibration_for_tta
    from napari_blendphot.provenance import sha256_file
    from napari_blendphot.training.config import load_config, save_config
    from napari_blendphot.training.ship import ship_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"stand-in for a saved model")
    save_config(load_config("blend2flux_f64"), run / "config.json")
    (run / "run.json").write_text(json.dumps({"seed": 1, "backend": "jax", "epochs_completed": 3}))
    table = _results(blends_dir, "blend2flux", 1.1)
    table.meta["provenance"] = {"parameters": {"split": "test", "method_metadata": {
        "blend2flux": {"sha256": sha256_file(run / "model.keras")}}}}
    from napari_blendphot.report.results import write_results

    results = write_results(table, tmp_path / "test_results")[0]
    single = {"a": 1.2, "b": 0.01, "k95": 2.1, "n": 100}
    averaged = {"a": 0.9, "b": 0.01, "k95": 2.0, "n": 100}
    one = FluxErrorCalibration({"blend2flux": {"central": single, "companion": single}},
                               {"tta": {"blend2flux": 1}}).save(tmp_path / "calib.json")
    eight = FluxErrorCalibration({"blend2flux": {"central": averaged, "companion": averaged}},
                                 {"tta": {"blend2flux": 8}}).save(tmp_path / "calib_tta8.json")

    manifest = ship_run(run, "b2f", weights_dir=tmp_path / "weights", test_results=results,
                        calibration=[eight, one])
    stored = manifest.flux_error_calibration
    assert stored["parameters"]["central"]["a"] == 1.2
    assert stored["by_tta"]["8"]["parameters"]["central"]["a"] == 0.9
    assert calibration_for_tta(stored, 8)[0]["central"]["a"] == 0.9
    # A tta without its own calibration falls back on the single-pass one, and says so.
    assert calibration_for_tta(stored, 4) == (stored["parameters"], 1)
    assert calibration_for_tta({}, 8) == (None, 1)
    # Two calibrations of one tta, or none of tta 1, are refused with the file named.
    with pytest.raises(InputError, match="second calibration of 'blend2flux' with tta 8"):
        ship_run(run, "b2f_2", weights_dir=tmp_path / "weights", test_results=results,
                 calibration=[one, eight, eight])
    with pytest.raises(InputError, match="single-pass"):
        ship_run(run, "b2f_3", weights_dir=tmp_path / "weights", test_results=results, calibration=[eight])


def _crash_mid_write(monkeypatch):
    """Make every Path.write_text / savefig write half of its output and then fail, as a full disk would."""
    import pathlib

    import matplotlib.figure

    real_write_text = pathlib.Path.write_text

    def half_then_fail(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    def savefig_half(self, fname, *args, **kwargs):
        pathlib.Path(fname).write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", half_then_fail)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig_half)


def test_training_files_survive_a_crash_mid_write(tmp_path, monkeypatch):
    """run.json, config.json and loss_curve.png are replaced whole or not at all, with no temporary left."""
    from napari_blendphot.training.config import load_config, save_config
    from napari_blendphot.training.train import _write_json, plot_loss_curve

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"epochs_completed": 3}\n')
    save_config(load_config("tiny_blend2flux"), run / "config.json")
    config_before = (run / "config.json").read_bytes()
    (run / "log.csv").write_text("epoch,loss,val_loss,learning_rate\n0,2.0,2.5,0.001\n1,1.5,2.0,0.001\n")
    (run / "loss_curve.png").write_bytes(b"old figure")
    before = sorted(p.name for p in run.iterdir())

    _crash_mid_write(monkeypatch)
    with pytest.raises(OSError, match="No space"):
        _write_json(run / "run.json", {"epochs_completed": 4})
    with pytest.raises(OSError, match="No space"):
        save_config(load_config("tiny_blend2flux", {"training.max_epochs": 9}), run / "config.json")
    with pytest.raises(OSError, match="No space"):
        plot_loss_curve(run)
    monkeypatch.undo()

    assert (run / "run.json").read_text() == '{"epochs_completed": 3}\n'
    assert (run / "config.json").read_bytes() == config_before
    assert (run / "loss_curve.png").read_bytes() == b"old figure"
    assert sorted(p.name for p in run.iterdir()) == before  # no temporaries left behind


def test_recalibrate_replaces_only_the_calibration_of_a_shipped_model(tmp_path, capsys):
    """`python -m training recalibrate`: a per-tta calibration for a model whose run folder is gone."""
    from napari_blendphot.metrics.calibration import FluxErrorCalibration
    from napari_blendphot.models.manifests import Manifest, write_manifest
    from napari_blendphot.training.cli import main

    model = tmp_path / "b2f.keras"
    model.write_bytes(b"stand-in for a saved model")
    single = {"a": 1.2, "b": 0.01, "k95": 2.1, "n": 100}
    write_manifest(model, "blend2flux", {"filters": 4}, {"description": "test"}, {"flux_mape_pct": 5.0},
                   backend="jax", keras_version="3", flux_error_calibration={"parameters": {"central": single}})
    before = Manifest.read(tmp_path / "b2f.json")
    one = FluxErrorCalibration({"blend2flux": {"central": single, "companion": single}},
                               {"tta": {"blend2flux": 1}}).save(tmp_path / "calib.json")
    eight = FluxErrorCalibration({"blend2flux": {"central": {**single, "a": 0.8}, "companion": single}},
                                 {"tta": {"blend2flux": 8}}).save(tmp_path / "calib8.json")
    args = ["recalibrate", str(tmp_path / "b2f.json"), "--calibration", str(one), "--calibration", str(eight)]
    assert main(args) != 0
    assert "b2f.json: already has a flux-error calibration (pass overwrite" in capsys.readouterr().err
    assert Manifest.read(tmp_path / "b2f.json") == before  # refused: nothing written
    assert main(args + ["--overwrite"]) == 0
    assert "for tta 1, 8" in capsys.readouterr().out
    after = Manifest.read(tmp_path / "b2f.json")
    assert after.flux_error_calibration["by_tta"]["8"]["parameters"]["central"]["a"] == 0.8
    assert after.sha256 == before.sha256 and after.test_metrics == before.test_metrics
    assert model.read_bytes() == b"stand-in for a saved model"
    # Refitting tta 1 only: --keep-other-tta keeps the tta-8 calibration, without it the tta-8 one goes.
    refit = FluxErrorCalibration({"blend2flux": {"central": {**single, "a": 1.5}, "companion": single}},
                                 {"tta": {"blend2flux": 1}}).save(tmp_path / "refit.json")
    assert main(["recalibrate", str(tmp_path / "b2f.json"), "--calibration", str(refit), "--overwrite",
                 "--keep-other-tta"]) == 0
    kept = Manifest.read(tmp_path / "b2f.json").flux_error_calibration
    assert kept["parameters"]["central"]["a"] == 1.5 and kept["by_tta"]["8"]["parameters"]["central"]["a"] == 0.8
    assert main(["recalibrate", str(tmp_path / "b2f.json"), "--calibration", str(refit), "--overwrite"]) == 0
    assert "by_tta" not in Manifest.read(tmp_path / "b2f.json").flux_error_calibration
    capsys.readouterr()
    # Weights that are not the manifest's are refused: the calibration would belong to other weights.
    model.write_bytes(b"other weights")
    assert main(args + ["--overwrite"]) != 0
    assert "does not match the manifest's" in capsys.readouterr().err


def test_recalibrate_can_refresh_the_test_metrics_from_a_table_of_the_same_model(tmp_path, capsys, blends_dir):
    """After the U-Net's mask photometry changed (round 5) its manifest's flux MAPE was stale: refreshed here."""
    from napari_blendphot.metrics.calibration import FluxErrorCalibration
    from napari_blendphot.models.manifests import Manifest, write_manifest
    from napari_blendphot.provenance import sha256_file
    from napari_blendphot.report.results import write_results
    from napari_blendphot.training.cli import main

    model = tmp_path / "b2f.keras"
    model.write_bytes(b"stand-in for a saved model")
    single = {"a": 1.2, "b": 0.01, "k95": 2.1, "n": 100}
    write_manifest(model, "blend2flux", {"filters": 4}, {"description": "test"}, {"flux_mape_pct": 99.0},
                   backend="jax", keras_version="3", flux_error_calibration={"parameters": {"central": single}})
    one = FluxErrorCalibration({"blend2flux": {"central": single, "companion": single}},
                               {"tta": {"blend2flux": 1}}).save(tmp_path / "calib.json")
    table = _results(blends_dir, "blend2flux", 1.1)
    table.meta["provenance"] = {"parameters": {"split": "test", "method_metadata": {
        "blend2flux": {"sha256": sha256_file(model)}}}}
    results = write_results(table, tmp_path / "test_results")[0]
    assert main(["recalibrate", str(tmp_path / "b2f.json"), "--calibration", str(one), "--overwrite",
                 "--test-results", str(results)]) == 0
    capsys.readouterr()
    metrics = Manifest.read(tmp_path / "b2f.json").test_metrics
    assert metrics["flux_mape_pct"] == pytest.approx(10.0, rel=1e-6)  # every flux 1.1 x true
    assert metrics["test_split"]["n_blends"] == len(table)
    # A table made with other weights is refused, and the manifest stays as it was.
    before = Manifest.read(tmp_path / "b2f.json")
    model.write_bytes(b"stand-in for a saved model")  # same bytes: the manifest still verifies
    table.meta["provenance"]["parameters"]["method_metadata"]["blend2flux"]["sha256"] = "0" * 64
    other = write_results(table, tmp_path / "other_results")[0]
    assert main(["recalibrate", str(tmp_path / "b2f.json"), "--calibration", str(one), "--overwrite",
                 "--test-results", str(other)]) != 0
    assert "was not this model" in capsys.readouterr().err
    assert Manifest.read(tmp_path / "b2f.json") == before
