"""The current-blend session is shared by all widgets of one viewer."""

import gc

import numpy as np

from napari_blendphot.app.session import BlendState, current_blend_for


class _Viewer:
    pass


class _Proxy:
    """Stands in for napari's PublicOnlyProxy (exposes the wrapped object)."""

    def __init__(self, wrapped):
        self.__wrapped__ = wrapped


def test_proxies_of_one_viewer_share_the_session():
    viewer = _Viewer()
    first, second = _Proxy(viewer), _Proxy(viewer)
    session = current_blend_for(first)
    del first
    gc.collect()
    # Regression: keyed by the proxy, the session died with the first widget's proxy.
    assert current_blend_for(second) is session
    assert current_blend_for(viewer) is session


def test_set_emits_the_state():
    session = current_blend_for(_Viewer())
    seen = []
    session.changed.connect(seen.append)
    state = BlendState(image=np.zeros((128, 128), np.float32), name="blend 1")
    session.set(state)
    assert seen == [state] and session.state is state
