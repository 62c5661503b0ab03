"""The metrics reproduce every number of the paper catalogue's reference table (shared/paper/README.md)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_blendphot.metrics.binned import zero_point_of
from napari_blendphot.metrics.photometry import flux_mape, photometry_stats
from napari_blendphot.metrics.selection import GALAXY_PREFIX, detection_counts, select
from napari_blendphot.report.results import read_results

# method, galaxy, N, mean dmag, sigma, outliers %, flux MAPE % -- as printed in shared/paper/README.md
REFERENCE = [
    ("blend2flux", "central", 3844, "+0.015", "0.120", "0.16", "7.57"),
    ("blend2flux", "companion", 4344, "+0.012", "0.127", "0.12", "7.87"),
    ("blend2mask2flux", "central", 3844, "+0.016", "0.111", "0.10", "6.78"),
    ("blend2mask2flux", "companion", 4344, "+0.017", "0.119", "0.02", "7.59"),
    ("sextractor", "central", 3844, "+0.101", "0.542", "12.43", "33.56"),
    ("sextractor", "companion", 4344, "+0.002", "0.710", "16.23", "40.57"),
]


@pytest.fixture(scope="module")
def paper_results(paper_catalog_path):
    return read_results(paper_catalog_path)


def test_paper_catalogue_maps_onto_the_schema(paper_results):
    assert len(paper_results) == 4776
    assert paper_results.meta["methods"] == ["blend2flux", "blend2mask2flux", "sextractor"]
    assert paper_results.meta["zero_points"]["sextractor"] == 25.67
    assert zero_point_of(paper_results, "blend2flux") == 25.96
    for name in ("g1_flux_blend2flux", "g2_flux_blend2mask2flux", "g1_flux_sextractor", "detection_sextractor",
                 "g1_rad", "g2_type", "distance"):
        assert name in paper_results.colnames
    assert not any(name.endswith(("_b2f", "_sex", "_b2m2f")) or "sex_mag" in name for name in paper_results.colnames)
    # Empty SExtractor cells are NaN (undetected), exactly where the detection flag says so.
    assert int(np.isnan(paper_results["g1_flux_sextractor"]).sum()) == 794
    assert int(np.isnan(paper_results["g2_flux_sextractor"]).sum()) == 294


def test_detection_case_counts(paper_results):
    assert detection_counts(paper_results) == {0: 294, 1: 794, 2: 3550, 3: 138}


@pytest.mark.parametrize("method, galaxy, n, mean_dmag, sigma, outliers, mape", REFERENCE)
def test_reference_table(paper_results, method, galaxy, n, mean_dmag, sigma, outliers, mape):
    rows = select(paper_results, galaxy, "detected")
    prefix = GALAXY_PREFIX[galaxy]
    stats = photometry_stats(paper_results[f"{prefix}_flux"][rows], paper_results[f"{prefix}_flux_{method}"][rows],
                             zp_pred=zero_point_of(paper_results, method))
    assert stats.n == n
    assert stats.n_undetected == 0
    assert f"{stats.mean_dmag:+.3f}" == mean_dmag
    assert f"{stats.sigma:.3f}" == sigma
    assert f"{stats.outlier_percent:.2f}" == outliers
    assert f"{stats.flux_mape:.2f}" == mape


@pytest.mark.parametrize("method, expected", [("blend2flux", "8.12"), ("blend2mask2flux", "7.63")])
def test_overall_flux_mape(paper_results, method, expected):
    true = np.concatenate([paper_results["g1_flux"], paper_results["g2_flux"]])
    pred = np.concatenate([paper_results[f"g1_flux_{method}"], paper_results[f"g2_flux_{method}"]])
    assert f"{flux_mape(true, pred):.2f}" == expected


def test_sextractor_zero_point_matches_published_magnitudes(paper_catalog_path, paper_results):
    """The paper's g*_sex_mag columns are our SExtractor magnitudes at zero point 25.67."""
    from napari_blendphot.metrics.photometry import flux_to_mag
    from napari_blendphot.tables import read_table

    raw = read_table(paper_catalog_path)
    published = np.asarray(raw["g1_sex_mag"].filled(np.nan), dtype=float)
    ours = flux_to_mag(paper_results["g1_flux_sextractor"], zero_point_of(paper_results, "sextractor"))
    np.testing.assert_allclose(ours, published, atol=1e-9, equal_nan=True)
