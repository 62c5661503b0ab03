"""Keras 3 networks of the paper (loaded lazily: importing this package does not import Keras).

Submodules (see docs/models.md):

* ``layers`` -- scaling layers that keep the data's units inside the models (imports Keras);
* ``networks`` -- ``build_blend2flux``, ``build_unet``, ``build_blend2mask2flux`` (imports Keras);
* ``losses`` -- MAPE on fluxes, BCE on masks, ``compile_model`` (imports Keras);
* ``io`` -- ``save_model`` / ``load_model`` in safe mode with clear errors (Keras only when loading);
* ``registry`` -- shipped weights, manifests and sha256 checks (no Keras).
"""
