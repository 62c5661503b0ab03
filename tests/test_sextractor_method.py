"""The ``sextractor`` method: the SExtractor binary in two passes, stamps tiled into mosaics.

Needs the ``source-extractor`` program (scripts/setup.sh installs the Debian
package); the availability tests fake its absence.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_blendphot.deblend import sextractor
from napari_blendphot.deblend.base import BlendContext
from napari_blendphot.deblend.registry import create_method, method_info, parse_method_list, unavailable_reason
from napari_blendphot.deblend.sep_baseline import PASS_NO_NOISE, PASS_SEP_ERROR, SepTwoPass
from napari_blendphot.deblend.sextractor import SExtractorTwoPass
from napari_blendphot.errors import InputError
from napari_blendphot.match.assign import DETECTION_BOTH
from napari_blendphot.sample.toy import sersic_stamp

NOISE = 0.0106


def _pairs(n, seed, separated):
    """Seeded pairs: well apart (no deblending, so no random pixel sharing) or anything from apart to close."""
    rng = np.random.default_rng(seed)
    blends = np.empty((n, 128, 128), np.float32)
    shifts = np.empty((n, 2))
    radii = np.empty(n)
    for i in range(n):
        r1, r2 = rng.uniform(1.5, 4.0 if separated else 8.0, size=2)
        distance = rng.uniform(28, 40) if separated else rng.uniform(0.5, 3.5) * max(r1, r2)
        angle = rng.uniform(0, 2 * np.pi)
        dy, dx = int(round(distance * np.sin(angle))), int(round(distance * np.cos(angle)))
        central = sersic_stamp(rng.uniform(5, 40), r1, 1.0, q=rng.uniform(0.5, 1.0), theta=rng.uniform(0, np.pi))
        companion = sersic_stamp(rng.uniform(5, 40), r2, 1.0, dy=dy, dx=dx)
        blends[i] = central + companion + rng.normal(0.0, NOISE, (128, 128)).astype(np.float32)
        shifts[i] = dy, dx
        radii[i] = r1
    return blends, BlendContext(shifts, radii)


def test_registered_with_masks_and_available_here():
    info = method_info("sextractor")
    assert info.makes_masks and not info.needs_worker and info.origin == "builtin"
    assert unavailable_reason("sextractor") is None  # scripts/setup.sh installs source-extractor
    assert "Source Extractor" in sextractor._binary_version(sextractor.find_binary())


def test_missing_binary_is_a_one_line_message_with_the_install_hint(monkeypatch, tmp_path):
    monkeypatch.setenv(sextractor.BINARY_ENV, str(tmp_path / "no-such-sextractor"))
    reason = unavailable_reason("sextractor")
    assert "apt-get install source-extractor" in reason and "\n" not in reason
    with pytest.raises(InputError, match="not available here.*apt-get install source-extractor"):
        parse_method_list("sep,sextractor")
    with pytest.raises(InputError, match="not available here"):
        create_method("sextractor")
    with pytest.raises(InputError, match="not installed"):
        SExtractorTwoPass(binary=str(tmp_path / "nothing")).deblend(np.zeros((1, 128, 128), np.float32))


def test_a_program_that_is_not_sextractor_is_not_taken_for_it(monkeypatch):
    monkeypatch.setenv(sextractor.BINARY_ENV, "true")  # runs, prints nothing
    assert sextractor.find_binary() is None


def test_separated_pairs_are_both_measured_with_errors_and_masks():
    blends, context = _pairs(12, seed=1, separated=True)
    out = SExtractorTwoPass().deblend(blends, context)
    assert (out.extra["detection"] == DETECTION_BOTH).all()
    assert np.isfinite(out.fluxes).all() and (out.fluxes > 0).all()
    assert np.isfinite(out.flux_errors).all() and (out.flux_errors > 0).all()
    # The errors are the background noise over the apertures: a few tenths of a unit here.
    assert (out.flux_errors < 2.0).all()
    masks = out.masks > 0.5
    assert masks.any(axis=(2, 3)).all() and not (masks[:, 0] & masks[:, 1]).any()
    # The central mask holds the stamp centre.
    assert masks[:, 0, 64, 64].all()
    assert out.metadata["sextractor_version"].startswith("Source Extractor")


def test_mosaic_gives_what_one_stamp_per_run_gives():
    """Tiling changes nothing: a stamp's sources never read its neighbours' cells.

    Well-separated pairs, so SExtractor's deblending (whose random sharing of
    pixels depends on the run) does not enter.
    """
    blends, context = _pairs(10, seed=2, separated=True)
    tiled = SExtractorTwoPass(gap=8).deblend(blends, context)
    single = SExtractorTwoPass(max_stamps_per_call=1).deblend(blends, context)
    np.testing.assert_array_equal(tiled.fluxes, single.fluxes)
    np.testing.assert_array_equal(tiled.flux_errors, single.flux_errors)
    np.testing.assert_array_equal(tiled.masks, single.masks)
    for key in ("detection", "n_sources", "pass"):
        np.testing.assert_array_equal(tiled.extra[key], single.extra[key])


def test_a_source_reaching_past_its_cell_is_measured_again_with_more_room():
    """A big galaxy near the edge: its Kron aperture leaves a 4-pixel cell, so it is re-measured."""
    rng = np.random.default_rng(3)
    blends = rng.normal(0.0, NOISE, (4, 128, 128)).astype(np.float32)
    blends[1] += sersic_stamp(60.0, 14.0, 1.0, dy=0, dx=50)
    for i in (0, 2, 3):
        blends[i] += sersic_stamp(20.0, 2.5, 1.0)
    context = BlendContext(np.array([[0, 40]] * 4, float), np.full(4, 3.0))
    tiled = SExtractorTwoPass(gap=4).deblend(blends, context)
    assert tiled.extra["tiling"][1] >= 1
    single = SExtractorTwoPass(gap=4, max_stamps_per_call=1).deblend(blends, context)
    np.testing.assert_array_equal(tiled.fluxes, single.fluxes)
    np.testing.assert_array_equal(tiled.flux_errors, single.flux_errors)


def test_agrees_with_sep_on_detection_and_roughly_on_fluxes():
    """Same passes, same filter, same rms: the detections agree; FLUX_AUTO (MASK_TYPE CORRECT) is close."""
    blends, context = _pairs(24, seed=4, separated=False)
    ours = SExtractorTwoPass().deblend(blends, context)
    sep = SepTwoPass().deblend(blends, context)
    assert np.mean(ours.extra["detection"] == sep.extra["detection"]) >= 0.9
    both = np.isfinite(ours.fluxes) & np.isfinite(sep.fluxes)
    ratio = ours.fluxes[both] / sep.fluxes[both]
    assert 0.9 < np.median(ratio) < 1.15


def test_constant_stamps_are_not_run_and_a_failing_stamp_does_not_stop_the_batch(monkeypatch):
    blends, context = _pairs(5, seed=5, separated=True)
    blends[1] = 0.0
    marker = 1e6
    blends[3, 10, 10] = marker  # SExtractor "fails" on any image holding this pixel
    original = sextractor._Runner._run

    def failing_run(self, image, noise, params):
        if (image > marker / 2).any():
            raise sextractor._RunFailed("simulated failure")
        return original(self, image, noise, params)

    monkeypatch.setattr(sextractor._Runner, "_run", failing_run)
    out = SExtractorTwoPass().deblend(blends, context)
    assert out.extra["pass"][1] == PASS_NO_NOISE and out.extra["pass"][3] == PASS_SEP_ERROR
    assert np.isnan(out.fluxes[[1, 3]]).all() and np.isnan(out.flux_errors[[1, 3]]).all()
    assert np.isfinite(out.fluxes[[0, 2, 4]]).all()
    assert out.metadata["n_errors"] == 1 and out.metadata["n_not_run"] == 1


def test_bad_options_are_refused():
    with pytest.raises(InputError, match="gap"):
        SExtractorTwoPass(gap=2)
    with pytest.raises(InputError, match="MASK_TYPE"):
        SExtractorTwoPass(mask_type="SOMETIMES")
    with pytest.raises(InputError, match="64"):
        SExtractorTwoPass(cold=SepTwoPass().cold.__class__(5.0, 10, 0.01, 128))
