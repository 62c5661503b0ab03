"""``python -m training results``: bootstrap over galaxies, bins, coverage, the generated docs block."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from napari_blendphot.errors import InputError


def _results_table(n_blends=400, n_galaxies=40, seed=0):
    """SEP off by ~20%, method m by ~5% with honest errors; galaxies reused across blends."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, n_galaxies, (n_blends, 2))
    base_flux = 10 ** rng.uniform(1, 2.5, n_galaxies)
    table = Table()
    table["id"] = np.arange(n_blends)
    table["distance"] = rng.uniform(3, 40, n_blends)
    for slot, prefix in enumerate(("g1", "g2")):
        true = base_flux[ids[:, slot]]
        table[f"{prefix}_id"] = ids[:, slot]
        table[f"{prefix}_flux"] = true
        table[f"{prefix}_rad"] = rng.uniform(2, 30, n_blends)
        table[f"{prefix}_flux_sep"] = true * (1 + rng.normal(0, 0.25, n_blends))
        err = 0.06 * true
        table[f"{prefix}_flux_m"] = true + rng.normal(0, 1, n_blends) * err
        table[f"{prefix}_flux_err_m"] = err
    table.meta["methods"] = ["sep", "m"]
    return table


def test_bootstrap_resamples_galaxies_not_blends():
    from napari_blendphot.training.results import bootstrap_weights

    ids = np.array([7, 7, 7, 3, 5])
    weights = bootstrap_weights(ids, 50, seed=1)
    assert weights.shape == (50, 5)
    # The three measurements of galaxy 7 always share one weight; each resample draws 3 galaxies.
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 1] == weights[:, 2]).all()
    assert (weights[:, [0, 3, 4]].sum(axis=1) == 3).all()
    np.testing.assert_array_equal(weights, bootstrap_weights(ids, 50, seed=1))  # seeded


def test_results_command_writes_tables_and_the_generated_block(tmp_path, capsys):
    from napari_blendphot.report.results import write_results
    from napari_blendphot.training.cli import main
    from napari_blendphot.training.results import BEGIN, END

    write_results(_results_table(), tmp_path / "set_a")
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Results\n\nbefore\n\n{BEGIN}\nold numbers\n{END}\n\nafter\n")
    assert main(["results", "--set", f"set a={tmp_path / 'set_a.csv'}", "-o", str(tmp_path / "out"),
                 "--bootstrap", "200", "--update-docs", str(doc)]) == 0
    summary = Table.read(tmp_path / "out" / "summary.ecsv")
    m = summary[summary["method"] == "m"][0]
    assert m["n_galaxies"] == 40 and m["mape_low"] < m["flux_mape_pct"] < m["mape_high"]
    assert 3.0 < m["flux_mape_pct"] < 6.5 and m["sep_ratio_low"] < m["sep_ratio"] < m["sep_ratio_high"]
    assert m["sep_ratio"] > 3
    bins = Table.read(tmp_path / "out" / "bins.ecsv")
    radius = bins[(bins["binning"] == "radius_px") & (bins["method"] == "m")]
    assert radius["n"].sum() == 800  # every galaxy of every blend in exactly one radius bin
    coverage = Table.read(tmp_path / "out" / "coverage.ecsv")
    overall = coverage[(coverage["binning"] == "overall") & (coverage["method"] == "m")][0]
    assert abs(overall["coverage_68"] - 68.3) < 5 and abs(overall["coverage_95"] - 95) < 3
    text = doc.read_text()
    assert text.startswith("# Results\n\nbefore\n\n" + BEGIN) and text.endswith(END + "\n\nafter\n")
    assert "old numbers" not in text and "| set a | m | 40 |" in text
    # Refusals are one line each: an existing output, a document without the markers, a malformed --set.
    assert main(["results", "--set", f"a={tmp_path / 'set_a.csv'}", "-o", str(tmp_path / "out")]) == 2
    doc.write_text("# no block\n")
    with pytest.raises(InputError, match="no generated block"):
        from napari_blendphot.training.results import replace_block

        replace_block(doc.read_text(), "x", doc)
    assert main(["results", "--set", "no-equals-sign", "-o", str(tmp_path / "o2")]) == 2
    assert "expected NAME=RESULTS_TABLE" in capsys.readouterr().err
