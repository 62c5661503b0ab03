"""Reproducibility: same seed and inputs -> byte-identical outputs; every output records its provenance.

One chain runs twice in separate folders, through the command line where
there is a command: ``make-sample`` (GalSim mock, 3 galaxies) -> ``blend``
(cleaning, split, pairs) -> ``predict`` (SEP only, in the worker process)
-> ``evaluate`` (tables, Markdown/HTML, PNG figures).  Every file of the two
runs must have the same bytes, and each kind of output must carry a
provenance record: the step, the seed where there is one, the hashes of its
inputs (equal to the real files' hashes), the parameters and the library
versions, and no timestamps.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from napari_blendphot.testing.corpus import tree_digest
from napari_blendphot.cli import main
from napari_blendphot.provenance import sha256_file

SEED = 2024
# A date or time in a provenance record would make outputs differ from run to run.
TIMESTAMP = re.compile(r"\b(19|20)\d\d-[01]\d-[0-3]\d|\b[0-2]\d:[0-5]\d:[0-5]\d\b")


def _chain(root: Path) -> dict[str, Path]:
    root.mkdir()
    paths = {"sample": root / "sample.fits", "blends": root / "blends", "results": root / "results",
             "report": root / "report"}
    assert main(["make-sample", "-n", "12", "--seed", str(SEED), "-o", str(paths["sample"])]) == 0
    assert main(["blend", str(paths["sample"]), "-n", "8", "--test-fraction", "0.5", "--seed", str(SEED),
                 "-o", str(paths["blends"])]) == 0
    assert main(["predict", str(paths["blends"]), "--methods", "sep", "--split", "all",
                 "-o", str(paths["results"])]) == 0
    assert main(["evaluate", str(root / "results.csv"), "-o", str(paths["report"])]) == 0
    return paths


# The chain takes ~25 s on the shared 2-core machine (GalSim, the SEP worker, matplotlib figures).
pytestmark_chain = pytest.mark.slow


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("repro")
    return _chain(base / "a"), _chain(base / "b")


@pytestmark_chain
def test_same_seed_gives_byte_identical_outputs(two_runs):
    first, second = two_runs
    a, b = tree_digest(first["sample"].parent), tree_digest(second["sample"].parent)
    assert sorted(a) == sorted(b)
    different = sorted(name for name in a if a[name] != b[name])
    assert not different, f"outputs differ between two identical runs: {different}"
    # The chain really wrote every kind of output.
    for name in ("sample.fits", "blends/blends.npy", "blends/catalog.csv", "blends/catalog.fits",
                 "blends/provenance.json", "results.csv", "results.fits", "report/summary.csv",
                 "report/report.md", "report/report.html"):
        assert name in a, name
    assert any(name.endswith(".png") for name in a)


@pytestmark_chain
def test_another_seed_gives_other_blends(two_runs, tmp_path):
    first, _ = two_runs
    other = tmp_path / "other"
    assert main(["blend", str(first["sample"]), "-n", "8", "--test-fraction", "0.5", "--seed", str(SEED + 1),
                 "-o", str(other)]) == 0
    assert sha256_file(other / "blends.npy") != sha256_file(first["blends"] / "blends.npy")


def _no_timestamps(record) -> None:
    text = json.dumps(record, sort_keys=True)
    assert not TIMESTAMP.search(text), f"timestamp in provenance: {TIMESTAMP.search(text).group(0)}"


def _versions(record) -> None:
    versions = record["versions"]
    for package in ("napari-blendphot", "python", "numpy", "astropy"):
        assert versions.get(package), package


@pytestmark_chain
def test_sample_file_provenance(two_runs):
    from astropy.io import fits

    from napari_blendphot.sample.io_native import read_native

    path = two_runs[0]["sample"]
    record = read_native(path).provenance
    assert record["seed"] == SEED
    assert "mock" in record["step"] or "sample" in record["step"]
    _versions(record)
    assert record["versions"].get("galsim"), "the mock's numbers depend on GalSim: its version must be recorded"
    assert record["parameters"], "the mock's settings (noise, PSF, neighbours...) must be recorded"
    _no_timestamps(record)
    with fits.open(path) as hdul:
        for hdu in hdul:
            assert "DATE" not in hdu.header and "DATE-HDU" not in hdu.header


@pytestmark_chain
def test_blend_dataset_provenance(two_runs):
    path = two_runs[0]["blends"]
    record = json.loads((path / "provenance.json").read_text())
    assert record["step"] == "blend" and record["seed"] == SEED
    sample_input = record["inputs"]["sample"]
    assert sample_input["sha256"] == sha256_file(two_runs[0]["sample"]), "the sample's hash must be the file's"
    assert record["parameters"]["rule"] == "published" and record["parameters"]["n_blends"] == 8
    # The cleaning's seed travels with the sample it changed.
    assert "clean" in json.dumps(record["parameters"]["sample_provenance"])
    _versions(record)
    _no_timestamps(record)


@pytestmark_chain
def test_results_table_provenance(two_runs):
    from napari_blendphot.report.results import read_results

    table = read_results(two_runs[0]["sample"].parent / "results.csv")
    record = table.meta["provenance"]
    assert record["step"] == "predict"
    inputs = json.dumps(record["inputs"])
    assert sha256_file(two_runs[0]["blends"] / "catalog.csv") in inputs, "the dataset catalogue's hash"
    assert table.meta["methods"] == ["sep"]
    assert record["versions"].get("sep"), "SEP's numbers depend on its version"
    _versions(record)
    _no_timestamps(record)
    fits_table = read_results(two_runs[0]["sample"].parent / "results.fits")
    assert fits_table.meta["provenance"] == record


@pytestmark_chain
def test_evaluation_provenance(two_runs):
    from napari_blendphot.tables import read_table

    summary = read_table(two_runs[0]["report"] / "summary.csv")
    record = summary.meta["provenance"]
    assert record["step"] == "evaluate"
    assert record["inputs"]["results"]["sha256"] == sha256_file(two_runs[0]["sample"].parent / "results.csv")
    assert summary.meta["results_provenance"]["step"] == "predict"
    _versions(record)
    _no_timestamps(record)
    report = (two_runs[0]["report"] / "report.md").read_text()
    assert not TIMESTAMP.search(report)


def test_readers_record_input_hashes(tmp_path):
    """Samples read from the CANDELS layout and from cutouts say where they came from."""
    from napari_blendphot.testing.corpus import write_valid_inputs
    from napari_blendphot.sample.io_candels import read_candels
    from napari_blendphot.sample.io_cutouts import read_cutouts

    valid = write_valid_inputs(tmp_path)
    record = read_candels(valid["candels"]).provenance
    assert record["step"] == "read-candels"
    assert record["inputs"]["catalog"]["sha256"] == sha256_file(valid["candels"] / "candels_cat.csv")
    _versions(record)
    record = read_cutouts(valid["cutouts"]).provenance
    assert record["step"] == "read-cutouts" and record["parameters"]["files"] == 3
    _versions(record)


def test_cleaning_and_blending_in_memory_are_seeded():
    from napari_blendphot.blend.assemble import make_blends
    from napari_blendphot.clean.neighbours import clean_sample
    from napari_blendphot.sample.toy import make_toy_sample

    sample = make_toy_sample(20, seed=3)
    a, b = clean_sample(sample, 5), clean_sample(sample, 5)
    assert a.images.tobytes() == b.images.tobytes()
    assert clean_sample(sample, 6).images.tobytes() != a.images.tobytes()
    x, y = make_blends(a, 10, seed=9), make_blends(b, 10, seed=np.random.default_rng(9))
    assert x.blends.tobytes() == y.blends.tobytes()
    assert list(x.catalog["dy"]) == list(y.catalog["dy"])


def test_dataset_bytes_do_not_depend_on_where_the_sample_file_lies(tmp_path):
    """Regression: the dataset provenance held the sample's absolute path, so the same file in another
    folder gave other bytes in provenance.json, the catalogues and everything downstream."""
    from napari_blendphot.blend.dataset import write_blend_dataset
    from napari_blendphot.sample.io_native import read_native, write_native
    from napari_blendphot.sample.toy import make_toy_sample

    written = write_native(make_toy_sample(12, seed=4), tmp_path / "here" / "sample.fits")
    elsewhere = tmp_path / "there" / "deeper" / "sample.fits"
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_bytes(written.read_bytes())
    digests = []
    for k, path in enumerate((written, elsewhere)):
        out = write_blend_dataset(read_native(path), tmp_path / f"ds{k}", n=6, test_fraction=0.5, seed=1,
                                  sample_path=path)
        digests.append(tree_digest(out))
    assert digests[0] == digests[1]
    assert json.loads((tmp_path / "ds0" / "provenance.json").read_text())["parameters"]["sample_source"] == "sample.fits"
