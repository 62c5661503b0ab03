"""The deep ensemble: its mixture layer, one model from trained members, 16-bit storage, the training
command that writes it and the ``ensemble`` method that runs it (docs/uncertainty.md, "Deep ensemble").

Keras runs in this process (PyTorch backend unless KERAS_BACKEND says otherwise).
"""

from __future__ import annotations

import json
import os
import zipfile

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras  # noqa: E402

from napari_blendphot.errors import InputError  # noqa: E402
from napari_blendphot.models.io import check_role, load_model, save_model  # noqa: E402
from napari_blendphot.models.layers import EnsembleMixture  # noqa: E402
from napari_blendphot.models.networks import (  # noqa: E402
    build_blend2flux,
    build_ensemble,
    ensemble_members,
    round_weights,
)
from napari_blendphot.testing.stand_ins import gaussian_pair_stamps  # noqa: E402

TINY = {"filters": 4, "dense_widths": (8, 8)}


def _stamps(n=6, seed=0):
    return gaussian_pair_stamps(n, seed, (64, 64, 18.0, (1, 5)), (70, 58, 10.0, (0.5, 2)))


def _members(n=2, seed=3):
    members = []
    for index in range(n):
        keras.utils.set_random_seed(seed + index)
        members.append(build_blend2flux(uncertainty=True, name=f"b2f_{index}", **TINY))
    return members


