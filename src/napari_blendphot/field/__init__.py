"""Field mode: measure the (blended) galaxies of a real image (no Qt, no napari, no Keras here).

The stage of the pipeline that starts from a FITS image instead of a blend
dataset::

    image (FITS, WCS, calibration) -> detect (SEP) or a catalogue -> blend groups
        -> 128x128 stamps in the training domain -> methods (one MethodRunner) -> catalogue

Modules: :mod:`~napari_blendphot.field.image` (reading by region, WCS, plane),
:mod:`~napari_blendphot.field.calibration` (zero point, pixel scale, training domain),
:mod:`~napari_blendphot.field.detect` (SEP detection, grouping),
:mod:`~napari_blendphot.field.catalog_input` (user positions),
:mod:`~napari_blendphot.field.stamps` and :mod:`~napari_blendphot.field.resample` (stamps),
:mod:`~napari_blendphot.field.run` (the one place methods are run),
:mod:`~napari_blendphot.field.measure` (the pipeline), :mod:`~napari_blendphot.field.output`
(catalogue files), :mod:`~napari_blendphot.field.flags`, :mod:`~napari_blendphot.field.model`
(the Field widget's Qt-free model) and :mod:`~napari_blendphot.field.simulate` (synthetic fields
with truth).  The user guide is ``docs/field.md``.

>>> from napari_blendphot.field import measure_field, write_catalog   # doctest: +SKIP
>>> catalog = measure_field("image.fits", methods=["sep", "blend2flux"])  # doctest: +SKIP
>>> write_catalog(catalog, "image_catalog")                            # doctest: +SKIP
"""

from __future__ import annotations

__all__ = ["open_field", "measure_field", "write_catalog", "read_catalog", "FieldWarning"]


def __getattr__(name):
    if name in ("open_field", "FieldWarning"):
        from napari_blendphot.field import image

        return getattr(image, name)
    if name == "measure_field":
        from napari_blendphot.field.measure import measure_field

        return measure_field
    if name in ("write_catalog", "read_catalog"):
        from napari_blendphot.field import output

        return getattr(output, name)
    raise AttributeError(name)
