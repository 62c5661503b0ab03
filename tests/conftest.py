"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The paper's published per-blend results, beside the checkout (never copied into it).
PAPER_CATALOG = REPO_ROOT.parent / "shared" / "paper" / "output_catalog.csv"


@pytest.fixture(scope="session")
def paper_catalog_path() -> Path:
    assert PAPER_CATALOG.is_file(), f"reference data missing: {PAPER_CATALOG} (../shared must sit beside the checkout)"
    return PAPER_CATALOG


@pytest.fixture(scope="session")
def toy_sample():
    """60 numpy-made galaxies (fast, deterministic) for tests that need a valid sample."""
    from napari_blendphot.sample.toy import make_toy_sample

    return make_toy_sample(60, seed=1234)
