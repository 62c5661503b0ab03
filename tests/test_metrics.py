"""Unit tests of the metrics on small hand-computed arrays."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from napari_blendphot.errors import InputError
from napari_blendphot.metrics import binned
from napari_blendphot.metrics.masks import iou, mean_iou
from napari_blendphot.metrics.photometry import (
    bias,
    delta_mag,
    flux_mape,
    mag_mape,
    nmad,
    outlier_fraction,
    photometry_stats,
    sigma,
)
from napari_blendphot.metrics.selection import available_selections, detection_counts, reference_detection_column, select


def test_delta_mag_per_method_zero_points():
    # a flux 10x the truth is 2.5 mag brighter; a different zero point shifts the magnitude by its difference
    np.testing.assert_allclose(delta_mag([10.0, 10.0], [100.0, 10.0]), [-2.5, 0.0])
    np.testing.assert_allclose(delta_mag([10.0], [10.0], zp_true=25.96, zp_pred=25.67), [-0.29])
    assert np.isnan(delta_mag([10.0, 10.0], [np.nan, -1.0])).all()


def test_simple_statistics_by_hand():
    dmag = np.array([-1.0, 0.0, 0.0, 0.5, 2.0, np.nan])
    assert bias(dmag) == pytest.approx(0.3)
    assert bias(dmag, "median") == 0.0
    # deviations from 0.3: -1.3 -0.3 -0.3 0.2 1.7 -> squares sum 4.2+... computed exactly:
    assert sigma(dmag) == pytest.approx(np.sqrt((1.69 + 0.09 + 0.09 + 0.04 + 2.89) / 5))
    assert sigma(dmag, ddof=1) == pytest.approx(np.sqrt((1.69 + 0.09 + 0.09 + 0.04 + 2.89) / 4))
    # |x - median| = 1, 0, 0, 0.5, 2 -> median 0.5
    assert nmad(dmag) == pytest.approx(1.4826 * 0.5)
    assert outlier_fraction(dmag) == pytest.approx(2 / 5)  # -1 and 2; 0.75 itself is not an outlier
    assert outlier_fraction([0.75, -0.75, 0.76]) == pytest.approx(1 / 3)
    with pytest.raises(InputError, match="statistic"):
        bias(dmag, "mode")
    assert np.isnan(bias([np.nan])) and np.isnan(sigma([])) and np.isnan(nmad([])) and np.isnan(outlier_fraction([]))


def test_mape_by_hand():
    assert flux_mape([10.0, 20.0, 40.0], [11.0, 15.0, np.nan]) == pytest.approx(100 * (0.1 + 0.25) / 2)
    assert mag_mape([20.0, 25.0], [21.0, 25.0]) == pytest.approx(100 * (0.05 + 0.0) / 2)
    assert np.isnan(flux_mape([1.0], [np.nan]))


def test_photometry_stats_counts_undetected():
    true = np.array([100.0, 100.0, 100.0, 100.0])
    pred = np.array([100.0, 10 ** 0.4 * 100, np.nan, 0.0])  # exact, 1 mag bright, undetected twice
    stats = photometry_stats(true, pred)
    assert (stats.n, stats.n_detected, stats.n_undetected) == (4, 2, 2)
    assert stats.mean_dmag == pytest.approx(-0.5)
    assert stats.sigma == pytest.approx(0.5)
    assert stats.outlier_fraction == pytest.approx(0.5) and stats.outlier_percent == pytest.approx(50)
    assert stats.flux_mape == pytest.approx(100 * (10 ** 0.4 - 1) / 2)
    assert stats.as_dict()["n_undetected"] == 2


@pytest.mark.parametrize("bad", [0.0, -3.0, np.nan, np.inf])
def test_photometry_stats_refuses_bad_true_fluxes(bad):
    with pytest.raises(InputError, match="true flux"):
        photometry_stats([1.0, bad], [1.0, 1.0])


def test_photometry_stats_refuses_shape_mismatch():
    with pytest.raises(InputError, match="3 predicted fluxes for 2"):
        photometry_stats([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(InputError, match="1-D"):
        photometry_stats(np.ones((2, 2)), np.ones((2, 2)))


def test_iou_by_hand_and_empty_union():
    pred = np.zeros((3, 4, 4), np.float32)
    true = np.zeros((3, 4, 4), np.uint8)
    pred[0, :2, :2] = 0.9   # 4 pixels
    true[0, :2, :] = 1      # 8 pixels, 4 shared -> 4 / 8
    pred[1, 0, 0] = 0.5     # exactly 0.5 is not "on"
    true[1, 0, 0] = 1       # -> 0 / 1
    values = iou(pred, true)
    assert values[0] == pytest.approx(0.5)
    assert values[1] == 0.0
    assert np.isnan(values[2])  # both empty
    assert mean_iou(values) == pytest.approx(0.25)
    assert iou(pred[:, None].repeat(2, 1), true[:, None].repeat(2, 1)).shape == (3, 2)
    with pytest.raises(InputError, match="differ"):
        iou(pred, true[:2])


def _detections_table():
    return Table({"detection_sep": [0, 1, 2, 3, 2], "g1_flux": [1.0] * 5, "g2_flux": [2.0] * 5,
                  "g1_flux_m": [1.0, 1.0, np.nan, 1.0, 1.0], "g2_flux_m": [2.0] * 5})


def test_paper_selection():
    table = _detections_table()
    assert reference_detection_column(table) == "detection_sep"
    np.testing.assert_array_equal(select(table, "central"), [True, False, True, False, True])
    np.testing.assert_array_equal(select(table, "companion"), [False, True, True, False, True])
    assert select(table, "central", "all").all()
    assert detection_counts(table) == {0: 1, 1: 1, 2: 2, 3: 1}
    table["detection_sextractor"] = [2, 2, 2, 2, 2]
    assert reference_detection_column(table) == "detection_sextractor"  # the paper's flag wins
    assert select(table, "companion", detection_column="detection_sep").sum() == 3
    with pytest.raises(InputError, match="unknown galaxy"):
        select(table, "third")
    with pytest.raises(InputError, match="unknown selection"):
        select(table, "central", "some")


def test_selection_without_detection_column():
    table = Table({"g1_flux": [1.0], "g2_flux": [1.0]})
    assert available_selections(table) == ("all",)
    with pytest.raises(InputError, match="needs a detection column"):
        select(table, "central")
    assert detection_counts(table) == {}


def test_galaxy_measurements_and_pair_dmag():
    table = _detections_table()
    table["distance"] = [4.0, 8.0, 12.0, 16.0, 20.0]
    table["g1_rad"] = [2.0] * 5
    table["g1_type"] = ["sph", "disk", "irr", "sph", "sphd"]
    table["g2_type"] = ["disk"] * 5
    data = binned.galaxy_measurements(table, "m", "both", "all")
    assert len(data) == 10
    central = data[data["galaxy"] == "central"]
    # g1 is 2.5 log10(2) mag fainter than g2
    np.testing.assert_allclose(central["pair_dmag"], 2.5 * np.log10(2))
    np.testing.assert_allclose(central["distance_over_radius"], [2, 4, 6, 8, 10])
    assert list(central["detected"]) == [True, True, False, True, True]
    assert np.isnan(central["dmag"][2]) and central["dmag"][0] == 0
    with pytest.raises(InputError, match="no column 'g1_flux_x'"):
        binned.galaxy_measurements(table, "x", "central", "all")


def test_binned_stats_by_hand():
    x = np.array([-1.5, -1.0, 0.1, 0.2, 2.0, 5.0])
    dmag = np.array([0.1, 0.3, -0.2, np.nan, 1.0, 9.0])
    stats = binned.binned_stats(x, dmag, [-2, 0, 2], undetected=np.isnan(dmag))
    assert list(stats["n"]) == [2, 3]          # 2.0 falls in the last bin (closed); 5.0 is outside
    assert list(stats["n_undetected"]) == [0, 1]
    np.testing.assert_allclose(stats["mean"], [0.2, 0.4])
    np.testing.assert_allclose(stats["median"], [0.2, 0.4])
    np.testing.assert_allclose(stats["outlier_fraction"], [0.0, 0.5])
    with pytest.raises(InputError, match="increasing"):
        binned.binned_stats(x, dmag, [1, 0])


def test_pair_dmag_edges():
    np.testing.assert_allclose(binned.pair_dmag_edges([-1.9, 1.9]), np.linspace(-2, 2, 7))
    np.testing.assert_allclose(binned.pair_dmag_edges([-3.0, 0.0, 3.0]), np.linspace(-3, 3, 7))


def test_binned_on_paper_catalogue(paper_catalog_path):
    """Figure 8's message: SExtractor's scatter grows with the galaxy's relative faintness, the networks stay ~0.1."""
    from napari_blendphot.report.results import read_results

    table = read_results(paper_catalog_path)
    sex = binned.binned_by_pair_dmag(table, "sextractor")
    net = binned.binned_by_pair_dmag(table, "blend2mask2flux")
    assert len(sex) == 6 and int(np.sum(sex["n"])) == 3844 + 4344
    assert sex["sigma"][-1] > 1.5 * sex["sigma"][0]
    assert np.all(np.asarray(net["sigma"]) < 0.2) and np.all(np.asarray(sex["sigma"]) > 0.3)
    morph = binned.binned_by_morphology(table, "blend2flux")
    assert sorted(set(morph["type"])) == ["disk", "irr", "sph", "sphd"]
    assert int(np.sum(morph["n"])) == 3844 + 4344
    pairs = binned.stats_by_morphology_pair(table, "blend2flux", "central")
    assert int(np.sum(pairs["n"])) == 3844 and len(pairs) == 16
    dist = binned.binned_by_distance(table, "sextractor")
    assert int(np.sum(dist["n"])) == 3844 + 4344
    # SExtractor fails most at small separations
    assert dist["outlier_fraction"][0] > dist["outlier_fraction"][-1]


def test_detection_counts_with_sep_nothing_assigned_case():
    table = Table({"detection_sep": [-1, 2, 2, 0]})
    assert detection_counts(table) == {-1: 1, 0: 1, 1: 0, 2: 2, 3: 0}
    assert select(table, "central").tolist() == [False, True, True, True]
    with pytest.raises(InputError, match="unknown detection case"):
        detection_counts(Table({"detection_sep": [0, 7]}))
