"""napari reader: blendphot samples, CANDELS folders, blend datasets, FITS cutouts.

Every path becomes layer data tuples built by :func:`sample_layers` /
:func:`blend_dataset_layers`, which the widgets and sample-data entries reuse.
Stamps become one image layer (a stack with a slider), segmentation maps and
true masks become Labels layers (masks drawn as contours), and the catalogue
rides along in ``layer.metadata["catalog"]`` (an astropy Table) and, for masks,
in ``layer.features``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_blendphot.display import (
    CENTRAL_LABEL,
    COMPANION_LABEL,
    GALAXY_COLORS,
    OVERLAP_LABEL,
    astro_contrast,
    masks_to_labels,
)


def get_reader(path):
    """Return a reader function for *path*, or None if we do not handle it."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    kind = detect_kind(path)
    return None if kind is None else read_path


def detect_kind(path) -> str | None:
    """'blends', 'candels', 'cutouts', 'native', 'fits-image' or None."""
    path = Path(path)
    if path.is_dir():
        if (path / "blends.npy").exists():
            return "blends"
        if (path / "candels_img.npy").exists():
            return "candels"
        if any(path.glob("*.fits")) or any(path.glob("*.fit")):
            return "cutouts"
        return None
    name = path.name.lower()
    if not (name.endswith(".fits") or name.endswith(".fit") or name.endswith(".fits.gz")):
        return None
    try:
        from astropy.io import fits

        with fits.open(path) as hdul:
            if hdul[0].header.get("BPFORMAT") == "blendphot-sample":
                return "native"
        return "fits-image"
    except Exception:
        return None


def read_path(path):
    """Read *path* into napari layer data tuples."""
    if isinstance(path, list):
        path = path[0]
    kind = detect_kind(path)
    if kind == "blends":
        from napari_blendphot.blend.dataset import BlendDataset

        return blend_dataset_layers(BlendDataset(path), name=Path(path).name)
    if kind == "fits-image":
        return fits_image_layers(path)
    from napari_blendphot.sample.io import load_sample

    return sample_layers(load_sample(path), name=Path(path).name.split(".")[0])


def sample_layers(sample, name: str = "sample") -> list:
    """Layer data for a GalaxySample: a stamp stack and its segmentation maps."""
    meta = {"catalog": sample.catalog, "source": sample.source, "provenance": sample.provenance,
            "blendphot_kind": "sample"}
    image_kwargs = {"name": f"{name} stamps", "colormap": "gray", "metadata": meta, **astro_contrast(sample.images)}
    label_kwargs = {"name": f"{name} segmentation", "opacity": 0.4, "metadata": meta, "visible": False}
    return [(sample.images, image_kwargs, "image"), (sample.segmaps, label_kwargs, "labels")]


def mask_label_kwargs(name: str, metadata: dict | None = None, contour: int = 1) -> dict:
    """Keyword arguments of a galaxy-mask Labels layer (same colours for every method)."""
    return {
        "name": name,
        "contour": contour,
        "opacity": 1.0,
        "colormap": {None: (0, 0, 0, 0), 0: (0, 0, 0, 0), **GALAXY_COLORS},
        "features": {
            "index": [0, CENTRAL_LABEL, COMPANION_LABEL, OVERLAP_LABEL],
            "galaxy": ["background", "central", "companion", "both"],
        },
        "metadata": metadata or {},
    }


def blend_dataset_layers(dataset, name: str = "blends") -> list:
    """Layer data for a blend dataset: blends stack and true masks (contours)."""
    meta = {"catalog": dataset.catalog, "source": str(dataset.path), "blendphot_kind": "blends"}
    blends = np.asarray(dataset.blends)
    labels = masks_to_labels(np.asarray(dataset.masks))
    image_kwargs = {"name": f"{name} blends", "colormap": "gray", "metadata": meta, **astro_contrast(blends)}
    return [(blends, image_kwargs, "image"), (labels, mask_label_kwargs(f"{name} truth", meta), "labels")]


def fits_image_layers(path) -> list:
    """A plain FITS image (first HDU with 2-D or 3-D data), native byte order."""
    from astropy.io import fits

    from napari_blendphot.errors import InputError
    from napari_blendphot.tables import as_native

    with fits.open(path) as hdul:
        for hdu in hdul:
            if hdu.data is not None and getattr(hdu.data, "ndim", 0) in (2, 3):
                data = as_native(np.asarray(hdu.data, dtype=np.float32))
                header = hdu.header.tostring(sep="\n")
                break
        else:
            raise InputError(path, "no 2-D or 3-D image in any HDU")
    kwargs = {"name": Path(path).name.split(".")[0], "colormap": "gray",
              "metadata": {"fits_header": header, "source": str(path)}, **astro_contrast(data)}
    return [(data, kwargs, "image")]
