"""Inputs as spreadsheets and people make them (issue 19, items 8-9): accepted when meant, refused when wrong.

The refusals of damaged values (re-sorted catalogues, catalogues that
disagree, repeated rows, impossible detection cases, IoUs and fluxes, huge
pixels, FITS headers without END) are corpus cases in
``tests/test_reliability_corpus.py``; here are the inputs that must be
*accepted*, and the checks that are not about one file.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_blendphot.testing.corpus import copy_input, write_valid_inputs
from napari_blendphot.cli import main
from napari_blendphot.errors import InputError

BOM = b"\xef\xbb\xbf"


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    return write_valid_inputs(tmp_path_factory.mktemp("valid"))


def test_results_csv_with_a_utf8_bom_is_read(valid, tmp_path, capsys):
    """Excel's "CSV UTF-8" starts with a byte-order mark: it gave a 3-line error."""
    from napari_blendphot.report.results import read_results

    from napari_blendphot.tables import meta_path

    path = tmp_path / "results.csv"
    path.write_bytes(BOM + valid["results"].read_bytes())
    meta_path(path).write_bytes(meta_path(valid["results"]).read_bytes())  # the table's metadata file travels with it
    table, plain = read_results(path), read_results(valid["results"])
    table.meta.pop("metadata_mismatch", None)  # the BOM changed the bytes the metadata were written for
    assert table.colnames == plain.colnames and table.meta == plain.meta
    np.testing.assert_array_equal(table["g1_flux_sep"], plain["g1_flux_sep"])
    assert main(["evaluate", str(path), "-o", str(tmp_path / "report")]) == 0


def test_candels_catalogue_with_a_utf8_bom_is_read(valid, tmp_path):
    from napari_blendphot.sample.io_candels import read_candels

    folder = copy_input(valid["candels"], tmp_path)
    catalog = folder / "candels_cat.csv"
    catalog.write_bytes(BOM + catalog.read_bytes())
    assert len(read_candels(folder)) == len(read_candels(valid["candels"]))


def test_table_extensions_in_capitals(valid, tmp_path, capsys):
    """``.CSV`` dumped 54 lines of astropy's format help; ``-o OUT.CSV`` wrote OUT.CSV.csv."""
    from napari_blendphot.report.results import read_results, results_targets, write_results

    upper = tmp_path / "RESULTS.CSV"
    upper.write_bytes(valid["results"].read_bytes())
    assert len(read_results(upper)) == len(read_results(valid["results"]))
    assert main(["evaluate", str(upper), "-o", str(tmp_path / "report")]) == 0
    assert results_targets(tmp_path / "OUT.CSV") == [tmp_path / "OUT.CSV", tmp_path / "OUT.fits"]
    assert results_targets(tmp_path / "OUT.FITS") == [tmp_path / "OUT.csv", tmp_path / "OUT.FITS"]
    written = write_results(read_results(valid["results"]), tmp_path / "OUT.CSV")
    assert sorted(p.name for p in written) == ["OUT.CSV", "OUT.fits"]
    assert len(read_results(tmp_path / "OUT.fits")) == len(read_results(upper))


@pytest.mark.parametrize("output", ["{tmp}/dir/", "{tmp}/existing"])
def test_results_output_naming_a_folder_is_refused(valid, tmp_path, output):
    """``-o dir/`` wrote dir.csv beside the folder."""
    from napari_blendphot.report.results import read_results, write_results

    (tmp_path / "existing").mkdir()
    with pytest.raises(InputError, match="is a folder; give a file name or stem"):
        write_results(read_results(valid["results"]), output.format(tmp=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]


def test_a_method_extra_key_may_not_overwrite_its_own_flux_column(valid):
    from napari_blendphot.blend.dataset import BlendDataset
    from napari_blendphot.deblend.base import DeblendOutput
    from napari_blendphot.report.results import build_results_table

    dataset = BlendDataset(valid["dataset"])
    clash = DeblendOutput("sep", dataset.fluxes, extra={"g1_flux": np.zeros(len(dataset))})
    with pytest.raises(InputError, match="extra array 'g1_flux' would overwrite the column g1_flux_sep"):
        build_results_table(dataset.catalog, [clash])


def test_info_says_which_catalogue_is_read(valid, capsys):
    assert main(["info", str(valid["dataset"])]) == 0
    assert "catalogue read from catalog.fits (catalog.csv agrees)" in capsys.readouterr().out


def test_catalogues_are_compared_only_when_changed_since_writing(valid, tmp_path, monkeypatch):
    """A dataset as written agrees by its recorded SHA-256: no second catalogue is parsed."""
    import astropy.table

    from napari_blendphot.blend.dataset import BlendDataset

    folder = copy_input(valid["dataset"], tmp_path)
    reads = []
    real_read = astropy.table.Table.read

    def counting_read(*args, **kwargs):
        reads.append(args[1] if len(args) > 1 else kwargs.get("format"))
        return real_read(*args, **kwargs)

    monkeypatch.setattr(astropy.table.Table, "read", counting_read)
    BlendDataset(folder)
    assert len(reads) == 1  # catalog.fits only
    # Rewritten by hand with the same content: compared, and accepted.
    (folder / "catalog.csv").write_text((folder / "catalog.csv").read_text() + "\n")
    BlendDataset(folder)
    assert len(reads) == 3


def test_a_sample_with_a_3e38_pixel_is_kept_by_the_file_but_refused_for_blending(valid, tmp_path, capsys):
    """A 3e38 pixel is finite in float32 but made SEP's fluxes infinite, counted as "not detected"."""
    from napari_blendphot.blend.dataset import write_blend_dataset
    from napari_blendphot.sample.galaxy_sample import GalaxySample
    from napari_blendphot.sample.io_native import read_native, write_native
    from napari_blendphot.sample.toy import make_toy_sample

    sample = make_toy_sample(40, seed=1234)
    images = np.array(sample.images)
    images[3, 64, 64] = 3e38
    hot = GalaxySample(images, sample.segmaps, sample.catalog, source="hot")
    path = write_native(hot, tmp_path / "hot.fits")
    assert read_native(path).images[3, 64, 64] == np.float32(3e38)  # the file format stays exact
    with pytest.raises(InputError, match="pixel values beyond"):
        write_blend_dataset(hot, tmp_path / "ds", n=10, seed=1)
    assert main(["blend", str(path), "-n", "10", "--seed", "1", "-o", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert "hot.fits: 1 stamp(s) hold pixel values beyond +-1e+15 (first: row 3" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hot.fits"]
