"""On-the-fly training blends: determinism per (seed, epoch, index), shapes, truth."""

import subprocess
import sys

import numpy as np
import pytest

from napari_blendphot.blend.assemble import shift_stamp
from napari_blendphot.blend.stream import BlendStream, stream_arrays
from napari_blendphot.errors import InputError


@pytest.fixture(scope="module")
def stream():
    from napari_blendphot.sample.toy import make_toy_sample

    return BlendStream(make_toy_sample(50, seed=8), seed=3)


def test_batch_shapes_dtypes_and_truth(stream):
    pairs = stream.draw(20, np.random.default_rng(1))
    batch = stream.assemble(pairs)
    assert batch.blends.shape == (20, 128, 128) and batch.blends.dtype == np.float32
    assert batch.fluxes.shape == (20, 2) and batch.fluxes.dtype == np.float32
    assert batch.masks.shape == (20, 2, 128, 128) and batch.masks.dtype == np.uint8
    for i in (0, 19):
        c, k, dy, dx = pairs.central[i], pairs.companion[i], pairs.dy[i], pairs.dx[i]
        np.testing.assert_array_equal(batch.blends[i], stream.images[c] + shift_stamp(stream.images[k], dy, dx))
        np.testing.assert_array_equal(batch.masks[i, 0], stream.masks[c])
        np.testing.assert_array_equal(batch.masks[i, 1], shift_stamp(stream.masks[k], dy, dx))
        np.testing.assert_allclose(batch.fluxes[i], [stream.fluxes[c], stream.fluxes[k]], rtol=1e-6)
    assert np.all(np.abs(stream.mags[pairs.central] - stream.mags[pairs.companion]) < 2)


def test_epoch_is_independent_of_batch_size_and_changes_between_epochs(stream):
    big = np.concatenate([b.blends for b in stream.epoch(4, 70, batch_size=64)])
    small = np.concatenate([b.blends for b in stream.epoch(4, 70, batch_size=9)])
    np.testing.assert_array_equal(big, small)
    again = BlendStream(stream_arrays_of(stream), seed=3)
    np.testing.assert_array_equal(np.concatenate([b.blends for b in again.epoch(4, 70)]), big)
    other_epoch = stream.epoch_pairs(5, 70)
    assert not np.array_equal(other_epoch.central, stream.epoch_pairs(4, 70).central)
    other_seed = BlendStream(stream_arrays_of(stream), seed=4).epoch_pairs(4, 70)
    assert not np.array_equal(other_seed.central, stream.epoch_pairs(4, 70).central)


def stream_arrays_of(stream):
    return {"images": stream.images, "masks": stream.masks, "mags": stream.mags, "radii": stream.radii}


def test_stream_from_plain_arrays_matches_sample(toy_sample):
    from_sample = BlendStream(toy_sample, seed=1)
    arrays = stream_arrays(toy_sample)
    from_arrays = BlendStream(arrays, seed=1)
    a, b = from_sample.batch(8, np.random.default_rng(2)), from_arrays.batch(8, np.random.default_rng(2))
    np.testing.assert_array_equal(a.blends, b.blends)
    np.testing.assert_array_equal(a.fluxes, b.fluxes)


def test_bad_stream_inputs_are_refused(toy_sample):
    arrays = stream_arrays(toy_sample)
    with pytest.raises(InputError, match="missing"):
        BlendStream({"images": arrays["images"]}, seed=0)
    with pytest.raises(InputError, match="radii"):
        BlendStream(dict(arrays, radii=arrays["radii"][:-1]), seed=0)
    with pytest.raises(InputError, match="seed"):
        BlendStream(arrays, seed=-3)
    with pytest.raises(InputError, match="epoch"):
        BlendStream(arrays, seed=0).epoch_pairs(-1, 10)


def test_stream_module_needs_only_numpy():
    code = ("import sys, napari_blendphot.blend.stream; "
            "print(sorted(m for m in ('astropy', 'scipy', 'keras', 'tensorflow', 'napari') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
