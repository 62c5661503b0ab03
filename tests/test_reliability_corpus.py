"""The bad-input corpus of the readers: every malformed input is refused with a clear error.

One parametrised test per family (native sample FITS, CANDELS folder, FITS
cutouts, blend dataset folder, results table).  Each case copies a small
valid input (``napari_blendphot.testing.corpus``), breaks it with one named edit and checks
that the reader raises :class:`~napari_blendphot.errors.InputError` whose
message names the input and the problem, and that nothing on disk changed
(every file under the case's folder hashed before and after).

Cases marked "fuzz" reproduce crashes found by ``scripts/fuzz_readers.py``
(they raised an astropy/numpy exception, hung, or were accepted silently
before the fix in the reader).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from napari_blendphot.testing.corpus import (
    copy_input,
    delete_bytes,
    edit_csv,
    edit_npy_header,
    drop_csv_column,
    drop_csv_row,
    duplicate_csv_row,
    rename_csv_column,
    replace_in_file,
    set_card,
    set_csv_cell,
    tree_digest,
    truncate,
    write_cutouts,
    write_valid_inputs,
)
from napari_blendphot.errors import InputError
from napari_blendphot.tables import read_table, write_table


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    return write_valid_inputs(tmp_path_factory.mktemp("valid"))


def _check_refused(read, path: Path, names_in_message, problem: str, case_dir: Path):
    before = tree_digest(case_dir)
    with pytest.raises(InputError) as info:
        read(path)
    message = str(info.value)
    assert "\n" not in message.strip(), message
    assert any(name in message for name in names_in_message), f"input not named in: {message}"
    assert problem.lower() in message.lower(), f"expected {problem!r} in: {message}"
    assert tree_digest(case_dir) == before, "a refused input changed files on disk"
    return message


# -- native sample FITS ---------------------------------------------------------------------------

def _rewrite_native(path, images=None, segmaps=None, catalog=None, drop=(), keep_dtypes=False):
    """Rewrite a native file with some parts replaced (headers kept)."""
    with fits.open(path) as hdul:
        hdus = [hdu.copy() for hdu in hdul if hdu.name not in drop]
    for hdu in hdus:
        if hdu.name == "IMAGES" and images is not None:
            hdu.data = images(np.array(hdu.data))
        if hdu.name == "SEGMAPS" and segmaps is not None:
            hdu.data = segmaps(np.array(hdu.data))
    if catalog is not None:
        index = [h.name for h in hdus].index("CATALOG")
        table = Table.read(hdus[index], character_as_bytes=False)
        if not keep_dtypes:
            # As written by another tool: without the record of the writer's dtypes.
            table.meta.pop("BPDTYPES", None)
        table = catalog(table) or table
        new = fits.table_to_hdu(table)
        new.name = "CATALOG"
        hdus[index] = new
    fits.HDUList(hdus).writeto(path, overwrite=True)


def _set_pixel(value):
    def edit(images):
        images[1, 10, 20] = value
        return images
    return edit


def _catalog_edit(column, value, row=0, as_type=None):
    def edit(table):
        if as_type is not None:
            table[column] = np.asarray(table[column]).astype(as_type)
        table[column][row] = value
    return edit


def _duplicate_ids(table):
    table["id"][1] = table["id"][0]


def _text_mags(table):
    values = [f"{m:.3f}" for m in table["mag"]]
    values[2] = "bright"
    table["mag"] = values


def _fractional_ids(table):
    table["id"] = np.asarray(table["id"], float) + 0.5


NATIVE_CASES = {
    "empty-file": (lambda p: p.write_bytes(b""), "not a FITS file"),
    "text-file": (lambda p: p.write_text("id,mag\n1,20\n"), "not a FITS file"),
    "truncated-half": (lambda p: truncate(p, p.stat().st_size // 2), "truncated"),
    "header-block-only": (lambda p: truncate(p, 2880), "missing extension"),
    "truncated-last-bytes": (lambda p: truncate(p, -100), "truncated"),
    "damaged-gzip": (lambda p: p.write_bytes(b"\x1f\x8b\x08\x00garbage"), "gzip"),
    "not-a-blendphot-file": (lambda p: set_card(p, "BPFORMAT", "'other'"), "not a blendphot sample"),
    "newer-format-version": (lambda p: set_card(p, "BPVERS", "99"), "newer than this reader"),
    "ngal-disagrees": (lambda p: set_card(p, "NGAL", "9"), "NGAL = 9"),
    "no-catalog-extension": (lambda p: _rewrite_native(p, drop=("CATALOG",)), "missing extension(s) CATALOG"),
    "no-segmaps-extension": (lambda p: _rewrite_native(p, drop=("SEGMAPS",)), "missing extension(s) SEGMAPS"),
    "images-64-pixels": (lambda p: _rewrite_native(p, images=lambda a: a[:, :64, :64]), "expected (N, 128, 128)"),
    "images-2d": (lambda p: _rewrite_native(p, images=lambda a: a[0]), "expected (N, 128, 128)"),
    "images-int16": (lambda p: _rewrite_native(p, images=lambda a: a.astype(np.int16)), "expected float32"),
    "images-float64": (lambda p: _rewrite_native(p, images=lambda a: a.astype(np.float64)), "expected float32"),
    "segmaps-float": (lambda p: _rewrite_native(p, segmaps=lambda a: a.astype(np.float32)), "expected int32"),
    "nan-pixel": (lambda p: _rewrite_native(p, images=_set_pixel(np.nan)), "NaN or infinite"),
    "inf-pixel": (lambda p: _rewrite_native(p, images=_set_pixel(np.inf)), "NaN or infinite"),
    "unknown-galtype": (lambda p: _rewrite_native(p, catalog=_catalog_edit("galtype", "spiral", as_type="U8")),
                        "unknown galtype"),
    "duplicated-ids": (lambda p: _rewrite_native(p, catalog=_duplicate_ids), "duplicated galaxy id"),
    "negative-flux": (lambda p: _rewrite_native(p, catalog=_catalog_edit("flux", -1.0)), "'flux' has zero or negative"),
    "zero-radius": (lambda p: _rewrite_native(p, catalog=_catalog_edit("radius", 0.0)), "'radius' has zero or negative"),
    "nan-mag": (lambda p: _rewrite_native(p, catalog=_catalog_edit("mag", np.nan)), "'mag' has NaN"),
    "missing-radius-column": (lambda p: _rewrite_native(p, catalog=lambda t: t.remove_column("radius")),
                              "lacks column(s) radius"),
    "misspelled-galtype-column": (lambda p: _rewrite_native(p, catalog=lambda t: t.rename_column("galtype", "gal_type")),
                                  "lacks column(s) galtype"),
    # Found while building the corpus: text magnitudes raised a bare ValueError.
    "text-mag-column": (lambda p: _rewrite_native(p, catalog=_text_mags), "'mag' is not numeric"),
    # Found while building the corpus: ids 17.5 were silently truncated to 17.
    "fractional-ids": (lambda p: _rewrite_native(p, catalog=_fractional_ids), "not integers"),
    # Found while building the corpus: the BPDTYPES record cast ids 17.5 back to int64 17, silently.
    "bpdtypes-cast-would-change-values": (lambda p: _rewrite_native(p, catalog=_fractional_ids, keep_dtypes=True),
                                          "do not fit its recorded dtype"),
    # fuzz: astropy raised VerifyError / AssertionError from inside the reader.
    "fuzz-tform-not-a-format": (lambda p: set_card(p, "TFORM6", "64"), "cannot read the FITS file"),
    "fuzz-ttype-not-a-name": (lambda p: set_card(p, "TTYPE6", "-32"), "cannot read the FITS file"),
    "fuzz-bpdtypes-not-a-string": (lambda p: set_card(p, "BPDTYPES", "T"), "cannot read the FITS file"),
    # fuzz: NAXIS2 = -1 (a negative data size) made astropy re-read the same header forever.
    "fuzz-negative-axis-length": (lambda p: set_card(p, "NAXIS2", "-1"), "NAXIS2 = -1"),
    # fuzz: NAXIS = 99999999 made astropy build a list of 10^8 axis lengths (minutes, gigabytes).
    "fuzz-naxis-huge": (lambda p: set_card(p, "NAXIS", "99999999", occurrence=1), "NAXIS = 99999999"),
    # fuzz: TFIELDS = 99999999 made astropy loop over 10^8 columns.
    "fuzz-tfields-huge": (lambda p: set_card(p, "TFIELDS", "99999999"), "TFIELDS = 99999999"),
    # Issue 19: without its END card the primary header was read on through the data (seconds, memory).
    "primary-header-without-end": (lambda p: replace_in_file(p, b"END" + b" " * 77, b" " * 80), "no END card"),
}


@pytest.mark.parametrize("case", sorted(NATIVE_CASES))
def test_native_reader_refuses(case, valid, tmp_path):
    from napari_blendphot.sample.io_native import read_native

    edit, problem = NATIVE_CASES[case]
    path = copy_input(valid["native"], tmp_path)
    edit(path)
    _check_refused(read_native, path, [str(path)], problem, tmp_path)


def test_native_reader_refuses_a_folder(tmp_path):
    from napari_blendphot.sample.io_native import read_native

    _check_refused(read_native, tmp_path, [str(tmp_path)], "is a folder", tmp_path)


def test_native_big_endian_and_gzip_are_accepted(valid, tmp_path):
    """FITS data is big-endian on disk: the reader returns native order, equal values."""
    import gzip

    from napari_blendphot.sample.io_native import read_native

    with fits.open(valid["native"]) as hdul:
        assert hdul["IMAGES"].data.dtype.byteorder == ">"
        on_disk = np.array(hdul["IMAGES"].data)
    sample = read_native(valid["native"])
    assert sample.images.dtype == np.dtype("=f4") and sample.images.dtype.isnative
    assert np.array_equal(sample.images, on_disk)
    zipped = tmp_path / "sample.fits.gz"
    zipped.write_bytes(gzip.compress(valid["native"].read_bytes(), mtime=0))
    assert read_native(zipped).images.tobytes() == sample.images.tobytes()


# -- CANDELS folder -----------------------------------------------------------------------------

def _npy_edit(name, change):
    def edit(folder):
        path = folder / name
        array = np.load(path)
        np.save(path, change(array))
    return edit


def _object_array(folder):
    array = np.empty(8, dtype=object)
    array[:] = [{"x": i} for i in range(8)]
    np.save(folder / "candels_img.npy", array, allow_pickle=True)


def _huge_npy_header(folder):
    # fuzz: a header claiming 10^9 stamps made np.load try to allocate 477 TiB (MemoryError).
    edit_npy_header(folder / "candels_img.npy", b"'shape': (8, 128, 128)", b"'shape': (800000000, 128, 128)")


def _overflowing_npy_header(folder):
    # fuzz: a shape whose byte count overflows made numpy's memory map raise OverflowError.
    edit_npy_header(folder / "candels_img.npy", b"'shape': (8, 128, 128)",
                    b"'shape': (1000000000000, 1000000000000, 128)")


def _candels_csv(edit, *args):
    return lambda folder: edit(folder / "candels_cat.csv", *args)


CANDELS_CASES = {
    "missing-catalogue": (lambda f: (f / "candels_cat.csv").unlink(), "missing candels_cat.csv"),
    "missing-segmaps": (lambda f: (f / "candels_seg.npy").unlink(), "missing candels_seg.npy"),
    "pickled-object-array": (_object_array, "object arrays are refused"),
    "images-64-pixels": (_npy_edit("candels_img.npy", lambda a: a[:, :64, :64]), "expected (N, 128, 128)"),
    "images-2d": (_npy_edit("candels_img.npy", lambda a: a[0]), "expected (N, 128, 128)"),
    "images-complex": (_npy_edit("candels_img.npy", lambda a: a.astype(np.complex64)), "dtype complex64"),
    "images-text": (_npy_edit("candels_img.npy", lambda a: a.astype("U3")), "dtype <U3"),
    "segmaps-float": (_npy_edit("candels_seg.npy", lambda a: a.astype(np.float32)), "dtype float32"),
    "segmaps-one-short": (_npy_edit("candels_seg.npy", lambda a: a[:-1]), "has shape (7, 128, 128)"),
    "segmaps-too-large": (_npy_edit("candels_seg.npy", lambda a: a.astype(np.int64) + 2**40), "out of the int32 range"),
    "images-nan": (_npy_edit("candels_img.npy", lambda a: np.where(np.arange(128) == 5, np.nan, a).astype(a.dtype)),
                   "NaN or infinite"),
    "images-truncated": (lambda f: truncate(f / "candels_img.npy", -1000), "cannot read as a numpy array"),
    "images-empty-file": (lambda f: (f / "candels_img.npy").write_bytes(b""), "cannot read as a numpy array"),
    "fuzz-npy-header-claims-terabytes": (_huge_npy_header, "cannot read as a numpy array"),
    "fuzz-npy-shape-overflows": (_overflowing_npy_header, "cannot read as a numpy array"),
    "csv-misspelled-radius": (_candels_csv(rename_csv_column, "radius", "radus"), "lacks column(s) radius"),
    "csv-missing-galtype": (_candels_csv(drop_csv_column, "galtype"), "lacks column(s) galtype"),
    "csv-one-row-short": (_candels_csv(drop_csv_row, 3), "has 7 rows but"),
    "csv-one-row-extra": (_candels_csv(duplicate_csv_row, 3), "has 9 rows but"),
    "csv-unknown-galtype": (_candels_csv(set_csv_cell, "galtype", 2, "spiral"), "unknown galtype"),
    "csv-duplicated-ids": (_candels_csv(set_csv_cell, "ID", 2, "17"), "duplicated galaxy id"),
    "csv-text-mag": (_candels_csv(set_csv_cell, "mag", 2, "bright"), "'mag' is not numeric"),
    "csv-inf-mag": (_candels_csv(set_csv_cell, "mag", 2, "inf"), "NaN or infinite"),
    "csv-negative-radius": (_candels_csv(set_csv_cell, "radius", 2, "-3.0"), "zero or negative"),
    "csv-fractional-id": (_candels_csv(set_csv_cell, "ID", 2, "27.5"), "not an integer column"),
    # Found while building the corpus: an empty mag cell was read as mag 0 (flux 2.4e10), silently.
    "csv-empty-mag": (_candels_csv(set_csv_cell, "mag", 2, ""), "NaN or infinite"),
    "csv-empty-id": (_candels_csv(set_csv_cell, "ID", 2, ""), "empty values"),
    "csv-binary-garbage": (lambda f: (f / "candels_cat.csv").write_bytes(bytes(range(256)) * 4), "cannot read as CSV"),
}


@pytest.mark.parametrize("case", sorted(CANDELS_CASES))
def test_candels_reader_refuses(case, valid, tmp_path):
    from napari_blendphot.sample.io_candels import read_candels

    edit, problem = CANDELS_CASES[case]
    folder = copy_input(valid["candels"], tmp_path)
    edit(folder)
    names = [str(folder), *(str(folder / n) for n in ("candels_img.npy", "candels_seg.npy", "candels_cat.csv"))]
    _check_refused(read_candels, folder, names, problem, tmp_path)


def test_candels_big_endian_and_extra_columns_are_accepted(valid, tmp_path):
    from napari_blendphot.sample.io_candels import read_candels

    folder = copy_input(valid["candels"], tmp_path)
    reference = read_candels(folder)
    images = np.load(folder / "candels_img.npy")
    np.save(folder / "candels_img.npy", images.astype(">f4"))
    lines = (folder / "candels_cat.csv").read_text().splitlines()
    lines = [lines[0] + ",comment"] + [line + ",x" for line in lines[1:]]
    (folder / "candels_cat.csv").write_text("\n".join(lines) + "\n")
    sample = read_candels(folder)
    assert sample.images.dtype.isnative
    assert sample.images.tobytes() == reference.images.tobytes()
    assert list(sample.catalog["id"]) == list(reference.catalog["id"])


# -- FITS cutouts -----------------------------------------------------------------------------

def _cutout(edit_hdul):
    def edit(folder):
        path = folder / "galaxy1.fits"
        with fits.open(path) as hdul:
            hdus = fits.HDUList([hdu.copy() for hdu in hdul])
        edit_hdul(hdus)
        hdus.writeto(path, overwrite=True)
    return edit


def _header(key, value):
    def edit(hdus):
        if value is None:
            del hdus[0].header[key]
        else:
            hdus[0].header[key] = value
    return edit


def _primary_data(change):
    def edit(hdus):
        hdus[0].data = change(np.array(hdus[0].data))
    return edit


def _seg_data(change):
    def edit(hdus):
        hdus["SEG"].data = change(np.array(hdus["SEG"].data))
    return edit


def _unparsable_card(folder):
    # fuzz: a bit flip left GALTYPE without its closing quote: astropy raised VerifyError on access.
    replace_in_file(folder / "galaxy1.fits", b"GALTYPE = '", b"GALTYPE = #")


CUTOUT_CASES = {
    "image-64-pixels": (_cutout(_primary_data(lambda a: a[:64, :64])), "expected (128, 128)"),
    "image-cube": (_cutout(_primary_data(lambda a: np.stack([a, a]))), "expected (128, 128)"),
    "image-nan": (_cutout(_primary_data(lambda a: np.where(a > a.max() / 2, np.nan, a))), "NaN or infinite"),
    "no-image": (_cutout(lambda h: setattr(h[0], "data", None)), "holds no image"),
    "missing-galtype": (_cutout(_header("GALTYPE", None)), "lacks keyword GALTYPE"),
    "unknown-galtype": (_cutout(_header("GALTYPE", "spiral")), "unknown galtype"),
    "missing-radius": (_cutout(_header("RADIUS", None)), "lacks keyword RADIUS"),
    "text-mag": (_cutout(_header("MAG", "bright")), "is not a number"),
    "no-mag-no-flux": (_cutout(lambda h: h[0].header.remove("MAG")), "neither MAG nor FLUX"),
    "negative-flux": (_cutout(lambda h: (h[0].header.remove("MAG"), h[0].header.set("FLUX", -2.0))), "not positive"),
    "fractional-id": (_cutout(_header("ID", 3.5)), "not an integer"),
    "duplicated-id": (_cutout(_header("ID", 17)), "duplicated galaxy id"),
    "seg-fractional": (_cutout(_seg_data(lambda a: a.astype(np.float32) + 0.5)), "non-integer"),
    "seg-wrong-shape": (_cutout(_seg_data(lambda a: a[:100])), "segmentation extension has shape"),
    "seg-negative": (_cutout(_seg_data(lambda a: a - 10_000)), "negative"),
    "truncated": (lambda f: truncate(f / "galaxy1.fits", -200), "truncated"),
    "empty-file": (lambda f: (f / "galaxy1.fits").write_bytes(b""), "cannot read"),
    "text-file": (lambda f: (f / "galaxy1.fits").write_text("not fits"), "cannot read"),
    # fuzz: TypeError / KeyError / VerifyError / AttributeError from astropy escaped the reader.
    "fuzz-naxis2-text": (lambda f: set_card(f / "galaxy1.fits", "NAXIS2", "'abc'"), "cannot read"),
    "fuzz-bitpix-1": (lambda f: set_card(f / "galaxy1.fits", "BITPIX", "1"), "cannot read"),
    "fuzz-bitpix-huge": (lambda f: set_card(f / "galaxy1.fits", "BITPIX", "99999999"), "cannot read"),
    "fuzz-unparsable-galtype-card": (_unparsable_card, "cannot read"),
    "fuzz-extension-off-the-block-grid": (lambda f: delete_bytes(f / "galaxy1.fits", 40000, 80), "cannot read"),
    # fuzz: NAXIS = 99999999 in the SEG extension hung astropy for minutes (and ate gigabytes).
    "fuzz-naxis-huge": (lambda f: set_card(f / "galaxy1.fits", "NAXIS", "99999999", occurrence=1), "NAXIS = 99999999"),
}


@pytest.mark.parametrize("case", sorted(CUTOUT_CASES))
def test_cutout_reader_refuses(case, valid, tmp_path):
    from napari_blendphot.sample.io_cutouts import read_cutouts

    edit, problem = CUTOUT_CASES[case]
    folder = copy_input(valid["cutouts"], tmp_path)
    edit(folder)
    _check_refused(read_cutouts, folder, [str(folder / "galaxy1.fits"), str(folder)], problem, tmp_path)


def test_cutout_reader_refuses_an_empty_folder(tmp_path):
    from napari_blendphot.sample.io_cutouts import read_cutouts

    (tmp_path / "notes.txt").write_text("no cutouts here")
    _check_refused(read_cutouts, tmp_path, [str(tmp_path)], "no FITS cutouts", tmp_path)


def test_cutout_all_zero_and_constant_stamps_read_with_empty_segmentation(tmp_path):
    """Blank stamps are odd but not malformed: read, no detection, no crash in sep."""
    from napari_blendphot.sample.io_cutouts import read_cutouts

    sample = __import__("napari_blendphot.testing.corpus", fromlist=["toy_sample"]).toy_sample()
    sample.images[0] = 0.0
    sample.images[1] = 3.0
    write_cutouts(sample, tmp_path / "c", count=2, segmap=False)
    out = read_cutouts(tmp_path / "c")
    assert out.catalog["seg_made"].all()
    assert np.all(np.isfinite(out.images))
    assert not out.segmaps[0].any()


# -- blend dataset folder ----------------------------------------------------------------------

def _dataset_npy(name, change):
    def edit(folder):
        array = np.load(folder / name)
        np.save(folder / name, change(array))
    return edit


def _dataset_csv(edit, *args):
    def apply(folder):
        (folder / "catalog.fits").unlink()  # the FITS catalogue is read first
        edit(folder / "catalog.csv", *args)
    return apply


def _catalog_fits_types(folder):
    # fuzz: g1_type bytes that are not ASCII raised UnicodeDecodeError while reading.
    table = Table.read(folder / "catalog.fits")
    table["g1_type"] = np.array([b"\xff\xfe"] * len(table))
    table.write(folder / "catalog.fits", overwrite=True)


def _dataset_object_blends(folder):
    array = np.empty(6, dtype=object)
    np.save(folder / "blends.npy", array, allow_pickle=True)


def _other_dataset_catalog(folder):
    from napari_blendphot.testing.corpus import toy_sample
    from napari_blendphot.blend.dataset import write_blend_dataset

    other = write_blend_dataset(toy_sample(12, seed=99), folder.parent / "other", n=10, test_fraction=0.5, seed=1)
    for name in ("catalog.csv", "catalog.fits"):
        (folder / name).write_bytes((other / name).read_bytes())


def _sorted_catalogues(folder):
    # Issue 19: a catalogue re-sorted (both files alike) paired its rows with other blends, silently.
    for name in ("catalog.csv", "catalog.fits"):
        table = read_table(folder / name)
        table.sort("g1_mag")
        write_table(table, folder / name, overwrite=True)


def _edited_csv_beside_fits(folder):
    # Issue 19: an edited catalog.csv was ignored because catalog.fits is read first.
    set_csv_cell(folder / "catalog.csv", "g1_flux", 2, "123.5")


def _edited_fits_beside_csv(folder):
    table = read_table(folder / "catalog.fits")
    table["dx"][0] += 1
    write_table(table, folder / "catalog.fits", overwrite=True)


DATASET_CASES = {
    "catalogue-re-sorted": (_sorted_catalogues, "rows must be in blend order"),
    "catalogue-csv-edited-beside-fits": (_edited_csv_beside_fits, "catalog.fits is the one read"),
    "catalogue-fits-edited-beside-csv": (_edited_fits_beside_csv, "disagree (column 'dx', row 0)"),
    "missing-blends": (lambda f: (f / "blends.npy").unlink(), "missing from the blend dataset"),
    "missing-catalogue": (lambda f: [(f / n).unlink() for n in ("catalog.csv", "catalog.fits")], "no catalog.fits"),
    "masks-float": (_dataset_npy("masks.npy", lambda a: a.astype(np.float32)), "expected uint8"),
    "blends-64-pixels": (_dataset_npy("blends.npy", lambda a: a[:, :64, :64]), "expected float32 (N, 128, 128)"),
    "blends-float64": (_dataset_npy("blends.npy", lambda a: a.astype(np.float64)), "expected float32"),
    "blends-pickled-objects": (_dataset_object_blends, "cannot read as a .npy array"),
    "galaxy2-one-short": (_dataset_npy("galaxy2.npy", lambda a: a[:-1]), "disagree on the number of blends"),
    "masks-truncated": (lambda f: truncate(f / "masks.npy", -500), "cannot read as a .npy array"),
    "catalogue-one-row-short": (_dataset_csv(drop_csv_row, 2), "catalogue has 5 rows"),
    "catalogue-of-another-dataset": (_other_dataset_catalog, "catalogue has 10 rows"),
    "catalogue-without-g1-flux": (_dataset_csv(drop_csv_column, "g1_flux"), "lacks column(s) g1_flux"),
    "catalogue-misspelled-dy": (_dataset_csv(rename_csv_column, "dy", "d_y"), "lacks column(s) dy"),
    "catalogue-negative-flux": (_dataset_csv(set_csv_cell, "g2_flux", 1, "-5.0"), "non-positive"),
    "catalogue-fractional-shift": (_dataset_csv(set_csv_cell, "dx", 1, "2.5"), "non-integer"),
    "catalogue-empty-distance": (_dataset_csv(set_csv_cell, "distance", 1, ""), "empty values"),
    # fuzz: text in the dy column raised ValueError in context(); non-ASCII types UnicodeDecodeError.
    "fuzz-catalogue-text-shift": (_dataset_csv(set_csv_cell, "dy", 1, "irr"), "'dy' is not numeric"),
    "fuzz-catalogue-fits-type-bytes": (_catalog_fits_types, "not text"),
    # fuzz: a bit flip in provenance.json raised UnicodeDecodeError.
    "fuzz-provenance-not-utf8": (lambda f: (f / "provenance.json").write_bytes(b'{"step": "\xa2"}'), "not valid JSON"),
    "provenance-not-json": (lambda f: (f / "provenance.json").write_text("{step: blend"), "not valid JSON"),
    "provenance-a-list": (lambda f: (f / "provenance.json").write_text("[1, 2]"), "not hold a JSON object"),
}


@pytest.mark.parametrize("case", sorted(DATASET_CASES))
def test_blend_dataset_reader_refuses(case, valid, tmp_path):
    from napari_blendphot.blend.dataset import BlendDataset

    edit, problem = DATASET_CASES[case]
    folder = copy_input(valid["dataset"], tmp_path)
    edit(folder)
    names = [str(folder)]
    _check_refused(BlendDataset, folder, names, problem, tmp_path)


def test_blend_dataset_reader_refuses_a_file(valid, tmp_path):
    from napari_blendphot.blend.dataset import BlendDataset

    path = copy_input(valid["native"], tmp_path)
    _check_refused(BlendDataset, path, [str(path)], "folder not found", tmp_path)


# -- results tables -----------------------------------------------------------------------------

def _results_meta(old: bytes, new: bytes):
    """An edit of a results CSV's metadata (in its metadata file)."""
    from napari_blendphot.tables import meta_path

    return lambda p: replace_in_file(meta_path(p), old, new)


