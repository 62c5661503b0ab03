"""`python -m training digest` on the datasets users make, the real-galaxy validation blends included."""

from __future__ import annotations

import json

from napari_blendphot.blend.dataset import write_blend_dataset
from training.cli import main


def _digest(capsys, *argv) -> dict:
    assert main(["digest", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_digest_of_a_dataset_without_a_test_split_digests_all_its_blends(toy_sample, tmp_path, capsys):
    # Before: "has no blends of split 'test'" for every `blendphot blend ... --test-fraction 0` folder,
    # the protocol of the real-galaxy validation blends.
    folder = write_blend_dataset(toy_sample, tmp_path / "blends", n=8, test_fraction=0.0, seed=3)
    record = _digest(capsys, str(folder))
    assert record["n_all"] == 8 and len(record["all_blends_array"]) == 64
    again = write_blend_dataset(toy_sample, tmp_path / "again", n=8, test_fraction=0.0, seed=3)
    assert _digest(capsys, str(again)) == record


def test_digest_defaults_to_the_test_split_and_takes_another(toy_sample, tmp_path, capsys):
    folder = write_blend_dataset(toy_sample, tmp_path / "blends", n=10, test_fraction=0.5, seed=3)
    test = _digest(capsys, str(folder))
    assert test["n_test"] == 5 and "all_blends_array" not in test
    everything = _digest(capsys, str(folder), "--split", "all")
    assert everything["n_all"] == 10 and everything["blends.npy"] == test["blends.npy"]
    assert everything["all_blends_array"] != test["test_blends_array"]
