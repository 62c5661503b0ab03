"""The CANDELS-like mock sample shipped with the package (the default sample).

It lives in the top-level ``sample_data/`` folder of the repository, installed
as the subpackage ``napari_blendphot.sample_data``, so it is found the same way
from a checkout and from a wheel.
"""

from __future__ import annotations

from pathlib import Path

from napari_blendphot.errors import InputError

#: File name of the embedded sample inside ``napari_blendphot.sample_data``.
EMBEDDED_SAMPLE_FILE = "candels_mock_sample.fits"
_PACKAGE = "napari_blendphot.sample_data"


def embedded_sample_path(must_exist: bool = True) -> Path:
    """Path of the embedded mock sample file.

    Raises :class:`InputError` if the file is missing and *must_exist* is true
    (a checkout where the sample has not been generated yet).
    """
    from importlib import resources

    try:
        resource = resources.files(_PACKAGE) / EMBEDDED_SAMPLE_FILE
    except ModuleNotFoundError:
        raise InputError("embedded sample", f"package {_PACKAGE} is not installed",
                         "reinstall napari-blendphot") from None
    # Installed packages are plain folders, so the resource is a real path.
    path = Path(str(resource))
    if must_exist and not path.is_file():
        raise InputError(path, "the embedded mock sample is missing",
                         "generate it with 'blendphot make-sample' or pass a sample file")
    return path


def load_embedded_sample():
    """Read the embedded CANDELS-like mock sample as a :class:`GalaxySample`."""
    from napari_blendphot.sample.io_native import read_native

    return read_native(embedded_sample_path())