def _results_fits_types(path):
    table = Table.read(path)
    table["g1_type"] = np.array([b"\xef\xbb"] * len(table))
    table.write(path, overwrite=True)


def _integer_true_flux_with_empty_cell(path):
    # fuzz: an integer flux column with an empty cell raised TypeError (NaN fill of an int column).
    def edit(header, data):
        j = header.index("g1_flux")
        for k, row in enumerate(data):
            row[j] = "" if k == 2 else str(100 + k)

    edit_csv(path, edit)


def _with_iou_column(value):
    def edit(path):
        def add(header, data):
            header.append("g1_iou_sep")
            for number, row in enumerate(data):
                row.append(value if number == 1 else "0.5")
        edit_csv(path, add)
    return edit


RESULTS_CASES = {
    # Issue 19: rows pasted twice doubled N; impossible values were accepted.
    "duplicated-row": ("csv", lambda p: duplicate_csv_row(p, 1), "appears in 2 rows"),
    "detection-case-42": ("csv", lambda p: set_csv_cell(p, "detection_sep", 0, "42"), "detection cases are"),
    "iou-7.5": ("csv", _with_iou_column("7.5"), "an IoU lies in [0, 1]"),
    "predicted-flux-1e300": ("csv", lambda p: set_csv_cell(p, "g1_flux_sep", 2, "1e300"), "beyond any flux"),
    "predicted-flux-infinite": ("csv", lambda p: set_csv_cell(p, "g2_flux_sep", 2, "inf"), "beyond any flux"),
    "true-flux-1e300": ("csv", lambda p: set_csv_cell(p, "g1_flux", 2, "1e300"), "beyond any flux"),
    "fuzz-empty-cell-in-integer-true-flux": ("csv", _integer_true_flux_with_empty_cell, "not positive"),
    "empty-file": ("csv", lambda p: p.write_bytes(b""), "cannot read as a table"),
    "binary-garbage": ("csv", lambda p: p.write_bytes(bytes(range(256)) * 8), "cannot read as a table"),
    "truncated-fits": ("fits", lambda p: truncate(p, 4000), "cannot read as a table"),
    "no-method-columns": ("csv", lambda p: (drop_csv_column(p, "g1_flux_sep"), drop_csv_column(p, "g2_flux_sep"),
                                            _results_meta(b'"methods":["sep"]', b'"methods":[]')(p)),
                          "no method columns"),
    "listed-method-missing": ("csv", lambda p: drop_csv_column(p, "g2_flux_sep"), "column g2_flux_'sep' is missing"),
    "missing-true-flux": ("csv", lambda p: drop_csv_column(p, "g1_flux"), "missing true-flux column"),
    "negative-true-flux": ("csv", lambda p: set_csv_cell(p, "g2_flux", 3, "-1.0"), "not positive"),
    "nan-true-flux": ("csv", lambda p: set_csv_cell(p, "g1_flux", 2, "nan"), "not positive"),
    "zero-point-not-a-number": ("csv", _results_meta(b'{"sep":25.96}', b'{"sep":"x"}'), "zero point of 'sep'"),
    "zero-points-not-a-mapping": ("csv", _results_meta(b'{"sep":25.96}', b"7"), "not a mapping"),
    "methods-not-a-list": ("csv", _results_meta(b'"methods":["sep"]', b'"methods":7'), "not a list of method names"),
    # fuzz: text in a flux column raised ValueError inside the metrics.
    "fuzz-text-in-predicted-flux": ("csv", lambda p: set_csv_cell(p, "g1_flux_sep", 2, "b'X'"),
                                    "'g1_flux_sep' is not numeric"),
    "fuzz-text-in-true-flux": ("csv", lambda p: set_csv_cell(p, "g2_flux", 2, "SPH"), "'g2_flux' is not numeric"),
    # fuzz: non-ASCII bytes in a FITS text column raised UnicodeDecodeError inside the metrics.
    "fuzz-fits-type-bytes": ("fits", _results_fits_types, "not text"),
    # fuzz: TFIELDS = 99999999 made astropy loop over 10^8 columns.
    "fuzz-tfields-huge": ("fits", lambda p: set_card(p, "TFIELDS", "99999999"), "TFIELDS = 99999999"),
}


