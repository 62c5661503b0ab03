"""Keras 3 networks of the paper (loaded lazily: importing this package does not import Keras).

The vocabulary: a *network* is one of the paper's architectures
(:data:`ARCHITECTURES`); a *model* is a Keras model of one; its *weights* are
a ``.keras`` file, shipped with a manifest (:mod:`.manifests`) or the user's
own.  A deblending *method* (:mod:`napari_blendphot.deblend.registry`) runs a
network with some weights.

Submodules (see docs/models.md):

* ``layers`` -- scaling layers that keep the data's units inside the models (imports Keras);
* ``networks`` -- ``build_blend2flux``, ``build_unet``, ``build_blend2mask2flux`` (imports Keras);
* ``losses`` -- MAPE on fluxes, BCE on masks, ``compile_model`` (imports Keras);
* ``io`` -- ``save_model`` / ``load_model`` in safe mode with clear errors (Keras only when loading);
* ``manifests`` -- shipped weights, their manifests and sha256 checks (no Keras).
"""

#: The paper's network architectures (the builders of :mod:`.networks`, the roles of :mod:`.io`,
#: the ``method`` field of a manifest, training's ``model.kind``).
ARCHITECTURES = ("blend2flux", "unet", "blend2mask2flux")

#: Name prefix of a model file that holds only the members an ensemble stores itself, the others being
#: shipped models it shares (``architecture.shared_members`` of its manifest): such a file alone is not the
#: ensemble, so :func:`.io.load_model` refuses it and :func:`.manifests.load_manifest_model` completes it.
STORED_MEMBERS_PREFIX = "stored_members_of_"
