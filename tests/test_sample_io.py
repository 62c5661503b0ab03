"""Sample readers and writers: native FITS, CANDELS Zenodo folder, FITS cutouts, dispatch."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from napari_blendphot.errors import InputError, OutputExistsError
from napari_blendphot.sample.galaxy_sample import GalaxySample
from napari_blendphot.sample.io_native import read_native, write_native


@pytest.fixture()
def rich_sample(toy_sample):
    """The toy sample plus extra catalogue columns of awkward dtypes and metadata."""
    sample = toy_sample[:24]
    catalog = sample.catalog.copy()
    n = len(catalog)
    catalog["FIELD"] = np.array(["COSMOS", "UDS", "GOODS-S"] * (n // 3))
    catalog["RA"] = np.linspace(150.0, 150.2, n)
    catalog["small"] = np.arange(n, dtype=np.int8) - 5
    catalog["flag"] = np.arange(n) % 2 == 0
    catalog["count"] = np.arange(n, dtype=np.uint16) * 1000
    catalog["x"] = np.linspace(0, 1, n).astype(np.float32)
    catalog.meta["origin"] = "test"
    provenance = {"step": "test", "seed": 5, "nested": {"a": [1, 2.5, "x"], "quote": "it's"}}
    return GalaxySample(sample.images, sample.segmaps, catalog, provenance=provenance, source="rich")


def _assert_same_sample(a: GalaxySample, b: GalaxySample) -> None:
    assert a.images.dtype == b.images.dtype == np.float32
    assert a.segmaps.dtype == b.segmaps.dtype == np.int32
    assert a.images.tobytes() == b.images.tobytes()
    assert a.segmaps.tobytes() == b.segmaps.tobytes()
    assert a.catalog.colnames == b.catalog.colnames
    for name in a.catalog.colnames:
        assert a.catalog[name].dtype == b.catalog[name].dtype, name
        assert np.array_equal(np.asarray(a.catalog[name]), np.asarray(b.catalog[name])), name


# -- native FITS --------------------------------------------------------------------------

def test_native_round_trip_is_exact(rich_sample, tmp_path):
    path = write_native(rich_sample, tmp_path / "s.fits")
    back = read_native(path)
    _assert_same_sample(rich_sample, back)
    assert back.provenance == rich_sample.provenance
    assert back.catalog.meta == {"origin": "test"}
    assert back.images.dtype.isnative and back.segmaps.dtype.isnative
    assert all(back.catalog[c].dtype.isnative or back.catalog[c].dtype.kind == "U" for c in back.catalog.colnames)
    assert back.source == str(path)
    assert back.segmaps.max() > 255  # ids above 255 survive


def test_native_files_are_byte_identical_and_undated(rich_sample, tmp_path):
    for quantize in (None, 16):
        a = write_native(rich_sample, tmp_path / f"a{quantize}.fits", quantize=quantize)
        b = write_native(rich_sample, tmp_path / f"b{quantize}.fits", quantize=quantize)
        assert a.read_bytes() == b.read_bytes()
        with fits.open(a) as hdul:
            for hdu in hdul:
                assert "DATE" not in hdu.header and "CHECKSUM" not in hdu.header
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp file


def test_native_primary_header(rich_sample, tmp_path):
    path = write_native(rich_sample, tmp_path / "s.fits")
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "IMAGES", "SEGMAPS", "CATALOG"]
        assert hdul[0].header["BPFORMAT"] == "blendphot-sample"
        assert hdul[0].header["BPVERS"] == 1
        assert hdul[0].header["NGAL"] == len(rich_sample)
        assert hdul[0].data is None


def test_native_quantized_is_small_and_close(toy_sample, tmp_path):
    lossless = write_native(toy_sample, tmp_path / "l.fits")
    small = write_native(toy_sample, tmp_path / "q.fits", quantize=16)
    assert small.stat().st_size < lossless.stat().st_size / 4
    back = read_native(small)
    assert np.array_equal(back.segmaps, toy_sample.segmaps)
    # Step = rms / q per stamp: the error is at most half a step (toy noise rms 0.01).
    error = np.abs(back.images - toy_sample.images).max()
    assert 0 < error <= 0.01 / (2 * 16) * 1.05
    assert back.provenance["storage"]["quantize_level"] == 16
    assert back.provenance["step"] == toy_sample.provenance["step"]


def test_native_refuses_to_overwrite(toy_sample, tmp_path):
    path = tmp_path / "s.fits"
    path.write_text("precious")
    with pytest.raises(OutputExistsError):
        write_native(toy_sample, path)
    assert path.read_text() == "precious"
    write_native(toy_sample, path, overwrite=True)
    assert len(read_native(path)) == len(toy_sample)


def test_native_rejects_bad_quantize(toy_sample, tmp_path):
    with pytest.raises(InputError, match="quantize"):
        write_native(toy_sample, tmp_path / "s.fits", quantize=-1)


def test_native_rejects_non_ascii_catalogue_text(toy_sample, tmp_path):
    catalog = toy_sample.catalog.copy()
    catalog["name"] = ["Gal\u00e1xia"] * len(catalog)
    sample = GalaxySample(toy_sample.images, toy_sample.segmaps, catalog)
    with pytest.raises(InputError, match="ASCII"):
        write_native(sample, tmp_path / "s.fits")
    assert not (tmp_path / "s.fits").exists()


def test_native_reader_missing_and_not_fits(tmp_path):
    with pytest.raises(InputError, match="not found") as info:
        read_native(tmp_path / "nope.fits")
    assert "nope.fits" in str(info.value)
    text = tmp_path / "text.fits"
    text.write_text("hello, I am not FITS\n" * 10)
    with pytest.raises(InputError, match="not a FITS file") as info:
        read_native(text)
    assert "text.fits" in str(info.value)
    with pytest.raises(InputError, match="folder"):
        read_native(tmp_path)


@pytest.mark.parametrize("quantize", [None, 16])
@pytest.mark.parametrize("keep", [100, 2880 * 2, 0.5, -2880, -7])
def test_native_reader_truncated(toy_sample, tmp_path, quantize, keep):
    path = write_native(toy_sample[:8], tmp_path / "s.fits", quantize=quantize)
    data = path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (keep if keep > 0 else len(data) + keep)
    path.write_bytes(data[:n])
    with pytest.raises(InputError, match="truncated") as info:
        read_native(path)
    assert str(path) in str(info.value)


def test_native_reader_not_a_sample(tmp_path):
    path = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(path)
    with pytest.raises(InputError, match="not a blendphot sample file"):
        read_native(path)


def _rewrite(path, out, edit):
    with fits.open(path) as hdul:
        hdus = [hdu.copy() for hdu in hdul]
    hdus = edit(hdus)
    fits.HDUList(hdus).writeto(out)
    return out


def test_native_reader_missing_extension(toy_sample, tmp_path):
    path = write_native(toy_sample[:5], tmp_path / "s.fits")
    bad = _rewrite(path, tmp_path / "bad.fits", lambda h: [h[0], h[1], h[3]])
    with pytest.raises(InputError, match="missing extension.*SEGMAPS") as info:
        read_native(bad)
    assert "bad.fits" in str(info.value)


def test_native_reader_count_mismatch(toy_sample, tmp_path):
    path = write_native(toy_sample[:5], tmp_path / "s.fits")

    def fewer_images(hdus):
        hdus[1] = fits.ImageHDU(hdus[1].data[:4], name="IMAGES")
        return hdus

    def wrong_ngal(hdus):
        hdus[0].header["NGAL"] = 6
        return hdus

    with pytest.raises(InputError, match="NGAL = 5 but IMAGES holds 4"):
        read_native(_rewrite(path, tmp_path / "b1.fits", fewer_images))
    with pytest.raises(InputError, match="NGAL = 6"):
        read_native(_rewrite(path, tmp_path / "b2.fits", wrong_ngal))


def test_native_reader_wrong_shape_and_dtype(toy_sample, tmp_path):
    path = write_native(toy_sample[:5], tmp_path / "s.fits")

    def flat_images(hdus):
        hdus[1] = fits.ImageHDU(hdus[1].data[:, :64, :], name="IMAGES")
        return hdus

    def float_segmaps(hdus):
        hdus[2] = fits.ImageHDU(hdus[2].data.astype(np.float32), name="SEGMAPS")
        return hdus

    def image_2d(hdus):
        hdus[1] = fits.ImageHDU(hdus[1].data[0], name="IMAGES")
        return hdus

    with pytest.raises(InputError, match=r"shape \(5, 64, 128\)") as info:
        read_native(_rewrite(path, tmp_path / "b1.fits", flat_images))
    assert "b1.fits" in str(info.value)
    with pytest.raises(InputError, match="SEGMAPS has dtype float32|expected integers"):
        read_native(_rewrite(path, tmp_path / "b2.fits", float_segmaps))
    with pytest.raises(InputError, match="IMAGES has shape"):
        read_native(_rewrite(path, tmp_path / "b3.fits", image_2d))


def test_native_reader_missing_catalogue_column(toy_sample, tmp_path):
    path = write_native(toy_sample[:5], tmp_path / "s.fits")

    def drop_radius(hdus):
        from astropy.table import Table

        table = Table(hdus[3].data)
        table.remove_column("radius")
        hdus[3] = fits.table_to_hdu(table)
        hdus[3].name = "CATALOG"
        return hdus

    with pytest.raises(InputError, match="radius") as info:
        read_native(_rewrite(path, tmp_path / "b.fits", drop_radius))
    assert "b.fits" in str(info.value)
