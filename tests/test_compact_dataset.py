"""Predict-only datasets: the blends (and true masks) without the galaxy stamps give the same results."""

from __future__ import annotations

import numpy as np
import pytest

from napari_blendphot import predict
from napari_blendphot.blend.dataset import BlendDataset, write_blend_dataset
from napari_blendphot.cli import main
from napari_blendphot.deblend.engine import InferenceEngine
from napari_blendphot.errors import InputError


@pytest.fixture(scope="module")
def full(tmp_path_factory, toy_sample):
    folder = tmp_path_factory.mktemp("compact") / "full"
    return write_blend_dataset(toy_sample, folder, n=12, test_fraction=0.5, seed=4, chunk_size=5)


def test_compact_copy_predicts_the_same_table_in_less_space(full, tmp_path, capsys):
    compact = tmp_path / "compact"
    assert main(["compact", str(full), "-o", str(compact)]) == 0
    assert "43%" in capsys.readouterr().out  # blends 64 KiB + masks 32 KiB of 224 KiB per blend
    assert not (compact / "galaxy1.npy").exists() and not (compact / "galaxy2.npy").exists()
    dataset = BlendDataset(compact)
    assert dataset.layout == "predict-only" and dataset.galaxy1 is None and dataset.masks is not None
    with InferenceEngine(["sep"], method_options={"sep": {"n_jobs": 1}}) as engine:
        from_full = predict(full, ["sep"], split="test", engine=engine, chunk_size=4)
        from_compact = predict(compact, ["sep"], split="test", engine=engine, chunk_size=4)
    for name in from_full.colnames:
        assert np.asarray(from_full[name]).tobytes() == np.asarray(from_compact[name]).tobytes(), name

    assert main(["info", str(compact)]) == 0
    assert "predict-only: no galaxy stamps" in capsys.readouterr().out

    no_masks = tmp_path / "no_masks"
    assert main(["compact", str(full), "-o", str(no_masks), "--no-masks", "--split", "test"]) == 0
    only_test = BlendDataset(no_masks)
    assert len(only_test) == 6 and only_test.masks is None
    np.testing.assert_array_equal(only_test.catalog["source_id"], from_full["id"])
    np.testing.assert_array_equal(only_test.blends, BlendDataset(full).select(split="test").blends)


def test_a_full_dataset_missing_a_stamp_file_is_still_refused(full, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(full, broken)
    (broken / "galaxy2.npy").unlink()
    with pytest.raises(InputError, match="galaxy2.npy.*missing"):
        BlendDataset(broken)


def test_compact_never_replaces_a_folder_without_overwrite(full, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["compact", str(full), "-o", str(out)]) == 2
    assert (out / "notes.txt").read_text() == "mine"
