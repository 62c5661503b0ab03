"""napari sample-data entries: the embedded CANDELS-like mock sample and its blends."""

from __future__ import annotations

#: Blends made for the sample-data entry (seeded: the same blends every time).
SAMPLE_BLENDS_N = 200
SAMPLE_BLENDS_SEED = 2020


def mock_galaxies():
    """The embedded isolated galaxies: stamp stack + segmentation maps."""
    from napari_blendphot._reader import sample_layers
    from napari_blendphot.sample.embedded import load_embedded_sample

    return sample_layers(load_embedded_sample(), name="mock")


def mock_blends():
    """Seeded blends of the embedded sample (paper rules), with their true masks."""
    from napari_blendphot._reader import blend_dataset_layers

    return blend_dataset_layers(embedded_blends(), name="mock")


def embedded_blends(n: int = SAMPLE_BLENDS_N, seed: int = SAMPLE_BLENDS_SEED):
    """An in-memory blend set of the embedded (cleaned) sample, as a BlendDataset-like object."""
    from napari_blendphot.blend.dataset import in_memory_blend_dataset

    return in_memory_blend_dataset(n=n, seed=seed)