def test_the_mixture_is_the_mean_log_flux_with_noise_and_spread_added_in_variance():
    members = [np.array([[np.log(10.0), np.log(20.0), np.log(0.1), np.log(0.2)]], np.float32),
               np.array([[np.log(12.0), np.log(18.0), np.log(0.3), np.log(0.1)]], np.float32),
               np.array([[np.log(11.0), np.log(25.0), np.log(0.2), np.log(0.2)]], np.float32)]
    fluxes, uncertainty = (keras.ops.convert_to_numpy(t) for t in EnsembleMixture()(members))
    logs = np.array([m[0, :2] for m in members], np.float64)
    sigmas = np.exp(np.array([m[0, 2:] for m in members], np.float64))
    mean = logs.mean(axis=0)
    variance = (sigmas ** 2).mean(axis=0) + ((logs - mean) ** 2).mean(axis=0)
    np.testing.assert_allclose(fluxes[0], np.exp(mean), rtol=1e-5)  # the geometric mean: 10.97, 20.80
    np.testing.assert_allclose(uncertainty[0, :2], mean, rtol=1e-5)
    np.testing.assert_allclose(np.exp(uncertainty[0, 2:]), np.sqrt(variance), rtol=1e-5)
    # Members that agree add nothing to the noise they expect.
    same = EnsembleMixture()([members[0], members[0]])[1]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(same)[0], members[0][0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at least two"):
        EnsembleMixture()([members[0]])


def test_the_ensemble_is_one_blend2flux_model_whose_fluxes_are_the_members_geometric_mean():
    members = _members(3)
    ensemble = build_ensemble(members)
    check_role(ensemble, "blend2flux")  # runs, calibrates and is checked like one network
    assert [m.name for m in ensemble_members(ensemble)] == ["member_1", "member_2", "member_3"]
    assert ensemble_members(members[0]) == []
    stamps = _stamps()
    out = ensemble.predict(stamps, verbose=0)
    each = [m.predict(stamps, verbose=0) for m in members]
    np.testing.assert_allclose(out["fluxes"], np.exp(np.mean([np.log(e["fluxes"]) for e in each], axis=0)), rtol=1e-4)
    sigma = np.exp(out["flux_uncertainty"][:, 2:])
    assert np.all(sigma >= np.exp(np.min([e["flux_uncertainty"][:, 2:] for e in each], axis=0)) * 0.999)
    # Members keep their own weights (copied, not re-initialised).
    for copy, member in zip(ensemble_members(ensemble), members):
        for a, b in zip(copy.get_weights(), member.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_members_without_a_flux_uncertainty_output_are_refused():
    plain = build_blend2flux(**TINY)
    with pytest.raises(ValueError, match="no flux-uncertainty output"):
        build_ensemble([_members(1)[0], plain])
    with pytest.raises(ValueError, match="at least two"):
        build_ensemble(_members(1))


def test_bfloat16_storage_halves_the_file_and_barely_moves_the_fluxes(tmp_path):
    ensemble = build_ensemble(_members(2))
    stamps = _stamps()
    before = ensemble.predict(stamps, verbose=0)["fluxes"]
    save_model(ensemble, tmp_path / "full.keras")
    original = [np.array(w) for w in ensemble.get_weights()]
    large = [w.size >= 1024 for w in original]
    assert round_weights(ensemble, "bfloat16") == sum(large) > 0
    for weight, old, is_large in zip(ensemble.get_weights(), original, large):
        if is_large:  # the low 16 bits are zero; each value moved by at most half a bfloat16 step
            assert not np.any(np.asarray(weight, np.float32).view(np.uint32) & 0xFFFF)
            np.testing.assert_allclose(weight, old, rtol=2 ** -8, atol=0)
        else:  # biases and small layers stay exact: a rounded bias would offset every flux alike
            np.testing.assert_array_equal(weight, old)
    save_model(ensemble, tmp_path / "rounded.keras", compress=True)
    with zipfile.ZipFile(tmp_path / "rounded.keras") as archive:
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    loaded = load_model(tmp_path / "rounded.keras", expect="blend2flux")
    for a, b in zip(loaded.get_weights(), ensemble.get_weights()):
        np.testing.assert_array_equal(a, b)
    after = loaded.predict(stamps, verbose=0)["fluxes"]
    np.testing.assert_allclose(after, before, rtol=0.03)
    assert (tmp_path / "rounded.keras").stat().st_size < 0.7 * (tmp_path / "full.keras").stat().st_size
    with pytest.raises(ValueError, match="bfloat16"):
        round_weights(ensemble, "int8")


def _run_folder(folder, model, seed):
    folder.mkdir()
    save_model(model, folder / "model.keras")
    (folder / "config.json").write_text(json.dumps({"name": folder.name, "model": {"kind": "blend2flux", **TINY},
                                                    "training": {"precision": "float32", "batch_size": 4}}))
    (folder / "run.json").write_text(json.dumps({"seed": seed, "epochs_completed": 3, "best_epoch": 2,
                                                 "data": {"mode": "synth", "bank": {"sha256": "ab"}}}))
    return folder


def test_training_ensemble_writes_a_run_folder_that_the_ensemble_method_runs(tmp_path):
    from napari_blendphot.deblend.keras_methods import EnsembleDeblender
    from napari_blendphot.deblend.registry import create_method
    from training.cli import main

    members = _members(2)
    first = _run_folder(tmp_path / "e1", members[0], 1)
    save_model(members[1], tmp_path / "e2.keras")
    output = tmp_path / "ensemble"
    assert main(["ensemble", str(first), str(tmp_path / "e2.keras"), "-o", str(output), "--name", "ens_test"]) == 0
    assert sorted(p.name for p in output.iterdir()) == ["config.json", "model.keras", "run.json"]
    record = json.loads((output / "run.json").read_text())
    assert [m["name"] for m in record["members"]] == ["e1", "e2"]
    assert record["store"] == "bfloat16" and record["data"]["bank"]["sha256"] == "ab"
    assert record["members"][0]["run"]["epochs"] == 3
    config = json.loads((output / "config.json").read_text())
    assert config["model"]["ensemble_members"] == ["e1", "e2"] and config["model"]["kind"] == "blend2flux"

    method = create_method("ensemble", weights=str(output / "model.keras"))
    assert isinstance(method, EnsembleDeblender)
    stamps = _stamps()
    result = method.deblend(stamps)
    assert result.method == "ensemble" and result.fluxes.shape == (len(stamps), 2)
    assert np.all(np.isfinite(result.flux_errors)) and np.all(result.flux_errors > 0)
    assert result.metadata["members"] == 2 and result.metadata["method"] == "ensemble"
    direct = load_model(output / "model.keras").predict(stamps, verbose=0)["fluxes"]
    np.testing.assert_allclose(result.fluxes, direct, rtol=1e-5)


def test_training_ensemble_refuses_and_writes_nothing(tmp_path, capsys):
    from training.cli import main

    members = _members(2)
    save_model(members[0], tmp_path / "a.keras")
    save_model(members[1], tmp_path / "b.keras")
    save_model(build_blend2flux(**TINY), tmp_path / "plain.keras")
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    cases = [
        (["a.keras", "b.keras"], "exists", "exists already"),
        (["a.keras", "a.keras"], "new1", "given twice"),
        (["a.keras", "plain.keras"], "new2", "no flux-uncertainty output"),
        (["a.keras"], "new3", "at least two"),
    ]
    for members_given, output, message in cases:
        code = main(["ensemble", *[str(tmp_path / m) for m in members_given], "-o", str(tmp_path / output)])
        error = capsys.readouterr().err
        assert code == 2 and message in error, (members_given, error)
        assert len(error.strip().splitlines()) == 1
    assert (existing / "keep.txt").read_text() == "mine" and sorted(p.name for p in existing.iterdir()) == ["keep.txt"]
    assert not any((tmp_path / f"new{i}").exists() for i in (1, 2, 3))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folder left behind


def test_the_ensemble_method_names_its_missing_shipped_model(monkeypatch):
    from napari_blendphot.deblend import keras_methods

    monkeypatch.setattr(keras_methods.EnsembleDeblender, "default_weights", "no_such_ensemble")
    with pytest.raises(InputError, match="no weights given and no shipped model"):
        keras_methods.EnsembleDeblender()


def test_the_spread_weight_scales_only_the_spread_and_survives_saving(tmp_path):
    members = [np.array([[np.log(10.0), np.log(20.0), np.log(0.1), np.log(0.2)]], np.float32),
               np.array([[np.log(12.0), np.log(18.0), np.log(0.3), np.log(0.1)]], np.float32)]
    logs = np.array([m[0, :2] for m in members], np.float64)
    noise = (np.exp(2 * np.array([m[0, 2:] for m in members], np.float64))).mean(axis=0)
    spread = ((logs - logs.mean(axis=0)) ** 2).mean(axis=0)
    fluxes, uncertainty = (keras.ops.convert_to_numpy(t) for t in EnsembleMixture(2.5)(members))
    np.testing.assert_allclose(np.exp(2 * uncertainty[0, 2:]), noise + 2.5 * spread, rtol=1e-5)
    np.testing.assert_allclose(fluxes[0], np.exp(logs.mean(axis=0)), rtol=1e-5)  # the fluxes do not depend on it
    with pytest.raises(ValueError, match="spread_weight"):
        EnsembleMixture(-1.0)
    ensemble = build_ensemble(_members(2), spread_weight=1.7)
    save_model(ensemble, tmp_path / "e.keras")
    loaded = load_model(tmp_path / "e.keras", expect="blend2flux")
    assert loaded.get_layer("ensemble").spread_weight == pytest.approx(1.7)


def test_the_spread_weight_for_a_calibration_keeps_the_spread_at_face_value(tmp_path):
    from napari_blendphot.metrics.calibration import FluxErrorCalibration
    from training.ensemble import spread_weight_for

    calibration = FluxErrorCalibration({"ensemble": {"central": {"a": 0.8, "b": 0.0}, "companion": {"a": 0.6, "b": 0.0}}})
    weight = spread_weight_for(calibration)
    assert weight == pytest.approx(1 / 0.7 ** 2)
    assert 0.7 ** 2 * weight == pytest.approx(1.0)  # a^2 (noise + w spread) = a^2 noise + spread
    with pytest.raises(InputError, match="no positive error scale"):
        spread_weight_for(FluxErrorCalibration({"ensemble": {"central": {"a": 0.0, "b": 0.0}}}))


def test_training_ensemble_takes_its_spread_weight_from_a_calibration_file(tmp_path, capsys):
    from napari_blendphot.metrics.calibration import FluxErrorCalibration
    from training.cli import main

    members = _members(2)
    save_model(members[0], tmp_path / "a.keras")
    save_model(members[1], tmp_path / "b.keras")
    calibration = FluxErrorCalibration({"ensemble": {"central": {"a": 0.5, "b": 0.0}, "companion": {"a": 0.5, "b": 0.0}}})
    calibration.save(tmp_path / "cal.json")
    assert main(["ensemble", str(tmp_path / "a.keras"), str(tmp_path / "b.keras"), "-o", str(tmp_path / "e"),
                 "--spread-weight-from", str(tmp_path / "cal.json")]) == 0
    assert "spread weight 4.000" in capsys.readouterr().out
    assert json.loads((tmp_path / "e" / "run.json").read_text())["spread_weight"] == pytest.approx(4.0)
    assert main(["ensemble", str(tmp_path / "a.keras"), str(tmp_path / "b.keras"), "-o", str(tmp_path / "f"),
                 "--spread-weight", "-1"]) == 2
    assert "must be a number >= 0" in capsys.readouterr().err and not (tmp_path / "f").exists()
