"""napari sample-data entries: the embedded CANDELS-like mock sample and its blends.

Both entries are seeded, so they show the same galaxies and blends every time.
The blends follow the paper's protocol: neighbours cleaned out of every stamp
(:func:`napari_blendphot.clean.neighbours.clean_sample`), then pairs with
``|dmag| < 2`` and the published shift rule
(:func:`napari_blendphot.blend.assemble.make_blends`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Blends made for the sample-data entry (seeded: the same blends every time).
SAMPLE_BLENDS_N = 200
SAMPLE_BLENDS_SEED = 2020
#: Seed of the neighbour cleaning of the embedded sample (also the Blend Builder's default).
CLEAN_SEED = 0


def mock_galaxies():
    """The embedded isolated galaxies: stamp stack + segmentation maps (as read, not cleaned)."""
    from napari_blendphot._reader import sample_layers
    from napari_blendphot.sample.embedded import load_embedded_sample

    return sample_layers(load_embedded_sample(), name="mock")


def mock_blends():
    """Seeded blends of the embedded sample (paper rules), with their true masks."""
    from napari_blendphot._reader import blend_dataset_layers

    return blend_dataset_layers(embedded_blends(), name="mock")


@lru_cache(maxsize=4)
def cleaned_embedded_sample(seed: int = CLEAN_SEED):
    """The embedded sample with its neighbours cleaned out (cached per seed; do not modify it)."""
    from napari_blendphot.clean.neighbours import clean_sample
    from napari_blendphot.sample.embedded import load_embedded_sample

    return clean_sample(load_embedded_sample(), int(seed))


def embedded_blends(n: int = SAMPLE_BLENDS_N, seed: int = SAMPLE_BLENDS_SEED, clean_seed: int = CLEAN_SEED):
    """An in-memory blend set of the embedded sample, neighbours cleaned, paper rules.

    Only the galaxies the drawn pairs use are cleaned: the pairs depend on the
    catalogue alone, and each galaxy's cleaning has its own seeded stream
    (:func:`~napari_blendphot.clean.neighbours.galaxy_rng`), so the result is
    identical to cleaning the whole sample first, and about twice as fast.

    Returns
    -------
    BlendBatch
        ``blends``, ``galaxy1``, ``galaxy2``, ``masks`` and ``catalog`` (with
        ``split = "all"``); its ``provenance`` attribute says how it was made.
    """
    from napari_blendphot.blend.assemble import BlendBatch, assemble_pairs, pair_catalog
    from napari_blendphot.blend.pairing import draw_pairs
    from napari_blendphot.clean.neighbours import clean_sample
    from napari_blendphot.provenance import make_provenance
    from napari_blendphot.sample.embedded import embedded_sample_path, load_embedded_sample
    from napari_blendphot.sample.galaxy_sample import central_segment

    sample = load_embedded_sample()
    catalog = sample.catalog
    pairs = draw_pairs(np.asarray(catalog["mag"]), np.asarray(catalog["radius"]), int(n), int(seed))
    used = np.unique(np.concatenate([pairs.central, pairs.companion]))
    cleaned = clean_sample(sample[used], int(clean_seed))
    # Pair indices refer to the full sample; map them into the cleaned subset.
    position = np.full(len(sample), -1, np.int64)
    position[used] = np.arange(used.size)
    masks = central_segment(cleaned.segmaps).view(np.uint8)
    arrays = assemble_pairs(cleaned.images, masks, position[pairs.central], position[pairs.companion],
                            pairs.dy, pairs.dx)
    table = pair_catalog(catalog, pairs, 0, "all")
    provenance = make_provenance("sample-blends", int(seed), inputs={"sample": embedded_sample_path().name},
                                 n_blends=int(n), rule="published", clean_seed=int(clean_seed),
                                 galaxies_cleaned=int(used.size))
    table.meta["provenance"] = provenance
    batch = BlendBatch(arrays["blends"], arrays["galaxy1"], arrays["galaxy2"], arrays["masks"], table)
    batch.provenance = provenance
    batch.source = "embedded mock sample (blends made in memory)"
    return batch
