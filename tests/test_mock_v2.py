"""Tests of mock v2 (structured galaxies, PSF variations, correlated noise) and of mock v1's byte-identity."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("galsim")  # optional extra; installed in the test environment

from napari_blendphot.constants import CENTER, GALTYPES  # noqa: E402
from napari_blendphot.errors import InputError  # noqa: E402
from napari_blendphot.sample import mock, mock_noise, mock_v2  # noqa: E402

SEED = 23


@pytest.fixture(scope="module")
def v2_models():
    """Six v2 galaxies (broad population, neighbours everywhere) with their noiseless models."""
    return mock.make_mock_sample(6, SEED, population="broad", neighbour_fraction=1.0, keep_models=True)


# --- v1 stays what it was -----------------------------------------------------------------------
def test_v1_is_unchanged_against_the_embedded_file():
    """The embedded file was made by v1 before v2 existed: v1 still gives its catalogue and segmaps.

    (Images are stored quantised to rms/4 there, so they are compared within that step.)
    """
    from napari_blendphot.sample.embedded import load_embedded_sample

    embedded = load_embedded_sample()
    seed = embedded.provenance["seed"]
    drawn = mock.make_mock_sample(3, seed, mock_version=1)
    for name in embedded.catalog.colnames:
        mine, stored = np.asarray(drawn.catalog[name]), np.asarray(embedded.catalog[name][:3])
        assert np.array_equal(mine, stored, equal_nan=mine.dtype.kind == "f"), name
    assert drawn.segmaps.tobytes() == embedded.segmaps[:3].tobytes()
    step = mock.candels_pixel_rms() / 4
    assert np.max(np.abs(drawn.images - embedded.images[:3])) <= step
    assert {k: v for k, v in drawn.provenance["parameters"].items() if k != "n"} == \
        {k: v for k, v in embedded.provenance["parameters"].items() if k != "n"}


def test_v1_keep_models_splits_central_and_neighbours_without_changing_the_stamps():
    plain = mock.make_mock_sample(2, 21, mock_version=1, neighbour_fraction=1.0)
    sample, noiseless = mock.make_mock_sample(2, 21, mock_version=1, neighbour_fraction=1.0, return_noiseless=True)
    again, models = mock.make_mock_sample(2, 21, mock_version=1, neighbour_fraction=1.0, keep_models=True)
    assert again.images.tobytes() == plain.images.tobytes() == sample.images.tobytes()
    np.testing.assert_allclose(models["models"] + models["neighbours"], noiseless, atol=1e-6)
    np.testing.assert_allclose(models["models"].sum(axis=(1, 2)), sample.catalog["stamp_flux"], rtol=1e-5)
    assert np.all(models["neighbours"].sum(axis=(1, 2)) > 0)


# --- v2: determinism and population ----------------------------------------------------------------
def test_v2_is_the_default_and_deterministic(v2_models):
    sample, models = v2_models
    assert sample.provenance["parameters"]["mock_version"] == 2
    again, models_again = mock.make_mock_sample(6, SEED, population="broad", neighbour_fraction=1.0,
                                                keep_models=True)
    assert sample.images.tobytes() == again.images.tobytes()
    assert sample.segmaps.tobytes() == again.segmaps.tobytes()
    assert models["models"].tobytes() == models_again["models"].tobytes()
    for name in sample.catalog.colnames:
        assert np.asarray(sample.catalog[name]).tobytes() == np.asarray(again.catalog[name]).tobytes(), name
    prefix = mock.make_mock_sample(2, SEED, population="broad", neighbour_fraction=1.0)
    assert prefix.images.tobytes() == sample.images[:2].tobytes()
    default = mock.make_mock_sample(1, SEED)
    assert default.provenance["parameters"]["mock_version"] == 2
    assert default.provenance["parameters"]["population"] == "candels"


def test_v2_candels_population_is_v1s_model():
    """v2 (candels) draws magnitudes and radii with v1's population model, which passes the
    CANDELS test (tests/test_mock.py::test_population_model_matches_the_real_catalogue)."""
    seed = 4
    sample = mock.make_mock_sample(12, seed, neighbour_fraction=0.0)
    redrawn = set(sample.provenance["parameters"]["redrawn_ids"]["galaxy"])
    types = mock.galaxy_types(seed, range(12))
    assert list(np.asarray(sample.catalog["galtype"]).astype(str)) == types
    for i, galtype in enumerate(types):
        if mock.FIRST_ID + i in redrawn:
            continue
        mag, radius, _ = mock.draw_population(mock.galaxy_generator(seed, i), galtype)
        assert sample.catalog["mag"][i] == mag and sample.catalog["radius"][i] == radius


def test_broad_population_is_wider():
    types = mock.galaxy_types(3, range(1500))
    draws = {pop: np.array([mock_v2.draw_population_v2(mock.galaxy_generator(3, i), t, pop)
                            for i, t in enumerate(types)]) for pop in ("candels", "broad")}
    candels, broad = draws["candels"], draws["broad"]
    assert broad[:, 0].min() >= 18.0 and broad[:, 0].max() <= 23.5
    # Measured (seed 3): 3.5 % fainter than 23 mag (none in candels), 9.9 % larger than 20 px (1.2 %).
    assert np.mean(broad[:, 0] > 23.0) > 0.02 and candels[:, 0].max() <= 23.0
    assert np.mean(broad[:, 1] > 20.0) > 2 * np.mean(candels[:, 1] > 20.0)
    assert broad[:, 1].max() > 45.0
    # The wide half respects the surface-brightness limit.
    sb = broad[:, 0] + 2.5 * np.log10(2 * np.pi * (broad[:, 1] * 0.06) ** 2)
    assert np.mean(sb > mock_v2.BROAD_SB_LIMIT + 0.01) < 0.5 * np.mean(sb > 0)


def test_wide_population_makes_large_galaxies_common():
    """``wide``: log-uniform radii to 56 px, every magnitude under its surface-brightness limit."""
    types = mock.galaxy_types(3, range(1500))
    draws = {pop: np.array([mock_v2.draw_population_v2(mock.galaxy_generator(3, i), t, pop)
                            for i, t in enumerate(types)]) for pop in ("broad", "wide")}
    broad, wide = draws["broad"], draws["wide"]
    assert wide[:, 0].min() >= 18.0 and wide[:, 0].max() <= 23.5
    assert wide[:, 1].max() <= 56.0
    # Measured (seed 3): 15.8 % of wide galaxies larger than 20 px (broad 9.9 %), 6.4 % larger than 35 px (2.5 %).
    assert np.mean(wide[:, 1] > 20.0) > 1.4 * np.mean(broad[:, 1] > 20.0)
    assert np.mean(wide[:, 1] > 35.0) > 1.5 * np.mean(broad[:, 1] > 35.0)
    sb = wide[:, 0] + 2.5 * np.log10(2 * np.pi * (wide[:, 1] * 0.06) ** 2)
    drawn_wide = wide[:, 1] > 1.0e-9  # v1's model never breaks the limit by much either
    assert np.all(sb[drawn_wide & (wide[:, 1] > 25.0)] <= mock_v2.WIDE_SB_LIMIT + 1e-9)


def test_wide_population_draws_compact_bulges_and_flat_disks():
    """``wide`` bulge+disk galaxies reach high-index bulges and pure disks flatter than exponential."""
    bulges, disk_ns = [], []
    for i in range(300):
        rng = np.random.default_rng([i, 17])
        radius = float(rng.uniform(2.0, 56.0))
        galtype = ("sphd", "disk")[i % 2]
        _, features = mock_v2.build_galaxy_v2(galtype, 100.0, radius, rng, "wide")
        if galtype == "sphd":
            bulges.append(features["sersic_n"])
        elif features["bulge_fraction"] == 0.0:
            disk_ns.append(features["sersic_n"])
    assert max(bulges) == 6.0 and min(disk_ns) == 0.5


def test_feature_rates_follow_the_table():
    """Features appear at the documented rates (build only, no drawing: fast)."""
    counts = {t: {"n": 0, "arms": 0, "has_bar": 0, "clumps": 0, "dust": 0, "tidal": 0} for t in GALTYPES}
    for i in range(400):
        for galtype in GALTYPES:
            rng = np.random.default_rng([i, GALTYPES.index(galtype)])
            _, features = mock_v2.build_galaxy_v2(galtype, 100.0, 8.0, rng)
            c = counts[galtype]
            c["n"] += 1
            c["arms"] += features["arms"] > 0
            c["has_bar"] += features["has_bar"]
            c["clumps"] += features["n_clumps"] > 0
            c["dust"] += features["dust"]
            c["tidal"] += features["tidal"] > 0
    for galtype in GALTYPES:
        rates = mock_v2.FEATURE_RATES[galtype]
        c = counts[galtype]
        for feature, key in (("arms", "arms"), ("bar", "has_bar"), ("clumps", "clumps"), ("tidal", "tidal")):
            # Binomial sd for 400 draws is at most 0.025.
            assert abs(c[key] / c["n"] - rates[feature]) < 0.08, (galtype, feature, c[key] / c["n"])
    # Dust lanes: only in inclined disks (cos i < 0.45), 70 % of those.
    assert 0.15 < counts["disk"]["dust"] / counts["disk"]["n"] < 0.45
    assert counts["sph"]["dust"] == counts["irr"]["dust"] == 0


# --- v2: flux bookkeeping, light, centring ------------------------------------------------------------
def test_v2_flux_bookkeeping_and_positive_light(v2_models):
    sample, models = v2_models
    catalog = sample.catalog
    np.testing.assert_allclose(models["models"].sum(axis=(1, 2), dtype=np.float64), catalog["stamp_flux"], rtol=1e-5)
    np.testing.assert_allclose(catalog["flux"], 10 ** (-0.4 * (np.asarray(catalog["mag"]) - 25.96)), rtol=1e-12)
    assert np.all(np.asarray(catalog["stamp_flux"]) <= np.asarray(catalog["flux"]) * (1 + 1e-5))
    peak = models["models"].max(axis=(1, 2))
    assert np.all(models["models"].min(axis=(1, 2)) > -1e-4 * peak)
    # Neighbours are in their own cube; the central model has no light where they are.
    assert np.all(models["neighbours"].sum(axis=(1, 2)) > 0)
    assert np.all(np.asarray(catalog["n_neighbours"]) >= 1)


def test_dust_lanes_absorb_without_negative_light():
    """An edge-on dusty disk: the mid-plane is darker than just above it, and no pixel is negative."""
    for i in range(200):
        rng = np.random.default_rng([7, i])
        profile, features = mock_v2.build_galaxy_v2("disk", 100.0, 12.0, rng)
        if features["dust"] and features["inclination"] > 85 and features["arms"] == 0 and not features["has_bar"] \
                and features["n_clumps"] == 0 and features["tidal"] == 0 and not features["merger"]:
            break
    else:
        pytest.fail("no clean edge-on dusty disk in 200 draws")
    image = profile.drawImage(nx=160, ny=160, scale=0.02).array
    # Down to GalSim's FFT accuracy (kvalue_accuracy 1e-5): no negative light.
    assert image.min() > -1e-5 * image.max()
    assert image.sum() == pytest.approx(100.0, rel=0.05)
    # The light profile across the disk (along its minor axis, found from the light's
    # second moments since the position angle is random) dips at the centre.
    yy, xx = np.mgrid[:160, :160] - 79.5
    cov = np.cov(np.vstack([xx.ravel(), yy.ravel()]), aweights=np.clip(image.ravel(), 0, None))
    minor = np.linalg.eigh(cov)[1][:, 0]
    t = np.linspace(-6, 6, 25)
    cut = [image[int(round(79.5 + s * minor[1])), int(round(79.5 + s * minor[0]))] for s in t]
    assert cut[12] < max(cut[9], cut[15]), cut


def test_composite_half_light_radius_matches_galsim():
    """The sizes of bulge + disk + envelope + nucleus are set so that the whole has the drawn radius."""
    import galsim

    components = ((0.5, 4.0, 0.3), (0.35, 1.0, 1.0), (0.1, 1.0, 3.0), (0.05, 0, 0.0))
    unit = mock_v2._composite_unit_hlr(components)
    # The point source (5 %) is counted analytically; GalSim draws the rest, finely sampled.
    extended = galsim.Add([galsim.Sersic(n=n, half_light_radius=h / unit, flux=f) for f, n, h in components if n])
    scale = 0.01
    image = extended.drawImage(nx=2000, ny=2000, scale=scale, method="no_pixel").array.astype(np.float64)
    yy, xx = np.mgrid[:2000, :2000] - 999.5
    radius = np.hypot(yy, xx).ravel() * scale
    order = np.argsort(radius)
    enclosed = 0.05 + np.cumsum(image.ravel()[order])
    measured = radius[order][np.searchsorted(enclosed, 0.5)]
    assert measured == pytest.approx(1.0, rel=0.02)


def test_v2_light_centroid_on_the_centre_pixel():
    sample, models = mock.make_mock_sample(8, 2, neighbour_fraction=0.0, exposure_time=None, keep_models=True)
    y, x = np.mgrid[:128, :128]
    inside = np.asarray(sample.catalog["stamp_flux"]) / np.asarray(sample.catalog["flux"])
    for model, share in zip(models["models"], inside):
        if share < 0.97:  # light beyond the stamp moves the centroid of what is left
            continue
        centroid = np.array([(model * y).sum(), (model * x).sum()]) / model.sum()
        assert np.all(np.abs(centroid - CENTER) < 1.5), centroid


def test_v2_psf_and_noise_are_recorded_and_in_range(v2_models):
    sample, models = v2_models
    catalog = sample.catalog
    assert np.all((catalog["psf_fwhm"] >= 0.155) & (catalog["psf_fwhm"] <= 0.195))
    assert np.all(catalog["psf_g"] < 0.04)
    assert np.all((catalog["noise_corr"] >= 0.0) & (catalog["noise_corr"] <= 0.52))
    for a, kernel, corr in zip(catalog["noise_kernel_a"], models["noise_kernel"], catalog["noise_corr"]):
        np.testing.assert_allclose(kernel, mock_noise.correlation_kernel(a))
        assert mock_noise.neighbour_correlation(kernel) == pytest.approx(corr)
    assert mock_v2.base_psf_fwhm() == pytest.approx(0.172, abs=0.002)


def test_v2_stamp_noise_has_the_recorded_rms_and_correlation():
    """The noise of make-sample's stamps (image - models) has each galaxy's rms and pixel correlation."""
    sample, models = mock.make_mock_sample(4, 9, neighbour_fraction=0.0, keep_models=True)
    residual = sample.images - models["models"] - models["neighbours"]
    for k in range(len(sample)):
        edge = residual[k][:, :24].astype(np.float64)  # background only
        edge = edge - edge.mean()
        assert edge.std() == pytest.approx(models["noise_rms"][k], rel=0.06)
        lag1 = np.mean(edge[:, 1:] * edge[:, :-1]) / edge.var()
        assert lag1 == pytest.approx(sample.catalog["noise_corr"][k], abs=0.06)


# --- add_mock_noise ---------------------------------------------------------------------------------
def test_add_mock_noise_reproduces_rms_correlation_and_poisson():
    rng = np.random.default_rng(0)
    kernel = mock_noise.correlation_kernel(0.25)
    flat = np.full((2, 128, 128), 0.5, np.float32)
    params = {"noise_rms": np.array([0.01, 0.01]), "noise_kernel": np.stack([kernel, np.pad([[1.0]], 1)]),
              "exposure_time": np.array([0.0, 1000.0])}
    noisy = mock_noise.add_mock_noise(flat, params, rng)
    assert noisy.dtype == np.float32 and noisy.shape == flat.shape
    background_only = noisy[0] - 0.5
    assert background_only.std() == pytest.approx(0.01, rel=0.03)
    lag1 = np.mean(background_only[:, 1:] * background_only[:, :-1]) / background_only.var()
    assert lag1 == pytest.approx(mock_noise.neighbour_correlation(kernel), abs=0.03)
    # Poisson of 0.5 e-/s for 1000 s: variance 0.5/1000 on top of the white 0.01^2.
    assert (noisy[1] - 0.5).var() == pytest.approx(0.5 / 1000 + 0.01**2, rel=0.06)
    # Same generator state, same noise; a single stamp works too.
    again = mock_noise.add_mock_noise(flat, params, np.random.default_rng(0))
    assert again.tobytes() == noisy.tobytes()
    single = mock_noise.add_mock_noise(flat[0], {k: v[0] for k, v in params.items()}, np.random.default_rng(0))
    assert single.tobytes() == noisy[0].tobytes()


def test_mock_noise_needs_numpy_only():
    code = ("import sys; import napari_blendphot.sample.mock_noise as m; "
            "bad = [x for x in ('galsim', 'scipy', 'astropy', 'keras', 'sep') if x in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- CLI and arguments ------------------------------------------------------------------------------------
def test_cli_models_out_roundtrip_and_refusals(tmp_path, capsys):
    from napari_blendphot.cli import main
    from napari_blendphot.sample.io_native import read_native

    sample_path, models_path = tmp_path / "v2.fits", tmp_path / "v2_models.npz"
    assert main(["make-sample", "-n", "2", "--seed", "3", "--population", "broad", "-o", str(sample_path),
                 "--models-out", str(models_path)]) == 0
    sample = read_native(sample_path)
    assert sample.provenance["parameters"]["population"] == "broad"
    with np.load(models_path) as data:
        assert data["models"].shape == (2, 128, 128) and data["models"].dtype == np.float32
        assert data["noise_kernel"].shape == (2, 3, 3)
        np.testing.assert_array_equal(data["ids"], sample.ids)
        noisy = mock_noise.add_mock_noise(data["models"] + data["neighbours"], data, np.random.default_rng(1))
        assert noisy.shape == (2, 128, 128)
    before = models_path.read_bytes()
    assert main(["make-sample", "-n", "2", "--seed", "4", "-o", str(tmp_path / "other.fits"),
                 "--models-out", str(models_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert models_path.read_bytes() == before
    assert not (tmp_path / "other.fits").exists()
    assert main(["make-sample", "-n", "2", "--seed", "4", "--mock-version", "1", "--population", "broad",
                 "-o", str(tmp_path / "v1.fits")]) == 2
    assert "version 1" in capsys.readouterr().err
    assert main(["make-sample", "-n", "2", "--seed", "4", "--mock-version", "1", "--population", "wide",
                 "-o", str(tmp_path / "v1.fits")]) == 2
    assert "version 1" in capsys.readouterr().err
    assert main(["make-sample", "-n", "2", "--seed", "3", "--population", "wide", "-o", str(tmp_path / "w.fits")]) == 0
    assert read_native(tmp_path / "w.fits").provenance["parameters"]["population"] == "wide"
    assert main(["make-sample", "-n", "2", "--seed", "4", "-o", str(tmp_path / "x.fits"),
                 "--models-out", str(tmp_path / "x.npy")]) == 2


def test_bad_version_and_population_raise_input_error():
    for kwargs in ({"mock_version": 3}, {"mock_version": True}, {"population": "deep"},
                   {"mock_version": 1, "population": "broad"}, {"mock_version": 1, "population": "wide"},
                   {"return_noiseless": True}):
        with pytest.raises(InputError):
            mock.make_mock_sample(1, 1, **kwargs)
