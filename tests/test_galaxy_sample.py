"""GalaxySample: the three parts stay in step; bad parts are refused clearly."""

import numpy as np
import pytest
from astropy.table import Table

from napari_blendphot.errors import InputError
from napari_blendphot.sample.galaxy_sample import GalaxySample, flux_to_mag, mag_to_flux


def _parts(sample):
    return sample.images.copy(), sample.segmaps.copy(), sample.catalog.copy()


def test_indexing_keeps_images_segmaps_and_catalogue_in_step(toy_sample):
    sub = toy_sample[[5, 2, 9]]
    assert list(sub.ids) == [toy_sample.ids[5], toy_sample.ids[2], toy_sample.ids[9]]
    np.testing.assert_array_equal(sub.images[1], toy_sample.images[2])
    np.testing.assert_array_equal(sub.segmaps[2], toy_sample.segmaps[9])
    galaxy = toy_sample[7]
    assert galaxy.id == toy_sample.ids[7] and galaxy.image.shape == (128, 128)
    assert toy_sample.by_id(galaxy.id).id == galaxy.id
    sliced = toy_sample[10:20:2]
    assert len(sliced) == 5 and sliced.ids[0] == toy_sample.ids[10]


def test_select_filters(toy_sample):
    sph = toy_sample.select(galtype="sph", mag_max=22.0)
    assert len(sph) > 0
    assert set(sph.catalog["galtype"]) == {"sph"} and max(sph.catalog["mag"]) <= 22.0


def test_central_masks_cover_the_centre(toy_sample):
    masks = toy_sample.central_masks()
    assert masks.shape == toy_sample.images.shape and masks[:, 64, 64].all()


def test_unknown_galtype_is_named_plainly(toy_sample):
    images, segmaps, catalog = _parts(toy_sample)
    catalog["galtype"] = catalog["galtype"].astype("<U8")
    catalog["galtype"][0] = "spiral"
    with pytest.raises(InputError) as info:
        GalaxySample(images, segmaps, catalog, source="my.fits")
    # Regression: the message used to show "[np.str_('spiral')]".
    assert "['spiral']" in str(info.value) and "my.fits" in str(info.value)


@pytest.mark.parametrize("problem, change", [
    ("shape", lambda i, s, c: (i[:, :100, :100], s[:, :100, :100], c)),
    ("rows", lambda i, s, c: (i, s, c[:-1])),
    ("NaN", lambda i, s, c: (np.where(np.arange(128) == 3, np.nan, i).astype(np.float32), s, c)),
    ("lacks column", lambda i, s, c: (i, s, Table({k: c[k] for k in c.colnames if k != "radius"}))),
    ("duplicated", lambda i, s, c: (i, s, _dup_ids(c))),
    ("empty", lambda i, s, c: (i[:0], s[:0], c[:0])),
])
def test_bad_parts_are_refused(toy_sample, problem, change):
    images, segmaps, catalog = change(*_parts(toy_sample))
    with pytest.raises(InputError, match=problem):
        GalaxySample(images, segmaps, catalog, source="bad-sample")


def _dup_ids(catalog):
    catalog["id"][1] = catalog["id"][0]
    return catalog


def test_flux_magnitude_round_trip_and_undetected():
    mags = np.array([18.0, 21.3, 25.96])
    np.testing.assert_allclose(flux_to_mag(mag_to_flux(mags)), mags, atol=1e-12)
    assert mag_to_flux(25.96) == pytest.approx(1.0)
    assert np.isnan(flux_to_mag(np.array([0.0, -1.0]))).all()
