"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

try:  # hypothesis comes with the test extra; the profile makes every @given test reproducible in CI
    from hypothesis import settings as _hypothesis_settings

    # No wall-clock deadline (a loaded 2-core machine is slow) and the same examples on every run.
    _hypothesis_settings.register_profile("blendphot", deadline=None, derandomize=True)
    _hypothesis_settings.load_profile("blendphot")
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    pass

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


# --- Two pytest sessions: GUI tests apart from everything else -------------------
# TensorFlow and Mesa's software OpenGL clash in one process (SPEC §8: segfaults or
# "free(): invalid pointer" at exit).  Tests that open a napari viewer are marked
# "gui" automatically, and `make test` runs them in their own pytest process
# (`-m gui`), separate from the tests that load Keras in-process (`-m "not gui"`).
# Likewise, the test modules that run Keras inside the test process live in
# tests/keras_inprocess/, which only its own pytest process collects.
_GUI_FIXTURES = {"make_napari_viewer", "make_napari_viewer_proxy", "qtbot", "viewer_model"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _GUI_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.gui)
