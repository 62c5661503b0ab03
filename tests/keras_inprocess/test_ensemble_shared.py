"""Deep-ensemble members shared by reference with shipped models: ``python -m training ensemble --share``,
``ship`` of such a run (only the other members stored) and loading it back whole (docs/engine.md,
"Ensembles that share members").

Keras runs in this process (PyTorch backend unless KERAS_BACKEND says otherwise).  The shipped weights
folder is a temporary one (``manifests.WEIGHTS_DIR`` patched), holding a tiny blend2flux member shipped
in float32 (the ensemble's bfloat16 store rounds it: loading must round it the same way).
"""

from __future__ import annotations

import json
import os
import shutil

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras  # noqa: E402

from napari_blendphot.errors import InputError  # noqa: E402
from napari_blendphot.models import STORED_MEMBERS_PREFIX  # noqa: E402
from napari_blendphot.models.io import load_model, save_model  # noqa: E402
from napari_blendphot.models.networks import build_blend2flux, ensemble_members  # noqa: E402
from napari_blendphot.testing.stand_ins import gaussian_pair_stamps  # noqa: E402

TINY = {"filters": 4, "dense_widths": (8, 8)}
SUMMARY_GALAXY = {"n": 16, "flux_mape_pct": 7.0, "bias_dmag": 0.0, "sigma_dmag": 0.1, "outlier_fraction": 0.0}


def _stamps(n=6, seed=0):
    return gaussian_pair_stamps(n, seed, (64, 64, 18.0, (1, 5)), (70, 58, 10.0, (0.5, 2)))


def _member(seed, name):
    keras.utils.set_random_seed(seed)
    return build_blend2flux(uncertainty=True, name=name, **TINY)


