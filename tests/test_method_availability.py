"""Methods that need a program or an optional package: listed, refused at selection with the install hint.

Also ``blendphot predict`` with the classical methods added by issue 18.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_blendphot.cli import main
from napari_blendphot.deblend import registry
from napari_blendphot.deblend.registry import (available_methods, check_available, create_method, method_info,
                                               parse_method_list, register_method, unavailable_reason,
                                               unregister_method)
from napari_blendphot.errors import InputError


class _NeedsAThing:
    name = "needsathing"
    label = "needs a thing"
    makes_masks = False
    needs_worker = False

    def deblend(self, blends, context=None, progress=None):  # pragma: no cover - never created here
        raise AssertionError("an unavailable method must not be created")


def _missing():
    return "the thing is not installed; apt-get install thing"


def _broken():
    raise RuntimeError("the check itself broke")


@pytest.fixture
def runtime_method():
    register_method("needsathing", _NeedsAThing, needs_worker=False, check=_missing)
    yield
    unregister_method("needsathing")


def test_every_builtin_is_listed_and_answers_the_availability_question():
    names = available_methods()
    for name in ("sep", "seppaper", "sextractor", "photutils", "scarlet2"):
        assert name in names
    for name in names:
        reason = unavailable_reason(name)
        assert reason is None or (isinstance(reason, str) and "\n" not in reason)
    assert unavailable_reason("sep") is None and unavailable_reason("seppaper") is None


def test_an_unavailable_method_is_listed_but_refused_when_chosen(runtime_method):
    assert "needsathing" in available_methods()
    assert method_info("needsathing").label == "needsathing"
    message = "not available here: the thing is not installed; apt-get install thing"
    with pytest.raises(InputError, match=message):
        parse_method_list("sep,needsathing")
    with pytest.raises(InputError, match=message):
        create_method("needsathing")
    with pytest.raises(InputError, match=message):
        check_available("needsathing")


def test_a_check_that_breaks_is_reported_as_the_reason():
    register_method("brokencheck", _NeedsAThing, needs_worker=False, check=_broken)
    try:
        assert "RuntimeError: the check itself broke" in unavailable_reason("brokencheck")
        with pytest.raises(InputError, match="availability check failed"):
            parse_method_list("brokencheck")
    finally:
        unregister_method("brokencheck")


def test_a_bad_check_is_refused_at_registration():
    with pytest.raises(InputError, match="check of method"):
        register_method("badcheck", _NeedsAThing, check="no colon here")
    assert "badcheck" not in registry._registry


def test_an_entry_point_factory_carries_its_check(monkeypatch):
    from importlib.metadata import EntryPoint

    _NeedsAThing.unavailable_reason = staticmethod(_missing)
    try:
        point = EntryPoint("epthing", "test_method_availability:_NeedsAThing", registry.ENTRY_POINT_GROUP)
        monkeypatch.setattr(registry, "_entry_points", lambda: {"epthing": point})
        assert "apt-get install thing" in unavailable_reason("epthing")
    finally:
        del _NeedsAThing.unavailable_reason
        registry._registry.pop("epthing", None)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, toy_sample):
    from napari_blendphot.blend.dataset import write_blend_dataset

    folder = tmp_path_factory.mktemp("methods") / "blends"
    return write_blend_dataset(toy_sample, folder, n=8, test_fraction=0.5, seed=3, chunk_size=4)


def test_predict_runs_the_classical_methods_side_by_side(dataset_dir, tmp_path):
    from napari_blendphot.report.results import read_results

    out = tmp_path / "results.csv"
    methods = "sep,seppaper,sextractor,photutils"
    assert main(["predict", str(dataset_dir), "--methods", methods, "-o", str(out)]) == 0
    table = read_results(out)
    assert table.meta["methods"] == methods.split(",")
    for name in methods.split(","):
        for column in (f"g1_flux_{name}", f"g2_flux_{name}", f"g1_iou_{name}", f"detection_{name}"):
            assert column in table.colnames
        assert np.isfinite(table[f"g1_flux_{name}"]).any()
    assert table.meta["labels"]["sep"] == "SEP two-pass, Kron FLUX_AUTO, MASK_TYPE BLANK"


def test_predict_refuses_an_unavailable_method_in_one_line(dataset_dir, tmp_path, capsys, monkeypatch):
    from napari_blendphot.deblend import sextractor

    monkeypatch.setenv(sextractor.BINARY_ENV, str(tmp_path / "no-sextractor"))
    assert main(["predict", str(dataset_dir), "--methods", "sep,sextractor", "-o", str(tmp_path / "r.csv")]) == 2
    error = capsys.readouterr().err
    assert "apt-get install source-extractor" in error and "Traceback" not in error
    assert len(error.strip().splitlines()) == 1
    assert not (tmp_path / "r.csv").exists()


def test_the_inspector_starts_with_the_comparison_methods_unticked_and_reports_missing_ones(runtime_method):
    from napari_blendphot.app.inspector import InspectorModel
    from napari_blendphot.deblend.registry import available_methods, default_methods, method_info

    comparisons = {name for name in available_methods() if not method_info(name).default_run}
    assert comparisons >= {"seppaper", "sextractor", "photutils", "scarlet2"}
    assert not comparisons & set(default_methods())  # `blendphot predict` without --methods leaves them out too
    model = InspectorModel()
    try:
        assert "sep" in model.selected and not comparisons & set(model.selected)
        assert comparisons <= set(model.available)
        assert "apt-get install thing" in model.check_method("needsathing")
        assert model.check_method("sep") is None
    finally:
        model.close()
