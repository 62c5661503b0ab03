"""napari reader: blendphot samples, CANDELS folders, blend datasets, FITS cutouts and field images.

Every path becomes layer data tuples built by :func:`sample_layers` /
:func:`blend_dataset_layers`, which the widgets and sample-data entries reuse.
Stamps become one image layer (a stack with a slider) with an astronomical
contrast (:func:`napari_blendphot.display.astro_contrast`), segmentation maps
and true masks become Labels layers (each galaxy's mask drawn as an outline
in the truth's style, :func:`mask_outlines`), and the catalogue rides along in
``layer.metadata["catalog"]`` (an astropy Table).

Layer metadata contract (read by the widgets):

* ``metadata["blendphot_kind"]``: ``"sample"`` (isolated galaxies),
  ``"blends"`` (a blend set) or ``"fits-image"`` (an arbitrary FITS image);
* ``metadata["sample"]``: the :class:`~napari_blendphot.sample.galaxy_sample.GalaxySample`
  behind a ``"sample"`` stamp stack;
* ``metadata["blend_set"]``: the blend set behind a ``"blends"`` stack (a
  :class:`~napari_blendphot.blend.dataset.BlendDataset` or an in-memory
  :class:`~napari_blendphot.blend.assemble.BlendBatch`); ``blend_set[i]`` is
  the :class:`~napari_blendphot.blend.assemble.Blend` shown on slice ``i``;
* ``metadata["catalog"]``, ``metadata["source"]``, ``metadata["provenance"]``.

Paths that are not ours (another extension, a folder without our files, a
FITS file without an image) give ``None`` so napari can try other readers; paths that are ours but broken raise
:class:`~napari_blendphot.errors.InputError` with the file and the problem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_blendphot.display import astro_contrast

#: File names the reader looks at (the patterns of napari.yaml; field mode reads all of them).
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz", ".fz")
#: Stamps used to choose the contrast of a stack (spread evenly through it).
CONTRAST_STAMPS = 64
#: Blend sets larger than this get lazily computed mask labels (dask) instead of an in-memory array.
LAZY_LABELS_ABOVE = 2000
#: Header keywords that make a single FITS file a galaxy cutout (napari_blendphot.sample.io_cutouts).
CUTOUT_KEYWORDS = ("GALTYPE", "RADIUS")


def get_reader(path):
    """Return :func:`read_path` if *path* is something this plugin reads, else None (napari asks others).

    What is ours (napari's reader guide: recognise, do not guess): our
    sample files, CANDELS folders, blend-dataset folders, folders of 128x128
    galaxy cutouts, single cutouts and FITS images with a 2-D image or a
    3-D cube (field mode).  A FITS file is recognised by its headers (read,
    not its pixels); one that cannot be opened at all is still ours, so that
    napari shows our message saying why.  Anything else, a FITS table
    without an image or a folder of other FITS files included, gives None.
    """
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        kind = detect_kind(path)
    except Exception:  # a path napari hands us that we cannot even look at is not ours
        return None
    return None if kind in (None, "fits-table") else read_path


def _is_fits_name(path: Path) -> bool:
    return path.name.lower().endswith(FITS_SUFFIXES)


def _primary_header(path):
    from astropy.io import fits

    return fits.getheader(path, 0)


def is_cutout_header(header) -> bool:
    """A single-galaxy cutout: the cutout keywords and a 128x128 image in the primary HDU."""
    from napari_blendphot.constants import STAMP_SIZE

    return (all(key in header for key in CUTOUT_KEYWORDS) and header.get("NAXIS") == 2
            and header.get("NAXIS1") == STAMP_SIZE and header.get("NAXIS2") == STAMP_SIZE)


def _is_our_cutout_folder(path: Path) -> bool:
    """A folder of galaxy cutouts: its first FITS file (by name) is a 128x128 cutout with our keywords."""
    from napari_blendphot.sample.io_cutouts import cutout_files

    files = cutout_files(path)
    if not files:
        return False
    try:
        return is_cutout_header(_primary_header(files[0]))
    except Exception:  # an unreadable first file: not recognisably ours
        return False


def _has_image(path: Path) -> bool:
    """Whether any HDU of the FITS file holds a 2-D image or a 3-D cube (headers only)."""
    from astropy.io import fits

    with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
        for hdu in hdul:
            if getattr(hdu, "is_image", False) and hdu.header.get("NAXIS", 0) in (2, 3):
                return True
    return False


def detect_kind(path, open_files: bool = True) -> str | None:
    """What *path* is: 'blends', 'candels', 'cutouts', 'native', 'cutout', 'fits-image', 'fits-table', 'fits' or None.

    With ``open_files=False`` a FITS file is only recognised by its name
    (kind ``'fits'``); with ``open_files=True`` its headers decide between a
    native sample, a single galaxy cutout, an image (field mode) and a file
    without any image (``'fits-table'``, not ours).  A FITS file that cannot be
    opened is ``'fits'`` (ours, and broken).
    """
    path = Path(path)
    if path.is_dir():
        if (path / "blends.npy").exists():
            return "blends"
        if (path / "candels_img.npy").exists():
            return "candels"
        return "cutouts" if _is_our_cutout_folder(path) else None
    if not _is_fits_name(path):
        return None
    if not open_files:
        return "fits"
    try:
        header = _primary_header(path)
    except Exception:
        return "fits"
    if header.get("BPFORMAT") == "blendphot-sample":
        return "native"
    if is_cutout_header(header):
        return "cutout"
    try:
        return "fits-image" if _has_image(path) else "fits-table"
    except Exception:
        return "fits"


def read_path(path) -> list:
    """Read *path* into napari layer data tuples.

    Raises
    ------
    InputError
        When the file or folder is of a kind this plugin reads but is broken.
    """
    from napari_blendphot.errors import InputError

    if isinstance(path, (list, tuple)):
        path = path[0]
    path = Path(path)
    try:
        return _read_kind(path)
    except InputError:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
        # Damaged files make astropy/numpy raise many types; napari should show the file and why.
        raise InputError(path, f"cannot be read: {' '.join(str(exc).split()) or type(exc).__name__}",
                         "is the file complete and of a kind listed in docs/plugin.md?") from None


def _read_kind(path: Path) -> list:
    from napari_blendphot.errors import InputError

    kind = detect_kind(path)
    name = _layer_base_name(path)
    if kind == "blends":
        from napari_blendphot.blend.dataset import BlendDataset

        return blend_dataset_layers(BlendDataset(path), name=name)
    if kind in ("native", "candels", "cutouts"):
        from napari_blendphot.sample.io import load_sample

        return sample_layers(load_sample(path), name=name)
    if kind == "cutout":
        return sample_layers(read_single_cutout(path), name=name)
    if kind == "fits-image":
        layers = field_image_layers(path)
        return layers if layers is not None else fits_image_layers(path)
    if kind == "fits":
        problem = "cannot be opened as FITS" if path.exists() else "file not found"
        raise InputError(path, problem, "is it a complete FITS file?")
    if kind == "fits-table":
        return fits_image_layers(path)  # raises: no image in any HDU
    raise InputError(path, "not a blendphot sample, CANDELS folder, blend dataset or FITS file")


def _layer_base_name(path: Path) -> str:
    name = path.name
    for suffix in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def stack_contrast(stack) -> dict:
    """:func:`astro_contrast` of a stack, computed on at most :data:`CONTRAST_STAMPS` stamps.

    Reading every stamp of a 30,000-blend memory-mapped dataset to choose two
    numbers would load gigabytes; evenly spaced stamps give the same limits.
    """
    stack = stack if hasattr(stack, "shape") else np.asarray(stack)
    if stack.ndim == 3 and stack.shape[0] > CONTRAST_STAMPS:
        rows = np.linspace(0, stack.shape[0] - 1, CONTRAST_STAMPS).round().astype(np.int64)
        return astro_contrast(np.asarray(stack[rows]))
    return astro_contrast(np.asarray(stack))


def sample_layers(sample, name: str = "sample") -> list:
    """Layer data for a GalaxySample: a stamp stack and its segmentation maps (hidden)."""
    meta = {"catalog": sample.catalog, "source": sample.source, "provenance": sample.provenance,
            "blendphot_kind": "sample", "sample": sample}
    image_kwargs = {"name": f"{name} stamps", "colormap": "gray", "metadata": meta, **stack_contrast(sample.images)}
    label_kwargs = {"name": f"{name} segmentation", "opacity": 0.4, "visible": False,
                    "metadata": {**meta, "blendphot_kind": "segmentation"}}
    return [(sample.images, image_kwargs, "image"), (sample.segmaps, label_kwargs, "labels")]


def mask_outlines(masks) -> np.ndarray:
    """(..., 2, H, W) [central, companion] masks -> (..., H, W) outline labels (solid).

    Each galaxy's mask is drawn as its own one-pixel inner outline: 1 =
    central, 2 = companion, 3 = where both outlines cross; everything else is
    0 (transparent) (:func:`napari_blendphot.display.styled_outlines`).
    Outlines are computed in the data, not with napari's ``Labels.contour``,
    because layer data tuples (readers, sample data) cannot set ``contour``
    in napari 0.9, because drawing both outlines in full shows each galaxy's
    extent through the overlap, and because a method's line style is drawn
    into them.
    """
    from napari_blendphot.display import styled_outlines

    return styled_outlines(masks, "solid")


def mask_label_kwargs(name: str, metadata: dict | None = None, style=None) -> dict:
    """Keyword arguments of a galaxy-outline Labels layer, in *style* (default: the truth's).

    The truth is white (central) and grey (companion) in every view; a
    method's outlines have its colour (:func:`napari_blendphot.display.method_style`).
    Use them with :func:`mask_outlines` data (``viewer.add_labels(mask_outlines(masks),
    **mask_label_kwargs(name))``) or through :func:`show_masks`.  Truth layers
    carry ``metadata["blendphot_truth"] = True`` (the Deblend Inspector then
    does not draw the same truth a second time).  (napari 0.9's ``Labels``
    takes no ``contour`` argument at construction.)
    """
    from napari_blendphot.display import TRUTH_STYLE, outline_layer_kwargs

    style = style or TRUTH_STYLE
    metadata = dict(metadata or {})
    if style is TRUTH_STYLE:
        metadata["blendphot_truth"] = True
    return outline_layer_kwargs(name, style, metadata)


def show_masks(viewer, name: str, masks, metadata: dict | None = None, style=None):
    """Add, or update in place, the Labels layer *name* showing *masks* (2, H, W) as outlines in *style*.

    Returns the layer.  Re-running with the same name replaces its data (no new layer).
    """
    from napari_blendphot.display import TRUTH_STYLE, styled_outlines

    style = style or TRUTH_STYLE
    outlines = styled_outlines(masks, style.line_style)
    if name in viewer.layers:
        layer = viewer.layers[name]
        layer.data = outlines
        if metadata is not None:
            layer.metadata.update(metadata)
        return layer
    return viewer.add_labels(outlines, **mask_label_kwargs(name, metadata, style))


def _lazy_labels(masks):
    """(N, 2, H, W) masks -> (N, H, W) outline labels computed per stamp on demand (dask)."""
    import dask.array as da

    lazy = da.from_array(masks, chunks=(1, *masks.shape[1:]))
    return lazy.map_blocks(mask_outlines, drop_axis=1, dtype=np.uint8)


def blend_dataset_layers(dataset, name: str = "blends") -> list:
    """Layer data for a blend set: blends stack and true masks (contours).

    *dataset* is a :class:`~napari_blendphot.blend.dataset.BlendDataset` (read
    memory-mapped: large sets are never loaded whole) or an in-memory
    :class:`~napari_blendphot.blend.assemble.BlendBatch`.
    """
    source = str(getattr(dataset, "path", getattr(dataset, "source", "in memory")))
    meta = {"catalog": dataset.catalog, "source": source, "blendphot_kind": "blends", "blend_set": dataset,
            "provenance": getattr(dataset, "provenance", {})}
    blends = dataset.blends
    masks = dataset.masks
    labels = _lazy_labels(masks) if len(masks) > LAZY_LABELS_ABOVE else mask_outlines(np.asarray(masks))
    image_kwargs = {"name": f"{name} blends", "colormap": "gray", "metadata": meta, **stack_contrast(blends)}
    truth_meta = {**meta, "blendphot_kind": "truth"}
    return [(blends, image_kwargs, "image"), (labels, mask_label_kwargs(f"{name} truth", truth_meta), "labels")]


def read_single_cutout(path):
    """One FITS galaxy cutout (keywords of :mod:`napari_blendphot.sample.io_cutouts`) as a 1-galaxy sample."""
    from napari_blendphot.sample import io_cutouts
    from napari_blendphot.sample.galaxy_sample import GalaxySample

    path = Path(path)
    image, segmap, header = io_cutouts._read_one(path)
    made = segmap is None
    if made:
        segmap = io_cutouts.detect_segmentation(image)
    from astropy.table import Table

    row = io_cutouts._catalog_row(header, path, 0, made)
    catalog = Table(rows=[row], names=("id", "mag", "flux", "radius", "z", "galtype", "file", "seg_made"))
    provenance = {"step": "read-cutout", "file": path.name}
    return GalaxySample(image[None], np.asarray(segmap, np.int32)[None], catalog, provenance=provenance,
                        source=str(path))


def fits_image_layers(path) -> list:
    """A plain FITS image (first HDU with 2-D or 3-D data), native byte order."""
    from astropy.io import fits

    from napari_blendphot.errors import InputError
    from napari_blendphot.tables import as_native

    try:
        with fits.open(path, memmap=False) as hdul:
            for hdu in hdul:
                data = getattr(hdu, "data", None)
                if data is not None and getattr(data, "ndim", 0) in (2, 3) and data.dtype.kind in "iuf":
                    data = as_native(np.asarray(data, dtype=np.float32))
                    header = hdu.header.tostring(sep="\n")
                    break
            else:
                raise InputError(path, "no 2-D or 3-D image in any HDU")
    except InputError:
        raise
    except Exception as exc:
        raise InputError(path, f"cannot read as FITS: {' '.join(str(exc).split())}") from None
    finite = data[np.isfinite(data)]
    contrast = astro_contrast(finite) if finite.size else {}
    kwargs = {"name": _layer_base_name(Path(path)), "colormap": "gray",
              "metadata": {"fits_header": header, "source": str(path), "blendphot_kind": "fits-image"}, **contrast}
    return [(data, kwargs, "image")]


# --------------------------------------------------------------------------- field images (field mode)
#: Field images larger than this (pixels per plane) are shown as a lazy multiscale pyramid.
FIELD_PYRAMID_ABOVE = 4096 * 4096


def field_image_layers(path):
    """A FITS field image (2-D, or a 3-D cube) as an image layer, or None when the file is not one.

    The layer keeps the pixel values (the status bar shows them; with the
    Field widget or after this reader ran in napari, the cursor's RA/Dec
    too), with the astronomical contrast of :func:`napari_blendphot.display.astro_contrast`
    computed on a sample of blocks (never the whole of a big image).  Images
    above :data:`FIELD_PYRAMID_ABOVE` pixels are a lazy pyramid (dask,
    memory-mapped), so opening is immediate and memory stays bounded.
    ``metadata``: ``blendphot_kind = "field"``, ``source``, ``field`` (HDU,
    plane, shape, WCS header, calibration: :meth:`FieldImage.describe`),
    ``fits_header``.
    """
    import warnings

    from napari_blendphot.errors import InputError
    from napari_blendphot.field.image import FieldWarning, open_field

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FieldWarning)
            image = open_field(path, warn=False)
    except InputError as exc:
        if "no 2-D image or 3-D cube" in exc.problem:
            return None
        raise
    try:
        description = image.describe()
        header = image.header.tostring(sep="\n")
        data, contrast = _field_pixels(image)
    finally:
        image.close()
    metadata = {"blendphot_kind": "field", "source": str(path), "field": description, "fits_header": header,
                "hdu": image.hdu_index, "plane": image.plane}
    kwargs = {"name": _layer_base_name(Path(path)), "colormap": "gray", "metadata": metadata, **contrast}
    if isinstance(data, list):
        kwargs["multiscale"] = True
    _attach_sky_status()
    return [(data, kwargs, "image")]


def _field_pixels(image):
    """(data, contrast kwargs) of a field image: an array, or a lazy pyramid for big planes."""
    from astropy.io import fits

    ny, nx = image.shape
    blocks = []
    step_y, step_x = max(ny // 4, 1), max(nx // 4, 1)
    for y in range(step_y // 2, ny, step_y):
        for x in range(step_x // 2, nx, step_x):
            blocks.append(image.read_region(max(y - 128, 0), min(y + 128, ny), max(x - 128, 0), min(x + 128, nx)))
    sample = np.concatenate([block.ravel() for block in blocks])
    sample = sample[np.isfinite(sample)]
    contrast = astro_contrast(sample) if sample.size else {}
    with fits.open(image.path, memmap=True) as hdul:
        raw = hdul[image.hdu_index]
        lazy_ok = not image.path.name.lower().endswith((".gz", ".fz")) and "BSCALE" not in raw.header \
            and "BZERO" not in raw.header
    if ny * nx <= FIELD_PYRAMID_ABOVE or not lazy_ok:
        # The values as stored (zero-filled borders stay zeros): the status bar shows what is in the file.
        with fits.open(image.path, memmap=False) as hdul:
            cube = np.asarray(hdul[image.hdu_index].data, dtype=np.float32).reshape((-1, ny, nx))
        from napari_blendphot.tables import as_native

        return as_native(cube[0] if len(cube) == 1 else cube), contrast
    import dask.array as da

    memmap = fits.open(image.path, memmap=True)[image.hdu_index].data  # kept open by dask's reads
    plane = memmap.reshape((-1, ny, nx))[image.plane or 0]
    level = da.from_array(plane, chunks=(1024, 1024)).astype(np.float32)
    pyramid = [level]
    while max(pyramid[-1].shape) > 2048:
        pyramid.append(da.coarsen(np.mean, pyramid[-1], {0: 2, 1: 2}, trim_excess=True))
    return pyramid, contrast


def _attach_sky_status() -> None:
    """Show the cursor's RA/Dec in napari's status bar when this runs inside napari (no-op otherwise)."""
    import sys

    if "napari" not in sys.modules:
        return
    try:
        import napari

        viewer = napari.current_viewer()
        if viewer is None:
            return
        from napari_blendphot.widgets.field_widget import install_sky_status

        install_sky_status(viewer)
    except Exception:  # the status line is a convenience: never fail a read for it
        return
