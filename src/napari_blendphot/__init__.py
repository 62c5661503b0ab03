"""napari-blendphot: photometry of blended galaxies (Boucaud et al. 2020).

The package is split along the pipeline it implements::

    sample -> clean -> blend -> deblend (networks, SEP) -> match -> metrics -> report

``import napari_blendphot`` is deliberately light: it imports neither napari,
Qt, TensorFlow, Keras nor GalSim.  Those load only inside the modules that
need them (the widgets, the inference worker process, the mock generator).
"""

from importlib import import_module as _import_module

__version__ = "0.1.0"

# Public names, resolved on first access so that the top-level import stays cheap.
_LAZY = {
    "GalaxySample": "napari_blendphot.sample.galaxy_sample",
    "BlendphotError": "napari_blendphot.errors",
    "InputError": "napari_blendphot.errors",
    "ZERO_POINT": "napari_blendphot.constants",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(_import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_blendphot' has no attribute {name!r}")