def _ship_member(weights, model, name):
    from napari_blendphot.models.manifests import write_manifest

    path = save_model(model, weights / f"{name}.keras")
    return write_manifest(path, "blend2flux", {**TINY, "uncertainty": True}, {"description": "tiny"}, {},
                          name=name)


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A weights folder (patched in as the package's) with two shipped members, and two members as files."""
    from napari_blendphot.models import manifests

    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setattr(manifests, "WEIGHTS_DIR", weights)
    _ship_member(weights, _member(10, "shared_a"), "b2f_shared")
    _ship_member(weights, _member(11, "shared_b"), "b2f_other")
    save_model(_member(12, "own_1"), tmp_path / "own_1.keras")
    save_model(_member(13, "own_2"), tmp_path / "own_2.keras")
    return weights


def _ensemble_run(tmp_path, members, share, name="ens_shared", folder="run"):
    from training.cli import main

    run = tmp_path / folder
    args = ["ensemble", *members, "-o", str(run), "--name", name] + [a for s in share for a in ("--share", s)]
    assert main(args) == 0
    (run / "evaluation").mkdir()  # test metrics to ship with (what `python -m training evaluate` writes)
    (run / "evaluation" / "summary.json").write_text(json.dumps(
        {"flux_mape_pct": 7.0, "central": SUMMARY_GALAXY, "companion": SUMMARY_GALAXY, "n_blends": 16,
         "split": "test"}))
    return run


def _ship(run, name, weights):
    from training.cli import main

    assert main(["ship", str(run), "--name", name, "--weights-dir", str(weights)]) == 0


def _outputs(model, stamps):
    return model.predict(stamps, verbose=0)


def test_a_shared_member_is_recorded_shipped_by_reference_and_loaded_back_whole(tmp_path, shipped, capsys):
    from napari_blendphot.deblend.registry import create_method
    from napari_blendphot.models.manifests import Manifest, load_registered_model
    from napari_blendphot.provenance import sha256_file

    own_1, own_2 = str(tmp_path / "own_1.keras"), str(tmp_path / "own_2.keras")
    run = _ensemble_run(tmp_path, [own_1, "b2f_shared", own_2], ["b2f_shared"])
    assert "shared when shipped: b2f_shared" in capsys.readouterr().out
    expected = {"name": "b2f_shared", "file": "b2f_shared.keras", "sha256": sha256_file(shipped / "b2f_shared.keras"),
                "position": 1}
    assert json.loads((run / "run.json").read_text())["shared_members"] == [expected]
    assert json.loads((run / "config.json").read_text())["model"]["shared_members"] == [expected]
    whole = load_model(run / "model.keras", expect="blend2flux")  # the run holds the whole ensemble
    assert len(ensemble_members(whole)) == 3

    _ship(run, "ens_shared", shipped)
    manifest = Manifest.read(shipped / "ens_shared.json")
    stored_path = shipped / "ens_shared.keras"
    assert manifest.architecture["shared_members"] == [expected]
    assert manifest.architecture["ensemble_members"] == ["own_1", "b2f_shared", "own_2"]
    assert manifest.sha256 == sha256_file(stored_path) != sha256_file(run / "model.keras")
    assert [m["name"] for m in manifest.trained_on["members"]] == ["own_1", "b2f_shared", "own_2"]

    # (b) The file stores the two other members only, bit for bit the run's, in fewer bytes.
    stored = load_model(stored_path, stored_members_ok=True)
    assert stored.name == STORED_MEMBERS_PREFIX + "ens_shared"
    assert len(ensemble_members(stored)) == 2
    for kept, original in zip(ensemble_members(stored), [ensemble_members(whole)[i] for i in (0, 2)]):
        for a, b in zip(kept.get_weights(), original.get_weights(), strict=True):
            assert np.array_equal(a, b)
    assert stored_path.stat().st_size < 0.8 * (run / "model.keras").stat().st_size

    # (a) Loaded by its manifest, it is the run's ensemble: same weights, the same predictions exactly.
    rebuilt, _ = load_registered_model("ens_shared")
    for a, b in zip(rebuilt.get_weights(), whole.get_weights(), strict=True):
        assert np.array_equal(a, b)
    stamps = _stamps()
    before, after = _outputs(whole, stamps), _outputs(rebuilt, stamps)
    assert np.array_equal(before["fluxes"], after["fluxes"])
    assert np.array_equal(before["flux_uncertainty"], after["flux_uncertainty"])
    # ... and so through the 'ensemble' method, by name or by the shipped file's path (its manifest beside it).
    run_method = create_method("ensemble", weights=str(run / "model.keras"))
    for weights in ("ens_shared", str(stored_path)):
        method = create_method("ensemble", weights=weights)
        result, reference = method.deblend(stamps), run_method.deblend(stamps)
        assert np.array_equal(result.fluxes, reference.fluxes)
        assert np.array_equal(result.flux_errors, reference.flux_errors)
        assert result.metadata["members"] == 3
        assert result.metadata["shared_members"] == [expected]
        assert result.metadata["sha256"] == manifest.sha256
    assert "shared_members" not in run_method.metadata()


def test_one_stored_member_is_stored_as_a_single_network(tmp_path, shipped):
    from napari_blendphot.models.manifests import load_registered_model

    run = _ensemble_run(tmp_path, ["b2f_shared", str(tmp_path / "own_1.keras")], ["b2f_shared"], name="pair")
    _ship(run, "pair", shipped)
    stored = load_model(shipped / "pair.keras", expect="blend2flux", stored_members_ok=True)
    assert ensemble_members(stored) == [] and stored.name == STORED_MEMBERS_PREFIX + "pair"
    whole = load_model(run / "model.keras")
    for a, b in zip(stored.get_weights(), ensemble_members(whole)[1].get_weights(), strict=True):
        assert np.array_equal(a, b)
    rebuilt, manifest = load_registered_model("pair")
    assert manifest.architecture["shared_members"][0]["position"] == 0
    stamps = _stamps()
    assert np.array_equal(_outputs(rebuilt, stamps)["flux_uncertainty"], _outputs(whole, stamps)["flux_uncertainty"])


def test_a_missing_or_changed_shared_member_is_named_in_one_line(tmp_path, shipped):
    from napari_blendphot.deblend.registry import create_method
    from napari_blendphot.models.manifests import load_registered_model

    run = _ensemble_run(tmp_path, [str(tmp_path / "own_1.keras"), "b2f_shared", str(tmp_path / "own_2.keras")],
                        ["b2f_shared"])
    _ship(run, "ens_shared", shipped)
    original = (shipped / "b2f_shared.keras").read_bytes()

    (shipped / "b2f_shared.keras").unlink()
    for load in (lambda: load_registered_model("ens_shared"), lambda: create_method("ensemble", weights="ens_shared")):
        with pytest.raises(InputError) as missing:
            load()
        message = str(missing.value)
        assert "'ens_shared'" in message and "'b2f_shared'" in message and "missing" in message
        assert len(message.splitlines()) == 1

    # Another network under the shared member's name (its own manifest rewritten too): the ensemble's sha256 says no.
    _ship_member(shipped, _member(99, "impostor"), "b2f_shared_tmp")
    (shipped / "b2f_shared_tmp.keras").rename(shipped / "b2f_shared.keras")
    with pytest.raises(InputError) as changed:
        load_registered_model(shipped / "ens_shared.json")
    message = str(changed.value)
    assert "'ens_shared'" in message and "'b2f_shared'" in message and "sha256" in message
    assert len(message.splitlines()) == 1

    (shipped / "b2f_shared.keras").write_bytes(original)
    assert len(ensemble_members(load_registered_model("ens_shared")[0])) == 3  # whole again


def test_share_refuses_names_that_are_not_shipped_members_in_one_line(tmp_path, shipped, capsys):
    from training.cli import main

    own_1, own_2 = str(tmp_path / "own_1.keras"), str(tmp_path / "own_2.keras")
    cases = [
        ([own_1, "b2f_shared", own_2], ["b2f_other"], "new1", "'b2f_other'", "is not one of the ensemble's members"),
        ([own_1, own_2], ["own_1"], "new2", "'own_1'", "is not a shipped model"),
        ([own_1, "b2f_shared"], ["no_such_model"], "new3", "'no_such_model'", "is not a shipped model"),
        (["b2f_other", "b2f_shared"], ["b2f_shared", "b2f_other"], "new4", "--share", "shares every member"),
    ]
    for members, share, output, named, problem in cases:
        args = ["ensemble", *members, "-o", str(tmp_path / output)] + [a for s in share for a in ("--share", s)]
        assert main(args) == 2
        error = capsys.readouterr().err
        assert named in error and problem in error, (share, error)
        assert len(error.strip().splitlines()) == 1
        assert not (tmp_path / output).exists()


def test_shipping_needs_the_shared_member_in_the_target_folder(tmp_path, shipped, capsys):
    from training.cli import main

    run = _ensemble_run(tmp_path, [str(tmp_path / "own_1.keras"), "b2f_shared", str(tmp_path / "own_2.keras")],
                        ["b2f_shared"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert main(["ship", str(run), "--name", "ens_shared", "--weights-dir", str(elsewhere)]) == 2
    error = capsys.readouterr().err
    assert "'b2f_shared'" in error and "missing" in error and len(error.strip().splitlines()) == 1
    assert sorted(p.name for p in elsewhere.iterdir()) == []  # nothing half-shipped


def test_the_stored_file_alone_is_refused(tmp_path, shipped):
    from napari_blendphot.deblend.registry import create_method

    run = _ensemble_run(tmp_path, [str(tmp_path / "own_1.keras"), "b2f_shared", str(tmp_path / "own_2.keras")],
                        ["b2f_shared"])
    _ship(run, "ens_shared", shipped)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copyfile(shipped / "ens_shared.keras", alone / "ens_shared.keras")  # without its manifest
    for load in (lambda: load_model(shipped / "ens_shared.keras"),
                 lambda: load_model(alone / "ens_shared.keras", expect="blend2flux"),
                 lambda: create_method("ensemble", weights=str(alone / "ens_shared.keras"))):
        with pytest.raises(InputError) as refused:
            load()
        message = str(refused.value)
        assert "holds only the members that ensemble 'ens_shared' stores itself" in message
        assert len(message.splitlines()) == 1
