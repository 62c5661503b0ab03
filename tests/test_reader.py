"""The napari reader: every input kind, directly and through viewer.open, and clear errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from napari_blendphot import _reader
from napari_blendphot._reader import detect_kind, get_reader, mask_outlines, read_path
from napari_blendphot.display import CENTRAL_LABEL, COMPANION_LABEL, OVERLAP_LABEL
from napari_blendphot.errors import InputError

PLUGIN = "napari-blendphot"


@pytest.fixture(scope="module")
def small_sample():
    from napari_blendphot.sample.toy import make_toy_sample

    return make_toy_sample(12, seed=7)


@pytest.fixture(scope="module")
def native_file(tmp_path_factory, small_sample):
    from napari_blendphot.sample.io_native import write_native

    return write_native(small_sample, tmp_path_factory.mktemp("native") / "toy.fits")


@pytest.fixture(scope="module")
def blend_folder(tmp_path_factory, small_sample):
    from napari_blendphot.blend.dataset import write_blend_dataset

    return write_blend_dataset(small_sample, tmp_path_factory.mktemp("ds") / "blends", n=10, test_fraction=0.2,
                               seed=3)


def _write_cutout(path, image, header_cards):
    from astropy.io import fits

    hdu = fits.PrimaryHDU(image.astype(">f4"))  # big-endian on disk, as FITS always is
    for key, value in header_cards.items():
        hdu.header[key] = value
    hdu.writeto(path)


# -- get_reader: what is ours ----------------------------------------------------------------

def test_get_reader_declines_foreign_paths(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(empty)) is None
    assert get_reader([str(tmp_path / "a.fits"), str(tmp_path / "b.fits")]) is None


def test_get_reader_accepts_our_kinds(native_file, blend_folder):
    assert get_reader(str(native_file)) is read_path
    assert get_reader([str(blend_folder)]) is read_path
    assert detect_kind(native_file) == "native"
    assert detect_kind(blend_folder) == "blends"


# -- each kind ------------------------------------------------------------------------------

def test_native_sample_becomes_stamps_and_segmentation(native_file, small_sample):
    layers = read_path(str(native_file))
    (stamps, image_kwargs, image_type), (segmaps, label_kwargs, label_type) = layers
    assert (image_type, label_type) == ("image", "labels")
    np.testing.assert_array_equal(stamps, small_sample.images)
    np.testing.assert_array_equal(segmaps, small_sample.segmaps)
    meta = image_kwargs["metadata"]
    assert meta["blendphot_kind"] == "sample"
    assert len(meta["sample"]) == len(small_sample)
    assert list(meta["catalog"]["id"]) == list(small_sample.catalog["id"])
    low, high = image_kwargs["contrast_limits"]
    # Astronomical contrast: just below the sky, well below the brightest pixel.
    assert low < np.median(stamps) < high < stamps.max()
    assert image_kwargs["name"] == "toy stamps"
    assert label_kwargs["visible"] is False


def test_candels_folder(tmp_path, small_sample):
    from napari_blendphot.sample.io_candels import write_candels_layout

    folder = write_candels_layout(small_sample, tmp_path / "candels")
    assert detect_kind(folder) == "candels"
    stamps, kwargs, _ = read_path(str(folder))[0]
    np.testing.assert_array_equal(stamps, small_sample.images)
    assert kwargs["metadata"]["blendphot_kind"] == "sample"


def test_blend_dataset_folder_gives_blends_and_true_outlines(blend_folder):
    from napari_blendphot.blend.dataset import BlendDataset

    dataset = BlendDataset(blend_folder)
    (blends, image_kwargs, _), (labels, label_kwargs, label_type) = read_path(str(blend_folder))
    np.testing.assert_array_equal(np.asarray(blends), np.asarray(dataset.blends))
    assert label_type == "labels"
    np.testing.assert_array_equal(labels, mask_outlines(np.asarray(dataset.masks)))
    assert image_kwargs["metadata"]["blendphot_kind"] == "blends"
    assert image_kwargs["metadata"]["blend_set"][3].dy == dataset[3].dy
    assert label_kwargs["features"]["galaxy"] == ["background", "central", "companion", "both"]


def test_large_blend_sets_get_lazy_outlines(blend_folder, monkeypatch):
    monkeypatch.setattr(_reader, "LAZY_LABELS_ABOVE", 2)
    labels = read_path(str(blend_folder))[1][0]
    assert "dask" in type(labels).__module__
    from napari_blendphot.blend.dataset import BlendDataset

    np.testing.assert_array_equal(np.asarray(labels), mask_outlines(np.asarray(BlendDataset(blend_folder).masks)))


def test_cutout_folder_and_single_cutout(tmp_path, small_sample):
    folder = tmp_path / "cutouts"
    folder.mkdir()
    for i in range(3):
        row = small_sample.catalog[i]
        _write_cutout(folder / f"gal{i}.fits", small_sample.images[i],
                      {"GALTYPE": str(row["galtype"]), "RADIUS": float(row["radius"]), "MAG": float(row["mag"]),
                       "ID": int(row["id"])})
    assert detect_kind(folder) == "cutouts"
    stamps, kwargs, _ = read_path(str(folder))[0]
    assert stamps.shape == (3, 128, 128)
    np.testing.assert_allclose(stamps, small_sample.images[:3])
    assert list(kwargs["metadata"]["catalog"]["id"]) == list(small_sample.catalog["id"][:3])

    single = folder / "gal1.fits"
    assert detect_kind(single) == "cutout"
    stamps, kwargs, _ = read_path(str(single))[0]
    assert stamps.shape == (1, 128, 128)
    assert kwargs["metadata"]["blendphot_kind"] == "sample"
    assert int(kwargs["metadata"]["catalog"]["id"][0]) == int(small_sample.catalog["id"][1])


def test_plain_fits_image_in_native_byte_order(tmp_path):
    image = np.arange(40 * 50, dtype=np.float32).reshape(40, 50)
    _write_cutout(tmp_path / "field.fits", image, {"OBJECT": "a field"})
    assert detect_kind(tmp_path / "field.fits") == "fits-image"
    ((data, kwargs, layer_type),) = read_path(str(tmp_path / "field.fits"))
    assert layer_type == "image" and data.dtype.isnative
    np.testing.assert_array_equal(data, image)
    assert "OBJECT" in kwargs["metadata"]["fits_header"]
    assert kwargs["name"] == "field"


# -- errors ---------------------------------------------------------------------------------

def test_broken_fits_is_ours_and_says_why(tmp_path):
    broken = tmp_path / "broken.fits"
    broken.write_bytes(b"this is not a FITS file at all" * 10)
    assert get_reader(str(broken)) is read_path
    with pytest.raises(InputError, match="broken.fits: cannot be opened as FITS"):
        read_path(str(broken))


def test_blend_folder_without_catalogue_names_the_problem(tmp_path, blend_folder):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(blend_folder, damaged)
    (damaged / "catalog.csv").unlink()
    (damaged / "catalog.fits").unlink()
    with pytest.raises(InputError, match="no catalog.fits or catalog.csv"):
        read_path(str(damaged))


def test_the_manifest_claims_fits_names_only():
    """napari lists a reader for every path its patterns match: '*' offered us for every .tif and .npy."""
    import yaml

    manifest = yaml.safe_load((Path(_reader.__file__).parent / "napari.yaml").read_text())
    (reader,) = manifest["contributions"]["readers"]
    patterns = reader["filename_patterns"]
    assert "*" not in patterns and all(p.startswith("*.f") for p in patterns)
    assert {p[1:] for p in patterns} == set(_reader.FITS_SUFFIXES)


def test_folders_and_fits_files_we_do_not_recognise_are_left_to_others(tmp_path, small_sample):
    from astropy.io import fits
    from astropy.table import Table

    one_image = tmp_path / "one_image"
    one_image.mkdir()
    _write_cutout(one_image / "frame.fits", np.zeros((200, 300), np.float32), {"OBJECT": "not a cutout"})
    assert get_reader(str(one_image)) is None  # before: claimed as a cutout folder, then refused
    plain_stamps = tmp_path / "plain_stamps"
    plain_stamps.mkdir()
    _write_cutout(plain_stamps / "a.fits", small_sample.images[0], {"OBJECT": "no cutout keywords"})
    assert get_reader(str(plain_stamps)) is None
    table_only = tmp_path / "table_only.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(Table({"a": [1, 2]}))]).writeto(table_only)
    assert get_reader(str(table_only)) is None
    # A FITS image is ours (field mode), and so is a 128x128 cutout with its keywords.
    assert get_reader(str(one_image / "frame.fits")) is read_path
    row = small_sample.catalog[0]
    _write_cutout(tmp_path / "cutout.fits", small_sample.images[0],
                  {"GALTYPE": str(row["galtype"]), "RADIUS": float(row["radius"]), "MAG": float(row["mag"])})
    assert detect_kind(tmp_path / "cutout.fits") == "cutout"
    # Cutout keywords on an image that is not a 128x128 stamp: a field image, not a cutout.
    _write_cutout(tmp_path / "big.fits", np.zeros((64, 64), np.float32), {"GALTYPE": "sph", "RADIUS": 3.0})
    assert detect_kind(tmp_path / "big.fits") == "fits-image"


def test_fits_without_image(tmp_path):
    from astropy.io import fits
    from astropy.table import Table

    path = tmp_path / "table_only.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(Table({"a": [1, 2]}))]).writeto(path)
    with pytest.raises(InputError, match="no 2-D or 3-D image"):
        read_path(str(path))


# -- outlines -------------------------------------------------------------------------------

def test_mask_outlines_draws_each_galaxy_boundary():
    masks = np.zeros((2, 12, 12), np.uint8)
    masks[0, 2:7, 2:7] = 1   # 5 x 5 square: 16 boundary pixels
    masks[1, 5:10, 5:10] = 1  # overlapping square
    labels = mask_outlines(masks)
    central = (labels == CENTRAL_LABEL) | (labels == OVERLAP_LABEL)
    companion = (labels == COMPANION_LABEL) | (labels == OVERLAP_LABEL)
    assert central.sum() == 16 and companion.sum() == 16
    assert labels[4, 4] == 0  # inside the central: not drawn
    # The two outlines cross at two pixels.
    assert set(zip(*np.nonzero(labels == OVERLAP_LABEL))) == {(5, 6), (6, 5)}
    # A mask touching the stamp edge is closed along the edge.
    edge = np.zeros((2, 6, 6), np.uint8)
    edge[0, :3, :] = 1
    assert (mask_outlines(edge)[0] == CENTRAL_LABEL).all()


def test_mask_outlines_refuses_wrong_shape():
    with pytest.raises(InputError, match="expected shape"):
        mask_outlines(np.zeros((3, 8, 8)))


# -- through napari --------------------------------------------------------------------------

@pytest.mark.gui
def test_viewer_open_with_plugin(make_napari_viewer, native_file, blend_folder):
    viewer = make_napari_viewer()
    layers = viewer.open(str(native_file), plugin=PLUGIN)
    assert [layer.name for layer in layers] == ["toy stamps", "toy segmentation"]
    assert layers[0].metadata["blendphot_kind"] == "sample"
    assert layers[0].gamma == 0.5
    layers = viewer.open(str(blend_folder), plugin=PLUGIN)
    assert [type(layer).__name__ for layer in layers] == ["Image", "Labels"]
    truth = layers[1]
    # The truth's own style, the same in every view: white central, grey companion.
    from napari_blendphot.display import TRUTH_STYLE

    np.testing.assert_allclose(truth.colormap.map(np.array([CENTRAL_LABEL]))[0], TRUTH_STYLE.central_rgba, atol=1e-6)
    np.testing.assert_allclose(truth.colormap.map(np.array([COMPANION_LABEL]))[0], TRUTH_STYLE.companion_rgba,
                               atol=1e-6)
    assert truth.metadata["blendphot_truth"] is True
    assert "tensorflow" not in sys.modules


@pytest.mark.gui
def test_viewer_open_without_plugin_leaves_other_files_to_napari(make_napari_viewer, tmp_path):
    """Files we do not read open without plugin= (the "*" pattern made napari ask which reader to use)."""
    import imageio.v3 as iio
    from napari.errors import MultipleReaderError

    image = (np.arange(64 * 64).reshape(64, 64) % 251).astype(np.uint8)
    iio.imwrite(tmp_path / "x.png", image)
    np.save(tmp_path / "x.npy", image)
    viewer = make_napari_viewer()
    for name in ("x.png", "x.npy"):
        try:
            layers = viewer.open(str(tmp_path / name), plugin=None)
        except MultipleReaderError as exc:  # pragma: no cover - the failure this test is for
            pytest.fail(f"{name}: {exc}")
        assert [layer.source.reader_plugin for layer in layers] == ["napari"]
    from napari.plugins._npe2 import get_readers

    assert PLUGIN not in get_readers(str(tmp_path / "x.png"))
    assert PLUGIN in get_readers(str(tmp_path / "x.fits"))


@pytest.mark.gui
def test_viewer_open_broken_file_raises_our_message(make_napari_viewer, tmp_path):
    broken = tmp_path / "broken.fits"
    broken.write_bytes(b"\x00" * 100)
    viewer = make_napari_viewer()
    with pytest.raises(Exception) as info:
        viewer.open(str(broken), plugin=PLUGIN)
    chain, error = [], info.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or getattr(error, "original_error", None)
        if error in chain:
            break
    assert any(isinstance(e, InputError) and "broken.fits" in str(e) for e in chain)
    assert len(viewer.layers) == 0


def test_truncated_native_file_names_the_file(tmp_path, native_file):
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(native_file.read_bytes()[:20000])
    assert get_reader(str(truncated)) is read_path
    with pytest.raises(InputError, match="truncated.fits"):
        read_path(str(truncated))


def test_unexpected_reader_failures_become_input_errors(tmp_path, monkeypatch):
    path = tmp_path / "odd.fits"
    path.write_bytes(b"")

    def explode(_path):
        raise OSError("Header missing END card")

    monkeypatch.setattr(_reader, "_read_kind", explode)
    with pytest.raises(InputError, match="odd.fits: cannot be read: Header missing END card"):
        read_path(str(path))
