"""Evaluation report, figures and the 'blendphot evaluate' command."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from napari_blendphot.cli import main
from napari_blendphot.deblend.base import DeblendOutput
from napari_blendphot.errors import InputError, OutputExistsError
from napari_blendphot.report import figures
from napari_blendphot.report.evaluate import SUMMARY_COLUMNS, evaluate, summary_table
from napari_blendphot.report.results import build_results_table, read_results, write_results
from napari_blendphot.tables import read_table


def _synthetic_results(n=80, seed=7):
    """A small results table with a mask-making network and a SEP-like method with undetected galaxies."""
    rng = np.random.default_rng(seed)
    mags = rng.uniform(19, 23, (n, 2))
    flux = 10 ** (-0.4 * (mags - 25.96))
    catalog = Table({"id": np.arange(n), "distance": rng.uniform(3, 40, n), "dy": rng.integers(-20, 20, n),
                     "dx": rng.integers(-20, 20, n), "g1_mag": mags[:, 0], "g1_flux": flux[:, 0],
                     "g1_rad": rng.uniform(2, 10, n), "g1_type": rng.choice(["sph", "disk", "sphd", "irr"], n),
                     "g2_mag": mags[:, 1], "g2_flux": flux[:, 1], "g2_type": rng.choice(["sph", "disk"], n)})
    true_masks = np.zeros((n, 2, 128, 128), np.uint8)
    true_masks[:, 0, 54:74, 54:74] = 1
    true_masks[:, 1, 20:40, 20:40] = 1
    pred_masks = np.roll(true_masks, rng.integers(0, 6), axis=-1).astype(np.float32) * 0.9
    net = DeblendOutput("net", flux * rng.normal(1, 0.1, flux.shape), masks=pred_masks)
    sep_flux = flux * rng.normal(1.1, 0.4, flux.shape)
    sep_flux[rng.random(n) < 0.15, 1] = np.nan
    detection = np.where(np.isnan(sep_flux[:, 1]), 0, 2)
    sep = DeblendOutput("sep", sep_flux, extra={"detection": detection})
    return build_results_table(catalog, [net, sep], true_masks=true_masks, provenance={"step": "test", "seed": seed})


@pytest.fixture(scope="module")
def results():
    return _synthetic_results()


def test_summary_table(results):
    summary = summary_table(results)
    assert summary.colnames == list(SUMMARY_COLUMNS)
    # 2 methods x 2 selections x 3 galaxy rows
    assert len(summary) == 12
    row = summary[(summary["method"] == "sep") & (summary["galaxy"] == "companion") & (summary["selection"] == "all")][0]
    undetected = int(np.isnan(results["g2_flux_sep"]).sum())
    assert row["n"] == len(results) and row["n_undetected"] == undetected and undetected > 0
    row = summary[(summary["method"] == "sep") & (summary["galaxy"] == "companion")
                  & (summary["selection"] == "detected")][0]
    assert row["n"] == len(results) - undetected and row["n_undetected"] == 0
    net = summary[(summary["method"] == "net") & (summary["galaxy"] == "both") & (summary["selection"] == "all")][0]
    expected_iou = np.nanmean(np.concatenate([results["g1_iou_net"], results["g2_iou_net"]]))
    assert net["mean_iou"] == pytest.approx(expected_iou)
    assert np.isnan(summary[summary["method"] == "sep"]["mean_iou"]).all()


@pytest.mark.slow  # renders every figure twice (~10-20 s on the shared machine)
def test_evaluate_writes_a_readable_deterministic_report(tmp_path, results):
    write_results(results, tmp_path / "results")
    first = evaluate(tmp_path / "results.fits", tmp_path / "out")
    names = sorted(p.name for p in first.paths)
    assert "fig_iou.png" in names and "fig_by_morphology.png" in names and "summary.csv" in names
    before = {path.name: path.read_bytes() for path in first.paths}
    for path in first.figures.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.name in first.markdown_path.read_text() and path.name in first.html_path.read_text()
    summary = read_table(first.summary_path)
    assert summary.colnames == list(SUMMARY_COLUMNS) and len(summary) == 12
    assert summary.meta["provenance"]["step"] == "evaluate"
    assert summary.meta["results_provenance"]["seed"] == 7
    text = first.markdown_path.read_text()
    assert "| 0 | only central |" in text and "undetected" in text
    # A second run (allowed to replace the files) gives the same bytes, PNGs included.
    second = evaluate(tmp_path / "results.fits", tmp_path / "out", overwrite=True)
    assert {path.name: path.read_bytes() for path in second.paths} == before


def test_evaluate_never_overwrites(tmp_path, results):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("my notes")
    with pytest.raises(OutputExistsError):
        evaluate(results, out)
    assert (out / "report.md").read_text() == "my notes"
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]  # refused before writing anything
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        evaluate(results, tmp_path / "file")


def test_summary_is_row_order_invariant(results):
    shuffled = results[np.random.default_rng(0).permutation(len(results))]
    a, b = summary_table(results), summary_table(shuffled)
    for name in SUMMARY_COLUMNS:
        if a[name].dtype.kind == "f":
            np.testing.assert_allclose(a[name], b[name], rtol=1e-12, atol=1e-12, equal_nan=True)
        else:
            assert list(a[name]) == list(b[name])


def test_evaluate_refuses_bad_truth(results):
    bad = results.copy()
    bad["g2_flux"][3] = np.nan
    with pytest.raises(InputError, match="g2_flux"):
        evaluate(bad, "unused-folder")


def test_figures_do_not_touch_pyplot_state(results):
    import matplotlib

    figure = figures.figure_magnitudes(results, "companion")
    assert len(figure.axes) >= 2
    assert "matplotlib.pyplot" not in __import__("sys").modules or not matplotlib.pyplot.get_fignums()
    with pytest.raises(InputError, match="unknown method"):
        figures.figure_binned_summary(results, methods=["nope"])
    no_iou = results.copy()
    del no_iou["g1_iou_net"], no_iou["g2_iou_net"]
    with pytest.raises(InputError, match="IoU"):
        figures.figure_iou(no_iou)


def test_plot_dmag_histograms_into_given_axes(results):
    from matplotlib.figure import Figure

    figure = Figure()
    ax = figure.add_subplot(1, 2, 2)
    assert figures.plot_dmag_histograms(ax, results, ["net"]) is ax
    assert [t.get_text().split(" ")[0] for t in ax.get_legend().get_texts()] == ["net"]
    assert figures.plot_dmag_histograms(Figure(), results).figure is not figure


@pytest.mark.slow  # the full paper report (~5-12 s on the shared machine)
def test_cli_evaluate_paper_catalogue(tmp_path, paper_catalog_path, capsys):
    out = tmp_path / "paper"
    assert main(["evaluate", str(paper_catalog_path), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SExtractor" in printed and "+0.101" in printed and "33.56" in printed
    assert {"fig_magnitudes_central.png", "fig_binned_summary.png", "fig_by_morphology.png", "report.html"} <= {
        p.name for p in out.iterdir()}
    assert not (out / "fig_iou.png").exists()  # the paper catalogue has no IoU columns
    assert main(["evaluate", str(paper_catalog_path), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing.csv"), "-o", str(out)]) == 2


def test_read_results_paper_and_ours_agree(tmp_path, paper_catalog_path):
    """The paper catalogue written back in our format evaluates to the same summary."""
    paper = read_results(paper_catalog_path)
    write_results(paper, tmp_path / "paper_ours")
    ours = read_results(tmp_path / "paper_ours.csv")
    assert ours.meta["zero_points"] == paper.meta["zero_points"]
    a, b = summary_table(paper), summary_table(ours)
    for name in ("n", "n_undetected", "mean_dmag", "sigma", "flux_mape_percent"):
        np.testing.assert_allclose(np.asarray(a[name], float), np.asarray(b[name], float), rtol=1e-9)


def test_evaluate_minimal_table_with_a_method_that_detects_nothing(tmp_path):
    """Regression: Figure 7 crashed (empty boxplot) when a method detected no galaxy."""
    import warnings

    rng = np.random.default_rng(1)
    flux = 10 ** (-0.4 * (rng.uniform(19, 23, (30, 2)) - 25.96))
    catalog = Table({"g1_flux": flux[:, 0], "g2_flux": flux[:, 1]})  # no distance, types or detection flag
    table = build_results_table(catalog, [DeblendOutput("blind", np.full((30, 2), np.nan)),
                                          DeblendOutput("exact", flux * 1.05)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. log-scaling an axis with no positive scatter
        report = evaluate(table, tmp_path / "out")
    assert set(report.summary["selection"]) == {"all"}
    blind = report.summary[report.summary["method"] == "blind"]
    assert list(blind["n_undetected"]) == [30, 30, 60] and np.isnan(blind["sigma"]).all()
    exact = report.summary[report.summary["method"] == "exact"]
    np.testing.assert_allclose(exact["flux_mape_percent"], 5.0)
    assert "fig_by_morphology" not in report.figures and "fig_iou" not in report.figures


def test_the_markdown_tables_of_docs_results_come_from_the_summary(paper_catalog_path):
    """docs/results.md is made by the shipped statistics: the paper's rows it shows, reproduced here."""
    from napari_blendphot.report.evaluate import detection_case_summary, markdown_tables
    from napari_blendphot.report.results import read_results

    table = read_results(paper_catalog_path)
    text = markdown_tables(table)
    for line in ("| blend2flux | central (SEP-detected) | 3844 | 3844 | +0.015 | 0.120 | 0.16% | 7.57% |  |",
                 "| blend2mask2flux | companion (SEP-detected) | 4344 | 4344 | +0.017 | 0.119 | 0.02% | 7.59% |  |",
                 "| SExtractor | central (SEP-detected) | 3844 | 3844 | +0.101 | 0.542 | 12.43% | 33.56% |  |",
                 "| SExtractor | companion (SEP-detected) | 4344 | 4344 | +0.002 | 0.710 | 16.23% | 40.57% |  |"):
        assert line in text
    cases = detection_case_summary(table, "detection_sextractor")
    assert sorted(set(cases["case"].tolist())) == [0, 1, 2, 3]
    assert dict(zip(cases["case"][cases["method"] == "sextractor"].tolist(),
                    cases["n_blends"][cases["method"] == "sextractor"].tolist())) == {0: 294, 1: 794, 2: 3550, 3: 138}
