"""The results table: building, chunking, CSV/FITS round trips, schema checks."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from napari_blendphot.deblend.base import DeblendOutput
from napari_blendphot.errors import InputError, OutputExistsError
from napari_blendphot.report.results import (
    build_results_table,
    concatenate_results,
    method_label,
    methods_in,
    read_results,
    write_results,
)


def _catalog(n=5):
    rng = np.random.default_rng(0)
    return Table({"id": np.arange(n), "distance": rng.uniform(3, 30, n), "dy": rng.integers(-9, 9, n),
                  "dx": rng.integers(-9, 9, n), "g1_flux": rng.uniform(10, 100, n), "g2_flux": rng.uniform(10, 100, n),
                  "g1_rad": rng.uniform(2, 8, n), "g1_type": ["disk"] * n, "g2_type": ["sph"] * n})


def _masks(n, seed):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 2, 128, 128)) > 0.5).astype(np.float32)


def test_build_columns_meta_and_iou():
    catalog = _catalog()
    true_masks = _masks(5, 1).astype(np.uint8)
    net = DeblendOutput("net", np.arange(10.0).reshape(5, 2) + 1, masks=true_masks.astype(np.float32),
                        metadata={"label": "My net"})
    sep = DeblendOutput("sep", np.full((5, 2), np.nan), extra={"detection": np.array([0, 1, 2, 3, 2], np.int8)})
    table = build_results_table(catalog, [net, sep], true_masks=true_masks, zero_points={"sep": 25.5},
                                provenance={"step": "predict"})
    assert table.colnames[:9] == catalog.colnames
    assert {"g1_flux_net", "g2_flux_net", "g1_iou_net", "g2_iou_net", "g1_flux_sep", "g2_flux_sep",
            "detection_sep"} <= set(table.colnames)
    assert "g1_iou_sep" not in table.colnames
    np.testing.assert_array_equal(table["g2_flux_net"], [2, 4, 6, 8, 10])
    np.testing.assert_array_equal(table["g1_iou_net"], 1.0)  # identical masks
    assert table.meta["methods"] == ["net", "sep"]
    assert table.meta["zero_points"] == {"net": 25.96, "sep": 25.5}
    assert table.meta["provenance"] == {"step": "predict"}
    assert methods_in(table) == ["net", "sep"]
    assert method_label(table, "net") == "My net" and method_label(table, "sep") == "SEP"
    assert "g1_flux_net" not in catalog.colnames  # the input catalogue is not modified


def test_dict_outputs_and_chunks_equal_whole():
    catalog = _catalog(6)
    fluxes = np.random.default_rng(3).uniform(5, 50, (6, 2))
    whole = build_results_table(catalog, {"m": DeblendOutput("ignored", fluxes)})
    chunks = [build_results_table(catalog[s], {"m": DeblendOutput("m", fluxes[s])}) for s in (slice(0, 4), slice(4, 6))]
    joined = concatenate_results(chunks)
    assert joined.meta == whole.meta
    for name in whole.colnames:
        np.testing.assert_array_equal(joined[name], whole[name])


def test_concatenate_refuses_mismatched_chunks():
    catalog = _catalog(2)
    a = build_results_table(catalog, {"m": DeblendOutput("m", np.ones((2, 2)))})
    b = build_results_table(catalog, {"n": DeblendOutput("n", np.ones((2, 2)))})
    with pytest.raises(InputError, match="methods"):
        concatenate_results([a, b])


@pytest.mark.parametrize("suffix", [".csv", ".fits"])
def test_write_read_round_trip(tmp_path, suffix):
    catalog = _catalog()
    fluxes = np.array([[1.0, np.nan], [2, 3], [4, 5], [np.nan, np.nan], [6, 7]])
    detection = np.array([-1, 0, 1, 2, 3], np.int8)  # int8 is what SEP gives; astropy's FITS writer mangles it
    table = build_results_table(catalog, [DeblendOutput("sep", fluxes, extra={"detection": detection})],
                                zero_points={"sep": 25.67}, provenance={"step": "predict", "seed": 3})
    written = write_results(table, tmp_path / "results")
    assert [p.name for p in written] == ["results.csv", "results.fits"]
    back = read_results(tmp_path / f"results{suffix}")
    assert back.meta["methods"] == ["sep"]
    assert back.meta["zero_points"] == {"sep": 25.67}
    assert back.meta["provenance"]["seed"] == 3
    np.testing.assert_array_equal(back["g2_flux_sep"], fluxes[:, 1])  # NaN kept as NaN
    np.testing.assert_array_equal(back["detection_sep"], detection)
    assert table["detection_sep"].dtype == np.int8  # the caller's table is left as it was
    np.testing.assert_allclose(back["g1_flux"], catalog["g1_flux"], rtol=1e-12)


def test_write_never_overwrites(tmp_path):
    table = build_results_table(_catalog(), [DeblendOutput("m", np.ones((5, 2)))])
    write_results(table, tmp_path / "r.csv")
    with pytest.raises(OutputExistsError):
        write_results(table, tmp_path / "r.csv")
    write_results(table, tmp_path / "r", overwrite=True)


def test_bad_outputs_are_refused():
    catalog = _catalog()
    with pytest.raises(InputError, match="shape"):
        build_results_table(catalog, [DeblendOutput("m", np.ones((4, 2)))])
    with pytest.raises(InputError, match="repeat"):
        build_results_table(catalog, [DeblendOutput("m", np.ones((5, 2))), DeblendOutput("m", np.ones((5, 2)))])
    with pytest.raises(InputError, match="invalid method name"):
        build_results_table(catalog, {"a b": DeblendOutput("m", np.ones((5, 2)))})
    with pytest.raises(InputError, match="unknown method"):
        build_results_table(catalog, [DeblendOutput("m", np.ones((5, 2)))], zero_points={"x": 25.0})
    with pytest.raises(InputError, match="extra array"):
        build_results_table(catalog, [DeblendOutput("m", np.ones((5, 2)), extra={"k": np.ones(3)})])
    with pytest.raises(InputError, match="true masks"):
        build_results_table(catalog, [DeblendOutput("m", np.ones((5, 2)))], true_masks=np.zeros((5, 128, 128)))


def test_read_refuses_bad_truth_and_missing_columns(tmp_path):
    table = build_results_table(_catalog(), [DeblendOutput("m", np.ones((5, 2)))])
    table["g1_flux"][2] = -1.0
    write_results(table, tmp_path / "bad")
    with pytest.raises(InputError, match="g1_flux.*not positive"):
        read_results(tmp_path / "bad.csv")
    table = build_results_table(_catalog(), [DeblendOutput("m", np.ones((5, 2)))])
    del table["g2_flux"]
    write_results(table, tmp_path / "notruth")
    with pytest.raises(InputError, match="g2_flux"):
        read_results(tmp_path / "notruth.fits")
    assert len(read_results(tmp_path / "notruth.fits", require_truth=False)) == 5
    Table({"id": [1, 2], "g1_flux": [1.0, 2.0]}).write(tmp_path / "plain.csv")
    with pytest.raises(InputError, match="no method columns"):
        read_results(tmp_path / "plain.csv")
    with pytest.raises(InputError, match="not found"):
        read_results(tmp_path / "missing.csv")


def test_methods_in_without_meta_ignores_sep_flux_error_columns():
    """SEP's extra g1_flux_err/g2_flux_err become g1_flux_err_sep columns, which are not a method."""
    fluxes = np.ones((5, 2))
    output = DeblendOutput("sep", fluxes, extra={"g1_flux_err": np.ones(5), "g2_flux_err": np.ones(5)})
    table = build_results_table(_catalog(), [output])
    assert "g1_flux_err_sep" in table.colnames
    table.meta.pop("methods")
    assert methods_in(table) == ["sep"]
