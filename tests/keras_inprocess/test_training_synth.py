"""Training blends synthesised on the device (training/synth.py): geometry, targets, noise, determinism.

Keras runs in this process (PyTorch backend unless KERAS_BACKEND says otherwise).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from napari_blendphot.blend.assemble import assemble_pairs  # noqa: E402
from napari_blendphot.training.synth import Augmentation, SynthBlends, _resample, _source_coordinates  # noqa: E402

#: No augmentation and (almost) no noise: synthesis must reduce to the blending protocol.
PLAIN = Augmentation(dihedral=False, central_jitter_px=0.0, companion_subpixel=False, pair_flux_mag=0.0,
                     galaxy_flux_mag=0.0, blur_sigma_px=(0.0, 0.0), noise_rms=(1e-12, 1e-12),
                     correlated_fraction=0.0, exposure_time_s=(1e30, 1e30))


@pytest.fixture(scope="module")
def bank():
    """A small bank: smooth asymmetric 'galaxies' (two offset Gaussians each) with their masks."""
    rng = np.random.default_rng(3)
    n = 24
    yy, xx = np.mgrid[:128, :128] - 64.0
    models = np.empty((n, 128, 128), np.float32)
    for i in range(n):
        r = rng.uniform(2, 8)
        models[i] = np.exp(-(yy ** 2 + xx ** 2) / (2 * r * r)) + 0.5 * np.exp(
            -((yy - r) ** 2 + (xx - 0.5 * r) ** 2) / (r * r))
    models *= rng.uniform(0.5, 5, (n, 1, 1)).astype(np.float32)
    masks = (models > 0.05).astype(np.uint8)
    mags = rng.uniform(20, 22, n)
    return {"models": models, "masks": masks, "fluxes": 10 ** (-0.4 * (mags - 25.96)), "mags": mags,
            "radii": rng.uniform(3, 8, n), "ids": np.arange(n, dtype=np.int64)}


def _numpy(x):
    from keras import ops

    return np.asarray(ops.convert_to_numpy(x))


def test_without_augmentation_it_is_the_blending_protocol(bank):
    source = SynthBlends(bank, 64, 32, seed=1, targets=("fluxes", "masks"), augmentation=PLAIN)
    plan = source.plan(0, 0)
    blends, masks = source.make(plan)
    reference = assemble_pairs(bank["models"], bank["masks"], plan.central, plan.companion, plan.extra["dy"],
                               plan.extra["dx"], galaxy1=False, galaxy2=False)
    np.testing.assert_allclose(_numpy(blends), reference["blends"], atol=1e-5)
    assert np.array_equal(_numpy(masks).astype(np.uint8), np.moveaxis(reference["masks"], 1, -1))
    expected = np.column_stack([bank["fluxes"][plan.central], bank["fluxes"][plan.companion]])
    np.testing.assert_allclose(plan.fluxes, expected, rtol=1e-6)


def test_the_eight_symmetries_turn_about_the_centre_pixel():
    rng = np.random.default_rng(0)
    image = rng.random((1, 128, 128)).astype(np.float32)
    seen = set()
    for code in range(8):
        sy, sx = _source_coordinates(np.zeros((1, 2), np.float32), np.array([code], np.int32))
        out = _numpy(_resample(image, sy, sx, order=1))[0]
        y, x = np.mgrid[:128, :128] - 64
        swap, flip_y, flip_x = code // 4, (code // 2) % 2, code % 2
        x = -x if flip_x else x
        y = -y if flip_y else y
        y, x = (x, y) if swap else (y, x)
        y, x = y + 64, x + 64
        inside = (y >= 0) & (y < 128) & (x >= 0) & (x < 128)
        expected = np.where(inside, image[0][np.clip(y, 0, 127), np.clip(x, 0, 127)], 0.0)
        np.testing.assert_array_equal(out, expected)
        assert out[64, 64] == image[0, 64, 64]  # the galaxy stays centred
        seen.add(out.tobytes())
    assert len(seen) == 8


def test_masks_move_with_the_light_and_fluxes_with_the_factors(bank):
    augmentation = Augmentation(noise_rms=(1e-12, 1e-12), exposure_time_s=(1e30, 1e30), blur_sigma_px=(0.0, 0.0))
    source = SynthBlends(bank, 64, 32, seed=2, targets=("fluxes", "masks"), augmentation=augmentation)
    plan = source.plan(3, 1)
    expected = np.column_stack([bank["fluxes"][plan.central], bank["fluxes"][plan.companion]]) * plan.flux_factors
    np.testing.assert_allclose(plan.fluxes, expected, rtol=1e-6)
    assert not np.allclose(plan.flux_factors, 1.0)
    # Each galaxy alone: its light-weighted centre lies inside its own mask, at its offset.
    alone = dict(plan.__dict__)
    alone["flux_factors"] = plan.flux_factors * np.array([1.0, 0.0], np.float32)
    blends, masks = source._synthesize(source._models, source._masks, *(alone[k] for k in (
        "central", "companion", "offsets", "dihedral", "flux_factors", "blur_sigma", "noise_rms", "correlation",
        "inverse_exposure", "noise_seed")))
    blends, masks = _numpy(blends), _numpy(masks)
    for i in range(len(blends)):
        light = blends[i]
        cy = (light.sum(axis=1) * np.arange(128)).sum() / light.sum()
        cx = (light.sum(axis=0) * np.arange(128)).sum() / light.sum()
        assert masks[i, int(round(cy)), int(round(cx)), 0] == 1
        assert abs(cy - 64) < 8 and abs(cx - 64) < 8


def test_same_seed_epoch_and_step_give_the_same_batch(bank):
    source = SynthBlends(bank, 64, 16, seed=7, targets=("fluxes",))
    a, ya = source.batch(2, 1)
    b, yb = source.batch(2, 1)
    c, _ = source.batch(2, 2)
    assert np.array_equal(_numpy(a), _numpy(b)) and np.array_equal(ya["fluxes"], yb["fluxes"])
    assert not np.array_equal(_numpy(a), _numpy(c))


def test_noise_has_the_requested_level_white_and_correlated():
    empty = {"models": np.zeros((4, 128, 128), np.float32), "masks": np.zeros((4, 128, 128), np.uint8),
             "fluxes": np.ones(4), "mags": np.full(4, 21.0), "radii": np.full(4, 4.0), "ids": np.arange(4)}
    for fraction in (0.0, 1.0):
        augmentation = Augmentation(noise_rms=(0.02, 0.02), correlated_fraction=fraction, correlation=(0.5, 0.5))
        source = SynthBlends(empty, 64, 64, seed=1, augmentation=augmentation)
        blends = _numpy(source.batch(0, 0)[0])
        assert blends.std() == pytest.approx(0.02, rel=0.02)
        neighbours = np.corrcoef(blends[:, 10:-10, 10:-11].ravel(), blends[:, 10:-10, 11:-10].ravel())[0, 1]
        # [a, 1, a] / sqrt(1 + 2 a^2) per axis: correlation of neighbours 2a / (1 + 2a^2) = 2/3 for a = 0.5.
        assert neighbours == pytest.approx(0.0 if fraction == 0 else 2 / 3, abs=0.02)


def test_poisson_noise_follows_the_light(bank):
    augmentation = Augmentation(dihedral=False, central_jitter_px=0.0, companion_subpixel=False, pair_flux_mag=0.0,
                                galaxy_flux_mag=0.0, blur_sigma_px=(0.0, 0.0), noise_rms=(1e-12, 1e-12),
                                correlated_fraction=0.0, exposure_time_s=(10.0, 10.0))
    source = SynthBlends(bank, 64, 64, seed=4, augmentation=augmentation)
    plan = source.plan(0, 0)
    noisy = _numpy(source.make(plan)[0])
    quiet = dict(plan.__dict__)
    quiet["inverse_exposure"] = np.zeros_like(plan.inverse_exposure)
    clean = _numpy(source._synthesize(source._models, source._masks, *(quiet[k] for k in (
        "central", "companion", "offsets", "dihedral", "flux_factors", "blur_sigma", "noise_rms", "correlation",
        "inverse_exposure", "noise_seed")))[0])
    for light in (clean > 1.0, (clean > 0.01) & (clean < 0.1)):
        z = (noisy - clean)[light] / np.sqrt(clean[light] / 10.0)
        assert light.sum() > 1000 and z.std() == pytest.approx(1.0, abs=0.05)


# ---------------------------------------------------------------------------
# Round 5: compact components and outer-profile tapers
# ---------------------------------------------------------------------------
def _sum_bank(bank):
    """The bank with each galaxy's true flux equal to the light of its model (none outside the stamp)."""
    summed = dict(bank)
    summed["fluxes"] = bank["models"].astype(np.float64).sum(axis=(1, 2))
    return summed


