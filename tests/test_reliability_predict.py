"""Reliability bug found in the predict command (reproducibility of SEP-only results).

Each test failed before its module was fixed.
"""

from __future__ import annotations

from napari_blendphot.testing.corpus import write_valid_inputs
from napari_blendphot.cli import main
from napari_blendphot.provenance import sha256_file


def test_sep_only_predict_does_not_depend_on_the_keras_backend(tmp_path):
    """cli/_predict.py records ``keras_backend`` in the results provenance even when no network ran,
    so the same SEP-only run gives other bytes under KERAS_BACKEND=jax than under tensorflow."""
    valid = write_valid_inputs(tmp_path / "valid")
    for backend in ("tensorflow", "jax"):
        assert main(["predict", str(valid["dataset"]), "--methods", "sep", "--split", "all", "--backend", backend,
                     "-o", str(tmp_path / backend)]) == 0
    assert sha256_file(tmp_path / "tensorflow.csv") == sha256_file(tmp_path / "jax.csv")
