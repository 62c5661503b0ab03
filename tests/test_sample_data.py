"""napari sample-data entries: the embedded mock galaxies and their seeded blends."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from napari_blendphot._reader import mask_outlines
from napari_blendphot._sample_data import (
    SAMPLE_BLENDS_N,
    SAMPLE_BLENDS_SEED,
    cleaned_embedded_sample,
    embedded_blends,
    mock_blends,
    mock_galaxies,
)


def test_mock_galaxies_are_the_embedded_sample():
    from napari_blendphot.sample.embedded import load_embedded_sample

    sample = load_embedded_sample()
    (stamps, kwargs, kind), (segmaps, _, label_kind) = mock_galaxies()
    assert (kind, label_kind) == ("image", "labels")
    np.testing.assert_array_equal(stamps, sample.images)
    np.testing.assert_array_equal(segmaps, sample.segmaps)
    assert kwargs["metadata"]["blendphot_kind"] == "sample"
    assert kwargs["name"] == "mock stamps"


def test_embedded_blends_equal_blending_the_fully_cleaned_sample():
    """Cleaning only the galaxies the pairs use gives the same bytes as cleaning all first."""
    from napari_blendphot.blend.assemble import make_blends

    batch = embedded_blends(n=40, seed=5)
    reference = make_blends(cleaned_embedded_sample(), 40, 5)
    for name in ("blends", "galaxy1", "galaxy2", "masks"):
        np.testing.assert_array_equal(getattr(batch, name), getattr(reference, name))
    for column in reference.catalog.colnames:
        assert list(batch.catalog[column]) == list(reference.catalog[column])
    assert batch.provenance["parameters"]["n_blends"] == 40


def test_embedded_blends_are_seeded():
    first, again, other = embedded_blends(n=20, seed=1), embedded_blends(n=20, seed=1), embedded_blends(n=20, seed=2)
    assert first.blends.tobytes() == again.blends.tobytes()
    assert first.blends.tobytes() != other.blends.tobytes()


def test_embedded_blends_follow_the_paper_rules():
    batch = embedded_blends(n=SAMPLE_BLENDS_N, seed=SAMPLE_BLENDS_SEED)
    catalog = batch.catalog
    assert len(catalog) == SAMPLE_BLENDS_N
    dmag = np.abs(np.asarray(catalog["g1_mag"]) - np.asarray(catalog["g2_mag"]))
    assert dmag.max() < 2.0
    assert np.all(np.asarray(catalog["g1_id"]) != np.asarray(catalog["g2_id"]))
    np.testing.assert_allclose(batch.blends, batch.galaxy1 + batch.galaxy2, rtol=1e-6, atol=1e-6)


def test_mock_blends_layers():
    (blends, kwargs, _), (labels, label_kwargs, kind) = mock_blends()
    assert blends.shape == (SAMPLE_BLENDS_N, 128, 128)
    assert kind == "labels"
    np.testing.assert_array_equal(labels, mask_outlines(kwargs["metadata"]["blend_set"].masks))
    assert kwargs["metadata"]["blendphot_kind"] == "blends"
    assert label_kwargs["name"] == "mock truth"


@pytest.mark.gui
def test_sample_entries_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    galaxies = viewer.open_sample("napari-blendphot", "mock_galaxies")
    blends = viewer.open_sample("napari-blendphot", "mock_blends")
    assert [layer.name for layer in galaxies] == ["mock stamps", "mock segmentation"]
    assert [layer.name for layer in blends] == ["mock blends", "mock truth"]
    assert blends[0].data.shape == (SAMPLE_BLENDS_N, 128, 128)
    assert "tensorflow" not in sys.modules