def _clean(source, plan):
    quiet = dict(plan.__dict__)
    quiet["inverse_exposure"] = np.zeros_like(plan.inverse_exposure)
    quiet["noise_rms"] = np.zeros_like(plan.noise_rms)
    return _numpy(source._synthesize(source._models, source._masks, *(quiet[k] for k in (
        "central", "companion", "offsets", "dihedral", "flux_factors", "blur_sigma", "noise_rms", "correlation",
        "inverse_exposure", "noise_seed")), **plan.synthesis_options())[0])


def test_the_new_augmentations_are_off_by_default_and_leave_the_other_draws_alone(bank):
    plain = SynthBlends(bank, 64, 32, seed=5, augmentation=Augmentation())
    both = SynthBlends(bank, 64, 32, seed=5, augmentation=Augmentation(compact_fraction=0.5, taper_fraction=0.5))
    a, b = plain.plan(1, 2), both.plan(1, 2)
    assert a.taper_radius is None and a.points is None and a.synthesis_options() == {}
    for name in ("central", "companion", "offsets", "dihedral", "flux_factors", "blur_sigma", "noise_rms",
                 "correlation", "inverse_exposure", "noise_seed"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert b.points.shape == (32, 2, 3, 4) and b.taper_radius.shape == (32, 2)
    assert not np.array_equal(a.fluxes, b.fluxes)


def _stressed_plan(bank, seed, **stress):
    """A plan of *bank* (true flux = model light) with *stress* and no flux rescaling or blur, and its base fluxes."""
    summed = _sum_bank(bank)
    augmentation = Augmentation(pair_flux_mag=0.0, galaxy_flux_mag=0.0, blur_sigma_px=(0.0, 0.0), **stress)
    source = SynthBlends(summed, 64, 64, seed=seed, augmentation=augmentation)
    plan = source.plan(0, 0)
    base = np.column_stack([summed["fluxes"][plan.central], summed["fluxes"][plan.companion]])
    return source, plan, base


def _central_alone(plan, **changes):
    """The plan with the companion's light (and its compact components) switched off."""
    alone = {**plan.__dict__, "flux_factors": plan.flux_factors * np.array([1.0, 0.0], np.float32), **changes}
    if alone["points"] is not None:
        alone["points"] = alone["points"].copy()
        alone["points"][:, 1, :, 2] = 0.0
    return plan.__class__(**alone)


def test_compact_components_add_their_light_to_the_image_and_to_the_true_flux(bank):
    source, plan, base = _stressed_plan(bank, 8, dihedral=False, central_jitter_px=0.0, companion_subpixel=False,
                                        compact_fraction=1.0, compact_flux=(0.1, 0.3))
    added = plan.points[..., 2].sum(axis=-1)
    share = added / base
    assert share.min() >= 0.1 - 1e-6 and share.max() <= 0.3 + 1e-6
    np.testing.assert_allclose(plan.fluxes, base + added, rtol=1e-5)
    # Components lie within 1.5 half-light radii of a centred galaxy: all their light is in the stamp.
    light = _clean(source, _central_alone(plan)).sum(axis=(1, 2))
    np.testing.assert_allclose(light, plan.fluxes[:, 0], rtol=2e-3)
    # A nucleus sits on the centre half of the time.
    first = np.hypot(plan.points[..., 0, 0], plan.points[..., 0, 1])
    assert 0.3 < np.mean(first == 0.0) < 0.7


def test_a_taper_removes_the_outer_light_and_the_true_flux_keeps_what_is_left(bank):
    source, plan, base = _stressed_plan(bank, 9, taper_fraction=1.0, taper_radius=(1.0, 2.0))
    kept = plan.fluxes / base
    assert np.isfinite(plan.taper_radius).all() and kept.max() < 0.999 and kept.min() > 0.05
    alone = _central_alone(plan)
    light = _clean(source, alone).sum(axis=(1, 2))
    # The image's light and the target agree to the 0.25-px annuli the target is computed on.
    np.testing.assert_allclose(light, plan.fluxes[:, 0], rtol=0.02)
    untapered = _central_alone(plan, taper_radius=np.full_like(plan.taper_radius, np.inf))
    assert (light < _clean(source, untapered).sum(axis=(1, 2))).all()


def test_central_radius_power_favours_large_centrals_and_is_off_by_default(bank):
    plain = SynthBlends(bank, 512, 512, seed=5, augmentation=Augmentation())
    zero = SynthBlends(bank, 512, 512, seed=5, augmentation=Augmentation(central_radius_power=0.0))
    big = SynthBlends(bank, 512, 512, seed=5, augmentation=Augmentation(central_radius_power=3.0))
    a, b, c = plain.plan(0, 0), zero.plan(0, 0), big.plan(0, 0)
    np.testing.assert_array_equal(a.central, b.central)  # 0 = the old uniform draw, same bytes
    np.testing.assert_array_equal(a.fluxes, b.fluxes)
    assert bank["radii"][c.central].mean() > bank["radii"][a.central].mean() + 0.5
    assert Augmentation.from_config({"central_radius_power": 2}).central_radius_power == 2
