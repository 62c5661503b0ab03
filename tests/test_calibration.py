"""Coverage of flux errors and their recalibration (metrics.calibration) on synthetic results tables."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.table import Table

from napari_blendphot.errors import InputError, OutputExistsError
from napari_blendphot.metrics.calibration import (FluxErrorCalibration, coverage, coverage_arrays,
                                                  fit_calibration, fit_role, split_blends)


def _table(n, seed, error_scale=1.0, fractional=0.0, method="m", with_errors=True):
    """Results table whose residuals are Gaussian with sigma = sqrt(err_true^2 + (fractional*flux)^2);
    the method reports err_true * error_scale."""
    rng = np.random.default_rng(seed)
    table = Table()
    table["id"] = np.arange(n)
    for prefix in ("g1", "g2"):
        true = 10 ** rng.uniform(0.5, 2.0, n)
        err_true = rng.uniform(0.05, 0.5, n) * np.sqrt(true)
        sigma = np.hypot(err_true, fractional * true)
        table[f"{prefix}_flux"] = true
        table[f"{prefix}_flux_{method}"] = true + rng.normal(0, 1, n) * sigma
        if with_errors:
            table[f"{prefix}_flux_err_{method}"] = err_true * error_scale
    table.meta["methods"] = [method]
    return table


def test_calibrated_gaussian_errors_cover_68_and_95_percent():
    stats = coverage(_table(20000, 0), "m")
    both = stats[stats["galaxy"] == "both"][0]
    assert abs(both["coverage_68"] - 0.6827) < 0.01 and abs(both["coverage_95"] - 0.95) < 0.01
    assert abs(both["median_abs_z"] - 0.674) < 0.02 and both["spearman"] > 0.3
    assert both["n"] == 40000 and set(stats["galaxy"]) == {"central", "companion", "both"}


def test_coverage_per_pair_dmag_and_magnitude_bin():
    table = _table(3000, 1)
    by_dmag = coverage(table, "m", by="pair_dmag")
    assert len(by_dmag) == 3 * len(set(zip(by_dmag["bin_low"], by_dmag["bin_high"])))
    rows = by_dmag[by_dmag["galaxy"] == "both"]
    assert rows["n"].sum() == 6000  # every galaxy in exactly one bin
    assert (np.abs(rows["coverage_68"][rows["n"] > 300] - 0.6827) < 0.06).all()
    by_mag = coverage(table, "m", by="mag")
    assert by_mag[by_mag["galaxy"] == "both"]["n"].sum() == 6000


def test_underestimated_errors_are_found_and_recalibrated_on_held_out_blends():
    table = _table(8000, 2, error_scale=1 / 3, fractional=0.1)
    before = coverage(table, "m")
    assert before[before["galaxy"] == "both"]["coverage_68"][0] < 0.4
    fit_rows, test_rows = split_blends(len(table), 0.5, seed=0)
    calibration = fit_calibration(table[fit_rows], provenance={"note": "synthetic"})
    central = calibration.parameters["m"]["central"]
    assert 2.5 < central["a"] < 3.5 and 0.07 < central["b"] < 0.13
    after = coverage(calibration.apply(table[test_rows]), "m")
    both = after[after["galaxy"] == "both"][0]
    assert abs(both["coverage_68"] - 0.6827) < 0.02 and abs(both["coverage_95"] - 0.95) < 0.015


def test_fit_meets_68_percent_exactly_and_reports_the_95_percent_multiple():
    rng = np.random.default_rng(3)
    true = rng.uniform(10, 100, 500)
    pred = true + rng.standard_t(2, 500) * 2.0  # heavy tails: one scale cannot meet both levels
    result = fit_role(true, pred, np.full(500, 0.5))
    assert result["coverage_68"] >= 0.6827 and result["coverage_68"] < 0.6827 + 3 / 500
    assert result["n"] == 500
    assert result["coverage_95"] < 0.95 and result["k95"] > 1.96  # heavy tails: 1.96 sigma is not enough


def test_a_method_without_errors_gets_a_fractional_error():
    table = _table(4000, 4, fractional=0.2, with_errors=False)
    calibration = fit_calibration(table, mondrian=False, neighbour=False)  # the bare (a, b) model
    p = calibration.parameters["m"]["companion"]
    assert p["a"] == 0 and 0.15 < p["b"] < 0.25
    fluxes = np.array([[10.0, np.nan], [0.0, 5.0]])
    errors = calibration.calibrate("m", fluxes)
    assert np.isnan(errors[0, 1]) and errors[1, 0] == 0 and np.isclose(errors[1, 1], 5.0 * p["b"])
    applied = calibration.apply(table)
    assert "g1_flux_err_m" in applied.colnames and "g1_flux_err_raw_m" not in applied.colnames


def test_apply_keeps_the_raw_errors_and_never_writes_inf():
    table = _table(200, 5)
    table["g1_flux_m"][3] = np.nan
    table["g2_flux_err_m"][4] = np.inf
    calibration = fit_calibration(table)
    out = calibration.apply(table)
    np.testing.assert_array_equal(out["g1_flux_err_raw_m"], table["g1_flux_err_m"])
    values = np.concatenate([out["g1_flux_err_m"], out["g2_flux_err_m"]])
    assert not np.isinf(values).any()
    assert np.isnan(out["g1_flux_err_m"][3]) and np.isnan(out["g2_flux_err_m"][4])
    assert out.meta["flux_error_calibration"]["methods"] == ["m"]
    assert "g1_flux_err_m" in table.colnames and np.isinf(table["g2_flux_err_m"][4])  # input untouched


def test_save_load_round_trip_and_bad_files(tmp_path):
    calibration = fit_calibration(_table(300, 6), provenance={"dataset": "synthetic"})
    path = calibration.save(tmp_path / "cal.json")
    loaded = FluxErrorCalibration.load(path)
    assert loaded.parameters == calibration.parameters and loaded.provenance["dataset"] == "synthetic"
    with pytest.raises(OutputExistsError):
        calibration.save(path)
    calibration.save(path, overwrite=True)
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    bad = tmp_path / "bad.json"
    for content, problem in (("{", "not a readable JSON"), ('{"format": "other"}', "not a flux-error"),
                             (json.dumps({**calibration.to_dict(), "version": 9}), "version"),
                             (json.dumps({**calibration.to_dict(),
                                          "parameters": {"m": {"central": {"a": -1, "b": 0},
                                                               "companion": {"a": 1, "b": 0}}}}), ">= 0")):
        bad.write_text(content)
        with pytest.raises(InputError, match=problem):
            FluxErrorCalibration.load(bad)
    with pytest.raises(InputError, match="not found"):
        FluxErrorCalibration.load(tmp_path / "missing.json")
    with pytest.raises(InputError, match="no calibration"):
        loaded.calibrate("other", np.ones((1, 2)))


def test_inputs_that_cannot_be_used_are_refused():
    with pytest.raises(InputError, match="at least"):
        fit_role(np.ones(5), np.ones(5), np.ones(5))
    with pytest.raises(InputError, match="no column"):
        coverage(_table(50, 7, with_errors=False), "m")
    with pytest.raises(InputError, match="binning"):
        coverage(_table(50, 7), "m", by="distance")
    with pytest.raises(InputError):
        split_blends(10, 1.5)
    a, b = split_blends(10, 0.3, seed=1)
    assert len(a) == 3 and sorted(np.concatenate([a, b]).tolist()) == list(range(10))
    np.testing.assert_array_equal(a, split_blends(10, 0.3, seed=1)[0])


def test_coverage_arrays_ignores_galaxies_without_flux_or_error():
    stats = coverage_arrays([1, 1, 1, 1], [1.5, np.nan, 1.1, 3.0], [1.0, 1.0, np.nan, 0.0])
    assert stats["n"] == 1 and stats["coverage_68"] == 1.0 and np.isnan(stats["spearman"])


def _heavy_tailed_table(n, seed, method="m"):
    """Residuals from a Student-t with 3 degrees of freedom scaled by the stated errors: 1.96 err holds < 95%."""
    rng = np.random.default_rng(seed)
    table = Table()
    table["id"] = np.arange(n)
    for prefix in ("g1", "g2"):
        true = 10 ** rng.uniform(0.5, 2.0, n)
        err = 0.05 * true
        table[f"{prefix}_flux"] = true
        table[f"{prefix}_flux_{method}"] = true + rng.standard_t(3, n) * err
        table[f"{prefix}_flux_err_{method}"] = err
    table.meta["methods"] = [method]
    return table


def test_the_calibrated_95_percent_multiple_is_recorded_and_used():
    table = _heavy_tailed_table(20000, 5)
    fit_rows, test_rows = split_blends(len(table), 0.5, seed=1)
    calibration = fit_calibration(table[fit_rows])
    k95 = calibration.parameters["m"]["central"]["k95"]
    assert k95 > 2.1  # heavy tails: the 95% interval is wider than 1.96 calibrated sigmas
    applied = calibration.apply(table[test_rows])
    assert set(applied.meta["flux_error_k95"]["m"]) == {"central", "companion"}
    both = coverage(applied, "m")
    both = both[both["galaxy"] == "both"][0]
    assert abs(both["coverage_68"] - 0.6827) < 0.02
    assert abs(both["coverage_95"] - 0.95) < 0.015  # with k95
    assert both["coverage_95_gauss"] < 0.94  # 1.96 calibrated sigmas hold less


def test_calibrate_errors_cli_fits_and_applies(tmp_path, capsys):
    from napari_blendphot.cli import main
    from napari_blendphot.report.evaluate import coverage_tables
    from napari_blendphot.report.results import read_results, write_results

    table = _table(4000, 7, error_scale=1 / 3, fractional=0.1)
    for prefix in ("g1", "g2"):  # the columns a results table must have
        table[f"{prefix}_mag"] = 25.96 - 2.5 * np.log10(table[f"{prefix}_flux"])
    table["distance"] = 10.0
    table.meta.update(methods=["m"], zero_points={"m": 25.96}, flux_errors={"m": True}, provenance={"step": "test"})
    fit_rows, test_rows = split_blends(len(table), 0.5, seed=0)
    write_results(table[fit_rows], tmp_path / "held_out")
    write_results(table[test_rows], tmp_path / "test")
    calibration = tmp_path / "calibration.json"
    assert main(["calibrate-errors", "fit", str(tmp_path / "held_out.csv"), "-o", str(calibration)]) == 0
    assert "k95" in capsys.readouterr().out
    assert main(["calibrate-errors", "apply", str(tmp_path / "test.csv"), str(calibration),
                 "-o", str(tmp_path / "calibrated")]) == 0
    calibrated = read_results(tmp_path / "calibrated.csv")
    assert "g1_flux_err_raw_m" in calibrated.colnames
    overall = coverage_tables(calibrated)["overall"]
    both = overall[overall["galaxy"] == "both"][0]
    assert abs(both["coverage_68"] - 0.6827) < 0.03
    # Refusals are one line: an existing output, a file that is not a calibration.
    assert main(["calibrate-errors", "fit", str(tmp_path / "held_out.csv"), "-o", str(calibration)]) == 2
    assert main(["calibrate-errors", "apply", str(tmp_path / "test.csv"), str(tmp_path / "test.csv"),
                 "-o", str(tmp_path / "again")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


def test_the_evaluation_report_shows_coverage_of_every_method_with_errors(tmp_path):
    from napari_blendphot.report.evaluate import evaluate

    table = _table(600, 8)
    for prefix in ("g1", "g2"):
        table[f"{prefix}_mag"] = 25.96 - 2.5 * np.log10(table[f"{prefix}_flux"])
    table["distance"] = 10.0
    table.meta.update(methods=["m"], zero_points={"m": 25.96}, flux_errors={"m": True}, provenance={})
    report = evaluate(table, tmp_path / "report")
    text = report.markdown_path.read_text()
    assert "## Flux uncertainties" in text and "per bin of pair magnitude difference" in text
    assert {"fig_error_calibration", "fig_error_z"} <= set(report.figures)
    without = table.copy()
    for prefix in ("g1", "g2"):
        del without[f"{prefix}_flux_err_m"]
    assert "No method of this table gives flux errors" in evaluate(without, tmp_path / "r2").markdown_path.read_text()


def _shared_light_table(n, seed, method="m"):
    """Pairs in which each galaxy's flux error is a fraction of its *neighbour's* flux (shared light),
    reported errors blind to it: the faint member of a pair is off by far more than its error says."""
    rng = np.random.default_rng(seed)
    table = Table()
    table["id"] = np.arange(n)
    true = 10 ** rng.uniform(0.5, 2.0, (n, 2))
    err = 0.2 * np.sqrt(true)
    sigma = np.hypot(err, 0.08 * true[:, ::-1])
    pred = true + rng.normal(0, 1, (n, 2)) * sigma
    for slot, prefix in enumerate(("g1", "g2")):
        table[f"{prefix}_flux"] = true[:, slot]
        table[f"{prefix}_flux_{method}"] = pred[:, slot]
        table[f"{prefix}_flux_err_{method}"] = err[:, slot]
    table.meta["methods"] = [method]
    return table


def _worst_bin(calibration, table, within: float = np.inf) -> float:
    """Largest |coverage_68 - 68.27%| over bins of true pair dmag (those inside +-within mag)."""
    bins = coverage(calibration.apply(table), "m", by="pair_dmag")
    both = bins[(bins["galaxy"] == "both") & (bins["n"] > 500) & (bins["bin_low"] >= -within)
                & (bins["bin_high"] <= within)]
    return float(np.abs(np.asarray(both["coverage_68"]) - 0.6827).max())


def test_the_neighbour_term_holds_coverage_in_every_pair_dmag_bin():
    """One scale for all over-covers bright members and under-covers faint ones; the neighbour-flux term
    (light shared with the neighbour) brings every bin of true pair dmag to 68%."""
    table = _shared_light_table(30000, 11)
    fit_rows, test_rows = split_blends(len(table), 0.5, seed=1)
    plain = fit_calibration(table[fit_rows], mondrian=False, neighbour=False)
    shared = fit_calibration(table[fit_rows], mondrian=False)
    assert plain.parameters["m"]["central"]["c"] == 0 and "dmag_scales" not in plain.parameters["m"]["central"]
    assert 0.07 < shared.parameters["m"]["central"]["c"] < 0.09
    assert _worst_bin(plain, table[test_rows]) > 0.08
    assert _worst_bin(shared, table[test_rows]) < 0.03


def test_predicted_dmag_bins_correct_what_the_error_model_cannot_express():
    """Reported errors too small by 2x for the fainter galaxy of each pair (a step no (a, b, c) can
    follow): the Mondrian scales per predicted pair dmag put the bins back near 68% where the predicted
    dmag says where a galaxy belongs (within 2.5 mag; beyond, the faintest galaxies' predicted fluxes
    are too noisy to bin them: docs/uncertainty.md)."""
    rng = np.random.default_rng(13)
    n = 30000
    table = Table()
    true = 10 ** rng.uniform(0.5, 2.0, (n, 2))
    dmag = -2.5 * np.log10(true / true[:, ::-1])
    sigma = 0.3 * np.sqrt(true)
    reported = np.where(dmag > 0.0, sigma / 2, sigma)
    pred = true + rng.normal(0, 1, (n, 2)) * sigma
    table["id"] = np.arange(n)
    for slot, prefix in enumerate(("g1", "g2")):
        table[f"{prefix}_flux"], table[f"{prefix}_flux_m"] = true[:, slot], pred[:, slot]
        table[f"{prefix}_flux_err_m"] = reported[:, slot]
    table.meta["methods"] = ["m"]
    fit_rows, test_rows = split_blends(n, 0.5, seed=2)
    without = fit_calibration(table[fit_rows], mondrian=False)
    with_bins = fit_calibration(table[fit_rows])
    assert _worst_bin(without, table[test_rows], within=2.5) > 0.15
    assert _worst_bin(with_bins, table[test_rows], within=2.5) < 0.05


def test_mondrian_bins_in_a_calibration_file_are_checked_on_load(tmp_path):
    calibration = fit_calibration(_shared_light_table(2000, 12))
    p = calibration.parameters["m"]["central"]
    assert len(p["dmag_scales"]) == len(p["dmag_edges"]) + 1 and all(np.isfinite(p["dmag_edges"]))
    path = calibration.save(tmp_path / "cal.json")
    record = json.loads(path.read_text())
    record["parameters"]["m"]["central"]["dmag_scales"] = record["parameters"]["m"]["central"]["dmag_scales"][:-1]
    path.write_text(json.dumps(record))
    with pytest.raises(InputError, match="one longer than 'dmag_edges'"):
        FluxErrorCalibration.load(path)


def test_a_calibration_records_the_tta_its_results_were_predicted_with(tmp_path):
    """Averaged (--tta 8) predictions need their own calibration: the file says which tta it holds for."""
    single = _table(2000, 7)
    assert fit_calibration(single).tta("m") == 1  # nothing recorded: a single pass
    averaged = _table(2000, 7)
    averaged.meta["provenance"] = {"parameters": {"method_metadata": {"m": {"tta": 8}}}}
    fitted = fit_calibration(averaged)
    assert fitted.tta("m") == 8
    loaded = FluxErrorCalibration.load(fitted.save(tmp_path / "calib_tta8.json"))
    assert loaded.tta("m") == 8 and loaded.source == str(tmp_path / "calib_tta8.json")
    # Applied only to results predicted with the same tta: other errors would be mis-scaled.
    assert fitted.apply(averaged)["g1_flux_err_m"].shape == (2000,)
    with pytest.raises(InputError, match="fitted on predictions with tta 8, the table's were made with tta 1"):
        loaded.apply(single)
    averaged.meta["provenance"]["parameters"]["method_metadata"]["m"]["tta"] = "eight"
    with pytest.raises(InputError, match="recorded tta 'eight' is not a number"):
        fit_calibration(averaged)


def _outer_light_table(n, seed, method="m"):
    """Residuals with a part that grows with the light near the stamp's edge, which the stated errors ignore."""
    from napari_blendphot.metrics.calibration import outer_shares

    rng = np.random.default_rng(seed)
    table = Table()
    table["id"] = np.arange(n)
    true = 10 ** rng.uniform(1.0, 2.5, (n, 2))
    outer = np.where(rng.random(n) < 0.3, rng.uniform(0, 40, n), 0.0)  # 30% of the blends reach the edge
    shares = outer_shares(true, outer)
    for slot, prefix in enumerate(("g1", "g2")):
        err = 0.05 * true[:, slot]
        sigma = np.hypot(err, 0.5 * shares[:, slot])
        table[f"{prefix}_flux"] = true[:, slot]
        table[f"{prefix}_flux_{method}"] = true[:, slot] + rng.normal(0, 1, n) * sigma
        table[f"{prefix}_flux_err_{method}"] = err
    table[f"outer_flux_{method}"] = outer
    table.meta["methods"] = [method]
    return table


