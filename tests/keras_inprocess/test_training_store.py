"""``python -m training store``: a run folder with its model's large weights rounded to 16 bits.

Keras runs in this process (PyTorch backend unless KERAS_BACKEND says otherwise).
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras  # noqa: E402

from napari_blendphot.models.io import load_model, save_model  # noqa: E402
from napari_blendphot.models.networks import build_blend2flux  # noqa: E402
from napari_blendphot.testing.stand_ins import gaussian_pair_stamps  # noqa: E402


def _run_folder(path):
    keras.utils.set_random_seed(5)
    model = build_blend2flux(filters=8, depth=3, dense_widths=(16, 16), uncertainty=True)
    path.mkdir()
    save_model(model, path / "model.keras")
    (path / "config.json").write_text(json.dumps({"name": "tiny", "model": {"kind": "blend2flux"}}))
    (path / "run.json").write_text(json.dumps({"name": "tiny", "status": "finished", "seed": 5}))
    (path / "log.csv").write_text("epoch,loss\n0,1.0\n")
    return model


def test_store_rounds_the_large_weights_and_keeps_the_run_record(tmp_path, capsys):
    from napari_blendphot.training.cli import main

    original = _run_folder(tmp_path / "run")
    assert main(["store", str(tmp_path / "run"), "-o", str(tmp_path / "run_bf16")]) == 0
    assert "rounded to bfloat16" in capsys.readouterr().out
    out = tmp_path / "run_bf16"
    record = json.loads((out / "run.json").read_text())
    assert record["store"] == "bfloat16" and record["rounded_arrays"] > 0 and record["seed"] == 5
    assert record["stored_from"]["run"] == "run" and len(record["model_sha256"]) == 64
    assert json.loads((out / "config.json").read_text()) == json.loads((tmp_path / "run" / "config.json").read_text())
    assert (out / "log.csv").is_file()
    stored = load_model(out / "model.keras", compile=False)
    big = [w for w in stored.weights if np.prod(w.shape) >= 1024]
    small = [w for w in stored.weights if np.prod(w.shape) < 1024]
    assert big and small
    for weight in big:  # bfloat16: the low 16 bits of every float32 are zero
        bits = np.asarray(keras.ops.convert_to_numpy(weight.value), np.float32).view(np.uint32)
        assert not np.any(bits & 0xFFFF)
    by_name = {w.path: w for w in original.weights}
    for weight in small:  # biases and small layers stay exact
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(weight.value),
                                      keras.ops.convert_to_numpy(by_name[weight.path].value))
    assert (out / "model.keras").stat().st_size < (tmp_path / "run" / "model.keras").stat().st_size
    stamps = gaussian_pair_stamps(4, 0, (64, 64, 18.0, (1, 5)), (70, 58, 10.0, (0.5, 2)))
    before = keras.ops.convert_to_numpy(original(stamps)["fluxes"])
    after = keras.ops.convert_to_numpy(stored(stamps)["fluxes"])
    np.testing.assert_allclose(after, before, rtol=0.05)  # close, not equal: for held-out blends to judge


def test_store_refuses_what_it_cannot_do_in_one_line(tmp_path, capsys):
    from napari_blendphot.training.cli import main

    _run_folder(tmp_path / "run")
    (tmp_path / "taken").mkdir()
    assert main(["store", str(tmp_path / "run"), "-o", str(tmp_path / "taken")]) == 2
    assert main(["store", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x")]) == 2
    assert main(["store", str(tmp_path / "run"), "-o", str(tmp_path / "once")]) == 0
    assert main(["store", str(tmp_path / "once"), "-o", str(tmp_path / "twice")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "exists already" in err[0] and "missing" in err[1] and "bfloat16 already" in err[2]
    assert not (tmp_path / "x").exists() and not (tmp_path / "twice").exists()
    with pytest.raises(SystemExit):  # argparse: an unknown precision
        main(["store", str(tmp_path / "run"), "-o", str(tmp_path / "y"), "--precision", "int8"])


def test_store_keeps_a_frozen_unet_exact_so_that_unet_and_blend2mask2flux_share_its_pass(tmp_path, capsys):
    """A blend2mask2flux trained with its U-Net frozen holds a copy of a shipped U-Net: rounding that copy
    changed its fingerprint, so the `unet` method could no longer take blend2mask2flux's masks (round 10)."""
    from napari_blendphot.models.networks import build_blend2mask2flux, unet_fingerprint
    from napari_blendphot.training.cli import main

    keras.utils.set_random_seed(6)
    model = build_blend2mask2flux(unet_depth=3, unet_filters=8, head_filters=8, head_depth=2, head_dense=(16, 16),
                                  uncertainty=True)
    run = tmp_path / "run"
    run.mkdir()
    save_model(model, run / "model.keras")
    config = {"name": "tiny", "model": {"kind": "blend2mask2flux", "freeze_unet": True}}
    (run / "config.json").write_text(json.dumps(config))
    (run / "run.json").write_text(json.dumps({"name": "tiny", "status": "finished", "seed": 6}))
    assert main(["store", str(run), "-o", str(tmp_path / "run_bf16")]) == 0
    stored = load_model(tmp_path / "run_bf16" / "model.keras", compile=False)
    assert unet_fingerprint(stored) == unet_fingerprint(model)
    record = json.loads((tmp_path / "run_bf16" / "run.json").read_text())
    assert record["rounded_arrays"] > 0 and record["kept_exact"] == "the frozen U-Net (unet_*, masks)"
    head = [w for w in stored.weights if not w.path.startswith(("unet_", "masks")) and np.prod(w.shape) >= 1024]
    assert head and all(not np.any(np.asarray(keras.ops.convert_to_numpy(w.value), np.float32).view(np.uint32)
                                   & 0xFFFF) for w in head)
    # Trained with the U-Net free, the whole network is the model's own: all of it is rounded.
    config["model"]["freeze_unet"] = False
    (run / "config.json").write_text(json.dumps(config))
    assert main(["store", str(run), "-o", str(tmp_path / "free_bf16")]) == 0
    free = load_model(tmp_path / "free_bf16" / "model.keras", compile=False)
    assert unet_fingerprint(free) != unet_fingerprint(model)
