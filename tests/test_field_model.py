"""The Field widget's Qt-free model, with SEP run in this process (fast)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_blendphot.errors import InputError
from napari_blendphot.field import flags as F
from napari_blendphot.field.measure import measure_field
from napari_blendphot.field.model import FieldModel
from napari_blendphot.field.run import MethodRunner
from test_field_support import folder_digest, small_field

pytestmark = pytest.mark.filterwarnings("ignore::napari_blendphot.field.image.FieldWarning")


def sep_runner(methods, options):
    return MethodRunner(methods, options, in_process=True)


@pytest.fixture(scope="module")
def field_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "field.fits"
    small_field(n_galaxies=24, zero_point=28.0, exptime=500.0).write(path)
    return path


@pytest.fixture
def model(field_path):
    model = FieldModel(methods=("sep",), runner_factory=sep_runner)
    model.open(field_path)
    yield model
    model.close()


def test_detect_points_and_features(model):
    n = model.detect()
    assert n >= 20 and model.points().shape == (n, 2)
    features = model.features()
    assert list(features)[:3] == ["source_id", "group_id", "group_size"]
    assert not features["measured"].any() and np.isnan(features["mag_sep"]).all()
    members = model.blend_members()
    assert len(members) and np.all(features["group_size"][members] >= 2)
    y, x = model.points()[members[0]]
    assert model.nearest_source(y + 2, x - 2) == members[0]
    assert model.nearest_source(-500, -500) is None
    inside = model.sources_in_box(y + 5, y - 5, x - 5, x + 5)
    assert members[0] in inside


def test_measure_matches_the_pipeline(model, field_path):
    model.detect()
    first = model.blend_members()[:2]
    measured = model.measure(first)
    assert set(measured.tolist()) == set(first.tolist())
    features = model.features()
    assert features["measured"][first].all() and np.isfinite(features["mag_sep"][first]).any()
    catalog = model.catalog()
    assert list(catalog["source_id"]) == list(first + 1)
    whole = measure_field(field_path, ["sep"])
    for row in catalog:
        match = whole[np.argmin(np.hypot(whole["x"] - row["x"], whole["y"] - row["y"]))]
        assert row["mag_sep"] == pytest.approx(match["mag_sep"], abs=1e-6, nan_ok=True)
        assert row["group_size"] == match["group_size"]
    assert catalog.meta["zero_point"] == 28.0


def test_masks_lie_on_the_source(model):
    model.detect()
    index = int(model.blend_members()[0])
    model.measure([index])
    masks = model.masks(index)
    assert "sep" in masks
    central, origin, step = masks["sep"]
    assert central.shape == (2, 128, 128) and step == (1.0, 1.0)
    rows, cols = np.nonzero(central[0])
    if len(rows):  # SEP found the central: its mask surrounds the source's position on the image
        y, x = model.points()[index]
        assert abs(origin[0] + rows.mean() - y) < 6 and abs(origin[1] + cols.mean() - x) < 6


def test_calibration_edit_and_cancel(model, tmp_path):
    model.detect()
    index = model.blend_members()[:1]
    model.measure(index)
    before = model.features()["mag_sep"][index[0]]
    calibration = model.set_calibration(zero_point=29.0)
    assert calibration.zero_point_source == "option" and model.region is None
    with pytest.raises(InputError, match="press Detect first"):
        model.measure(index)
    model.detect()
    model.measure(index)
    assert model.features()["mag_sep"][index[0]] == pytest.approx(before + 1.0, abs=1e-4)
    cancel = threading.Event()
    cancel.set()
    assert len(model.measure(model.blend_members(), cancel=cancel)) == 0
    assert len(model.measured_indices) == 1  # what was measured before is kept
    written = model.save(tmp_path / "picked")
    assert [p.name for p in written] == ["picked.fits", "picked.csv", "picked.json"]
    before_files = folder_digest(tmp_path)
    from napari_blendphot.errors import OutputExistsError

    with pytest.raises(OutputExistsError):
        model.save(tmp_path / "picked.fits")
    assert folder_digest(tmp_path) == before_files


def test_flags_in_features(model):
    model.detect()
    isolated = np.flatnonzero(model.group_sizes() == 1)[:1]
    model.measure(isolated)
    assert model.features()["flags"][isolated[0]] & F.ISOLATED
