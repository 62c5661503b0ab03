"""The Qt-free app layer: a viewer's shared engine, and widget choices that follow method capabilities."""

from __future__ import annotations

import sys

import pytest

from napari_blendphot.app.inspector import InspectorModel
from napari_blendphot.app.session import CurrentBlend
from napari_blendphot.deblend.registry import register_method, unregister_method
from napari_blendphot.errors import InputError


@pytest.fixture
def third_party_network():
    """A method that declares itself a Keras network without a shipped model (a stand-in underneath)."""
    register_method("thirdnet", "napari_blendphot.testing.stand_ins:SlowDeblender", label="third-party network",
                    uses_keras=True, accepts_weights=True, precisions=("float32", "bfloat16", "auto"),
                    wants_gpu=True)
    yield "thirdnet"
    unregister_method("thirdnet")


def test_one_engine_per_viewer_stopped_by_the_last_user():
    session = CurrentBlend()
    first, second = session.engine("inspector"), session.engine("failure browser")
    assert first is second
    session.release_engine("inspector")
    assert not first._closed  # still used by the failure browser
    session.release_engine("failure browser")
    assert first._closed
    assert session.engine("inspector") is not first  # a new one on demand


def test_a_third_party_keras_method_gets_a_weights_file_and_a_precision(third_party_network, tmp_path):
    model = InspectorModel()
    try:
        assert third_party_network in model.available
        assert model.takes_weights(third_party_network) and not model.takes_weights("sep")
        assert third_party_network in model.precision_methods() and "sep" not in model.precision_methods()
        # No shipped model: it starts unticked and says what to do.
        assert third_party_network not in model.selected
        assert "choose a .keras file" in model.check_method(third_party_network)
        assert model.weights_description(third_party_network) == "no shipped model"
        weights = tmp_path / "mine.keras"
        weights.write_bytes(b"a stand-in for a saved model")
        model.set_weights(third_party_network, str(weights))
        model.set_precision("bfloat16")
        assert third_party_network in model.selected and model.check_method(third_party_network) is None
        assert model._options(third_party_network) == {"weights": str(weights), "precision": "bfloat16"}
        assert model._options("sep") == {}  # SEP takes neither
        with pytest.raises(InputError, match="not found"):
            model.set_weights(third_party_network, str(tmp_path / "missing.keras"))
    finally:
        model.close()


def test_the_ensemble_is_described_and_checked_with_its_own_shipped_model(monkeypatch):
    """Bug: the Inspector named and verified blend2flux's default model for 'ensemble', whose network it shares."""
    from napari_blendphot.deblend.registry import shipped_model_of
    from napari_blendphot.models import manifests

    assert shipped_model_of("ensemble").name == "blend2flux_ensemble_v5"
    assert shipped_model_of("blend2flux").name == "blend2flux_v8" and shipped_model_of("sep") is None
    model = InspectorModel()
    try:
        assert model.weights_description("ensemble") == "shipped: blend2flux_ensemble_v5"
        assert model.weights_description("blend2flux") == "shipped: blend2flux_v8"
        assert model.check_method("ensemble") is None
        verified = []
        real_verify = manifests.verify
        monkeypatch.setattr(manifests, "verify", lambda m: verified.append(m.name) or real_verify(m))
        model._checked_weights.clear()
        assert model.check_method("ensemble") is None and verified == ["blend2flux_ensemble_v5"]
    finally:
        model.close()


def test_the_app_layer_imports_no_qt_and_no_napari():
    import subprocess

    code = ("import sys\n"
            "import napari_blendphot.app.builder, napari_blendphot.app.inspector, napari_blendphot.app.failures, "
            "napari_blendphot.app.session\n"
            "bad = [m for m in ('qtpy', 'PyQt5', 'PyQt6', 'PySide6', 'napari', 'keras', 'tensorflow') "
            "if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
