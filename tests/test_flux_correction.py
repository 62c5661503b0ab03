"""Flux correction of segmentation photometry (metrics.flux_correction) and `python -m training flux-correction`."""

from __future__ import annotations

import numpy as np
import pytest

from napari_blendphot.errors import InputError
from napari_blendphot.metrics.flux_correction import (
    apply_flux_correction,
    check_flux_correction,
    correction_factors,
    fit_flux_correction,
)


def _pairs(n=3000, seed=0):
    """Mask sums that miss 5% of a galaxy's light, plus 30% more for every magnitude its neighbour is brighter."""
    rng = np.random.default_rng(seed)
    true = 10 ** rng.uniform(1, 3, (n, 2))
    dmag = -2.5 * np.log10(true / true[:, ::-1])
    kept = 0.95 * np.exp(-0.3 * np.clip(dmag, 0, None))
    pred = true * kept * rng.lognormal(0, 0.03, (n, 2))
    return true, pred


def test_the_fitted_factors_undo_a_loss_that_grows_with_the_neighbours_brightness():
    true, pred = _pairs()
    fitted = fit_flux_correction(true, pred)
    assert fitted["n"] == true.size and len(fitted["factors"]) == 6 and check_flux_correction(fitted) is None
    # Fainter than the neighbour: more light to give back (flat where the galaxy is the brighter one).
    assert np.all(np.diff(fitted["factors"]) > -0.01) and fitted["factors"][-1] > 2 * fitted["factors"][0]
    assert fitted["factors"][0] == pytest.approx(1 / 0.95, rel=0.02)
    before = np.median(np.abs(pred / true - 1))
    after = np.median(np.abs(apply_flux_correction(fitted, pred) / true - 1))
    assert after < 0.5 * before
    again = fit_flux_correction(true, pred)
    assert again == fitted  # nothing random


def test_unmeasured_galaxies_are_left_out_and_stay_unmeasured():
    true, pred = _pairs(600)
    pred[:50, 1] = np.nan
    fitted = fit_flux_correction(true, pred)
    assert fitted["n"] == true.size - 100  # the NaN galaxies and their neighbours' dmag are unknown
    corrected = apply_flux_correction(fitted, pred)
    assert np.isnan(corrected[:50, 1]).all()
    # A galaxy whose neighbour was not found counts as much brighter: the first bin's factor.
    np.testing.assert_allclose(correction_factors(fitted, pred)[:50, 0], fitted["factors"][0])


@pytest.mark.parametrize("parameters, problem", [
    ({"dmag_edges": [0.0], "factors": [1.0]}, "one longer"),
    ({"dmag_edges": [1.0, 0.0], "factors": [1, 1, 1]}, "increasing"),
    ({"dmag_edges": [0.0], "factors": [1.0, float("nan")]}, "finite and > 0"),
    ({"dmag_edges": [0.0], "factors": [1.0, 0.0]}, "finite and > 0"),
])
def test_bad_parameters_are_named(parameters, problem):
    assert problem in check_flux_correction(parameters)


def test_too_few_galaxies_or_wrong_shapes_are_refused_in_one_line():
    true, pred = _pairs(10)
    with pytest.raises(InputError, match="at least 50 are needed"):
        fit_flux_correction(true, pred)
    with pytest.raises(InputError, match="expected two"):
        fit_flux_correction(true[:, 0], pred[:, 0])


def _table(n, true, pred, sha, tta=1, corrected=False):
    from astropy.table import Table

    table = Table()
    table["id"] = np.arange(n)
    table["split"] = ["train"] * n
    for slot, g in enumerate(("g1", "g2")):
        table[f"{g}_flux"] = true[:, slot]
        table[f"{g}_flux_unet"] = pred[:, slot]
    record = {"sha256": sha, "tta": tta}
    if corrected:
        record["flux_correction"] = {"parameters": {}}
    table.meta["methods"] = ["unet"]
    table.meta["provenance"] = {"parameters": {"split": "all", "method_metadata": {"unet": record}}}
    return table


def test_training_flux_correction_writes_the_manifest_and_drops_the_stale_calibration(tmp_path, capsys):
    from napari_blendphot.models.manifests import Manifest, write_manifest
    from napari_blendphot.provenance import sha256_file
    from napari_blendphot.report.results import write_results
    from napari_blendphot.training.cli import main

    model = tmp_path / "unet.keras"
    model.write_bytes(b"stand-in for a saved U-Net")
    calibration = {"parameters": {"central": {"a": 1.0}, "companion": {"a": 1.0}}}
    write_manifest(model, "unet", {"depth": 2}, {"description": "test"}, {"flux_mape_pct": 20.0},
                   backend="jax", keras_version="3", flux_error_calibration=calibration)
    manifest_path = tmp_path / "unet.json"
    untouched = manifest_path.read_bytes()
    assert b"flux_correction" not in untouched  # manifests without one keep their bytes
    true, pred = _pairs(400)
    sha = sha256_file(model)
    good = write_results(_table(400, true, pred, sha), tmp_path / "calib")[0]
    # Refused, manifest untouched: a calibration is there, other weights, corrected fluxes, tta 8.
    assert main(["flux-correction", str(manifest_path), "--results", str(good)]) == 2
    assert "already has a flux-error calibration" in capsys.readouterr().err
    for name, kwargs, message in (("other", {"sha": "0" * 64}, "was not this model"),
                                  ("twice", {"corrected": True}, "were corrected already"),
                                  ("tta8", {"tta": 8}, "--tta 8")):
        bad = write_results(_table(400, true, pred, **{"sha": sha, **kwargs}), tmp_path / name)[0]
        assert main(["flux-correction", str(manifest_path), "--results", str(bad), "--overwrite"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err
        assert manifest_path.read_bytes() == untouched
    assert main(["flux-correction", str(manifest_path), "--results", str(good), "--overwrite"]) == 0
    assert "fit its flux-error calibration again" in capsys.readouterr().out
    manifest = Manifest.read(manifest_path)
    assert manifest.flux_error_calibration == {}
    assert manifest.flux_correction["parameters"] == fit_flux_correction(true, pred)
    assert manifest.flux_correction["provenance"]["fitted_on"] == good.name
    assert Manifest.read(manifest_path).to_json() == manifest_path.read_text()
    provenance = manifest.flux_correction["provenance"]
    assert provenance["step"] == "training flux-correction" and provenance["parameters"]["n_blends"] == 400
