"""Saving and loading models: safe mode, clear errors, no silent overwrite."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import zipfile  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras  # noqa: E402

from napari_blendphot.errors import InputError, OutputExistsError  # noqa: E402
from napari_blendphot.models.io import check_role, load_model, read_keras_config, save_model  # noqa: E402
from napari_blendphot.models.networks import build_blend2flux, build_blend2mask2flux, build_unet  # noqa: E402

TINY_B2F = {"filters": 4, "dense_widths": (8,)}


@pytest.fixture(autouse=True)
def _seeded_keras():
    """Initial weights from a fixed seed: no test depends on the luck of the draw or on the tests run before."""
    keras.utils.set_random_seed(2020)


@pytest.fixture(scope="module")
def saved_b2f(tmp_path_factory):
    keras.utils.set_random_seed(1)  # module-scoped: set up before the autouse seed above
    model = build_blend2flux(**TINY_B2F)
    path = save_model(model, tmp_path_factory.mktemp("models") / "b2f.keras")
    return model, path


def _stamps(n=2):
    return np.random.default_rng(0).normal(1.0, 0.5, (n, 128, 128)).astype("float32")


def test_round_trip_predicts_the_same(saved_b2f):
    model, path = saved_b2f
    loaded = load_model(path, expect="blend2flux")
    np.testing.assert_allclose(loaded.predict(_stamps(), verbose=0), model.predict(_stamps(), verbose=0), rtol=1e-6)
    assert loaded.get_layer("normalization").get_config()["mode"] == "rms"


def test_round_trip_keeps_scaling_constants(tmp_path):
    model = build_blend2flux(normalization="fixed", input_scale=0.25, flux_scale=12.0, **TINY_B2F)
    loaded = load_model(save_model(model, tmp_path / "fixed.keras"))
    assert loaded.get_layer("normalization").get_config()["input_scale"] == 0.25
    assert loaded.get_layer("fluxes").get_config()["flux_scale"] == 12.0
    np.testing.assert_allclose(loaded.predict(_stamps(), verbose=0), model.predict(_stamps(), verbose=0), rtol=1e-6)


def test_save_refuses_to_overwrite(saved_b2f):
    model, path = saved_b2f
    before = path.read_bytes()
    with pytest.raises(OutputExistsError):
        save_model(model, path)
    assert path.read_bytes() == before
    save_model(model, path, overwrite=True)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_save_needs_keras_suffix_and_existing_folder(saved_b2f, tmp_path):
    model, _ = saved_b2f
    with pytest.raises(InputError, match=r"\.keras"):
        save_model(model, tmp_path / "model.h5")
    with pytest.raises(InputError, match="does not exist"):
        save_model(model, tmp_path / "missing" / "model.keras")


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found") as info:
        load_model(tmp_path / "nothing.keras")
    assert "nothing.keras" in str(info.value)


def test_not_a_zip(tmp_path):
    path = tmp_path / "text.keras"
    path.write_text("hello")
    with pytest.raises(InputError, match="not a zip file") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_truncated_file(saved_b2f, tmp_path):
    _, path = saved_b2f
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated or corrupted"):
        load_model(truncated)


def test_flipped_bytes_are_detected(saved_b2f, tmp_path):
    _, path = saved_b2f
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("model.weights.h5")
    # Damage the middle of the weights member's data (after its local header).
    middle = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    data[middle : middle + 16] = bytes(255 - b for b in data[middle : middle + 16])
    damaged = tmp_path / "damaged.keras"
    damaged.write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupted") as error:
        load_model(damaged)
    assert "damaged.keras" in str(error.value)


def test_zip_without_keras_members(tmp_path):
    path = tmp_path / "other.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not a model")
    with pytest.raises(InputError, match="not a Keras model archive"):
        load_model(path)


def test_garbage_config_is_reported_as_corrupted(saved_b2f, tmp_path):
    _, path = saved_b2f
    broken = tmp_path / "broken.keras"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.infolist():
            payload = b"{not json" if item.filename == "config.json" else source.read(item.filename)
            target.writestr(item, payload)
    with pytest.raises(InputError, match="corrupted"):
        load_model(broken)


def test_wrong_architecture_for_the_role(saved_b2f, tmp_path):
    _, path = saved_b2f
    with pytest.raises(InputError, match="does not hold a unet") as info:
        load_model(path, expect="unet")
    assert "b2f.keras" in str(info.value)
    unet_path = save_model(build_unet(depth=2, filters=4), tmp_path / "unet.keras")
    assert load_model(unet_path, expect="unet").name == "unet"
    with pytest.raises(InputError, match="blend2mask2flux"):
        load_model(unet_path, expect="blend2mask2flux")
    with pytest.raises(InputError, match="blend2flux"):
        load_model(unet_path, expect="blend2flux")


def test_check_role_accepts_each_builder():
    check_role(build_blend2flux(**TINY_B2F), "blend2flux")
    check_role(build_unet(depth=2, filters=4, encoding="ogg"), "unet")
    check_role(build_blend2mask2flux(unet_depth=2, unet_filters=4, head_filters=4, head_dense=(8,)), "blend2mask2flux")


def test_a_plain_keras_model_with_other_inputs_is_refused(tmp_path):
    inputs = keras.Input(shape=(128, 128, 1))
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(inputs))
    path = tmp_path / "other.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(InputError, match=r"raw stamps \(N, H, W\)"):
        load_model(path, expect="blend2flux")


def test_lambda_layer_is_refused_in_safe_mode(tmp_path):
    inputs = keras.Input(shape=(128, 128))
    doubled = keras.layers.Lambda(lambda x: x * 2.0, name="double")(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(doubled))
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(InputError, match="Lambda") as info:
        load_model(path)
    assert "lambda.keras" in str(info.value)
    # The user may still opt out for a file they trust.
    assert load_model(path, safe_mode=False).get_layer("double") is not None


def test_unregistered_custom_layer_is_reported(tmp_path):
    class Shift(keras.layers.Layer):  # deliberately not registered
        def call(self, x):
            return x + 1.0

    inputs = keras.Input(shape=(128, 128))
    path = tmp_path / "custom.keras"
    keras.Model(inputs, Shift()(inputs)).save(path)
    with pytest.raises(InputError, match="does not know"):
        load_model(path)


def test_read_keras_config_names_the_model(saved_b2f):
    _, path = saved_b2f
    assert read_keras_config(path)["config"]["name"] == "blend2flux"


def test_compiled_model_reloads_with_its_losses(tmp_path):
    """Regression: the unknown-class check must not refuse the registered loss functions."""
    from napari_blendphot.models.losses import compile_model, flux_mape, mask_bce

    model = compile_model(
        build_blend2mask2flux(unet_depth=2, unet_filters=4, head_filters=4, head_dense=(8,)), "blend2mask2flux"
    )
    stamps = _stamps()
    model.train_on_batch(stamps, {"fluxes": np.ones((2, 2), "float32"), "masks": np.ones((2, 128, 128, 2), "float32")})
    loaded = load_model(save_model(model, tmp_path / "compiled.keras"), compile=True, expect="blend2mask2flux")
    assert loaded.loss == {"fluxes": flux_mape, "masks": mask_bce}
