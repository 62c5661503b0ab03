"""Galaxy banks: the training galaxies as noiseless models, compact enough to carry to a GPU.

A bank holds the *training split* of an isolated sample (the galaxies a
``blendphot blend SAMPLE --seed S --test-fraction F`` dataset would put in its
train split; its test galaxies are left out, so a test set made that way never
shares a galaxy with training), as:

* ``models`` -- the noiseless PSF-convolved stamps (``blendphot make-sample
  --models-out``), stored float16 with pixels below ``floor`` (e-/s) set to
  zero: far below the noise (1e-4 of the background rms by default, at most
  0.02 e-/s over a whole stamp), and zeros compress to nothing;
* ``masks`` -- the central segment (``seg == seg[64, 64]``) of the noisy stamp,
  the true mask of the blending protocol;
* ``fluxes``, ``mags``, ``radii``, ``ids`` -- from the sample's catalogue (true
  total fluxes at zero point 25.96);
* ``provenance`` -- JSON: the sample and models files' hashes, the split.

numpy only on the reading side (:func:`training.synth.load_bank`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from napari_blendphot.errors import InputError

#: Model pixels below this many e-/s are stored as 0 (see the module docstring).
DEFAULT_FLOOR = 1.06e-6


def train_rows(n_galaxies: int, seed: int, test_fraction: float) -> np.ndarray:
    """Rows of the train split exactly as :func:`napari_blendphot.blend.dataset.write_blend_dataset` draws it."""
    from napari_blendphot.blend.split import split_indices

    if test_fraction <= 0:
        return np.arange(n_galaxies)
    split_seed = np.random.SeedSequence(int(seed)).spawn(3)[0]
    rows, _ = split_indices(n_galaxies, test_fraction, np.random.default_rng(split_seed))
    return np.sort(rows)


def make_bank(sample_path, models_path, out_path, seed: int, test_fraction: float = 0.2,
              floor: float = DEFAULT_FLOOR, overwrite: bool = False) -> dict:
    """Write the bank of *sample_path*'s train split; return a summary."""
    from napari_blendphot.atomic import atomic_output
    from napari_blendphot.errors import check_output_path
    from napari_blendphot.provenance import make_provenance
    from napari_blendphot.sample.galaxy_sample import central_segment, mag_to_flux
    from napari_blendphot.sample.io import load_sample

    out_path = Path(out_path)
    check_output_path(out_path, overwrite)
    sample = load_sample(sample_path)
    try:
        with np.load(models_path, allow_pickle=False) as saved:
            models = saved["models"]
            model_ids = saved["ids"] if "ids" in saved.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(models_path, f"cannot read noiseless models (expected arrays 'models' and 'ids'): {exc}") from None
    ids = np.asarray(sample.catalog["id"], np.int64)
    if models.shape != sample.images.shape:
        raise InputError(models_path, f"models have shape {models.shape}, the sample's images {sample.images.shape}")
    if model_ids is not None and not np.array_equal(np.asarray(model_ids, np.int64), ids):
        raise InputError(models_path, "model ids differ from the sample's ids (another sample's models?)")
    rows = train_rows(len(sample), seed, test_fraction)
    compact = np.where(np.abs(models[rows]) < floor, 0.0, models[rows]).astype(np.float16)
    if not np.isfinite(compact).all():
        raise InputError(models_path, "a model pixel overflows float16 (brighter than 65,504 e-/s per pixel)")
    mags = np.asarray(sample.catalog["mag"], np.float64)[rows]
    provenance = make_provenance(
        "bank", int(seed), inputs={"sample": sample_path, "models": models_path},
        sample=Path(sample_path).name, models=Path(models_path).name, test_fraction=float(test_fraction),
        floor=float(floor), n_galaxies=int(len(rows)),
    )
    arrays = {
        "models": compact,
        "masks": central_segment(sample.segmaps[rows]).astype(np.uint8),
        "fluxes": mag_to_flux(mags),
        "mags": mags,
        "radii": np.asarray(sample.catalog["radius"], np.float64)[rows],
        "ids": ids[rows],
        "provenance": np.array(json.dumps(provenance, sort_keys=True)),
    }
    if "galtype" in sample.catalog.colnames:
        arrays["galtype"] = np.asarray(sample.catalog["galtype"]).astype("U8")[rows]
    with atomic_output(out_path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    return {"path": str(out_path), "n_galaxies": int(len(rows)), "bytes": out_path.stat().st_size}
