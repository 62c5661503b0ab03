"""The ``scarlet2`` method (optional extra): Sersic models of the sep detections, fitted in batches."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from napari_blendphot.deblend.registry import method_info, parse_method_list, unavailable_reason
from napari_blendphot.deblend.scarlet2_method import Scarlet2Deblender
from napari_blendphot.deblend.sep_baseline import PASS_NO_NOISE
from napari_blendphot.errors import InputError
from napari_blendphot.match.assign import DETECTION_BOTH


def test_registered_in_the_worker_with_masks():
    info = method_info("scarlet2")
    assert info.makes_masks and info.needs_worker  # JAX and a slow fit stay out of the GUI process


def test_missing_extra_is_a_clear_message(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "scarlet2" else real(name, *a))
    reason = unavailable_reason("scarlet2")
    assert "napari-blendphot[scarlet2]" in reason
    with pytest.raises(InputError, match="not available here"):
        parse_method_list("sep,scarlet2")
    with pytest.raises(InputError, match="scarlet2"):
        Scarlet2Deblender().deblend(np.zeros((1, 128, 128), np.float32))


_FIT_SCRIPT = """
import json, sys
import numpy as np
from scipy.ndimage import gaussian_filter
from napari_blendphot.deblend.base import BlendContext
from napari_blendphot.deblend.scarlet2_method import Scarlet2Deblender
from napari_blendphot.sample.toy import sersic_stamp

rng = np.random.default_rng(0)
blends = np.empty((3, 128, 128), np.float32)
truth = np.array([[30.0, 15.0], [20.0, 25.0]])
shifts = np.array([[14, 18], [-20, 10], [0, 0]], float)
images = np.empty((2, 2, 128, 128))
for i in range(2):
    images[i, 0] = gaussian_filter(sersic_stamp(truth[i, 0], 3.0, 1.0), 1.27, mode="constant")
    images[i, 1] = gaussian_filter(sersic_stamp(truth[i, 1], 2.5, 1.0, dy=shifts[i, 0], dx=shifts[i, 1]), 1.27,
                                   mode="constant")
    blends[i] = images[i].sum(axis=0) + rng.normal(0, 0.0106, (128, 128))
blends[2] = 0.0
out = Scarlet2Deblender(n_steps=150, batch_size=2).deblend(blends, BlendContext(shifts, np.full(3, 3.0)))
np.savez(sys.argv[1], truth=truth, images=images, fluxes=out.fluxes, errors=out.flux_errors, masks=out.masks,
         detection=out.extra["detection"], passes=out.extra["pass"])
print(json.dumps({"jax_device": out.metadata["jax_device"]}))
"""


@pytest.mark.slow
def test_fits_two_sersic_galaxies_and_gives_errors_and_masks(tmp_path):
    """Two exponential galaxies seen through the method's Gaussian PSF (its own model): fluxes within 5%.

    A constant stamp is not run; one batch of 2 holds both blends of two
    sources (one compilation).  Run in a child process: JAX starts threads,
    and the sep tests of this session fork processes afterwards.
    """
    pytest.importorskip("scarlet2")  # the optional extra; CI installs it (scripts/setup.sh)
    import json
    import os
    import subprocess
    import sys

    result = tmp_path / "fit.npz"
    completed = subprocess.run([sys.executable, "-c", _FIT_SCRIPT, str(result)], capture_output=True, text=True,
                               env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout.strip().splitlines()[-1])["jax_device"].startswith("cpu")
    fit = np.load(result)
    truth, images = fit["truth"], fit["images"]
    assert fit["detection"][:2].tolist() == [DETECTION_BOTH] * 2 and fit["passes"][2] == PASS_NO_NOISE
    np.testing.assert_allclose(fit["fluxes"][:2], truth, rtol=0.05)
    assert np.isnan(fit["fluxes"][2]).all() and np.isnan(fit["errors"][2]).all()
    # Forced-photometry noise of a well-separated source: rms / sqrt(sum of its unit-flux image squared).
    expected = 0.0106 / np.sqrt(((images / truth[:, :, None, None]) ** 2).sum(axis=(2, 3)))
    np.testing.assert_allclose(fit["errors"][:2], expected, rtol=0.3)
    masks = fit["masks"][:2] > 0.5
    assert masks[:, 0, 64, 64].all() and not (masks[:, 0] & masks[:, 1]).any()
    # Each mask covers its galaxy where that galaxy is above the noise and the brighter of the two.
    true_masks = (images > 0.0106) & (images >= images[:, ::-1])
    overlap = (masks & true_masks).sum(axis=(2, 3)) / (masks | true_masks).sum(axis=(2, 3))
    assert (overlap > 0.7).all(), overlap


def test_bad_options_are_refused():
    with pytest.raises(InputError, match="psf_sigma"):
        Scarlet2Deblender(psf_sigma=-1.0)
    with pytest.raises(InputError, match="n_steps"):
        Scarlet2Deblender(n_steps=0)
