"""Manual curation of the isolated sample (decisions sidecar, model, export).

No Qt here: the napari widget (:mod:`napari_blendphot.widgets.curation`) is a
view over :class:`~napari_blendphot.curation.model.CurationModel`.
"""

from napari_blendphot.curation.export import curated_sample, export_accepted
from napari_blendphot.curation.model import CurationFilter, CurationModel
from napari_blendphot.curation.sidecar import (
    DECISIONS,
    REASONS,
    CorruptSidecarError,
    Decision,
    DecisionStore,
    default_sidecar_path,
)

__all__ = [
    "DECISIONS",
    "REASONS",
    "CorruptSidecarError",
    "CurationFilter",
    "CurationModel",
    "Decision",
    "DecisionStore",
    "curated_sample",
    "default_sidecar_path",
    "export_accepted",
]
