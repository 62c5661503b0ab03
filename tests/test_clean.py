"""Neighbour cleaning (SPEC §4 step 3)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_blendphot.clean.neighbours import (
    background_level_and_rms,
    clean_sample,
    clean_stamp,
    galaxy_rng,
    neighbour_masks,
)
from napari_blendphot.errors import InputError
from napari_blendphot.sample.toy import sersic_stamp

NOISE_RMS = 0.02


def _stamp_with_neighbour(seed=0, zero_border=0):
    rng = np.random.default_rng(seed)
    central = sersic_stamp(400.0, 5.0, 1.0, q=0.7, theta=0.3)
    neighbour = sersic_stamp(900.0, 3.0, 2.0, dy=-38.0, dx=30.0)
    image = central + neighbour + rng.normal(0.0, NOISE_RMS, central.shape).astype(np.float32)
    segmap = np.zeros(image.shape, np.int32)
    central_seg = central > 2 * NOISE_RMS
    neighbour_seg = (neighbour > 2 * NOISE_RMS) & ~central_seg
    segmap[central_seg] = 412
    segmap[neighbour_seg] = 977
    if zero_border:
        # Empty mosaic edge: exact zeros, which must not count as background.
        image[:, :zero_border] = 0.0
    return image, segmap, neighbour_seg


def test_clean_stamp_removes_neighbour_and_keeps_central():
    image, segmap, neighbour_seg = _stamp_with_neighbour()
    cleaned, central_mask = clean_stamp(image, segmap, 7)
    assert cleaned.dtype == np.float32
    assert np.array_equal(central_mask, segmap == 412)
    # Neighbour gone: its region now sums to what noise gives (not ~900).
    region = ndimage.binary_dilation(neighbour_seg, iterations=5)
    assert image[neighbour_seg].sum() > 800
    assert abs(cleaned[neighbour_seg].sum()) < 5 * NOISE_RMS * np.sqrt(neighbour_seg.sum())
    # Central galaxy and its 5-pixel halo untouched, bit for bit.
    halo = ndimage.binary_dilation(segmap == 412, iterations=5)
    assert np.array_equal(cleaned[halo], image[halo])
    # Pixels outside every dilated source untouched as well.
    _, fill, background = neighbour_masks(segmap)
    assert np.array_equal(cleaned[background], image[background])
    assert np.array_equal(fill, region & ~halo)
    # The filled pixels look like the background: rms within 10 %.
    filled_rms = cleaned[fill].std()
    assert abs(filled_rms / NOISE_RMS - 1) < 0.10
    assert image is not cleaned and not np.array_equal(image, cleaned)


def test_clean_stamp_rms_ignores_zeros():
    image, segmap, neighbour_seg = _stamp_with_neighbour(zero_border=30)
    _, fill, background = neighbour_masks(segmap)
    naive_rms = image[background].std()  # zeros included: the paper's bias
    assert naive_rms < 0.93 * NOISE_RMS
    level, rms = background_level_and_rms(image[background])
    assert abs(rms / NOISE_RMS - 1) < 0.05 and abs(level) < 0.1 * NOISE_RMS
    cleaned, _ = clean_stamp(image, segmap, 3)
    assert abs(cleaned[fill].std() / NOISE_RMS - 1) < 0.10


def test_clean_stamp_is_seeded():
    image, segmap, _ = _stamp_with_neighbour()
    a, _ = clean_stamp(image, segmap, 11)
    b, _ = clean_stamp(image, segmap, np.random.default_rng(11))
    c, _ = clean_stamp(image, segmap, 12)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()
    with pytest.raises(InputError, match="seed"):
        clean_stamp(image, segmap, None)


def test_clean_stamp_big_endian_and_bad_shapes():
    image, segmap, _ = _stamp_with_neighbour()
    a, _ = clean_stamp(image, segmap, 1)
    b, _ = clean_stamp(image.astype(">f4"), segmap.astype(">i4"), 1)
    assert a.tobytes() == b.tobytes()
    with pytest.raises(InputError, match="same shape"):
        clean_stamp(image, segmap[:64], 1)


def test_clean_stamp_without_central_segment_changes_nothing():
    image, segmap, _ = _stamp_with_neighbour()
    segmap[segmap == 412] = 0
    cleaned, central = clean_stamp(image, segmap, 1)
    assert not central.any()
    assert np.array_equal(cleaned, image)


def test_clean_sample(toy_sample):
    cleaned = clean_sample(toy_sample, seed=5)
    assert len(cleaned) == len(toy_sample)
    assert cleaned.segmaps is toy_sample.segmaps or np.array_equal(cleaned.segmaps, toy_sample.segmaps)
    assert cleaned.provenance["step"] == "clean-neighbours"
    assert cleaned.provenance["seed"] == 5
    assert cleaned.provenance["parameters"]["dilate_iterations"] == 5
    assert cleaned.provenance["parent"] == toy_sample.provenance
    # Same as cleaning each stamp with the galaxy's own generator.
    for i in (0, 7, 31):
        alone, _ = clean_stamp(toy_sample.images[i], toy_sample.segmaps[i], galaxy_rng(5, toy_sample.ids[i]))
        assert alone.tobytes() == cleaned.images[i].tobytes()
    # A galaxy's cleaned stamp does not depend on the rest of the sample.
    sub = clean_sample(toy_sample[[31, 7]], seed=5)
    assert sub.images[0].tobytes() == cleaned.images[31].tobytes()
    again = clean_sample(toy_sample, seed=5)
    assert again.images.tobytes() == cleaned.images.tobytes()
    assert clean_sample(toy_sample, seed=6).images.tobytes() != cleaned.images.tobytes()
    # Toy noise rms is 0.01: the measured background rms agrees.
    np.testing.assert_allclose(np.median(cleaned.catalog["noise_rms"]), 0.01, rtol=0.05)
    assert (cleaned.catalog["cleaned_pixels"] > 0).sum() > 5
    # Central segments untouched.
    central = toy_sample.central_masks()
    assert np.array_equal(cleaned.images[central], toy_sample.images[central])


def test_clean_sample_needs_integer_seed(toy_sample):
    with pytest.raises(InputError, match="seed"):
        clean_sample(toy_sample, seed=None)


def test_background_level_and_rms_edge_cases():
    assert np.isnan(background_level_and_rms(np.zeros(100))[1])
    rng = np.random.default_rng(0)
    values = rng.normal(1.0, 2.0, 20000)
    values[:200] = 1e4  # a few hot pixels are clipped away
    level, rms = background_level_and_rms(values)
    assert abs(level - 1.0) < 0.05 and abs(rms - 2.0) < 0.1


def test_sample_roundtrip_keeps_cleaning_columns(toy_sample, tmp_path):
    from napari_blendphot.sample.io_native import read_native, write_native

    cleaned = clean_sample(toy_sample[:10], seed=1)
    back = read_native(write_native(cleaned, tmp_path / "c.fits"))
    assert back.images.tobytes() == cleaned.images.tobytes()
    assert back.catalog["clean_skipped"].dtype == bool
    assert back.provenance == cleaned.provenance


@pytest.mark.parametrize("iterations", [0, 1, 5])
def test_dilation_matches_scipy(toy_sample, iterations):
    from napari_blendphot.clean.neighbours import _dilate

    masks = toy_sample.segmaps[:20] != 0
    masks[0, 0, :] = True  # touch the border
    masks[1, :, -1] = True
    cross = ndimage.generate_binary_structure(2, 1)
    expected = np.stack([ndimage.binary_dilation(m, cross, iterations=iterations) if iterations else m
                         for m in masks])
    assert np.array_equal(_dilate(masks, iterations), expected)
    assert np.array_equal(_dilate(masks[3], iterations), expected[3])