def test_outer_light_is_the_blends_light_near_the_stamps_edge():
    from napari_blendphot.metrics.calibration import OUTER_MARGIN, outer_light, outer_shares

    blends = np.zeros((2, 128, 128))
    blends[0, 60:68, 60:68] = 1.0                 # all light in the centre
    blends[1] = 1.0                               # flat: everything outside the central box counts
    np.testing.assert_allclose(outer_light(blends), [0.0, 128 ** 2 - (128 - 2 * OUTER_MARGIN) ** 2])
    shares = outer_shares(np.array([[30.0, 10.0], [np.nan, 5.0], [0.0, 0.0]]), np.array([8.0, 8.0, -3.0]))
    np.testing.assert_allclose(shares, [[6.0, 2.0], [0.0, 8.0], [0.0, 0.0]])  # by predicted flux; no negative light
    with pytest.raises(InputError, match="larger than 72 px"):
        outer_light(np.zeros((1, 64, 64)))


def test_the_outer_light_term_widens_the_errors_of_blends_that_reach_the_edge():
    from napari_blendphot.metrics.calibration import calibrated_errors

    table = _outer_light_table(6000, 3)
    fit_rows, test_rows = split_blends(len(table), 0.5, seed=1)
    with_term = fit_calibration(table[fit_rows])  # the column is used whenever the table has it
    plain = table.copy()
    plain.remove_column("outer_flux_m")
    plain_fit = fit_calibration(plain[fit_rows])
    assert with_term.parameters["m"]["central"]["d"] > 0.2 and "d" not in plain_fit.parameters["m"]["central"]
    held_out = table[test_rows]
    reach = np.asarray(held_out["outer_flux_m"]) > 0
    for calibration, source in ((with_term, held_out), (plain_fit, plain[test_rows])):
        calibrated = calibration.apply(source)
        residual = np.abs(np.asarray(calibrated["g1_flux_m"]) - np.asarray(calibrated["g1_flux"]))
        inside = residual <= np.asarray(calibrated["g1_flux_err_m"])
        if calibration is with_term:
            assert abs(inside[reach].mean() - 0.683) < 0.05 and abs(inside[~reach].mean() - 0.683) < 0.05
        else:  # one scale for all: blends that reach the edge under-covered, the others over-covered
            assert inside[reach].mean() < 0.6 and inside[~reach].mean() > 0.72
    # A calibration with d > 0 needs the outer light: a table without the column is refused in one line.
    with pytest.raises(InputError, match="outer light") as info:
        with_term.apply(plain[test_rows])
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="outer light"):
        calibrated_errors(with_term.parameters["m"], np.ones((2, 2)), np.ones((2, 2)))


