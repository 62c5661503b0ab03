"""Blend dataset folders: writing (split, determinism, atomicity) and reading."""

import hashlib

import numpy as np
import pytest

from napari_blendphot.blend.assemble import make_blend
from napari_blendphot.blend.dataset import BlendDataset, summarize_blends, write_blend_dataset
from napari_blendphot.errors import InputError, OutputExistsError

FILES = ("blends.npy", "galaxy1.npy", "galaxy2.npy", "masks.npy", "catalog.csv", "catalog.csv.meta.json", "catalog.fits",
         "provenance.json")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    from napari_blendphot.sample.toy import make_toy_sample

    sample = make_toy_sample(60, seed=1234)
    path = tmp_path_factory.mktemp("blends") / "ds"
    write_blend_dataset(sample, path, n=250, test_fraction=0.2, seed=5, chunk_size=64)
    return sample, path


def digests(path):
    return {name: hashlib.sha256((path / name).read_bytes()).hexdigest() for name in FILES}


def test_layout_counts_and_split(dataset_dir):
    sample, path = dataset_dir
    assert sorted(p.name for p in path.iterdir()) == sorted(FILES)
    ds = BlendDataset(path)
    assert len(ds) == 250
    assert ds.blends.shape == (250, 128, 128) and ds.masks.shape == (250, 2, 128, 128)
    splits = np.asarray(ds.catalog["split"])
    assert (splits == "train").sum() == 200 and (splits == "test").sum() == 50
    assert np.all(splits[:200] == "train")  # train first, then test
    np.testing.assert_array_equal(ds.catalog["id"], np.arange(250))
    train_ids = set(ds.catalog["g1_id"][splits == "train"]) | set(ds.catalog["g2_id"][splits == "train"])
    test_ids = set(ds.catalog["g1_id"][splits == "test"]) | set(ds.catalog["g2_id"][splits == "test"])
    assert not train_ids & test_ids
    assert ds.provenance["parameters"]["n_test"] == 50 and ds.provenance["seed"] == 5
    assert ds.provenance["parameters"]["rule"] == "published"


def test_reader_round_trip_matches_make_blend(dataset_dir):
    sample, path = dataset_dir
    ds = BlendDataset(path)
    np.testing.assert_array_equal(ds.blends, ds.galaxy1 + ds.galaxy2)
    for i in (0, 199, 200, 249):
        got = ds[i]
        row = ds.catalog[i]
        expected = make_blend(sample.by_id(row["g1_id"]), sample.by_id(row["g2_id"]), row["dy"], row["dx"])
        np.testing.assert_array_equal(got.blend, expected.blend)
        np.testing.assert_array_equal(got.masks, expected.masks)
        for key, value in expected.row.items():
            assert got.row[key] == pytest.approx(value) if isinstance(value, float) else got.row[key] == value


def test_csv_and_fits_catalogues_agree(dataset_dir):
    from napari_blendphot.tables import read_table

    _, path = dataset_dir
    csv, fits = read_table(path / "catalog.csv"), read_table(path / "catalog.fits")
    for name in ("id", "dy", "dx", "g1_id", "g2_id"):
        np.testing.assert_array_equal(csv[name], fits[name])
    np.testing.assert_allclose(csv["g2_flux"], fits["g2_flux"], rtol=1e-12)
    assert csv.meta["provenance"]["step"] == "blend"


def test_select_chunks_and_context(dataset_dir):
    _, path = dataset_dir
    ds = BlendDataset(path)
    test = ds.select(split="test")
    assert len(test) == 50
    np.testing.assert_array_equal(test.blends, ds.blends[200:])
    assert test[0].row["id"] == 200
    chunks = list(test.iter_chunks(16))
    assert [len(c) for c in chunks] == [16, 16, 16, 2]
    np.testing.assert_array_equal(np.concatenate([c.masks for c in chunks]), ds.masks[200:])
    context = test.context()
    np.testing.assert_array_equal(context.companion_shift[:, 0], ds.catalog["dy"][200:])
    np.testing.assert_array_equal(context.companion_shift[:, 1], ds.catalog["dx"][200:])
    np.testing.assert_allclose(context.central_radius, ds.catalog["g1_rad"][200:])
    picked = ds.select(index=[3, 100, 7])
    np.testing.assert_array_equal(picked.blends, ds.blends[[3, 100, 7]])
    with pytest.raises(InputError, match="validation"):
        ds.select(split="validation")


def test_same_seed_gives_identical_bytes(dataset_dir, tmp_path):
    sample, path = dataset_dir
    again = write_blend_dataset(sample, tmp_path / "again", n=250, test_fraction=0.2, seed=5, chunk_size=100)
    assert digests(again) == digests(path)  # chunk size does not change the output
    other = write_blend_dataset(sample, tmp_path / "other", n=250, test_fraction=0.2, seed=6)
    assert digests(other)["blends.npy"] != digests(path)["blends.npy"]


