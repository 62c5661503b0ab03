"""Split of the isolated galaxies into train and test, by galaxy, before pairing."""

import numpy as np
import pytest

from napari_blendphot.blend.split import as_generator, split_indices, split_sample
from napari_blendphot.errors import InputError


def test_split_is_disjoint_complete_and_sized(toy_sample):
    train, test = split_sample(toy_sample, test_fraction=0.2, seed=7)
    assert len(test) == round(0.2 * len(toy_sample))
    assert len(train) + len(test) == len(toy_sample)
    assert not set(train.ids.tolist()) & set(test.ids.tolist())
    assert set(train.ids.tolist()) | set(test.ids.tolist()) == set(toy_sample.ids.tolist())


def test_split_keeps_images_with_their_catalogue_rows(toy_sample):
    train, test = split_sample(toy_sample, 0.25, seed=3)
    for part in (train, test):
        for i in (0, len(part) - 1):
            original = toy_sample.by_id(part.ids[i])
            np.testing.assert_array_equal(part.images[i], original.image)
            np.testing.assert_array_equal(part.segmaps[i], original.segmap)


def test_split_is_deterministic_and_depends_on_the_seed():
    a = split_indices(100, 0.2, seed=11)
    b = split_indices(100, 0.2, seed=11)
    c = split_indices(100, 0.2, seed=12)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    # Indices come back sorted, so sub-samples keep the sample's order.
    assert np.all(np.diff(a[0]) > 0) and np.all(np.diff(a[1]) > 0)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, "0.2"])
def test_bad_test_fraction_is_refused(fraction):
    with pytest.raises(InputError, match="test_fraction"):
        split_indices(100, fraction, seed=0)


def test_a_side_with_fewer_than_two_galaxies_is_refused():
    with pytest.raises(InputError, match="at least 2"):
        split_indices(10, 0.05, seed=0)


@pytest.mark.parametrize("seed", [None, -1, 1.5, True])
def test_bad_seed_is_refused(seed):
    with pytest.raises(InputError, match="seed"):
        as_generator(seed)


def test_generator_is_used_as_given():
    rng = np.random.default_rng(5)
    assert as_generator(rng) is rng
