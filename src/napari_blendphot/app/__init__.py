"""The state and logic of the napari widgets, as plain Python (no Qt, no napari).

Each widget of :mod:`napari_blendphot.widgets` is a Qt view over one object
of this package, which a test or a notebook can drive without a viewer:

builder
    :class:`~napari_blendphot.app.builder.BlendBuilderModel`: a pair of galaxies,
    the companion's shift and magnitude change, the blend rebuilt on every
    change, a set of built blends written as a dataset.
inspector
    :class:`~napari_blendphot.app.inspector.InspectorModel`: the methods, their
    weights and precision, one blend run in the viewer's engine (stale
    requests dropped, failures isolated per method), a blend set run through
    :func:`napari_blendphot.predict`.
failures
    :class:`~napari_blendphot.app.failures.FailureModel`: a results table as
    a long, sortable, filterable table of per-galaxy errors; masks re-run for
    the shown blend.
session
    What the widgets of one viewer share: the blend under inspection and one
    inference engine.

The Curation widget's state is :mod:`napari_blendphot.curation` (decisions,
sidecar, pages, export), Qt-free as well.
"""
