"""Field mode end to end with SEP only (fast): the pipeline, catalogues, tiles, bad inputs, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from napari_blendphot.errors import InputError
from napari_blendphot.field import flags as F
from napari_blendphot.field.image import FieldWarning
from napari_blendphot.field.measure import measure_field
from napari_blendphot.field.output import read_catalog, write_catalog
from napari_blendphot.field.simulate import match_truth
from test_field_support import folder_digest, sha256, small_field, write_image

pytestmark = pytest.mark.filterwarnings("ignore::napari_blendphot.field.image.FieldWarning")


@pytest.fixture(scope="module")
def field_files(tmp_path_factory):
    """One synthetic field written twice: counts at MAGZERO 30.2 with EXPTIME, and e-/s at 25.96."""
    folder = tmp_path_factory.mktemp("field")
    counts = small_field(zero_point=30.2, exptime=1000.0)
    rate = small_field(zero_point=25.96)
    counts.write(folder / "counts.fits")
    rate.write(folder / "rate.fits")
    return folder, counts.truth


@pytest.fixture(scope="module")
def counts_catalog(field_files):
    folder, _ = field_files
    return measure_field(folder / "counts.fits", ["sep"])


def test_sources_found_and_placed(field_files, counts_catalog):
    _, truth = field_files
    index, distance = match_truth(truth, counts_catalog["x"], counts_catalog["y"], 5.0)
    assert (index >= 0).mean() >= 0.9
    isolated = (index >= 0) & (np.asarray(truth["pair_id"]) < 0)
    # Windowed centroids of isolated galaxies: within 0.1" (1.67 px at 0.06"/px).
    assert np.all(distance[isolated] < 1.67)
    rows = index[isolated]
    ra_error = (np.asarray(counts_catalog["ra"])[rows] - truth["ra"][isolated]) * np.cos(np.radians(2.2)) * 3600
    dec_error = (np.asarray(counts_catalog["dec"])[rows] - truth["dec"][isolated]) * 3600
    assert np.all(np.hypot(ra_error, dec_error) < 0.1)


def test_catalogue_columns_and_flags(counts_catalog):
    table = counts_catalog
    for name in ("source_id", "group_id", "group_size", "companion_id", "x", "y", "ra", "dec", "flux_sep",
                 "flux_err_sep", "mag_sep", "flux_total", "mag_total", "flags"):
        assert name in table.colnames
    assert np.array_equal(table["source_id"], np.arange(1, len(table) + 1))
    single = np.asarray(table["group_size"]) == 1
    assert np.all(np.asarray(table["flags"])[single] & F.ISOLATED)
    assert np.all(np.isfinite(np.asarray(table["flux_total"])[single]))
    assert np.all(np.isnan(np.asarray(table["flux_total"])[~single]))
    pairs = np.asarray(table["group_size"]) == 2
    assert pairs.any()
    # A pair's members name each other as companions and share the group id.
    for row in np.flatnonzero(pairs):
        partner = np.flatnonzero(table["source_id"] == table["companion_id"][row])[0]
        assert table["companion_id"][partner] == table["source_id"][row]
        assert table["group_id"][partner] == table["group_id"][row] == min(table["source_id"][[row, partner]])
    # SEP's flux errors come through in the image's units wherever SEP measured a flux, never elsewhere.
    sep_flux, sep_err = np.asarray(table["flux_sep"], float), np.asarray(table["flux_err_sep"], float)
    assert np.all(sep_err[np.isfinite(sep_flux)] > 0) and np.all(np.isnan(sep_err[~np.isfinite(sep_flux)]))
    assert table.meta["zero_point"] == 30.2 and table.meta["flags"]["ISOLATED"] == F.ISOLATED
    assert table.meta["provenance"]["step"] == "measure"


def test_magnitudes_do_not_depend_on_the_units(field_files, counts_catalog):
    folder, _ = field_files
    rate = measure_field(folder / "rate.fits", ["sep"])
    assert len(rate) == len(counts_catalog)
    for column in ("mag_sep", "mag_total"):
        assert np.allclose(rate[column], counts_catalog[column], atol=2e-4, equal_nan=True)
    scale = 10 ** (0.4 * (30.2 - 25.96))
    assert np.allclose(counts_catalog["flux_sep"], rate["flux_sep"] * scale, rtol=5e-4, equal_nan=True)


def test_tiles_give_the_same_catalogue(field_files, counts_catalog):
    folder, _ = field_files
    tiled = measure_field(folder / "counts.fits", ["sep"], tile_size=512)
    index, distance = match_truth(Table({"x": tiled["x"], "y": tiled["y"]}), counts_catalog["x"],
                                  counts_catalog["y"], 0.5)
    assert (index >= 0).mean() > 0.9
    same = index >= 0
    # The background of a tile differs a little from the whole image's.
    assert np.allclose(np.asarray(tiled["mag_sep"])[same], np.asarray(counts_catalog["mag_sep"])[index[same]],
                       atol=0.02, equal_nan=True)
    assert np.array_equal(np.asarray(tiled["group_size"])[same], np.asarray(counts_catalog["group_size"])[index[same]])


def test_catalogue_positions_fed_back(field_files, counts_catalog, tmp_path):
    folder, _ = field_files
    positions = Table({"id": np.asarray(counts_catalog["source_id"]) + 1000, "ra": counts_catalog["ra"],
                       "dec": counts_catalog["dec"]})
    positions.add_row((99999, 10.0, 10.0))  # far off the image
    path = tmp_path / "positions.csv"
    positions.write(path, format="ascii.csv")
    with pytest.warns(FieldWarning, match="1 of .* positions fall off the image"):
        again = measure_field(folder / "counts.fits", ["sep"], catalog=path)
    assert len(again) == len(positions)
    assert np.array_equal(again["source_id"], positions["id"])
    off = again[-1]
    assert off["flags"] & F.OFF_IMAGE and np.isnan(off["flux_sep"]) and off["group_size"] == 0
    # Windowed positions fed back as positions: the same sources, the same SEP photometry.
    assert np.allclose(again["mag_sep"][:-1], counts_catalog["mag_sep"], atol=0.05, equal_nan=True)
    assert np.array_equal(again["group_size"][:-1], counts_catalog["group_size"])


def test_pixel_positions_one_based_columns(field_files, counts_catalog):
    folder, _ = field_files
    positions = Table({"X_IMAGE": np.asarray(counts_catalog["x"]) + 1, "Y_IMAGE": np.asarray(counts_catalog["y"]) + 1})
    again = measure_field(folder / "counts.fits", ["sep"], catalog=positions)
    assert np.allclose(again["x"], counts_catalog["x"]) and np.allclose(again["y"], counts_catalog["y"])


def test_catalogue_entirely_off_the_image(field_files, tmp_path):
    folder, _ = field_files
    path = tmp_path / "off.csv"
    Table({"x": [-500.0, 5000.0], "y": [10.0, 10.0]}).write(path, format="ascii.csv")
    with pytest.raises(InputError, match=r"off.csv: none of its 2 positions .* falls on counts.fits"):
        measure_field(folder / "counts.fits", ["sep"], catalog=path)
    bad = tmp_path / "nopos.csv"
    Table({"a": [1.0]}).write(bad, format="ascii.csv")
    with pytest.raises(InputError, match="nopos.csv: no position columns"):
        measure_field(folder / "counts.fits", ["sep"], catalog=bad)


def test_write_catalog_files_read_by_defaults(counts_catalog, tmp_path):
    import pandas

    written = write_catalog(counts_catalog, tmp_path / "cat")
    assert [p.name for p in written] == ["cat.fits", "cat.csv", "cat.json"]
    frame = pandas.read_csv(tmp_path / "cat.csv")
    assert list(frame.columns) == counts_catalog.colnames and len(frame) == len(counts_catalog)
    table = Table.read(tmp_path / "cat.csv")
    assert np.allclose(table["flux_sep"], counts_catalog["flux_sep"], equal_nan=True)
    assert not (tmp_path / "cat.csv").read_text().startswith("#")
    sidecar = json.loads((tmp_path / "cat.json").read_text())
    assert sidecar["zero_point"] == 30.2 and "provenance" in sidecar
    back = read_catalog(tmp_path / "cat.fits")
    assert back.meta["provenance"]["step"] == "measure" and back.meta["zero_point"] == 30.2
    assert np.array_equal(back["flags"], counts_catalog["flags"])
    from napari_blendphot.errors import OutputExistsError

    before = folder_digest(tmp_path)
    with pytest.raises(OutputExistsError):
        write_catalog(counts_catalog, tmp_path / "cat.fits")
    assert folder_digest(tmp_path) == before
    ecsv = write_catalog(counts_catalog, tmp_path / "cat.ecsv")
    assert Table.read(ecsv[0]).meta["zero_point"] == 30.2


# ----------------------------------------------------------------------------- awkward images
def test_no_wcs_and_no_calibration(tmp_path):
    field = small_field(n_galaxies=10, shape=(512, 512), seed=8, header_zero_point=False)
    header = fits.Header()
    header["BUNIT"] = "ELECTRONS/S"
    path = write_image(tmp_path / "bare.fits", field.image, header)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = measure_field(path, ["sep"])
    notes = [str(w.message) for w in caught if issubclass(w.category, FieldWarning)]
    assert sum("positions in pixels only" in n for n in notes) == 1
    assert any("ASSUMED 25.96" in n for n in notes) and any("ASSUMED 0.06" in n for n in notes)
    assert np.all(np.isnan(table["ra"])) and len(table) >= 8
    assert np.all(table["flags"] & F.ZERO_POINT_ASSUMED) and np.all(table["flags"] & F.PIXEL_SCALE_ASSUMED)
    assert table.meta["zero_point_source"] == "assumed"


def test_nan_and_zero_borders(tmp_path):
    field = small_field(n_galaxies=16, shape=(640, 640), seed=9)
    image = field.image.copy()
    image[:, :80] = np.nan      # a masked left border (galaxies start 119 pixels in: their stamps reach it)
    image[-100:, :] = 0.0       # a zero-filled bottom border
    path = write_image(tmp_path / "borders.fits", image, field.header)
    table = measure_field(path, ["sep"])
    flags = np.asarray(table["flags"])
    assert np.any(flags & F.NO_DATA)
    assert np.all(np.isfinite(table["x"])) and np.all(np.asarray(table["x"]) > 79.5)
    assert np.all(np.asarray(table["y"]) < 539.5)
    index, _ = match_truth(field.truth, table["x"], table["y"], 5.0)
    assert (index >= 0).sum() >= 12


def test_cube_plane_recorded(tmp_path):
    field = small_field(n_galaxies=8, shape=(400, 400), seed=10)
    cube = np.stack([np.zeros_like(field.image), field.image])
    path = write_image(tmp_path / "cube.fits", cube, field.header)
    table = measure_field(path, ["sep"], plane=1)
    assert table.meta["provenance"]["parameters"]["image"]["plane"] == 1
    assert any("plane 1" in note for note in table.meta["notes"])
    assert len(table) >= 6


# ----------------------------------------------------------------------------- the command line
def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "napari_blendphot.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def test_cli_measure_writes_catalogue(field_files, tmp_path):
    folder, _ = field_files
    before = folder_digest(folder)
    result = run_cli("measure", folder / "counts.fits", "--methods", "sep", "-o", tmp_path / "out", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "zero point 30.2000 from MAGZERO" in result.stderr
    assert {p.name for p in tmp_path.iterdir()} == {"out.fits", "out.csv", "out.json"}
    assert folder_digest(folder) == before
    again = run_cli("measure", folder / "counts.fits", "--methods", "sep", "-o", tmp_path / "out.fits")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.parametrize("kind", ["text", "missing", "table", "offcat", "plane", "zeropoint"])
def test_cli_bad_inputs_one_line_nothing_touched(kind, field_files, tmp_path):
    folder, _ = field_files
    image = folder / "counts.fits"
    args = ["measure", image, "--methods", "sep", "-o", tmp_path / "out"]
    if kind == "text":
        bad = tmp_path / "notes.txt"
        bad.write_text("not an image")
        args[1] = bad
        expected = "notes.txt: is not a FITS file"
    elif kind == "missing":
        args[1] = tmp_path / "absent.fits"
        expected = "absent.fits: file not found"
    elif kind == "table":
        bad = tmp_path / "table.fits"
        Table({"a": [1]}).write(bad)
        args[1] = bad
        expected = "table.fits: holds no 2-D image"
    elif kind == "offcat":
        cat = tmp_path / "far.csv"
        Table({"ra": [10.0], "dec": [-40.0]}).write(cat, format="ascii.csv")
        args += ["--catalog", cat]
        expected = "far.csv: none of its 1 positions"
    elif kind == "plane":
        args += ["--plane", "2"]
        expected = "counts.fits: plane 2 asked for, but the image is 2-D"
    else:
        args += ["--zeropoint", "nan"]
        expected = "argument --zeropoint"
    before_inputs = folder_digest(folder)
    before_out = folder_digest(tmp_path)
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert folder_digest(folder) == before_inputs and folder_digest(tmp_path) == before_out
    assert sha256(image) == before_inputs["counts.fits"]
