"""``blendphot blend`` end to end on a small toy sample file."""

import numpy as np
import pytest

from napari_blendphot.blend.dataset import BlendDataset
from napari_blendphot.cli import main


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory):
    from napari_blendphot.sample.io_native import write_native
    from napari_blendphot.sample.toy import make_toy_sample

    path = tmp_path_factory.mktemp("sample") / "toy.fits"
    write_native(make_toy_sample(40, seed=2), path)
    return path


def test_blend_command_writes_a_dataset_and_a_summary(sample_file, tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["blend", str(sample_file), "-n", "60", "--seed", "3", "-o", str(out)]) == 0
    printed = capsys.readouterr()
    assert "60 blends (train 48, test 12)" in printed.out
    assert "cleaned neighbours" in printed.err
    ds = BlendDataset(out)
    assert len(ds) == 60
    assert ds.provenance["inputs"]["sample"]["path"] == "toy.fits"
    assert ds.provenance["parameters"]["sample_provenance"]["step"] == "clean-neighbours"


def test_no_clean_keeps_the_stamps_as_they_are(sample_file, tmp_path):
    from napari_blendphot.sample.io_native import read_native

    out = tmp_path / "raw"
    assert main(["blend", str(sample_file), "-n", "10", "--seed", "3", "-o", str(out), "--no-clean",
                 "--rule", "paper-text", "--test-fraction", "0"]) == 0
    sample = read_native(sample_file)
    ds = BlendDataset(out)
    row = ds.catalog[0]
    np.testing.assert_array_equal(ds.galaxy1[0], sample.by_id(row["g1_id"]).image)


def test_existing_output_and_bad_arguments_exit_2(sample_file, tmp_path, capsys):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["blend", str(sample_file), "-n", "10", "--seed", "3", "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["blend", str(sample_file), "-n", "0", "--seed", "3", "-o", str(tmp_path / "x")]) == 2
    assert main(["blend", str(tmp_path / "missing.fits"), "--seed", "3", "-o", str(tmp_path / "y")]) == 2
    assert "missing.fits" in capsys.readouterr().err


def test_blend_help_shows_a_single_percent_sign(capsys):
    with pytest.raises(SystemExit):
        main(["blend", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "20% test" in text and "%%" not in text
