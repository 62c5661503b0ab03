"""One entry point that reads any sample the package understands."""

from __future__ import annotations

from pathlib import Path

from napari_blendphot.errors import InputError
from napari_blendphot.sample.galaxy_sample import GalaxySample

#: Names that stand for the embedded CANDELS-like mock sample.
EMBEDDED_NAMES = ("embedded", "mock")


def load_sample(path) -> GalaxySample:
    """Read a sample, choosing the reader from what *path* is.

    Parameters
    ----------
    path : str or path-like
        * ``"embedded"`` or ``"mock"``: the mock sample shipped with the package;
        * a native sample FITS file (:func:`~napari_blendphot.sample.io_native.write_native`);
        * a folder with ``candels_img.npy``: the Zenodo CANDELS layout;
        * a folder of ``*.fits`` single-galaxy cutouts.

    Raises
    ------
    InputError
        When *path* is none of these, or the chosen reader finds a problem.
    """
    from napari_blendphot.sample.io_candels import is_candels_folder, read_candels
    from napari_blendphot.sample.io_cutouts import is_cutout_folder, read_cutouts
    from napari_blendphot.sample.io_native import read_native

    if isinstance(path, str) and path.strip().lower() in EMBEDDED_NAMES and not Path(path).exists():
        from napari_blendphot.sample.embedded import load_embedded_sample

        return load_embedded_sample()
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(path, "not found",
                         "give a sample .fits file, a CANDELS folder, a folder of cutouts, or 'embedded'")
    if path.is_file():
        return read_native(path)
    if not path.is_dir():
        raise InputError(path, "is neither a file nor a folder (a pipe, socket or device)",
                         "give a sample .fits file, a CANDELS folder, a folder of cutouts, or 'embedded'")
    if is_candels_folder(path):
        return read_candels(path)
    if is_cutout_folder(path):
        return read_cutouts(path)
    raise InputError(path, "folder holds neither the CANDELS files (candels_img.npy) nor FITS cutouts",
                     "see 'blendphot fetch-candels' or pass a sample .fits file")
