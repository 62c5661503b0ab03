"""Provenance records attached to every output (versions, seed, inputs).

Records contain no timestamps or host names on purpose: the same seed and the
same inputs must give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata

_TRACKED_PACKAGES = ("numpy", "scipy", "astropy", "sep", "galsim", "keras")


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Versions of this package and of the libraries that shape its numbers."""
    from napari_blendphot import __version__

    versions = {"napari-blendphot": __version__, "python": platform.python_version()}
    for name in (*_TRACKED_PACKAGES, *extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def sha256_file(path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_array(array) -> str:
    """SHA-256 of an array's bytes (C order, with dtype and shape mixed in)."""
    import numpy as np

    array = np.ascontiguousarray(array)
    digest = hashlib.sha256()
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def make_provenance(step: str, seed=None, inputs: dict | None = None, **parameters) -> dict:
    """A provenance record for one pipeline step.

    Parameters
    ----------
    step : str
        Name of the step that produced the output (``"make-sample"``, ``"blend"``...).
    seed : int, optional
        The seed of the step's random generator.
    inputs : dict, optional
        ``{name: path}`` of input files (hashed) or ``{name: str}`` of digests.
    parameters
        Any other settings that determine the output (JSON-serialisable).
    """
    hashed = {}
    for name, value in (inputs or {}).items():
        if isinstance(value, (str, os.PathLike)) and os.path.isfile(value):
            hashed[name] = {"path": os.path.basename(os.fspath(value)), "sha256": sha256_file(value)}
        else:
            hashed[name] = value
    return {
        "step": step,
        "seed": seed,
        "inputs": hashed,
        "parameters": parameters,
        "versions": package_versions(),
    }


def dumps(record: dict) -> str:
    """Canonical one-line JSON (sorted keys) so identical records give identical bytes."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _jsonable(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
