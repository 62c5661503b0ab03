"""Builders shared by the field-mode tests (no tests here)."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np

REALGAL = Path(__file__).resolve().parents[1].parent / "shared" / "realgal"


@lru_cache(maxsize=None)
def cleaned_mock_sample():
    """The embedded mock sample with neighbours cleaned (seed 0), once per session."""
    from napari_blendphot.clean.neighbours import clean_sample
    from napari_blendphot.sample.embedded import load_embedded_sample

    return clean_sample(load_embedded_sample(), 0)


@lru_cache(maxsize=None)
def cleaned_real_sample():
    from napari_blendphot.clean.neighbours import clean_sample
    from napari_blendphot.sample.io import load_sample

    return clean_sample(load_sample(REALGAL), 0)


def small_field(n_galaxies: int = 24, shape=(768, 768), seed: int = 5, **kwargs):
    """A small synthetic field of the cleaned mock sample (about 0.2 s)."""
    from napari_blendphot.field.simulate import make_field

    return make_field(cleaned_mock_sample(), n_galaxies, shape=shape, seed=seed, clean_seed=None, **kwargs)


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def folder_digest(folder) -> dict:
    """{relative path: sha256} of every file under *folder* (to prove nothing was touched)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def write_image(path, data, header=None):
    from astropy.io import fits

    fits.PrimaryHDU(np.asarray(data), header=header).writeto(path)
    return path
