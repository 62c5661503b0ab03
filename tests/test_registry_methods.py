"""The method registry: built-ins, errors, run-time registration and entry points."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint

import numpy as np
import pytest
from napari_blendphot.testing.stand_ins import SlowDeblender, expected_slow_fluxes, toy_blends

from napari_blendphot.deblend import registry
from napari_blendphot.deblend.registry import (ENTRY_POINT_GROUP, available_methods, create_method, default_methods,
                                               method_info, methods_with,
                                               parse_method_list, register_method, unregister_method)
from napari_blendphot.errors import InputError


def test_builtins_and_their_properties():
    assert available_methods()[:4] == ("sep", "blend2flux", "unet", "blend2mask2flux")
    sep = method_info("sep")
    assert (sep.makes_masks, sep.needs_worker, sep.origin) == (True, False, "builtin")
    for name, masks in (("blend2flux", False), ("unet", True), ("blend2mask2flux", True)):
        info = method_info(name)
        assert info.needs_worker and info.makes_masks == masks and info.label


def test_the_deep_ensemble_is_an_opt_in_network_method_that_takes_weights():
    info = method_info("ensemble")
    assert (info.origin, info.network, info.uses_keras, info.accepts_weights, info.needs_worker, info.tta) == (
        "builtin", "blend2flux", True, True, True, True)
    assert not info.makes_masks and not info.default_run
    assert "ensemble" in available_methods() and "ensemble" not in default_methods()
    assert "ensemble" in methods_with(accepts_weights=True)
    assert parse_method_list("sep,ensemble") == ["sep", "ensemble"]


def test_create_sep_in_process():
    from napari_blendphot.deblend.sep_baseline import SepTwoPass

    method = create_method("sep", n_jobs=1)
    assert isinstance(method, SepTwoPass) and method.name == "sep"
    with pytest.raises(InputError, match="not accepted"):
        create_method("sep", no_such_option=3)


def test_importing_the_registry_engine_and_wrappers_does_not_load_keras():
    code = ("import sys\n"
            "import napari_blendphot.deblend.registry as r, napari_blendphot.deblend.engine, "
            "napari_blendphot.deblend.keras_methods, napari_blendphot.cli._predict\n"
            "r.available_methods(); [r.method_info(n) for n in r.available_methods()]\n"
            "bad = [m for m in ('keras', 'tensorflow', 'jax', 'torch', 'napari', 'qtpy') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(InputError, match="not a known deblending method") as info:
        method_info("blend2fluxx")
    assert "blend2flux" in str(info.value) and "sep" in str(info.value)
    with pytest.raises(InputError):
        create_method("nope")


def test_runtime_registration_shows_up_and_can_be_removed():
    register_method("slowdemo", SlowDeblender, label="slow demo", needs_worker=False)
    try:
        assert "slowdemo" in available_methods()
        info = method_info("slowdemo")
        assert info.label == "slow demo" and info.origin == "runtime" and not info.needs_worker
        method = create_method("slowdemo", seconds_per_blend=0.0)
        blends = toy_blends(2)
        np.testing.assert_allclose(method.deblend(blends).fluxes, expected_slow_fluxes(blends))
        with pytest.raises(InputError, match="already registered"):
            register_method("slowdemo", SlowDeblender)
    finally:
        unregister_method("slowdemo")
    assert "slowdemo" not in available_methods()


@pytest.mark.parametrize("name", ["Upper", "with_underscore", "9lives", "", "a-b"])
def test_invalid_names_are_refused(name):
    with pytest.raises(InputError, match="lower-case"):
        register_method(name, SlowDeblender)


def test_factory_must_return_a_deblender():
    register_method("notadeblender", dict, needs_worker=False)
    try:
        with pytest.raises(InputError, match="not a Deblender"):
            create_method("notadeblender")
    finally:
        unregister_method("notadeblender")


def test_builtin_can_be_replaced_and_restored():
    register_method("sep", SlowDeblender, label="replaced", needs_worker=False, replace=True)
    try:
        assert method_info("sep").label == "replaced"
    finally:
        unregister_method("sep")
    assert method_info("sep").origin == "builtin"


def test_parse_method_list():
    assert parse_method_list(" sep, unet ") == ["sep", "unet"]
    with pytest.raises(InputError, match="more than once"):
        parse_method_list("sep,sep")
    with pytest.raises(InputError, match="no method"):
        parse_method_list(" , ")
    with pytest.raises(InputError, match="not a known"):
        parse_method_list("sep,bogus")


@pytest.fixture
def third_party_entry_point(monkeypatch):
    """Pretend an installed package declares a method in the entry-point group."""
    import importlib.metadata

    fake = [EntryPoint(name="thirdparty", value="napari_blendphot.testing.stand_ins:SlowDeblender", group=ENTRY_POINT_GROUP),
            EntryPoint(name="broken", value="no_such_package.module:Thing", group=ENTRY_POINT_GROUP)]
    real = importlib.metadata.entry_points

    def entry_points(**selection):
        if selection.get("group") == ENTRY_POINT_GROUP:
            return fake
        return real(**selection)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    yield
    registry._registry.pop("thirdparty", None)


def test_entry_point_methods_are_discovered_lazily(third_party_entry_point):
    assert "thirdparty" in available_methods() and "broken" in available_methods()
    info = method_info("thirdparty")
    # Attributes come from the class the entry point names.
    assert (info.label, info.makes_masks, info.needs_worker) == ("slow stand-in", False, False)
    assert info.origin == "entry point napari_blendphot.testing.stand_ins:SlowDeblender"
    assert isinstance(create_method("thirdparty", seconds_per_blend=0.0), SlowDeblender)
    with pytest.raises(InputError, match="failed to load"):
        method_info("broken")


def test_entry_point_method_runs_in_the_engine(third_party_entry_point):
    from napari_blendphot.deblend.engine import InferenceEngine

    blends = toy_blends(3)
    with InferenceEngine(["thirdparty"], method_options={"thirdparty": {"seconds_per_blend": 0.0}}) as engine:
        output = engine.run(blends)["thirdparty"]
    assert output.method == "thirdparty"
    np.testing.assert_allclose(output.fluxes, expected_slow_fluxes(blends))


def test_no_tensorflow_in_the_test_process():
    assert "tensorflow" not in sys.modules and "keras" not in sys.modules


def test_no_list_of_method_names_outside_the_registry():
    """What a method can do is asked of the registry, never decided by a list of names elsewhere.

    The network architectures of models/ (builders, files, losses) are architectures, not methods.
    """
    import re
    from pathlib import Path

    import napari_blendphot

    names = "|".join(available_methods()[:4])
    two_names = re.compile(rf"""[\(\[\{{]\s*["']({names})["']\s*,\s*["']({names})["']""")
    root = Path(napari_blendphot.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative == "deblend/registry.py" or relative.startswith(("models/", "testing/")):
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#")[0]
            if two_names.search(code) and ">>>" not in code and "predict(" not in code:
                found.append(f"{relative}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
def test_execution_order_runs_a_method_after_those_whose_masks_it_reuses():
    from napari_blendphot.deblend.registry import execution_order, method_info

    assert method_info("unet").reuses_masks_of == ("blend2mask2flux",)
    assert execution_order(["unet", "sep", "blend2mask2flux", "blend2flux"]) == \
        ["blend2mask2flux", "unet", "sep", "blend2flux"]
    assert execution_order(["sep", "blend2mask2flux", "unet"]) == ["sep", "blend2mask2flux", "unet"]
    assert execution_order(["unet", "sep"]) == ["unet", "sep"]


def test_the_ensemble_method_and_its_registry_entry_name_the_same_shipped_model():
    from napari_blendphot.deblend.keras_methods import EnsembleDeblender

    assert method_info("ensemble").default_weights == EnsembleDeblender.default_weights == "blend2flux_ensemble_v5"
    assert method_info("blend2flux").default_weights == ""  # its network's default
