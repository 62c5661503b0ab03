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


def _sized_table(radii_low, radii_high, n_blends=600, n_galaxies=60, seed=0):
    """Method m's fractional error grows with radius (2% + 0.5% per pixel), errors stated as 2% only."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, n_galaxies, (n_blends, 2))
    radius = rng.uniform(radii_low, radii_high, n_galaxies)
    flux = 10 ** rng.uniform(1, 2.5, n_galaxies)
    table = Table()
    table["id"] = np.arange(n_blends)
    table["distance"] = rng.uniform(3, 40, n_blends)
    for slot, prefix in enumerate(("g1", "g2")):
        g = ids[:, slot]
        table[f"{prefix}_id"] = g + 1000 * seed  # the two sets' galaxies are different galaxies
        table[f"{prefix}_flux"] = flux[g]
        table[f"{prefix}_rad"] = radius[g]
        table[f"{prefix}_mag"] = 25.96 - 2.5 * np.log10(flux[g])
        table[f"{prefix}_flux_sep"] = flux[g] * (1 + rng.normal(0, 0.25, n_blends))
        scatter = 0.02 + 0.005 * radius[g]
        table[f"{prefix}_flux_m"] = flux[g] * (1 + scatter * rng.normal(0, 1, n_blends))
        table[f"{prefix}_flux_err_m"] = 0.02 * flux[g]
    table.meta["methods"] = ["sep", "m"]
    return table


def test_match_radius_reweights_a_set_to_the_reference_sizes(tmp_path):
    from napari_blendphot.report.results import write_results
    from napari_blendphot.training.cli import main

    # Same per-size accuracy, different sizes: the big-galaxy set looks worse until sizes are matched.
    # Within a bin both sets spread alike (uniform radii), so matching the bins' shares matches the sizes.
    # (400 galaxies each, so that every radius x magnitude cell of the reference has galaxies of the other set.)
    write_results(_sized_table(1, 30, 1500, 400, seed=1), tmp_path / "small")  # every radius bin, half <= 15 px
    write_results(_sized_table(10, 30, 1500, 400, seed=2), tmp_path / "big")
    assert main(["results", "--set", f"big={tmp_path / 'big.fits'}", "--set", f"small={tmp_path / 'small.fits'}",
                 "-o", str(tmp_path / "out"), "--bootstrap", "200", "--match-radius", "big"]) == 0
    matched = Table.read(tmp_path / "out" / "matched.ecsv")
    # The settings are the provenance's parameters (they were nested one level too deep before round 6).
    parameters = matched.meta["provenance"]["parameters"]
    assert parameters["match_radius"] == "big" and parameters["bootstrap_resamples"] == 200
    m = matched[matched["method"] == "m"][0]
    assert m["set"] == "small" and m["reference"] == "big"
    assert m["flux_mape_pct"] < 0.9 * m["reference_mape_pct"]  # raw: the small set looks better
    assert abs(m["matched_mape_pct"] - m["reference_mape_pct"]) < 0.1 * m["reference_mape_pct"]
    assert m["matched_low"] < m["matched_mape_pct"] < m["matched_high"]
    # Crossing the radius bins with magnitude bins changes little here: the error does not depend on flux.
    assert abs(m["matched_rm_mape_pct"] - m["reference_mape_pct"]) < 0.15 * m["reference_mape_pct"]
    # Errors that ignore size over-cover small galaxies: matched coverage falls towards the reference's.
    assert m["coverage_68"] > m["matched_coverage_68"]
    assert abs(m["matched_coverage_68"] - m["reference_coverage_68"]) < 6
    assert "reweighted to the galaxy radii of the big" in (tmp_path / "out" / "results.md").read_text()


def test_match_radius_refuses_an_unknown_set_and_leaves_empty_bins_nan(tmp_path, capsys):
    from napari_blendphot.report.results import write_results
    from napari_blendphot.training.cli import main
    from napari_blendphot.training.results import matched_rows

    write_results(_sized_table(1, 9, seed=1), tmp_path / "small")
    write_results(_sized_table(25, 40, seed=2), tmp_path / "big")
    assert main(["results", "--set", f"a={tmp_path / 'small.csv'}", "-o", str(tmp_path / "o"),
                 "--match-radius", "b"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--match-radius b" in err and "is not one of the --set names" in err and "\n" not in err
    assert not (tmp_path / "o").exists()
    tables = {"big": Table.read(tmp_path / "big.fits"), "small": Table.read(tmp_path / "small.fits")}
    rows = matched_rows(tables, "big", n_resamples=20)
    # The small set has no galaxy in the reference's > 21 px bin: nothing to match with.
    assert rows and all(np.isnan(r["matched_mape_pct"]) for r in rows)


def test_size_balanced_mape_weights_every_radius_bin_alike():
    from napari_blendphot.training.results import size_balanced_mape

    radius = np.array([2.0, 3.0, 4.0, 30.0])  # three small galaxies, one large
    ape = np.array([1.0, 1.0, 1.0, 9.0])
    assert size_balanced_mape(radius, ape) == pytest.approx(5.0)  # bins <= 5 (1%) and > 21 (9%), not 3%
    assert size_balanced_mape(radius, np.array([1.0, np.nan, 1.0, np.nan])) == pytest.approx(1.0)
    assert np.isnan(size_balanced_mape(None, ape))


def test_coverage_intervals_resample_galaxies_not_blends():
    """The coverage interval is as wide as the galaxies' count allows, not the blends'.

    Each galaxy's error is the same in all its blends (a galaxy the method
    measures badly is badly measured every time), so 40 galaxies in 400 blends
    pin the coverage only to ~ +-15 points; a blend bootstrap would say +-3.
    """
    from napari_blendphot.training.results import coverage_indicators, set_coverage

    rng = np.random.default_rng(3)
    n_blends, n_galaxies = 400, 40
    ids = rng.integers(0, n_galaxies, (n_blends, 2))
    flux = 10 ** rng.uniform(1, 2.5, n_galaxies)
    offset = rng.normal(0, 1, n_galaxies)  # per-galaxy error in units of the stated error
    table = Table()
    table["id"] = np.arange(n_blends)
    for slot, prefix in enumerate(("g1", "g2")):
        g = ids[:, slot]
        table[f"{prefix}_id"] = g
        table[f"{prefix}_flux"] = flux[g]
        table[f"{prefix}_flux_m"] = flux[g] * (1 + 0.05 * offset[g])
        table[f"{prefix}_flux_err_m"] = 0.05 * flux[g]
    table[3]["g1_flux_err_m"] = np.nan  # no error: left out, as coverage_arrays does
    table.meta["methods"] = ["m"]
    inside = coverage_indicators(table, "m")
    assert np.isnan(inside["inside_68"][3]) and np.isfinite(inside["inside_68"]).sum() == 2 * n_blends - 1
    rows = set_coverage(table, "s", n_resamples=300, seed=0)
    overall = next(r for r in rows if r["binning"] == "overall")
    assert overall["coverage_68"] == pytest.approx(100 * np.nanmean(inside["inside_68"]))
    assert overall["coverage_68_low"] < overall["coverage_68"] < overall["coverage_68_high"]
    assert overall["coverage_68_high"] - overall["coverage_68_low"] > 15
    assert overall["coverage_95_low"] <= overall["coverage_95"] <= overall["coverage_95_high"]
    per_bin = [r for r in rows if r["binning"] == "pair_dmag" and r["n"] > 0]
    assert per_bin and all(r["coverage_68_low"] <= r["coverage_68"] <= r["coverage_68_high"] for r in per_bin)
    for r in per_bin:  # the interval is of the bin's own galaxies (the bins of coverage(), the last closed)
        last = r["high"] == max(b["high"] for b in per_bin)
        in_bin = (inside["pair_dmag"] >= r["low"]) & ((inside["pair_dmag"] <= r["high"]) if last
                                                     else (inside["pair_dmag"] < r["high"]))
        assert r["coverage_68"] == pytest.approx(100 * np.nanmean(inside["inside_68"][in_bin]))
    # a bin holds fewer galaxies than the whole set: its interval is wider
    assert min(r["coverage_68_high"] - r["coverage_68_low"] for r in per_bin) > \
        overall["coverage_68_high"] - overall["coverage_68_low"]
    # seeded: the same interval again
    again = next(r for r in set_coverage(table, "s", n_resamples=300, seed=0) if r["binning"] == "overall")
    assert again["coverage_68_low"] == overall["coverage_68_low"]


def test_bins_tell_a_bias_from_scatter():
    """A method that over-estimates galaxies above 21 px by 10% and scatters the others evenly: the
    radius bins' median predicted / true flux show the bias where the MAPE alone cannot."""
    from napari_blendphot.training.results import markdown, set_bins

    rng = np.random.default_rng(5)
    n = 3000
    table = Table()
    table["id"] = np.arange(n)
    table["distance"] = rng.uniform(3, 40, n)
    for prefix in ("g1", "g2"):
        radius = rng.choice([5.0, 15.0, 30.0], n)
        flux = 10 ** rng.uniform(1, 2.5, n)
        table[f"{prefix}_id"] = rng.integers(0, 100, n)
        table[f"{prefix}_flux"], table[f"{prefix}_rad"] = flux, radius
        table[f"{prefix}_flux_m"] = np.where(radius > 21, 1.10 * flux,
                                             flux * (1 + 0.10 * rng.choice([-1.0, 1.0], n)))
    table[0]["g1_flux_m"] = np.nan  # not measured: out of the MAPE and of the median alike
    table.meta["methods"] = ["m"]
    rows = {(r["binning"], r["high"]): r for r in set_bins(table, "s")}
    large, small = rows[("radius_px", np.inf)], rows[("radius_px", 10.0)]
    assert large["flux_mape_pct"] == pytest.approx(10.0) and small["flux_mape_pct"] == pytest.approx(10.0)
    assert large["median_ratio"] == pytest.approx(1.10) and 0.9 <= small["median_ratio"] <= 1.1
    text = markdown([], list(rows.values()), [], {"s": "s.csv"}, 10, 0)
    assert "Median predicted / true flux per bin of true half-light radius" in text and "| s | m |" in text
    assert "1.100" in text
