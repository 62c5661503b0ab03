"""Field mode, the library pieces: calibration, reading by region, resampling, grouping, stamps, positions."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from astropy.io import fits

from napari_blendphot.errors import InputError
from napari_blendphot.field import flags as F
from napari_blendphot.field.calibration import photflam_zero_point, read_calibration, unit_is_rate
from napari_blendphot.field.detect import group_sources, touching_segments
from napari_blendphot.field.image import FieldWarning, open_field
from napari_blendphot.field.resample import input_span, noise_factor, resample_stamp
from napari_blendphot.field.simulate import tan_header
from test_field_support import write_image


# ----------------------------------------------------------------------------- calibration
def header_with(**cards):
    header = fits.Header()
    for key, value in cards.items():
        header[key] = value
    return header


@pytest.mark.parametrize("keyword", ["PHOTZP", "MAGZERO", "MAGZPT", "ZP"])
def test_header_zero_point_applies_to_stored_values(keyword):
    calibration = read_calibration(header_with(**{keyword: 28.5}), "x.fits")
    assert calibration.zero_point == 28.5
    assert calibration.zero_point_source == keyword
    assert not calibration.zero_point_assumed
    # 10**(0.4 (25.96 - 28.5)) turns stored values into e-/s at 25.96.
    assert calibration.flux_scale == pytest.approx(10 ** (0.4 * (25.96 - 28.5)))


def test_photflam_rate_and_counts():
    photflam, photplam = 1.9275e-20, 15369.176  # HST WFC3/IR F160W
    rate = read_calibration(header_with(PHOTFLAM=photflam, PHOTPLAM=photplam, BUNIT="ELECTRONS/S"), "x")
    assert rate.zero_point == pytest.approx(photflam_zero_point(photflam, photplam))
    assert rate.zero_point == pytest.approx(25.946, abs=0.01)  # the published F160W AB zero point
    counts = read_calibration(header_with(PHOTFLAM=photflam, PHOTPLAM=photplam, BUNIT="COUNTS", EXPTIME=1000.0),
                              "x")
    assert counts.zero_point == pytest.approx(rate.zero_point + 2.5 * math.log10(1000.0))


def test_explicit_options_override_the_header():
    header = header_with(MAGZERO=30.0, PIXSCALE=0.2)
    calibration = read_calibration(header, "x", zero_point=26.5, pixel_scale=0.1)
    assert (calibration.zero_point, calibration.zero_point_source) == (26.5, "option")
    assert calibration.pixel_scale_yx == (0.1, 0.1) and calibration.pixel_scale_source == "option"


def test_missing_calibration_is_a_recorded_assumption():
    calibration = read_calibration(header_with(BUNIT="counts", EXPTIME=400.0), "x")
    assert calibration.zero_point_assumed and calibration.pixel_scale_assumed
    assert calibration.zero_point == pytest.approx(25.96 + 2.5 * math.log10(400.0))
    assert any("ASSUMED" in note and "zero point" in note for note in calibration.notes)
    assert calibration.as_dict()["zero_point_assumed"] is True


def test_bad_zero_point_option_is_refused():
    with pytest.raises(InputError, match="--zeropoint"):
        read_calibration(header_with(), "x", zero_point=float("nan"))


@pytest.mark.parametrize("text, expected", [("ELECTRONS/S", True), ("e-/s", True), ("counts/s", True),
                                            ("COUNTS", False), ("ADU", False), ("electrons", False),
                                            ("MJy/sr", None), ("", None)])
def test_unit_is_rate(text, expected):
    assert unit_is_rate(text) is expected


def test_pixel_scale_from_wcs_and_resampling_decision():
    header = tan_header((100, 100), pixel_scale=0.12, rotation_deg=30.0)
    from astropy.wcs import WCS

    calibration = read_calibration(header, "x", WCS(header))
    assert calibration.pixel_scale_source == "WCS"
    assert calibration.pixel_scale == pytest.approx(0.12)
    assert calibration.needs_resampling and calibration.zoom_yx == pytest.approx((2.0, 2.0))
    close = read_calibration(tan_header((100, 100), pixel_scale=0.062), "x", WCS(tan_header((100, 100), 0.062)))
    assert not close.needs_resampling and close.zoom_yx == (1.0, 1.0)


# ----------------------------------------------------------------------------- reading
def test_open_field_reads_regions_with_padding_and_no_data(tmp_path):
    data = np.arange(40 * 50, dtype=np.float32).reshape(40, 50) + 1.0
    data[0, :] = 0.0      # a zero-filled border: no data
    data[5, 5] = np.nan
    header = tan_header(data.shape)
    header["MAGZERO"] = 27.0
    path = write_image(tmp_path / "img.fits", data, header)
    with open_field(path, warn=False) as image:
        assert image.shape == (40, 50) and image.has_wcs
        region = image.read_region(-2, 3, 48, 53)
    assert region.shape == (5, 5) and region.dtype == np.float32
    assert np.isnan(region[:2]).all() and np.isnan(region[:, 2:]).all()  # outside the image
    assert np.isnan(region[2]).all()  # row 0: zeros are no data
    assert region[3, 0] == data[1, 48] and region[4, 1] == data[2, 49]
    with open_field(path, warn=False) as image:
        assert np.isnan(image.read_region(5, 6, 5, 6)[0, 0])


def test_cube_plane_is_chosen_and_recorded(tmp_path):
    cube = np.stack([np.full((30, 30), k + 1.0, np.float32) for k in range(3)])
    path = write_image(tmp_path / "cube.fits", cube)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FieldWarning)
        image = open_field(path)
    assert any("3-D cube of 3 planes: measuring plane 0 (choose another with --plane)" in str(w.message)
               for w in caught)
    assert image.plane == 0 and image.read_region(0, 2, 0, 2)[0, 0] == 1.0
    image.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FieldWarning)
        image = open_field(path, plane=2)
    assert image.plane == 2 and image.read_region(0, 2, 0, 2)[0, 0] == 3.0
    assert image.describe()["plane"] == 2
    image.close()
    with pytest.raises(InputError, match="plane 3 does not exist: the cube has 3 planes"):
        open_field(path, plane=3, warn=False)


def test_degenerate_axes_and_extension_hdu(tmp_path):
    data = np.ones((1, 1, 20, 25), np.float32)
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, name="SCI")])
    hdul[0].header["EXPTIME"] = 500.0
    hdul.writeto(tmp_path / "ext.fits")
    with open_field(tmp_path / "ext.fits", warn=False) as image:
        assert image.hdu_index == 1 and image.shape == (20, 25) and image.plane is None
        assert image.calibration.exptime == 500.0  # from the primary header
        assert image.read_region(0, 20, 0, 25).sum() == 500.0


@pytest.mark.parametrize("name, content, message", [
    ("notes.txt", b"hello", "is not a FITS file"),
    ("broken.fits", b"SIMPLE  = T" + b" " * 100, "cannot be opened as FITS|damaged FITS file"),
])
def test_not_fits_inputs_get_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        open_field(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_fits_without_image_and_missing_file(tmp_path):
    from astropy.table import Table

    Table({"a": [1, 2]}).write(tmp_path / "table.fits")
    with pytest.raises(InputError, match="no 2-D image or 3-D cube"):
        open_field(tmp_path / "table.fits")
    with pytest.raises(InputError, match="file not found"):
        open_field(tmp_path / "absent.fits")


def test_no_wcs_is_said_once(tmp_path):
    path = write_image(tmp_path / "plain.fits", np.ones((20, 20), np.float32))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = open_field(path)
    lines = [str(w.message) for w in caught if issubclass(w.category, FieldWarning)]
    assert sum("positions in pixels only" in line for line in lines) == 1
    assert all(line.startswith("plain.fits: ") for line in lines)
    ra, dec = image.pixel_to_world([1.0], [2.0])
    assert np.isnan(ra).all() and np.isnan(dec).all()
    image.close()


# ----------------------------------------------------------------------------- resampling
@pytest.mark.parametrize("zoom", [0.5, 0.8, 1.7, 2.0, 3.3])
def test_resampling_conserves_flux_and_centres_the_source(zoom):
    centre = (50.3, 60.7)
    span_y, span_x = input_span(centre[0], zoom), input_span(centre[1], zoom)
    yy, xx = np.mgrid[span_y[0]:span_y[1], span_x[0]:span_x[1]]
    sigma = 3.0
    region = np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    stamp = resample_stamp(region, span_y[0], span_x[0], centre[0], centre[1], (zoom, zoom))
    assert stamp.shape == (128, 128)
    assert stamp.sum() == pytest.approx(region.sum(), rel=1e-5)
    iy, ix = np.mgrid[0:128, 0:128]
    assert (stamp * iy).sum() / stamp.sum() == pytest.approx(64.0, abs=0.01)
    assert (stamp * ix).sum() / stamp.sum() == pytest.approx(64.0, abs=0.01)


def test_downsampling_by_two_is_a_block_sum():
    rng = np.random.default_rng(0)
    region = rng.normal(size=(300, 300))
    # Output pixel 64 centred on input coordinate 150.5 (between pixels): blocks of 2x2 input pixels.
    stamp = resample_stamp(region, 0, 0, 150.5, 150.5, (0.5, 0.5))
    blocks = region[150 - 128:150 + 128, 150 - 128:150 + 128].reshape(128, 2, 128, 2).sum(axis=(1, 3))
    assert np.allclose(stamp, blocks, atol=1e-5)
    # Sums of 4 pixels double the rms on this grid; other placements mix partial pixels (between 1.5 and 2).
    assert 1.5 < noise_factor((0.5, 0.5)) < 2.0


# ----------------------------------------------------------------------------- grouping
def test_touching_segments_and_groups():
    segmap = np.zeros((20, 30), np.int32)
    segmap[2:6, 2:6] = 1
    segmap[2:6, 6:9] = 2       # touches 1
    segmap[12:15, 20:23] = 3   # alone
    segmap[12:15, 23:25] = 4   # touches 3
    segmap[12:15, 25:27] = 5   # touches 4: a chain 3-4-5
    assert touching_segments(segmap).tolist() == [[1, 2], [3, 4], [4, 5]]
    x = np.array([4.0, 7.5, 21.0, 24.0, 26.0, 5.0])
    y = np.array([4.0, 4.0, 13.0, 13.0, 13.0, 17.0])
    radius = np.array([1.0, 1.0, 0.5, 0.5, 0.5, 2.5])
    segment = np.array([1, 2, 3, 4, 5, 0])
    labels, _ = group_sources(x, y, radius, segment, segmap, max_separation=60)
    # 0-1 touch; 2-3-4 chain; 5 is 13 px from source 0 and 2 (1 + 2.5) = 7 < 13: alone.
    assert labels.tolist() == [0, 0, 2, 2, 2, 5]
    labels, _ = group_sources(x, y, np.array([1.0, 1.0, 0.5, 0.5, 0.5, 6.0]), segment, segmap, max_separation=60)
    assert labels[5] == 0  # now 13 < 2 (1 + 6): grouped by distance
    labels, _ = group_sources(x, y, radius, segment, segmap, max_separation=3.0)
    assert labels[1] == 1  # the pair is 3.5 px apart: beyond the largest separation, not a pair


def test_flags_legend_is_bits():
    values = list(F.FLAGS.values())
    assert values == sorted(values) and all(v & (v - 1) == 0 for v in values)
    assert F.describe(F.EDGE | F.ISOLATED) == ["EDGE", "ISOLATED"]


def test_field_library_imports_no_gui_and_no_keras():
    import subprocess
    import sys

    code = ("import sys\n"
            "import napari_blendphot.field.image, napari_blendphot.field.measure, napari_blendphot.field.model\n"
            "import napari_blendphot.field.output, napari_blendphot.field.simulate, napari_blendphot.field.run\n"
            "import napari_blendphot.cli._measure\n"
            "heavy = [m for m in ('qtpy', 'napari', 'tensorflow', 'keras', 'galsim', 'PyQt6') if m in sys.modules]\n"
            "print(','.join(heavy))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