def test_calibrate_errors_fits_several_held_out_tables_as_one(tmp_path, capsys):
    """Held-out blends in two folders: one fit on both is the fit on their union."""
    from napari_blendphot.cli import main
    from napari_blendphot.report.results import write_results

    table = _table(3000, 11, error_scale=0.5, fractional=0.05)
    for prefix in ("g1", "g2"):
        table[f"{prefix}_mag"] = 25.96 - 2.5 * np.log10(table[f"{prefix}_flux"])
    table["distance"] = 10.0
    table.meta.update(methods=["m"], zero_points={"m": 25.96}, flux_errors={"m": True}, provenance={"step": "test"})
    write_results(table[:1000], tmp_path / "part_a")
    write_results(table[1000:], tmp_path / "part_b")
    write_results(table, tmp_path / "whole")
    parts, whole = tmp_path / "parts.json", tmp_path / "whole.json"
    assert main(["calibrate-errors", "fit", str(tmp_path / "part_a.csv"), str(tmp_path / "part_b.fits"),
                 "-o", str(parts)]) == 0
    assert main(["calibrate-errors", "fit", str(tmp_path / "whole.csv"), "-o", str(whole)]) == 0
    fitted, reference = (json.loads(p.read_text()) for p in (parts, whole))
    for role in ("central", "companion"):
        for key in ("a", "b", "c", "k95", "n"):
            assert fitted["parameters"]["m"][role][key] == pytest.approx(reference["parameters"]["m"][role][key])
    assert fitted["provenance"]["n_blends"] == 3000
    assert fitted["provenance"]["inputs"]["results"] == [str(tmp_path / "part_a.csv"), str(tmp_path / "part_b.fits")]
    capsys.readouterr()
    # Tables that cannot share one calibration are refused in one line naming the table.
    other_tta = table[:500]
    other_tta.meta = dict(table.meta, provenance={"parameters": {"method_metadata": {"m": {"tta": 8}}}})
    write_results(other_tta, tmp_path / "tta8")
    assert main(["calibrate-errors", "fit", str(tmp_path / "part_a.csv"), str(tmp_path / "tta8.csv"),
                 "-o", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tta8.csv" in err and "tta 8" in err
    other = _table(500, 12, method="n")
    for prefix in ("g1", "g2"):
        other[f"{prefix}_mag"] = 25.96 - 2.5 * np.log10(other[f"{prefix}_flux"])
    other["distance"] = 10.0
    other.meta.update(methods=["n"], zero_points={"n": 25.96}, flux_errors={"n": True}, provenance={"step": "test"})
    write_results(other, tmp_path / "other")
    assert main(["calibrate-errors", "fit", str(tmp_path / "part_a.csv"), str(tmp_path / "other.csv"),
                 "-o", str(tmp_path / "y.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "other.csv" in err and "holds methods n" in err
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "y.json").exists()


def _scattered_dmag_table(n, seed):
    """A method with 25% flux errors (its predicted pair dmag scatters by ~0.35 mag) whose reported errors
    are 1.6x too small for galaxies truly 0.67-1.33 mag fainter than their neighbour."""
    rng = np.random.default_rng(seed)
    table = Table()
    true = 10 ** rng.uniform(1.0, 1.8, (n, 2))  # |true pair dmag| <= 2: the reported bins are +-2 mag wide
    dmag = -2.5 * np.log10(true / true[:, ::-1])
    sigma = 0.25 * true
    reported = np.where((dmag > 0.667) & (dmag < 1.333), sigma / 1.6, sigma)
    table["id"] = np.arange(n)
    for slot, prefix in enumerate(("g1", "g2")):
        table[f"{prefix}_flux"] = true[:, slot]
        table[f"{prefix}_flux_m"] = true[:, slot] + rng.normal(0, 1, n) * sigma[:, slot]
        table[f"{prefix}_flux_err_m"] = reported[:, slot]
    table.meta["methods"] = ["m"]
    return table


def test_dmag_scales_are_matched_to_the_bins_of_true_pair_dmag():
    """Scales per predicted bin leave a true bin under-covered when the predicted dmag scatters it over
    several predicted bins; matching them to the true bins on the calibration blends brings held-out
    blends' every true bin near 68% (the bins coverage is reported in)."""
    table = _scattered_dmag_table(40000, 21)
    fit_rows, test_rows = split_blends(len(table), 0.5, seed=3)
    predicted_only = fit_calibration(table[fit_rows], true_bins=False)
    matched = fit_calibration(table[fit_rows])
    assert predicted_only.provenance["dmag_scales_matched_to"] == "predicted pair dmag bins"
    assert matched.provenance["dmag_scales_matched_to"] == "true pair dmag bins"
    # Same error model, only the scales move.
    for key in ("a", "b", "c", "dmag_edges"):
        assert matched.parameters["m"]["central"][key] == predicted_only.parameters["m"]["central"][key]
    assert _worst_bin(predicted_only, table[test_rows]) > 0.12  # 15.8 points off in this set
    assert _worst_bin(matched, table[test_rows]) < 0.05  # 3.3: a step in true dmag no predicted bin follows
    overall = coverage(matched.apply(table[test_rows]), "m")
    assert abs(float(overall[overall["galaxy"] == "both"]["coverage_68"][0]) - 0.6827) < 0.015