@pytest.mark.parametrize("case", sorted(RESULTS_CASES))
def test_results_reader_refuses(case, valid, tmp_path):
    from napari_blendphot.report.evaluate import summary_table
    from napari_blendphot.report.results import read_results

    kind, edit, problem = RESULTS_CASES[case]
    path = copy_input(valid["results" if kind == "csv" else "results_fits"], tmp_path)
    edit(path)

    def read_and_summarise(p):
        return summary_table(read_results(p))

    _check_refused(read_and_summarise, path, [str(path), path.name], problem, tmp_path)


def test_valid_inputs_read_cleanly(valid):
    """The corpus starts from inputs the readers accept (so each refusal is the edit's doing)."""
    from napari_blendphot.blend.dataset import BlendDataset
    from napari_blendphot.report.evaluate import summary_table
    from napari_blendphot.report.results import read_results
    from napari_blendphot.sample.io_candels import read_candels
    from napari_blendphot.sample.io_cutouts import read_cutouts
    from napari_blendphot.sample.io_native import read_native

    assert len(read_native(valid["native"])) == 8
    assert len(read_candels(valid["candels"])) == 8
    assert len(read_cutouts(valid["cutouts"])) == 3
    assert len(BlendDataset(valid["dataset"])) == 6
    for key in ("results", "results_fits"):
        assert len(summary_table(read_results(valid[key]))) > 0


# -- the napari reader on the corpus -----------------------------------------------------------

def _reader_cases():
    cases = [("native", name) for name in sorted(NATIVE_CASES) if name != "not-a-blendphot-file"]
    cases += [("dataset", name) for name in sorted(DATASET_CASES)]
    cases += [("candels", name) for name in sorted(CANDELS_CASES) if name.startswith(("fuzz", "pickled"))]
    return cases


@pytest.mark.parametrize("kind, case", _reader_cases(), ids=lambda v: v)
def test_napari_reader_refuses_the_corpus(kind, case, valid, tmp_path):
    """What napari's File > Open meets: our kinds of input, broken, raise InputError (shown as a notification)."""
    from napari_blendphot._reader import get_reader

    cases = {"native": NATIVE_CASES, "dataset": DATASET_CASES, "candels": CANDELS_CASES}[kind]
    edit, _ = cases[case]
    path = copy_input(valid[kind], tmp_path)
    edit(path)
    before = tree_digest(tmp_path)
    reader = get_reader(str(path))
    if reader is not None:  # declining (None) lets napari try other readers: also fine
        with pytest.raises(InputError) as info:
            reader(str(path))
        assert path.name in str(info.value)
    assert tree_digest(tmp_path) == before
