"""The ``photutils`` method: detect_sources + deblend_sources + SourceCatalog Kron fluxes, two passes."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from test_sextractor_method import _pairs

from napari_blendphot.deblend import photutils_method
from napari_blendphot.deblend.base import BlendContext
from napari_blendphot.deblend.photutils_method import PhotutilsTwoPass
from napari_blendphot.deblend.registry import method_info, parse_method_list, unavailable_reason
from napari_blendphot.deblend.sep_baseline import PASS_NO_NOISE, PASS_SEP_ERROR, SepTwoPass
from napari_blendphot.errors import InputError
from napari_blendphot.match.assign import DETECTION_BOTH
from napari_blendphot.sample.toy import sersic_stamp


def test_registered_and_available():
    info = method_info("photutils")
    assert info.makes_masks and not info.needs_worker
    assert unavailable_reason("photutils") is None


def test_missing_photutils_is_a_clear_message(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "photutils" else real(name, *a))
    assert "pip install" in unavailable_reason("photutils")
    with pytest.raises(InputError, match="not available here.*photutils"):
        parse_method_list("photutils")


def test_separated_pairs_are_measured_like_isolated_galaxies():
    """Far apart, each Kron flux recovers its galaxy: > 90% of the light, its error the noise in the aperture."""
    rng = np.random.default_rng(0)
    g1 = sersic_stamp(30.0, 3.0, 1.0)
    g2 = sersic_stamp(20.0, 2.5, 1.0, dy=20, dx=-25)
    blends = (g1 + g2 + rng.normal(0, 0.0106, (128, 128)).astype(np.float32))[None]
    out = PhotutilsTwoPass().deblend(blends, BlendContext(np.array([[20, -25]]), np.array([3.0])))
    assert out.extra["detection"][0] == DETECTION_BOTH
    np.testing.assert_allclose(out.fluxes[0], [30.0, 20.0], rtol=0.1)
    assert (0.05 < out.flux_errors[0]).all() and (out.flux_errors[0] < 1.0).all()
    assert out.masks[0, 0, 64, 64] == 1 and out.masks[0, 1, 84, 39] == 1
    assert not (out.masks[0, 0].astype(bool) & out.masks[0, 1].astype(bool)).any()


def test_same_thresholds_as_sep_give_mostly_the_same_detections():
    blends, context = _pairs(24, seed=4, separated=False)
    ours = PhotutilsTwoPass().deblend(blends, context)
    sep = SepTwoPass().deblend(blends, context)
    assert np.mean(ours.extra["detection"] == sep.extra["detection"]) >= 0.75
    measured = np.isfinite(ours.fluxes)
    assert np.array_equal(measured, np.isfinite(ours.flux_errors))
    assert (ours.flux_errors[measured] > 0).all()


def test_a_blend_photutils_fails_on_is_not_measured_and_the_rest_are(monkeypatch):
    blends, context = _pairs(4, seed=6, separated=True)
    blends[2] = 1.5
    original = PhotutilsTwoPass._segment
    calls = []

    def failing(convolved, rms, params):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("simulated photutils failure")
        return original(convolved, rms, params)

    monkeypatch.setattr(PhotutilsTwoPass, "_segment", staticmethod(failing))
    out = PhotutilsTwoPass().deblend(blends, context)
    assert out.extra["pass"].tolist()[:3] == [PASS_SEP_ERROR, 0, PASS_NO_NOISE]
    assert np.isnan(out.fluxes[[0, 2]]).all() and np.isfinite(out.fluxes[[1, 3]]).all()
    assert out.metadata["n_errors"] == 1


def test_keyword_names_follow_the_installed_photutils():
    import inspect

    from photutils.segmentation import deblend_sources

    names = photutils_method._keywords()
    assert names["pixels"] in inspect.signature(deblend_sources).parameters
    assert names["levels"] in inspect.signature(deblend_sources).parameters


def test_bad_option_is_refused():
    with pytest.raises(InputError, match="mask method"):
        PhotutilsTwoPass(aperture_mask_method="sometimes")
