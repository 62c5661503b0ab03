"""The symmetries of the square about the central pixel used for test-time averaging (keras_methods.square_symmetry)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_blendphot.deblend.keras_methods import TTA_CODES, square_symmetry


def _point(y, x, size=128):
    image = np.zeros((1, size, size))
    image[0, y, x] = 1.0
    return image


def test_every_symmetry_keeps_the_centre_and_is_undone_by_its_inverse():
    rng = np.random.default_rng(0)
    stamps = rng.normal(size=(3, 128, 128))
    masks = rng.normal(size=(3, 2, 128, 128))
    images = {square_symmetry(stamps, code).tobytes() for code in range(8)}
    assert len(images) == 8  # eight different images
    for code in range(8):
        turned = square_symmetry(stamps, code)
        np.testing.assert_array_equal(turned[:, 64, 64], stamps[:, 64, 64])
        np.testing.assert_array_equal(square_symmetry(turned, code, inverse=True), stamps)
        np.testing.assert_array_equal(square_symmetry(square_symmetry(masks, code), code, inverse=True), masks)


def test_a_companion_moves_as_the_symmetry_says():
    companion = _point(64 + 10, 64 + 3)  # 10 px down, 3 px right of the centre
    where = {code: tuple(int(v) for v in np.argwhere(square_symmetry(companion, code)[0])[0]) for code in range(8)}
    offsets = {code: (y - 64, x - 64) for code, (y, x) in where.items()}
    # Quarter turns (y, x) -> (x, -y); a transpose after swaps the two.
    assert offsets[0] == (10, 3) and offsets[1] == (3, -10) and offsets[2] == (-10, -3) and offsets[3] == (-3, 10)
    assert offsets[4] == (3, 10) and offsets[5] == (-10, 3)
    assert set(offsets.values()) == {(10, 3), (3, -10), (-10, -3), (-3, 10), (3, 10), (-10, 3), (-3, -10), (10, -3)}
    assert sorted(TTA_CODES) == [1, 2, 4, 8] and all(len(codes) == n for n, codes in TTA_CODES.items())


def test_bad_codes_and_shapes_are_refused():
    with pytest.raises(ValueError, match="0-7"):
        square_symmetry(np.zeros((1, 8, 8)), 8)
    with pytest.raises(ValueError, match="square"):
        square_symmetry(np.zeros((1, 8, 6)), 1)
