"""The U-Net's mask photometry gives each pixel to one galaxy (keras_methods.exclusive_masks; no Keras needed)."""

from __future__ import annotations

import numpy as np

from napari_blendphot.deblend.keras_methods import exclusive_masks


def _two_overlapping_masks():
    """A bright galaxy (mask 0.95) whose disk overlaps a faint one's (mask 0.7) on a band of pixels."""
    yy, xx = np.mgrid[:32, :32]
    masks = np.zeros((1, 2, 32, 32), np.float32)
    masks[0, 0][np.hypot(yy - 16, xx - 10) < 7] = 0.95
    masks[0, 1][np.hypot(yy - 16, xx - 20) < 6] = 0.7
    return masks


def test_a_pixel_in_both_masks_counts_once_for_the_likelier_galaxy():
    masks = _two_overlapping_masks()
    both = (masks[0, 0] > 0.5) & (masks[0, 1] > 0.5)
    assert both.sum() > 10
    inside = exclusive_masks(masks)
    assert not (inside[0, 0] & inside[0, 1]).any()
    assert inside[0, 0][both].all() and not inside[0, 1][both].any()
    # Outside the overlap each galaxy keeps its own pixels.
    assert np.array_equal(inside[0, 1], (masks[0, 1] > 0.5) & ~both)
    # A flat blend: fluxes are pixel counts, and together they count the union once.
    pixels = np.ones((1, 32, 32))
    fluxes = np.einsum("nkij,nij->nk", inside, pixels)
    assert fluxes.sum() == ((masks[0] > 0.5).any(axis=0)).sum()


def test_the_faint_galaxy_no_longer_takes_its_bright_neighbours_light():
    masks = _two_overlapping_masks()
    yy, xx = np.mgrid[:32, :32]
    bright = 100.0 * np.exp(-np.hypot(yy - 16, xx - 10) / 2.0)
    faint = 5.0 * np.exp(-np.hypot(yy - 16, xx - 20) / 2.0)
    blend = (bright + faint)[None]
    shared = np.einsum("nkij,nij->nk", masks > 0.5, blend)[0, 1]
    own = np.einsum("nkij,nij->nk", exclusive_masks(masks), blend)[0, 1]
    true_in_mask = faint[masks[0, 1] > 0.5].sum()
    # Sharing the overlap, the faint galaxy's flux is over twice its own light; one owner per pixel takes
    # most of that excess away (what is left is the bright galaxy's wing outside the overlap).
    assert shared > 2 * true_in_mask
    assert abs(own - true_in_mask) < 0.5 * abs(shared - true_in_mask)


def test_ties_go_to_the_central_and_weak_masks_claim_nothing():
    masks = np.zeros((1, 2, 4, 4), np.float32)
    masks[0, :, 0, 0] = 0.8        # a tie
    masks[0, 1, 1, 1] = 0.4        # below the threshold
    inside = exclusive_masks(masks)
    assert inside[0, 0, 0, 0] and not inside[0, 1, 0, 0]
    assert not inside[:, :, 1, 1].any()


def test_the_pair_shortcut_and_the_general_rule_agree():
    rng = np.random.default_rng(4)
    masks = rng.random((3, 2, 16, 16)).astype(np.float32)
    masks[0, 1, :4] = masks[0, 0, :4]  # ties
    three = np.concatenate([masks, np.zeros((3, 1, 16, 16), np.float32)], axis=1)  # takes the general path
    assert np.array_equal(exclusive_masks(masks), exclusive_masks(three)[:, :2])
