"""Galaxy banks: the training galaxies as noiseless models, compact enough to carry to a GPU.

A bank holds the *training split* of an isolated sample (the galaxies a
``blendphot blend SAMPLE --seed S --test-fraction F`` dataset would put in its
train split; its test galaxies are left out, so a test set made that way never
shares a galaxy with training), as:

* ``models_q`` and ``model_step`` -- the noiseless PSF-convolved stamps
  (``blendphot make-sample --models-out``) as integers in steps of
  ``model_step`` (1/8 of the background rms by default), rounded with a seeded
  dither so that no flux is lost on average (plain rounding would zero the
  faint wings, a few per cent of a faint galaxy's flux); the rounding adds
  noise of at most half a step (rms/16) per pixel, 0.1 % of the noise variance,
  and makes the models compress ~8x better than float16;
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

#: Quantisation step of the models (e-/s): 1/8 of the mock background rms per pixel.
DEFAULT_STEP = 0.0106 / 8


def train_rows(n_galaxies: int, seed: int, test_fraction: float) -> np.ndarray:
    """Rows of the train split exactly as :func:`napari_blendphot.blend.dataset.write_blend_dataset` draws it."""
    from napari_blendphot.blend.split import split_indices

    if test_fraction <= 0:
        return np.arange(n_galaxies)
    split_seed = np.random.SeedSequence(int(seed)).spawn(3)[0]
    rows, _ = split_indices(n_galaxies, test_fraction, np.random.default_rng(split_seed))
    return np.sort(rows)


def quantise(models, step: float, seed: int) -> np.ndarray:
    """Dithered integer steps of *models*: ``floor(m / step + u)``, u uniform in [0, 1) (mean-preserving)."""
    rng = np.random.default_rng([int(seed), 31])
    scaled = np.asarray(models, np.float64) / step
    return np.floor(scaled + rng.random(scaled.shape)).astype(np.int32)


def make_bank(sample_path, models_path, out_path, seed: int, test_fraction: float = 0.2,
              step: float = DEFAULT_STEP, overwrite: bool = False) -> dict:
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
    if not np.isfinite(models[rows]).all():
        raise InputError(models_path, "holds NaN or infinite pixels")
    if np.abs(models[rows]).max() / step > 2**31 - 2:
        raise InputError(models_path, f"a model pixel is too bright for steps of {step:g} e-/s")
    mags = np.asarray(sample.catalog["mag"], np.float64)[rows]
    provenance = make_provenance(
        "bank", int(seed), inputs={"sample": sample_path, "models": models_path},
        sample=Path(sample_path).name, models=Path(models_path).name, test_fraction=float(test_fraction),
        model_step=float(step), n_galaxies=int(len(rows)),
    )
    arrays = {
        "models_q": quantise(models[rows], step, seed),
        "model_step": np.float64(step),
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
