"""napari-blendphot: photometry of blended galaxies (Boucaud et al. 2020).

The package is split along the pipeline it implements::

    sample -> clean -> blend -> deblend (networks, SEP) -> match -> metrics -> report

Two calls do the work of the pipeline's second half::

    from napari_blendphot import predict, evaluate

    table = predict("blends/", ["sep", "blend2flux"], split="test")   # the results table
    report = evaluate(table, "report/")                              # statistics, figures, report

``import napari_blendphot`` is deliberately light: it imports neither napari,
Qt, TensorFlow, Keras nor GalSim.  Those load only inside the modules that
need them (the widgets, the inference worker process, the mock generator).
"""

from importlib import import_module as _import_module

__version__ = "0.1.0"

# Public names, resolved on first access so that the top-level import stays cheap.
_LAZY = {
    "predict": "napari_blendphot.prediction",
    "evaluate": "napari_blendphot.report.evaluate",
    "BlendSet": "napari_blendphot.blend.blend_set",
    "BlendDataset": "napari_blendphot.blend.dataset",
    "InferenceEngine": "napari_blendphot.deblend.engine",
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
