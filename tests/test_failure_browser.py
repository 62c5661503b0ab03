"""Failure browser model (no Qt): long table, sort/filter vs numpy, dataset link, exports."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from napari_blendphot.errors import InputError, OutputExistsError
from napari_blendphot.testing.stand_ins import make_results
from napari_blendphot.app.failures import FailureModel


@pytest.fixture(scope="module")
def toy_results(tmp_path_factory):
    return make_results(tmp_path_factory.mktemp("failures"))


@pytest.fixture(scope="module")
def paper_model(paper_catalog_path):
    return FailureModel(paper_catalog_path)


def test_paper_catalogue_long_table(paper_model, paper_catalog_path):
    from napari_blendphot.tables import read_table

    raw = read_table(paper_catalog_path)
    model = paper_model
    assert model.methods == ["blend2flux", "blend2mask2flux", "sextractor"]
    assert len(model) == 3 * 2 * len(raw)
    assert not model.has_images
    # dmag of one row recomputed by hand (SExtractor at zero point 25.67)
    i = 10
    row = np.flatnonzero((model.columns["method"] == "sextractor") & (model.columns["galaxy"] == "companion")
                         & (model.columns["row"] == i))[0]
    expected = (25.67 - 2.5 * np.log10(raw["g2_flux_sex"][i])) - (25.96 - 2.5 * np.log10(raw["g2_flux"][i]))
    assert model.columns["dmag"][row] == pytest.approx(expected, abs=1e-9)
    assert model.columns["morph_pair"][row] == f"{raw['g1_type'][i]}-{raw['g2_type'][i]}"
    assert model.columns["detection"][row] == raw["detection"][i]
    with pytest.raises(InputError, match="no blend images"):
        model.blend(0)
    with pytest.raises(InputError, match="no blend images"):
        model.montage("unused.png")


def test_sort_and_filter_match_numpy(paper_model):
    model = paper_model
    c = model.columns
    model.set_filter(methods=["sextractor", "blend2flux"], galaxies=["central"], detections=[2],
                     abs_dmag=(0.2, None), distance=(5, 30), pair_dmag=(-1.0, 1.5))
    keep = (np.isin(c["method"], ["sextractor", "blend2flux"]) & (c["galaxy"] == "central") & (c["detection"] == 2)
            & (c["abs_dmag"] >= 0.2) & (c["distance"] >= 5) & (c["distance"] <= 30)
            & (c["pair_dmag"] >= -1.0) & (c["pair_dmag"] <= 1.5))
    assert set(model.view.tolist()) == set(np.flatnonzero(keep).tolist())
    model.sort("abs_dmag", descending=True)
    shown = c["abs_dmag"][model.view]
    assert np.all(np.diff(shown) <= 0)
    assert shown[0] == np.max(c["abs_dmag"][keep])
    model.sort("distance")
    assert np.all(np.diff(c["distance"][model.view]) >= 0)
    model.set_filter(morph_pairs=["sph-disk"])
    assert set(model.view.tolist()) == set(np.flatnonzero(c["morph_pair"] == "sph-disk").tolist())
    model.sort("method", descending=True)
    methods = c["method"][model.view].tolist()
    assert methods == sorted(methods, reverse=True)
    # NaN (undetected SExtractor) sorts last both ways
    model.set_filter()
    for descending in (False, True):
        model.sort("dmag", descending=descending)
        dmag = c["dmag"][model.view]
        n_nan = int(np.isnan(c["dmag"]).sum())
        assert n_nan > 0 and np.isnan(dmag[-n_nan:]).all() and not np.isnan(dmag[:-n_nan]).any()


def test_current_row_navigation_and_kept_across_sort(paper_model):
    model = paper_model
    model.set_filter(methods=["blend2flux"])
    model.sort("abs_dmag", descending=True)
    seen = []
    model.current_changed.connect(seen.append)
    model.select(0)
    worst = model.current_row
    assert model.next() and model.current == 1
    assert model.previous() and model.current == 0
    assert not model.previous()
    model.sort("abs_dmag", descending=False)
    assert model.current_row == worst and model.current == len(model.view) - 1
    model.set_filter(methods=["sextractor"])
    assert model.current == -1 and model.current_row is None
    model.current_changed.disconnect(seen.append)
    assert seen[:3] == [0, 1, 0]


def test_toy_results_with_dataset(toy_results, tmp_path):
    results_path, dataset = toy_results
    model = FailureModel(results_path, dataset.path)
    assert model.has_images and model.methods == ["sep", "net"]
    assert not np.isnan(model.columns["iou"][model.columns["method"] == "sep"]).all()
    model.sort("abs_dmag", descending=True)
    model.select(0)
    record = model.record()
    blend = model.blend(record["row"])
    position = np.flatnonzero(np.asarray(dataset.catalog["id"]) == record["blend_id"])[0]
    np.testing.assert_array_equal(blend.blend, dataset.blends[position])
    state = model.blend_state(record["row"])
    assert state.origin == "failure-browser" and state.name == f"blend {record['blend_id']}"
    np.testing.assert_array_equal(state.image, dataset.blends[position])
    numbers = model.blend_numbers(record["row"])
    assert {(r["method"], r["galaxy"]) for r in numbers} == {(m, g) for m in ("sep", "net")
                                                             for g in ("central", "companion")}


def test_results_not_in_dataset(toy_results, tmp_path):
    from napari_blendphot.blend.dataset import write_blend_dataset
    from napari_blendphot.sample.toy import make_toy_sample

    results_path, _ = toy_results
    other = write_blend_dataset(make_toy_sample(30, seed=99), tmp_path / "other", n=5, test_fraction=0.0, seed=1)
    before = sorted(p.name for p in other.iterdir())
    with pytest.raises(InputError, match="not in the dataset"):
        FailureModel(results_path, other)
    assert sorted(p.name for p in other.iterdir()) == before


def test_csv_export(toy_results, tmp_path):
    from napari_blendphot.tables import read_table

    results_path, dataset = toy_results
    model = FailureModel(results_path, dataset)
    model.set_filter(methods=["sep"], abs_dmag=(0.05, None))
    model.sort("abs_dmag", descending=True)
    out = model.export_csv(tmp_path / "worst.csv")
    back = read_table(out)
    assert len(back) == len(model.view)
    np.testing.assert_allclose(back["abs_dmag"], model.columns["abs_dmag"][model.view])
    np.testing.assert_array_equal(back["blend_id"], model.columns["blend_id"][model.view])
    assert set(np.asarray(back["method"]).astype(str)) == {"sep"}
    assert back.meta["provenance"]["parameters"]["filter"]["methods"] == ["sep"]
    with pytest.raises(OutputExistsError):
        model.export_csv(out)


def test_montage_png(toy_results, tmp_path):
    from PIL import Image

    results_path, dataset = toy_results
    model = FailureModel(results_path, dataset)
    model.sort("abs_dmag", descending=True)
    out = model.montage(tmp_path / "montage.png", limit=6)
    pixels = np.asarray(Image.open(out).convert("L"), float)
    assert pixels.shape[0] > 200 and pixels.std() > 20  # images, not a blank page
    assert len(model.shown_blends(6)) == 6
    with pytest.raises(OutputExistsError):
        model.montage(out)


def test_scatter_points(toy_results):
    results_path, dataset = toy_results
    model = FailureModel(results_path, dataset)
    points = model.scatter_points("distance")
    x, dmag, rows = points["net"]
    np.testing.assert_array_equal(x, model.columns["distance"][rows])
    np.testing.assert_array_equal(dmag, model.columns["dmag"][rows])
    assert np.all(model.columns["method"][rows] == "net")
    with pytest.raises(InputError):
        model.scatter_points("z")


def test_no_tensorflow_loaded():
    assert "tensorflow" not in sys.modules


def test_models_import_no_qt_or_napari():
    import subprocess

    code = ("import sys, napari_blendphot.curation, napari_blendphot.app.failures; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('napari', 'qtpy', 'PyQt6', 'PyQt5', "
            "'PySide6', 'tensorflow', 'keras')]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
