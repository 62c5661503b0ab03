"""``python -m training compare``: paired bootstrap differences over galaxies, on the same blends only."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from napari_blendphot.errors import InputError


def _table(method, scatter, n_blends=300, n_galaxies=30, seed=0, noise_seed=1):
    """Blends of *n_galaxies* galaxies; *method* off by *scatter* (relative, Gaussian)."""
    rng = np.random.default_rng(seed)
    noise = np.random.default_rng(noise_seed)
    ids = rng.integers(0, n_galaxies, (n_blends, 2))
    flux = 10 ** rng.uniform(1, 2.5, n_galaxies)
    radius = rng.uniform(2, 30, n_galaxies)
    table = Table()
    table["id"] = np.arange(n_blends)
    for slot, prefix in enumerate(("g1", "g2")):
        table[f"{prefix}_id"] = ids[:, slot]
        table[f"{prefix}_flux"] = flux[ids[:, slot]]
        table[f"{prefix}_rad"] = radius[ids[:, slot]]
        table[f"{prefix}_flux_{method}"] = flux[ids[:, slot]] * (1 + noise.normal(0, scatter, n_blends))
    table.meta["methods"] = [method]
    return table


def _write(table, path):
    from napari_blendphot.report.results import write_results

    write_results(table, path)
    return f"{path}.csv"


def test_candidate_better_than_baseline_has_an_interval_below_zero(tmp_path):
    from napari_blendphot.training.compare import compare

    base = _write(_table("blend2flux", 0.08), tmp_path / "base")
    better = _write(_table("blend2flux", 0.05, noise_seed=2), tmp_path / "better")
    same = _write(_table("blend2flux", 0.08), tmp_path / "same")
    rows = compare([("v7", "blend2flux", [base]), ("t8", "blend2flux", [better]), ("twin", "blend2flux", [same])],
                   n_resamples=300)
    by_name = {row["model"]: row for row in rows}
    assert by_name["v7"]["diff_pct"] == 0 and np.isnan(by_name["v7"]["diff_low"])
    t8 = by_name["t8"]
    assert t8["flux_mape_pct"] < by_name["v7"]["flux_mape_pct"]
    assert t8["diff_low"] <= t8["diff_pct"] <= t8["diff_high"] < 0
    # Paired: identical predictions differ by exactly zero in every resample.
    assert by_name["twin"]["diff_low"] == by_name["twin"]["diff_high"] == 0
    assert t8["n"] == 600 and t8["n_galaxies"] == 30


def test_galaxies_of_different_tables_are_different_galaxies(tmp_path):
    from napari_blendphot.training.compare import compare

    a = [_write(_table("m", 0.05, seed=s), tmp_path / f"a{s}") for s in (0, 1)]
    b = [_write(_table("m", 0.06, seed=s, noise_seed=3), tmp_path / f"b{s}") for s in (0, 1)]
    rows = compare([("a", "m", a), ("b", "m", b)], n_resamples=50)
    assert rows[0]["n"] == 1200 and rows[0]["n_galaxies"] == 60  # ids 0-29 twice, counted apart


def test_stamp_share_keeps_only_galaxies_mostly_inside_their_stamp(tmp_path):
    from napari_blendphot.training.compare import compare

    base = _write(_table("m", 0.05), tmp_path / "base")
    cand = _write(_table("m", 0.06, noise_seed=4), tmp_path / "cand")
    share = np.where(np.arange(30) % 3 == 0, 0.80, 0.99)  # every third galaxy loses 20% beyond its stamp
    catalog = Table({"id": np.arange(30), "flux": np.full(30, 100.0), "stamp_flux": 100.0 * share})
    sample = tmp_path / "sample.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(catalog)]).writeto(sample)
    fits.setval(sample, "EXTNAME", value="CATALOG", ext=1)
    rows = compare([("base", "m", [base]), ("cand", "m", [cand])], samples=[str(sample)],
                   min_stamp_share=0.95, n_resamples=50)
    ids = np.concatenate([Table.read(base)["g1_id"], Table.read(base)["g2_id"]])
    assert rows[0]["n"] == int((ids % 3 != 0).sum()) and rows[0]["n_galaxies"] == 20


def test_refusals_name_the_input(tmp_path, capsys):
    from napari_blendphot.training.cli import main
    from napari_blendphot.training.compare import compare

    base = _write(_table("m", 0.05), tmp_path / "base")
    other = _write(_table("m", 0.05, seed=9), tmp_path / "other")  # other blends
    with pytest.raises(InputError, match="not the same blends"):
        compare([("base", "m", [base]), ("other", "m", [other])], n_resamples=10)
    with pytest.raises(InputError, match="lacks column 'g1_flux_x'"):
        compare([("base", "m", [base]), ("x", "x", [base])], n_resamples=10)
    with pytest.raises(InputError, match="needs one --sample per results table"):
        compare([("base", "m", [base]), ("c", "m", [base])], min_stamp_share=0.95, n_resamples=10)
    assert main(["compare", "--model", "base=m", "--model", f"c=m:{base}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NAME=METHOD:RESULTS.csv" in err[0]


def test_compare_command_prints_and_writes_the_table(tmp_path, capsys):
    from napari_blendphot.training.cli import main

    base = _write(_table("m", 0.08), tmp_path / "base")
    cand = _write(_table("m", 0.05, noise_seed=2), tmp_path / "cand")
    out = tmp_path / "compare.csv"
    assert main(["compare", "--model", f"base=m:{base}", "--model", f"cand=m:{cand}", "--bootstrap", "100",
                 "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| cand |" in printed and "against base [95% CI]" in printed
    table = Table.read(out)
    assert list(table["model"]) == ["base", "cand"] and table["diff_high"][1] < 0
    assert main(["compare", "--model", f"base=m:{base}", "--model", f"cand=m:{cand}", "-o", str(out)]) == 2
