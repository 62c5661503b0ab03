"""Architectures, parameter counts, scaling layers and losses of the networks.

Runs Keras in this process with the PyTorch backend unless KERAS_BACKEND says
otherwise (TensorFlow must not load in a process that may later load napari;
the per-backend checks run in subprocesses in test_models_backends.py).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras  # noqa: E402

from napari_blendphot.errors import InputError  # noqa: E402
from napari_blendphot.models.layers import FluxOutput, StampNormalization  # noqa: E402
from napari_blendphot.models.losses import compile_model, flux_mape, mask_bce  # noqa: E402
from napari_blendphot.models.networks import (  # noqa: E402
    build_blend2flux,
    build_blend2mask2flux,
    build_model,
    build_unet,
    load_unet_weights,
)

TINY_B2F = {"filters": 4, "dense_widths": (8, 8)}
TINY_UNET = {"depth": 2, "filters": 4}
TINY_B2M2F = {"unet_depth": 2, "unet_filters": 4, "head_filters": 4, "head_depth": 2, "head_dense": (8,)}


@pytest.fixture(autouse=True)
def _seeded_keras():
    """Initial weights from a fixed seed: no test depends on the luck of the draw or on the tests run before."""
    keras.utils.set_random_seed(2020)


def _stamps(n=3, seed=0):
    rng = np.random.default_rng(seed)
    stamps = rng.normal(0.0, 0.01, (n, 128, 128))
    yy, xx = np.mgrid[:128, :128]
    stamps += 5.0 * np.exp(-((yy - 64) ** 2 + (xx - 64) ** 2) / 18.0)
    return stamps.astype("float32")


# The paper's Table 2 (depth 2, two dense layers as wide as the first level).
@pytest.mark.parametrize(
    "filters, expected",
    [(64, 1_607_106), (256, 25_696_002), pytest.param(512, 102_772_226, marks=pytest.mark.slow)],
)
def test_blend2flux_parameter_counts_match_table_2(filters, expected):
    model = build_blend2flux(filters=filters)
    assert model.count_params() == expected


def test_unet_and_blend2mask2flux_fiducial_parameter_counts():
    assert build_unet().count_params() == 8_629_954  # paper: "about 8.6 M"
    assert build_unet(up_kernel_size=2).count_params() == 7_759_554
    assert build_blend2mask2flux().count_params() == 18_467_140  # paper: "about 18.5 M"


def test_scaling_layers_hold_no_weights():
    model = build_blend2flux(**TINY_B2F)
    for layer in model.layers:
        if isinstance(layer, (StampNormalization, FluxOutput)):
            assert layer.weights == []


def test_output_shapes_and_names():
    stamps = _stamps(3)
    b2f = build_blend2flux(**TINY_B2F)
    assert b2f.predict(stamps, verbose=0).shape == (3, 2)
    assert b2f.layers[-1].name == "fluxes"

    unet = build_unet(**TINY_UNET)
    masks = unet.predict(stamps, verbose=0)
    assert masks.shape == (3, 128, 128, 2)
    assert np.all((masks >= 0) & (masks <= 1))

    ogg = build_unet(encoding="ogg", **TINY_UNET)
    assert ogg.predict(stamps, verbose=0).shape == (3, 128, 128, 3)

    b2m2f = build_blend2mask2flux(**TINY_B2M2F)
    outputs = b2m2f.predict(stamps, verbose=0)
    assert set(outputs) == {"masks", "fluxes"}
    assert outputs["masks"].shape == (3, 128, 128, 2)
    assert outputs["fluxes"].shape == (3, 2)
    ogg_b2m2f = build_blend2mask2flux(encoding="ogg", **TINY_B2M2F)
    assert ogg_b2m2f.predict(stamps, verbose=0)["masks"].shape == (3, 128, 128, 3)


def test_channel_axis_is_optional_on_input():
    stamps = _stamps(2)
    model = build_blend2flux(**TINY_B2F)
    normalization = model.get_layer("normalization")
    with_axis, scale_a = normalization(stamps[..., None])
    without_axis, scale_b = normalization(stamps)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(with_axis), keras.ops.convert_to_numpy(without_axis))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scale_a), keras.ops.convert_to_numpy(scale_b))


def test_fluxes_are_positive_and_scale_with_the_stamp():
    """rms normalisation makes the fluxes equivariant: a stamp x2 gives fluxes x2."""
    stamps = _stamps(3)
    for model in (build_blend2flux(**TINY_B2F), build_blend2mask2flux(**TINY_B2M2F)):
        single = model.predict(stamps, verbose=0)
        double = model.predict(2.0 * stamps, verbose=0)
        if isinstance(single, dict):
            np.testing.assert_allclose(double["masks"], single["masks"], rtol=1e-4, atol=1e-6)
            single, double = single["fluxes"], double["fluxes"]
        assert np.all(single > 0)
        np.testing.assert_allclose(double, 2.0 * single, rtol=1e-4)


def test_initial_fluxes_are_of_the_order_of_flux_scale_times_rms():
    stamps = _stamps(3)
    rms = np.sqrt(np.mean(stamps.astype(np.float64) ** 2, axis=(1, 2)))
    fluxes = build_blend2flux(flux_scale=500.0, **TINY_B2F).predict(stamps, verbose=0)
    ratio = fluxes / (500.0 * rms[:, None])
    # exp(z) with z from a freshly initialised linear layer: within a factor e^3.
    assert np.all((ratio > np.exp(-3)) & (ratio < np.exp(3)))


def test_fixed_normalisation_uses_its_constants():
    stamps = _stamps(2)
    model = build_blend2flux(normalization="fixed", input_scale=0.5, flux_scale=40.0, **TINY_B2F)
    normalised, scale = model.get_layer("normalization")(stamps)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(normalised)[..., 0], stamps / 0.5, rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scale), 0.5)
    config = model.get_layer("fluxes").get_config()
    assert config["flux_scale"] == 40.0
    assert model.get_layer("normalization").get_config()["mode"] == "fixed"


def test_all_zero_stamp_gives_finite_fluxes():
    fluxes = build_blend2flux(**TINY_B2F).predict(np.zeros((1, 128, 128), "float32"), verbose=0)
    assert np.all(np.isfinite(fluxes)) and np.all(fluxes >= 0)


def test_flux_output_clips_instead_of_overflowing():
    layer = FluxOutput(flux_scale=1.0, max_log=20.0)
    fluxes = keras.ops.convert_to_numpy(layer([np.array([[1e4, -1e4]], "float32"), np.ones((1, 1), "float32")]))
    np.testing.assert_allclose(fluxes, [[np.exp(20.0), np.exp(-20.0)]], rtol=1e-5)


def test_invalid_configurations_are_refused():
    with pytest.raises(ValueError, match="multiple of"):
        build_blend2flux(filters=4, depth=4)
    with pytest.raises(ValueError, match="encoding"):
        build_unet(encoding="three", **TINY_UNET)
    with pytest.raises(ValueError, match="n_masks"):
        build_unet(n_masks=3, **TINY_UNET)
    with pytest.raises(ValueError, match="positive integer"):
        build_blend2flux(filters=0)
    with pytest.raises(ValueError, match="mode"):
        StampNormalization(mode="median")
    with pytest.raises(ValueError, match="unknown network"):
        build_model("resnet")


def test_load_unet_weights_copies_every_unet_layer():
    stamps = _stamps(2)
    unet = build_unet(**TINY_UNET)
    b2m2f = build_blend2mask2flux(**TINY_B2M2F)
    before = b2m2f.predict(stamps, verbose=0)["masks"]
    copied = load_unet_weights(b2m2f, unet)
    assert "masks" in copied and len(copied) == sum(1 for layer in unet.layers if layer.weights)
    after = b2m2f.predict(stamps, verbose=0)["masks"]
    np.testing.assert_allclose(after, unet.predict(stamps, verbose=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(before, after)


def test_load_unet_weights_refuses_an_incompatible_unet():
    b2m2f = build_blend2mask2flux(**TINY_B2M2F)
    with pytest.raises(InputError, match="expects"):
        load_unet_weights(b2m2f, build_unet(depth=2, filters=8))
    with pytest.raises(InputError, match="no counterpart"):
        load_unet_weights(b2m2f, build_unet(depth=3, filters=4))


def test_losses_match_keras_builtins():
    rng = np.random.default_rng(3)
    true_flux = rng.uniform(5.0, 50.0, (6, 2)).astype("float32")
    predicted_flux = (true_flux * rng.uniform(0.5, 1.5, (6, 2))).astype("float32")
    ours = float(keras.ops.mean(flux_mape(true_flux, predicted_flux)))
    np.testing.assert_allclose(ours, float(keras.losses.MeanAbsolutePercentageError()(true_flux, predicted_flux)), rtol=1e-6)
    np.testing.assert_allclose(ours, 100 * np.mean(np.abs(true_flux - predicted_flux) / true_flux), rtol=1e-5)

    true_masks = (rng.random((2, 16, 16, 2)) > 0.5).astype("float32")
    predicted_masks = rng.uniform(0.01, 0.99, (2, 16, 16, 2)).astype("float32")
    ours = float(keras.ops.mean(mask_bce(true_masks, predicted_masks)))
    expected = -np.mean(true_masks * np.log(predicted_masks) + (1 - true_masks) * np.log(1 - predicted_masks))
    np.testing.assert_allclose(ours, expected, rtol=1e-5)
    np.testing.assert_allclose(ours, float(keras.losses.BinaryCrossentropy()(true_masks, predicted_masks)), rtol=1e-5)


def test_combined_loss_weights_mask_bce_by_a_tenth():
    stamps = _stamps(2)
    model = compile_model(build_blend2mask2flux(**TINY_B2M2F), "blend2mask2flux")
    rng = np.random.default_rng(5)
    targets = {
        "fluxes": rng.uniform(10, 100, (2, 2)).astype("float32"),
        "masks": (rng.random((2, 128, 128, 2)) > 0.5).astype("float32"),
    }
    total = model.evaluate(stamps, targets, verbose=0, return_dict=True)
    predicted = model.predict(stamps, verbose=0)
    mape = float(keras.ops.mean(flux_mape(targets["fluxes"], predicted["fluxes"])))
    bce = float(keras.ops.mean(mask_bce(targets["masks"], predicted["masks"])))
    np.testing.assert_allclose(total["loss"], mape + 0.1 * bce, rtol=1e-4)


def test_mask_encodings_round_trip():
    from napari_blendphot.models.networks import decode_masks, encode_masks

    rng = np.random.default_rng(9)
    masks = (rng.random((3, 2, 16, 16)) > 0.6).astype(np.uint8)
    two = encode_masks(masks, "two")
    assert two.shape == (3, 16, 16, 2)
    np.testing.assert_array_equal(decode_masks(two, "two"), masks)
    ogg = encode_masks(masks, "ogg")
    assert ogg.shape == (3, 16, 16, 3)
    assert ogg.sum(axis=-1).max() == 1  # overlap, central only, companion only are disjoint
    np.testing.assert_array_equal(ogg[..., 0], masks[:, 0] & masks[:, 1])
    np.testing.assert_array_equal(decode_masks(ogg, "ogg"), masks)
    with pytest.raises(InputError, match="expected"):
        decode_masks(two, "ogg")
    with pytest.raises(InputError, match=r"\(N, 2, H, W\)"):
        encode_masks(masks[:, :1], "two")


@pytest.mark.parametrize("builder, config", [(build_blend2flux, TINY_B2F), (build_unet, TINY_UNET),
                                             (build_blend2mask2flux, TINY_B2M2F)])
def test_reshape_pooling_gives_the_same_model(builder, config, tmp_path):
    """pooling="reshape" changes how max-pooling is computed (under JAX), not the model: same weights, outputs."""
    from napari_blendphot.models.io import load_model, save_model
    from napari_blendphot.models.layers import BlockMaxPool2D

    window = builder(**config)
    reshape = builder(**config, pooling="reshape")
    assert reshape.count_params() == window.count_params()
    assert [layer.name for layer in reshape.layers] == [layer.name for layer in window.layers]
    assert any(isinstance(layer, BlockMaxPool2D) for layer in reshape.layers)
    assert not any(isinstance(layer, keras.layers.MaxPooling2D) for layer in reshape.layers)
    reshape.set_weights(window.get_weights())
    stamps = _stamps(n=3)
    expected = keras.tree.map_structure(np.asarray, window.predict_on_batch(stamps))
    got = keras.tree.map_structure(np.asarray, reshape.predict_on_batch(stamps))
    keras.tree.map_structure(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), expected, got)
    # And it saves and loads in safe mode (the layer is registered).
    path = tmp_path / "reshape.keras"
    save_model(reshape, path)
    loaded = load_model(path, safe_mode=True, compile=False)
    again = keras.tree.map_structure(np.asarray, loaded.predict_on_batch(stamps))
    keras.tree.map_structure(np.testing.assert_array_equal, got, again)


def test_block_max_pool_matches_max_pooling_2d_and_refuses_odd_sizes():
    from napari_blendphot.models.layers import BlockMaxPool2D

    values = np.random.default_rng(3).normal(size=(2, 6, 8, 3)).astype("float32")
    expected = np.asarray(keras.layers.MaxPooling2D(2)(values))
    np.testing.assert_array_equal(np.asarray(BlockMaxPool2D()(values)), expected)
    with pytest.raises(ValueError, match="even"):
        BlockMaxPool2D()(values[:, :5])
    with pytest.raises(ValueError, match="pooling must be one of"):
        build_blend2flux(**TINY_B2F, pooling="average")
