"""Table I/O: CSV/FITS round trips keep values, dtypes that matter, and metadata."""

import numpy as np
import pytest
from astropy.table import Table

from napari_blendphot.errors import InputError, OutputExistsError
from napari_blendphot.tables import as_native, read_table, write_table


def _table():
    table = Table({"id": np.arange(4, dtype=np.int64), "flux": [1.5, 2.0, np.nan, 4.25],
                   "detection": np.array([-1, 0, 2, 3], dtype=np.int8), "galtype": ["sph", "disk", "irr", "sphd"]})
    table.meta["provenance"] = {"step": "test", "seed": 3, "inputs": {}}
    table.meta["methods"] = ["sep", "blend2flux"]
    return table


@pytest.mark.parametrize("suffix", [".csv", ".fits"])
def test_round_trip_keeps_values_and_meta(tmp_path, suffix):
    path = write_table(_table(), tmp_path / f"t{suffix}")
    back = read_table(path)
    assert list(back["id"]) == [0, 1, 2, 3]
    np.testing.assert_array_equal(np.asarray(back["flux"]), [1.5, 2.0, np.nan, 4.25])
    assert list(back["galtype"]) == ["sph", "disk", "irr", "sphd"]
    assert back.meta["provenance"]["seed"] == 3
    assert back.meta["methods"] == ["sep", "blend2flux"]


def test_int8_columns_survive_fits(tmp_path):
    # Regression: astropy stores int8 as FITS logical, turning -1..3 into booleans.
    back = read_table(write_table(_table(), tmp_path / "t.fits"))
    assert back["detection"].dtype.kind == "i"
    assert list(back["detection"]) == [-1, 0, 2, 3]


def test_existing_file_is_not_overwritten(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("precious")
    with pytest.raises(OutputExistsError, match="t.csv"):
        write_table(_table(), path)
    assert path.read_text() == "precious"
    write_table(_table(), path, overwrite=True)
    assert read_table(path)["id"][3] == 3


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="unknown table extension"):
        write_table(_table(), tmp_path / "t.xlsx")
    with pytest.raises(InputError, match="file not found"):
        read_table(tmp_path / "missing.csv")


def test_as_native_converts_big_endian():
    data = np.arange(6, dtype=">f4").reshape(2, 3)
    native = as_native(data)
    assert native.dtype.isnative and native.dtype == np.float32
    np.testing.assert_array_equal(native, data)


def test_csv_reads_with_the_defaults_of_pandas_and_astropy(tmp_path):
    """Issue 17, item 7: '# blendphot-meta' lines made pandas.read_csv and astropy's csv reader fail."""
    import pandas

    table = Table({"id": [1, 2], "g1_flux": [1.5, np.nan]})
    table.meta["provenance"] = {"step": "test"}
    path = write_table(table, tmp_path / "t.csv")
    frame = pandas.read_csv(path)
    assert list(frame.columns) == ["id", "g1_flux"] and frame["id"].tolist() == [1, 2]
    plain = Table.read(path)  # astropy's defaults: format guessed from the name
    assert plain.colnames == ["id", "g1_flux"] and list(plain["id"]) == [1, 2]
    assert read_table(path).meta["provenance"] == {"step": "test"}  # the metadata beside it
    assert (tmp_path / "t.csv.meta.json").is_file()


def test_csv_written_by_older_versions_is_still_read(tmp_path):
    path = tmp_path / "old.csv"
    path.write_text('# blendphot-meta {"methods":["sep"]}\n# blendphot-meta {"zero_points":{"sep":25.96}}\n'
                    "id,g1_flux_sep\n0,1.5\n")
    table = read_table(path)
    assert table.meta == {"methods": ["sep"], "zero_points": {"sep": 25.96}} and list(table["id"]) == [0]
