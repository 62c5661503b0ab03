"""What the widgets of one viewer share: the blend under inspection and one inference engine.

A plain model (no Qt): the Blend Builder, the dataset slider and the Failure
Browser *set* the current blend; the Deblend Inspector *listens* and re-runs
its methods.  The Inspector and the Failure Browser run their methods in the
viewer's one :class:`~napari_blendphot.deblend.engine.InferenceEngine`, so a
viewer never has two Keras workers; the engine stops when the last widget
using it lets it go.  One session per viewer, created on first use.
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
    """A viewer's session: the current :class:`BlendState` (emits ``changed(state)``) and its engine."""

    changed = Signal(object)

    def __init__(self):
        self.state: BlendState | None = None
        self._engine = None
        self._engine_users: set = set()

    def set(self, state: BlendState) -> None:
        self.state = state
        self.changed.emit(state)

    def engine(self, user):
        """The viewer's inference engine (made on first use; its worker starts with the first request).

        *user* (a hashable key, e.g. ``id(widget)``) holds it until :meth:`release_engine`.
        """
        if self._engine is None:
            from napari_blendphot.deblend.engine import InferenceEngine

            self._engine = InferenceEngine()
        self._engine_users.add(user)
        return self._engine

    def release_engine(self, user) -> None:
        """*user* no longer needs the engine; the last one to let go stops its worker."""
        self._engine_users.discard(user)
        if not self._engine_users and self._engine is not None:
            engine, self._engine = self._engine, None
            engine.close()


_SESSIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def current_blend_for(viewer) -> CurrentBlend:
    """The shared session (:class:`CurrentBlend`) of *viewer* (created on first call)."""
    # napari hands each plugin widget its own PublicOnlyProxy of the viewer: key
    # the session by the real viewer so every widget of a viewer shares it.
    viewer = getattr(viewer, "__wrapped__", viewer)
    try:
        return _SESSIONS[viewer]
    except KeyError:
        session = _SESSIONS[viewer] = CurrentBlend()
        return session
