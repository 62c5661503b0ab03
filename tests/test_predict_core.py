"""The predict core at speed: the worker reads the dataset itself, fixed batch shapes under JAX, same bytes.

The JAX worker builds tiny networks; this process imports neither JAX nor Keras.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_blendphot import predict
from napari_blendphot.blend.dataset import BlendDataset, DatasetRows
from napari_blendphot.deblend.engine import InferenceEngine
from napari_blendphot.errors import InputError
from napari_blendphot.testing.stand_ins import tiny_models


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, toy_sample):
    from napari_blendphot.blend.dataset import write_blend_dataset

    folder = tmp_path_factory.mktemp("core") / "blends"
    return write_blend_dataset(toy_sample, folder, n=18, test_fraction=0.5, seed=5, chunk_size=6)


def _assert_same_bytes(a, b):
    assert a.colnames == b.colnames
    for name in a.colnames:
        left, right = np.asarray(a[name]), np.asarray(b[name])
        assert left.dtype == right.dtype, name
        assert left.tobytes() == right.tobytes(), name


def test_rows_read_by_the_worker_give_the_bytes_of_pixels_sent_through_the_pipe(dataset_dir):
    with InferenceEngine(["sep"], method_options={"sep": {"n_jobs": 1}}) as engine:
        direct = predict(dataset_dir, ["sep"], split="all", engine=engine, chunk_size=7)
        # on_outputs asks for the masks back: the chunks then travel as pixels, the IoU computed here.
        piped = predict(dataset_dir, ["sep"], split="all", engine=engine, chunk_size=7,
                        on_outputs=lambda chunk, outputs: None)
    assert "g1_iou_sep" in direct.colnames and np.isfinite(direct["g1_iou_sep"]).any()
    _assert_same_bytes(direct, piped)


def test_dataset_rows_are_small_and_refuse_a_changed_file(dataset_dir, tmp_path):
    import pickle
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset_dir, copy)
    dataset = BlendDataset(copy)
    rows = dataset.select(split="test").worker_rows(1, 4)
    assert isinstance(rows, DatasetRows) and len(rows) == 3 and rows.has_masks
    assert len(pickle.dumps(rows)) < 2000  # row numbers, not 3 x 64 KiB of pixels
    np.testing.assert_array_equal(rows.read(), dataset.select(split="test").blends[1:4])
    blends = np.load(copy / "blends.npy")
    np.save(copy / "blends.npy", blends + 1)
    with pytest.raises(InputError, match="changed while it was being read"):
        rows.read()


@pytest.fixture(scope="module")
def jax_engine(tmp_path_factory):
    engine = InferenceEngine(["blend2flux", "unet"], backend="jax", chunk_size=5)
    built = tiny_models(tmp_path_factory.mktemp("jaxmodels"), engine)
    yield engine, built
    engine.close()


@pytest.mark.slow  # one JAX worker start and tiny models built (~25 s here)
def test_jax_compiles_once_per_network_and_a_ragged_last_chunk_adds_nothing(jax_engine, dataset_dir):
    engine, built = jax_engine
    methods = ["blend2flux", "unet"]
    for name in methods:
        engine.set_method_options(name, weights=built["paths"][name], batch_size=4)
    engine.warm_up(methods)
    after_warm_up = engine.worker_stats()
    assert {name: after_warm_up[name]["compilations"] for name in methods} == {"blend2flux": 1, "unet": 1}
    assert all(after_warm_up[name]["pad_batches"] for name in methods)
    # 18 blends in chunks of 7 (7, 7, 4) and batches of 4: ragged batches (3) and a ragged last chunk.
    padded = predict(dataset_dir, methods, split="all", engine=engine, chunk_size=7)
    stats = engine.worker_stats()
    assert {name: stats[name]["compilations"] for name in methods} == {"blend2flux": 1, "unet": 1}
    assert padded.meta["provenance"]["parameters"]["method_metadata"]["unet"]["precision"] == "float32"  # a CPU: float32

    # Today's path: every batch its own shape, pixels through the pipe, IoU computed here.
    for name in methods:
        engine.set_method_options(name, weights=built["paths"][name], batch_size=4, pad_batches=False)
    unpadded = predict(dataset_dir, methods, split="all", engine=engine, chunk_size=7,
                       on_outputs=lambda chunk, outputs: None)
    _assert_same_bytes(padded, unpadded)


def test_background_rms_is_astropys_mad_std_to_the_bit():
    import warnings

    from astropy.stats import mad_std

    from napari_blendphot.deblend.keras_methods import background_mad_std

    rng = np.random.default_rng(3)
    pixels = rng.normal(0, 0.01, (6, 128, 128)).astype(np.float32)
    background = rng.random((6, 128, 128)) < 0.6
    background[1, ::2] = False  # an even count of background pixels in one, odd in another
    background[2] = False
    background[2, 0, :3] = True
    background[3] = False  # no background at all: NaN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.asarray(mad_std(np.where(background, pixels, np.nan).reshape(6, -1), axis=1,
                                      ignore_nan=True), np.float64)
    got = background_mad_std(pixels.copy(), background)
    assert np.isnan(got[3]) and np.isnan(expected[3])
    assert got.tobytes() == expected.tobytes()


def test_the_chunk_size_follows_the_device_the_worker_reports():
    from napari_blendphot.prediction import auto_chunk_size

    class Engine:
        def __init__(self, device):
            self.device, self.asked = device, []

        def warm_up(self, methods, options):
            self.asked.append((list(methods), options))
            return {name: {"device": self.device, "batch_size": 1024 if self.device == "gpu" else 32}
                    for name in methods}

    gpu, cpu = Engine("gpu"), Engine("cpu")
    assert auto_chunk_size(gpu, ["sep", "unet"], {"unet": {"weights": "u.keras"}}) == 16 * 1024
    assert gpu.asked == [(["unet"], {"unet": {"weights": "u.keras"}})]  # the run's options: the model is reused
    assert auto_chunk_size(cpu, ["sep", "blend2flux"], {}) == 256
    assert cpu.asked == [(["blend2flux"], {})]  # no options given: the engine's own
    nothing = Engine("gpu")
    assert auto_chunk_size(nothing, ["sep"], {}) == 256 and nothing.asked == []  # no network, nothing loaded
