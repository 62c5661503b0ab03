"""The blend currently under inspection, shared by the widgets of one viewer.

A plain model (no Qt): the Blend Builder, the dataset slider and the Failure
Browser *set* the current blend; the Deblend Inspector *listens* and re-runs
its methods.  One instance per viewer, created on first use.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np
from psygnal import Signal


@dataclass
class BlendState:
    """One blend and what is known about it.

    image : (128, 128) float32 blend.
    name : short name used in layer names (e.g. ``"blend 12"``).
    truth : the :class:`napari_blendphot.blend.assemble.Blend` it was built from,
        or None for an arbitrary image (then no dmag or IoU can be computed).
    origin : what produced it ("builder", "dataset", "layer", "failure-browser").
    interactive : True while the user drags the companion (the inspector debounces).
    """

    image: np.ndarray
    name: str = "blend"
    truth: object | None = None
    origin: str = "layer"
    interactive: bool = False
    extra: dict = field(default_factory=dict)


class CurrentBlend:
    """Holds the current :class:`BlendState` and emits ``changed(state)``."""

    changed = Signal(object)

    def __init__(self):
        self.state: BlendState | None = None

    def set(self, state: BlendState) -> None:
        self.state = state
        self.changed.emit(state)


_SESSIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def current_blend_for(viewer) -> CurrentBlend:
    """The shared :class:`CurrentBlend` of *viewer* (created on first call)."""
    # napari hands each plugin widget its own PublicOnlyProxy of the viewer: key
    # the session by the real viewer so every widget of a viewer shares it.
    viewer = getattr(viewer, "__wrapped__", viewer)
    try:
        return _SESSIONS[viewer]
    except KeyError:
        session = _SESSIONS[viewer] = CurrentBlend()
        return session
