"""The flux-uncertainty output of the networks (docs/uncertainty.md) and the errors the deblenders return.

Keras runs in this process (PyTorch backend unless KERAS_BACKEND says otherwise).
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras  # noqa: E402

from napari_blendphot.models.losses import compile_model, log_flux_nll  # noqa: E402
from napari_blendphot.models.networks import build_blend2flux, build_blend2mask2flux  # noqa: E402

TINY = {"filters": 4, "dense_widths": (8, 8)}


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(11)


def _stamps(n=8, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:128, :128]
    stamps = rng.normal(0.0, 0.01, (n, 128, 128))
    stamps += rng.uniform(1, 5, (n, 1, 1)) * np.exp(-((yy - 64) ** 2 + (xx - 64) ** 2) / 18.0)
    return stamps.astype("float32")


def test_nll_is_the_gaussian_log_likelihood_of_the_log_flux():
    true = np.array([[10.0, 20.0]], np.float32)
    log_flux = np.log([[11.0, 18.0]])
    log_sigma = np.log([[0.1, 0.2]])
    prediction = np.concatenate([log_flux, log_sigma], axis=1).astype(np.float32)
    r = (np.log(true) - log_flux) / np.exp(log_sigma)
    expected = np.mean(0.5 * r ** 2 + log_sigma)
    assert float(keras.ops.convert_to_numpy(log_flux_nll(true, prediction))[0]) == pytest.approx(expected, rel=1e-5)


def test_uncertainty_output_repeats_the_log_fluxes_and_scales_with_the_stamp():
    model = build_blend2flux(uncertainty=True, **TINY)
    stamps = _stamps()
    out = model.predict(stamps, verbose=0)
    np.testing.assert_allclose(out["flux_uncertainty"][:, :2], np.log(out["fluxes"]), rtol=1e-4, atol=1e-4)
    doubled = model.predict(2 * stamps, verbose=0)
    np.testing.assert_allclose(doubled["fluxes"], 2 * out["fluxes"], rtol=1e-4)
    # Relative errors do not depend on the units of the stamp.
    np.testing.assert_allclose(doubled["flux_uncertainty"][:, 2:], out["flux_uncertainty"][:, 2:], atol=1e-4)


@pytest.mark.parametrize("builder,args", [(build_blend2flux, TINY),
                                          (build_blend2mask2flux, {"unet_depth": 2, "unet_filters": 2,
                                                                   "head_filters": 4, "head_depth": 2,
                                                                   "head_dense": (8,)})])
def test_training_the_uncertainty_alone_never_moves_the_fluxes(builder, args):
    model = builder(uncertainty=True, **args)
    stamps = _stamps()
    before = model.predict(stamps, verbose=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss={"flux_uncertainty": log_flux_nll})
    target = before["fluxes"] * 1.5  # residuals to learn from
    model.fit(stamps, {"flux_uncertainty": target}, epochs=3, batch_size=4, verbose=0)
    after = model.predict(stamps, verbose=0)
    np.testing.assert_allclose(after["fluxes"], before["fluxes"], rtol=1e-6)
    assert not np.allclose(after["flux_uncertainty"][:, 2:], before["flux_uncertainty"][:, 2:])


def test_compile_model_trains_fluxes_and_uncertainty():
    model = build_blend2flux(uncertainty=True, **TINY)
    compile_model(model, "blend2flux", learning_rate=1e-3)
    stamps = _stamps(16)
    fluxes = np.stack([stamps.sum(axis=(1, 2)), 0.5 * stamps.sum(axis=(1, 2))], axis=1).astype("float32")
    history = model.fit(stamps, {"fluxes": fluxes, "flux_uncertainty": fluxes}, epochs=2, batch_size=8, verbose=0)
    assert {"fluxes_loss", "flux_uncertainty_loss"} <= set(history.history)


def test_deblenders_return_calibrated_errors(tmp_path):
    from napari_blendphot.deblend.keras_methods import Blend2FluxDeblender, UNetDeblender
    from napari_blendphot.models.io import save_model
    from napari_blendphot.models.networks import build_unet

    model = build_blend2flux(uncertainty=True, **TINY)
    path = tmp_path / "b2f.keras"
    save_model(model, path)
    stamps = _stamps()
    raw = Blend2FluxDeblender(weights=str(path)).deblend(stamps)
    predicted = model.predict(stamps, verbose=0)
    np.testing.assert_allclose(raw.flux_errors, raw.fluxes * np.exp(predicted["flux_uncertainty"][:, 2:]),
                               rtol=1e-4)
    # A manifest's calibration, per galaxy role: sqrt((a err)^2 + (b flux)^2).
    deblender = Blend2FluxDeblender(weights=str(path))
    deblender.manifest = {"flux_error_calibration": {"parameters": {"central": {"a": 1.7, "b": 0.0},
                                                                    "companion": {"a": 1.0, "b": 0.1}}}}
    calibrated = deblender.deblend(stamps)
    np.testing.assert_allclose(calibrated.flux_errors[:, 0], 1.7 * raw.flux_errors[:, 0], rtol=1e-6)
    np.testing.assert_allclose(calibrated.flux_errors[:, 1],
                               np.hypot(raw.flux_errors[:, 1], 0.1 * raw.fluxes[:, 1]), rtol=1e-6)
    # With tta 8 the calibration fitted on averaged predictions applies, where the manifest has one.
    averaged = Blend2FluxDeblender(weights=str(path), tta=8)
    raw8 = averaged.deblend(stamps)
    averaged.manifest = {"flux_error_calibration": {
        "parameters": {"central": {"a": 1.7, "b": 0.0}, "companion": {"a": 1.7, "b": 0.0}},
        "by_tta": {"8": {"parameters": {"central": {"a": 0.5, "b": 0.0, "k95": 2.2},
                                        "companion": {"a": 0.5, "b": 0.0, "k95": 2.2}}}}}}
    calibrated8 = averaged.deblend(stamps)
    np.testing.assert_allclose(calibrated8.flux_errors, 0.5 * raw8.flux_errors, rtol=1e-6)
    assert calibrated8.metadata["flux_error_calibration"]["fitted_with_tta"] == 8
    assert calibrated8.metadata["flux_error_k95"] == {"central": 2.2, "companion": 2.2}
    assert calibrated.metadata["flux_error_calibration"]["fitted_with_tta"] == 1
    deblender.manifest = {"flux_error_calibration": {"parameters": {"central": {"a": -1, "b": 0},
                                                                    "companion": {"a": 1, "b": 0}}}}
    with pytest.raises(ValueError, match="not negative"):
        deblender.deblend(stamps)

    unet_path = tmp_path / "unet.keras"
    save_model(build_unet(depth=2, filters=2), unet_path)
    out = UNetDeblender(weights=str(unet_path)).deblend(stamps)
    measured = np.isfinite(out.fluxes)
    assert np.array_equal(measured, np.isfinite(out.flux_errors))
    assert (out.flux_errors[measured] > 0).all()
    json.dumps(out.metadata)  # the error rule is recorded and serialisable
    assert "flux_error_rule" in out.metadata


def test_head_initialised_from_blend2flux_computes_its_fluxes_and_errors():
    from napari_blendphot.models.networks import copy_matching_weights, init_head_from_blend2flux

    b2f = build_blend2flux(uncertainty=True, **TINY)
    b2m2f = build_blend2mask2flux(unet_depth=2, unet_filters=2, head_filters=4, head_depth=2, head_dense=(8, 8),
                                  uncertainty=True)
    copied = init_head_from_blend2flux(b2m2f, b2f)
    assert "head_conv0a" in copied and "head_log_sigma" in copied
    stamps = _stamps()
    expected, got = b2f.predict(stamps, verbose=0), b2m2f.predict(stamps, verbose=0)
    np.testing.assert_allclose(got["fluxes"], expected["fluxes"], rtol=1e-5)
    np.testing.assert_allclose(got["flux_uncertainty"], expected["flux_uncertainty"], rtol=1e-5, atol=1e-5)
    # A head of another shape is refused, naming the layer.
    wide = build_blend2mask2flux(unet_depth=2, unet_filters=2, head_filters=8, head_depth=2, head_dense=(8, 8),
                                 uncertainty=True)
    with pytest.raises(ValueError, match="b2f_conv0a"):
        init_head_from_blend2flux(wide, b2f)
    # Continuing from a model of the same architecture copies every weighted layer.
    twin = build_blend2flux(uncertainty=True, **TINY)
    assert len(copy_matching_weights(twin, b2f)) == len([layer for layer in b2f.layers if layer.weights])
    np.testing.assert_allclose(twin.predict(stamps, verbose=0)["fluxes"], expected["fluxes"], rtol=1e-6)


def test_the_unet_applies_its_manifests_flux_correction_before_calibrating_errors(tmp_path):
    from napari_blendphot.deblend.keras_methods import UNetDeblender
    from napari_blendphot.metrics.flux_correction import correction_factors
    from napari_blendphot.models.io import save_model
    from napari_blendphot.models.networks import build_unet

    from napari_blendphot.testing.stand_ins import gaussian_pair_stamps

    unet_path = tmp_path / "unet.keras"
    save_model(build_unet(depth=2, filters=2), unet_path)
    # Two blobs, and masks that find them (an untrained U-Net's would not): the masks come from a stand-in pass.
    stamps = gaussian_pair_stamps(8, 2, (64, 64, 30.0, (5.0, 10.0)), (64, 84, 20.0, (0.5, 20.0)))
    yy, xx = np.mgrid[:128, :128]
    masks = np.zeros((8, 2, 128, 128), np.float32)
    masks[:, 0][:, np.hypot(yy - 64, xx - 64) < 8] = 0.9
    masks[:, 1][:, np.hypot(yy - 64, xx - 84) < 6] = 0.8

    def with_masks(deblender):
        deblender._predict = lambda blends, progress=None: (None, masks, None)
        return deblender

    raw = with_masks(UNetDeblender(weights=str(unet_path))).deblend(stamps)
    correction = {"dmag_edges": [0.0], "factors": [1.1, 1.5], "n": 100}
    corrected = with_masks(UNetDeblender(weights=str(unet_path)))
    corrected.manifest = {"flux_correction": {"model": "test", "parameters": correction}}
    out = corrected.deblend(stamps)
    factors = correction_factors(correction, raw.fluxes)
    measured = np.isfinite(raw.fluxes)
    both_positive = measured & (raw.fluxes > 0) & (raw.fluxes[:, ::-1] > 0)
    assert both_positive.any() and set(np.unique(factors[both_positive])) <= {1.1, 1.5}
    assert (factors[~(raw.fluxes > 0)] == 1).all()  # a flux that is not positive is left as it is
    np.testing.assert_allclose(out.fluxes[measured], (raw.fluxes * factors)[measured], rtol=1e-12)
    # Raw errors scale with the fluxes (no calibration here), never below one pixel's noise.
    np.testing.assert_allclose(out.flux_errors[measured], np.maximum(
        raw.flux_errors * factors, raw.flux_errors)[measured], rtol=1e-6)
    assert out.metadata["flux_correction"]["parameters"] == correction
    assert "flux_correction" in out.metadata["flux_rule"] and "flux_correction" not in raw.metadata
    json.dumps(out.metadata)
    corrected.manifest = {"flux_correction": {"parameters": {"dmag_edges": [0.0], "factors": [1.1, -1]}}}
    with pytest.raises(ValueError, match="flux_correction: 'factors' must be finite and > 0"):
        corrected.deblend(stamps)


def test_network_methods_record_the_outer_light_and_calibrate_with_it(tmp_path):
    from napari_blendphot.deblend.keras_methods import Blend2FluxDeblender
    from napari_blendphot.metrics.calibration import outer_light, outer_shares
    from napari_blendphot.models.io import save_model

    path = tmp_path / "b2f.keras"
    save_model(build_blend2flux(uncertainty=True, **TINY), path)
    stamps = _stamps()
    stamps[:4, :10, :] += 0.5  # light at the edge of half of the stamps
    deblender = Blend2FluxDeblender(weights=str(path))
    raw = deblender.deblend(stamps)
    np.testing.assert_allclose(raw.extra["outer_flux"], outer_light(stamps))
    # d alone: the error is d times the galaxy's share of the outer light (a = 0 drops the network's own).
    deblender.manifest = {"flux_error_calibration": {"parameters": {
        role: {"a": 0.0, "b": 0.0, "d": 0.5} for role in ("central", "companion")}}}
    out = deblender.deblend(stamps)
    expected = 0.5 * outer_shares(raw.fluxes, outer_light(stamps))
    measured = expected > 0
    np.testing.assert_allclose(out.flux_errors[measured], expected[measured], rtol=1e-6)
    deblender.manifest = {"flux_error_calibration": {"parameters": {
        role: {"a": 1.0, "b": 0.0, "d": -1.0} for role in ("central", "companion")}}}
    with pytest.raises(ValueError, match="a, b, c and d must be finite and not negative"):
        deblender.deblend(stamps)
