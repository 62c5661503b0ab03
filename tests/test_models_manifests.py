"""The weights registry: manifests, sha256 verification, name/path resolution."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from napari_blendphot.errors import InputError, OutputExistsError
from napari_blendphot.models import manifests as registry
from napari_blendphot.models.manifests import (
    Manifest,
    default_model,
    list_shipped_models,
    resolve_weights,
    verify,
    write_manifest,
)

TRAINED_ON = {"description": "toy blends", "sample_sha256": "ab" * 32, "seed": 3}


def _fake_model(folder, name, content=b"PK\x03\x04 not really a model"):
    path = folder / f"{name}.keras"
    path.write_bytes(content)
    return path


@pytest.fixture()
def weights_dir(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    write_manifest(_fake_model(folder, "b2f_small"), "blend2flux", {"filters": 4, "dense_widths": (8,)},
                   TRAINED_ON, {"flux_mape_percent": 12.5}, backend="jax")
    write_manifest(_fake_model(folder, "b2f_big"), "blend2flux", {"filters": 64}, TRAINED_ON,
                   {"flux_mape_percent": 9.1}, backend="jax", default=True)
    write_manifest(_fake_model(folder, "unet_a"), "unet", {"depth": 2, "filters": 4}, TRAINED_ON,
                   {"iou": 0.8}, backend="tensorflow")
    return folder


def test_manifest_contents(weights_dir):
    record = json.loads((weights_dir / "b2f_small.json").read_text())
    assert record["format"] == "blendphot-model-manifest" and record["format_version"] == 1
    assert record["architecture"] == {"filters": 4, "dense_widths": [8]}
    assert record["file"] == "b2f_small.keras"
    assert record["trained_on"] == TRAINED_ON
    assert record["backend"] == "jax"
    assert len(record["sha256"]) == 64
    assert record["keras_version"]


def test_manifest_json_is_canonical(weights_dir):
    manifest = Manifest.read(weights_dir / "b2f_small.json")
    assert manifest.to_json() == (weights_dir / "b2f_small.json").read_text()


def test_list_and_default(weights_dir):
    names = [manifest.name for manifest in list_shipped_models(weights_dir)]
    assert names == ["b2f_big", "b2f_small", "unet_a"]
    assert default_model("blend2flux", weights_dir).name == "b2f_big"  # flagged default
    assert default_model("unet", weights_dir).name == "unet_a"  # the only one
    assert default_model("blend2mask2flux", weights_dir) is None
    with pytest.raises(ValueError):
        default_model("sextractor", weights_dir)


def test_shipped_folder_lists_valid_manifests():
    for manifest in list_shipped_models():
        assert manifest.method in registry.METHODS
        assert manifest.path.parent == registry.WEIGHTS_DIR
        verify(manifest)  # every shipped .keras matches its recorded sha256


def test_resolve_by_name_manifest_and_path(weights_dir, tmp_path):
    path, manifest = resolve_weights("b2f_small", weights_dir=weights_dir)
    assert path == weights_dir / "b2f_small.keras" and manifest.name == "b2f_small"
    path, manifest = resolve_weights(weights_dir / "unet_a.json", expect="unet", weights_dir=weights_dir)
    assert path == weights_dir / "unet_a.keras"
    # A .keras path uses the manifest beside it when there is one...
    path, manifest = resolve_weights(weights_dir / "b2f_big.keras", weights_dir=weights_dir)
    assert manifest is not None and manifest.name == "b2f_big"
    # ...and works without one (the user's own file).
    own = _fake_model(tmp_path, "mine")
    assert resolve_weights(own, weights_dir=weights_dir) == (own, None)


def test_resolve_errors(weights_dir, tmp_path):
    with pytest.raises(InputError, match="shipped models: b2f_big, b2f_small, unet_a"):
        resolve_weights("nonexistent", weights_dir=weights_dir)
    with pytest.raises(InputError, match="not found"):
        resolve_weights(tmp_path / "missing.keras", weights_dir=weights_dir)
    with pytest.raises(InputError, match="holds a unet network, not blend2flux"):
        resolve_weights("unet_a", expect="blend2flux", weights_dir=weights_dir)


def test_verify_detects_a_corrupted_copy(weights_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(weights_dir, copy)
    manifest = Manifest.read(copy / "b2f_small.json")
    assert verify(manifest) == copy / "b2f_small.keras"
    data = bytearray((copy / "b2f_small.keras").read_bytes())
    data[5] ^= 0xFF
    (copy / "b2f_small.keras").write_bytes(bytes(data))
    with pytest.raises(InputError, match="does not match the manifest") as info:
        verify(manifest)
    assert "b2f_small.keras" in str(info.value)
    with pytest.raises(InputError, match="does not match"):
        resolve_weights("b2f_small", weights_dir=copy)
    # The original is untouched and still verifies.
    verify(Manifest.read(weights_dir / "b2f_small.json"))


def test_verify_reports_a_missing_model_file(weights_dir):
    (weights_dir / "unet_a.keras").unlink()
    with pytest.raises(InputError, match="is missing") as info:
        verify(Manifest.read(weights_dir / "unet_a.json"))
    assert "unet_a.keras" in str(info.value)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda record: record.pop("sha256"), "lacks sha256"),
        (lambda record: record.update(method="resnet"), "unknown method"),
        (lambda record: record.update(format_version=99), "format_version"),
        (lambda record: record.update(file="../elsewhere.keras"), "bare file name"),
        (lambda record: record.update(format="something"), "not a napari-blendphot model manifest"),
    ],
)
def test_malformed_manifests_name_the_file(weights_dir, edit, message):
    path = weights_dir / "unet_a.json"
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    with pytest.raises(InputError, match=message) as info:
        Manifest.read(path)
    assert "unet_a.json" in str(info.value)


def test_unreadable_manifest(weights_dir):
    (weights_dir / "unet_a.json").write_text("{oops")
    with pytest.raises(InputError, match="not a readable JSON manifest"):
        list_shipped_models(weights_dir)


def test_write_manifest_refuses_to_overwrite(weights_dir):
    with pytest.raises(OutputExistsError):
        write_manifest(weights_dir / "unet_a.keras", "unet", {}, TRAINED_ON, {}, backend="jax")
    write_manifest(weights_dir / "unet_a.keras", "unet", {"depth": 3}, TRAINED_ON, {}, backend="jax", overwrite=True)
    assert Manifest.read(weights_dir / "unet_a.json").architecture == {"depth": 3}


def test_write_manifest_checks_its_inputs(tmp_path):
    with pytest.raises(InputError, match="not an existing"):
        write_manifest(tmp_path / "absent.keras", "unet", {}, {}, {}, backend="jax")
    model = _fake_model(tmp_path, "m")
    with pytest.raises(ValueError, match="method"):
        write_manifest(model, "sextractor", {}, {}, {}, backend="jax")
    with pytest.raises(TypeError, match="trained_on.when"):
        write_manifest(model, "unet", {}, {"when": object()}, {}, backend="jax")


def test_importing_models_and_registry_does_not_import_keras():
    code = (
        "import sys, napari_blendphot.models, napari_blendphot.models.manifests, napari_blendphot.models.io\n"
        "heavy = [m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr


def test_the_shipped_weights_stay_within_the_40_mb_package_budget():
    """Issue 12: the shipped weights stay <= 40 MB in the package (the ensemble's are stored in 16 bits)."""
    from napari_blendphot.models.manifests import WEIGHTS_DIR, list_shipped_models

    models = list_shipped_models()
    total = sum(m.path.stat().st_size for m in models) + sum(p.stat().st_size for p in WEIGHTS_DIR.glob("*.json"))
    assert {m.name for m in models} >= {"blend2flux_v8", "unet_v2", "blend2mask2flux_v10", "blend2flux_ensemble_v5"}
    assert total <= 40_000_000, f"{total / 1e6:.2f} MB of shipped weights"