def test_paper_text_rule_and_train_only(toy_sample, tmp_path):
    path = write_blend_dataset(toy_sample, tmp_path / "pt", n=40, test_fraction=0.0, seed=1, rule="paper-text")
    ds = BlendDataset(path)
    assert set(np.asarray(ds.catalog["split"])) == {"train"}
    assert np.all(ds.catalog["distance"] <= 64.0)
    assert ds.provenance["parameters"]["rule"] == "paper-text"


def test_existing_output_is_refused_then_replaced_with_overwrite(toy_sample, tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        write_blend_dataset(toy_sample, out, n=20, seed=1)
    assert (out / "notes.txt").read_text() == "mine"
    # --overwrite replaces only a dataset: a folder of the user's is refused, by name (issue 19, item 1).
    with pytest.raises(InputError, match="not a blend dataset written by blendphot"):
        write_blend_dataset(toy_sample, out, n=20, seed=1, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    write_blend_dataset(toy_sample, out, n=10, seed=2)
    write_blend_dataset(toy_sample, out, n=20, seed=1, overwrite=True)
    assert len(BlendDataset(out)) == 20
    empty = tmp_path / "empty"
    empty.mkdir()
    write_blend_dataset(toy_sample, empty, n=20, seed=1)  # an empty folder is fine
    assert len(BlendDataset(empty)) == 20


def test_interrupted_write_leaves_nothing_behind(toy_sample, tmp_path):
    def cancel(done, total):
        if done >= 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_blend_dataset(toy_sample, tmp_path / "ds", n=40, seed=1, chunk_size=10, progress=cancel)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, match", [
    ({"n": 0}, "n"), ({"seed": None}, "seed"), ({"rule": "wide"}, "rule"),
    ({"test_fraction": 1.0}, "test_fraction"), ({"chunk_size": 0}, "chunk_size"),
])
def test_bad_arguments_are_refused(toy_sample, tmp_path, kwargs, match):
    arguments = {"n": 20, "seed": 1, **kwargs}
    with pytest.raises(InputError, match=match):
        write_blend_dataset(toy_sample, tmp_path / "ds", **arguments)


def copy_dataset(path, tmp_path):
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(path, target)
    return target


def test_reader_refuses_missing_and_inconsistent_files(dataset_dir, tmp_path):
    _, path = dataset_dir
    with pytest.raises(InputError, match="not found"):
        BlendDataset(tmp_path / "nowhere")
    broken = copy_dataset(path, tmp_path)
    (broken / "galaxy2.npy").unlink()
    with pytest.raises(InputError, match="galaxy2.npy"):
        BlendDataset(broken)
    np.save(broken / "galaxy2.npy", np.zeros((249, 128, 128), np.float32))
    with pytest.raises(InputError, match="disagree"):
        BlendDataset(broken)
    np.save(broken / "galaxy2.npy", np.zeros((250, 64, 64), np.float32))
    with pytest.raises(InputError, match="expected float32"):
        BlendDataset(broken)
    (broken / "galaxy2.npy").write_bytes(b"not an array")
    with pytest.raises(InputError, match="cannot read"):
        BlendDataset(broken)


def test_reader_refuses_a_catalogue_of_the_wrong_length(dataset_dir, tmp_path):
    from napari_blendphot.tables import read_table, write_table

    _, path = dataset_dir
    broken = copy_dataset(path, tmp_path)
    table = read_table(broken / "catalog.fits")
    write_table(table[:-1], broken / "catalog.fits", overwrite=True)
    with pytest.raises(InputError, match="249 rows"):
        BlendDataset(broken)
    (broken / "catalog.fits").unlink()
    (broken / "catalog.csv").unlink()
    with pytest.raises(InputError, match="no catalog"):
        BlendDataset(broken)


def test_summary_reports_counts_distances_and_types(dataset_dir):
    _, path = dataset_dir
    ds = BlendDataset(path)
    text = summarize_blends(ds.catalog)
    assert text.startswith("250 blends (train 200, test 50)")
    assert f"max {ds.catalog['distance'].max():.1f}" in text
    assert "type pairs" in text and "dmag" in text


def test_explicit_number_of_test_blends_gives_the_papers_proportions(toy_sample, tmp_path):
    # The paper: 20% of the galaxies held out, 25,000 train + 5,000 test blends.
    path = write_blend_dataset(toy_sample, tmp_path / "paper", n=60, test_fraction=0.2, n_test=10, seed=3)
    splits = list(BlendDataset(path).catalog["split"])
    assert splits.count("train") == 50 and splits.count("test") == 10


def test_bad_number_of_test_blends_is_refused(toy_sample, tmp_path):
    with pytest.raises(InputError, match="n_test"):
        write_blend_dataset(toy_sample, tmp_path / "bad", n=60, test_fraction=0.2, n_test=60, seed=3)
    with pytest.raises(InputError, match="n_test"):
        write_blend_dataset(toy_sample, tmp_path / "bad2", n=60, test_fraction=0.0, n_test=5, seed=3)
