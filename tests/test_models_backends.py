"""The networks under each Keras backend (TensorFlow, JAX, PyTorch), and across them.

The backend is fixed when Keras is imported, so each backend runs in its own
Python subprocess (the script below).  The subprocesses run in a chain --
jax, then tensorflow, then torch -- and each one loads the models saved by
the ones before it, so the chain also checks that a ``.keras`` file saved
under one backend predicts the same under another (compile=False).

The model is a tiny blend2mask2flux: it holds every layer of the three
networks (U-Net, flux CNN, both scaling layers) and both losses.  JAX
compiles every weight initialiser and step with XLA, which dominates the
time here, so JAX goes first and loads nothing.  Measured on the shared
2-core machine: about 10 s (torch), 9 s (tensorflow), 20 s (jax) of CPU time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

CHAIN = ("jax", "tensorflow", "torch")

BACKEND_SCRIPT = textwrap.dedent(
    r'''
    import json, sys
    from pathlib import Path
    import numpy as np
    import keras
    from napari_blendphot.models.networks import build_blend2mask2flux
    from napari_blendphot.models.losses import compile_model
    from napari_blendphot.models.io import load_model, save_model

    backend, workdir, previous = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    assert keras.backend.backend() == backend, keras.backend.backend()
    keras.utils.set_random_seed(7)

    # A fixed tiny batch: noise plus two Gaussian galaxies per stamp, true fluxes known.
    rng = np.random.default_rng(11)
    n, size = 4, 128
    yy, xx = np.mgrid[:size, :size]
    stamps = rng.normal(0.0, 0.01, (n, size, size))
    fluxes = rng.uniform(20.0, 200.0, (n, 2))
    masks = np.zeros((n, size, size, 2))
    for i in range(n):
        for k, (cy, cx) in enumerate([(64, 64), (64 + 10 * (i + 1) % 40, 50)]):
            profile = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0**2))
            stamps[i] += fluxes[i, k] * profile / profile.sum()
            masks[i, :, :, k] = profile > 0.05 * profile.max()
    stamps = stamps.astype("float32")
    fluxes = fluxes.astype("float32")
    masks = masks.astype("float32")
    np.save(workdir / "stamps.npy", stamps)

    report = {"backend": backend, "losses": {}, "loaded": {}}
    models = {
        "blend2mask2flux": (
            build_blend2mask2flux(unet_depth=2, unet_filters=4, head_filters=4, head_depth=1, head_dense=(8,)),
            {"fluxes": fluxes, "masks": masks},
        ),
    }
    for method, (model, target) in models.items():
        compile_model(model, method, learning_rate=3e-4)
        losses = []
        for _ in range(5):
            result = model.train_on_batch(stamps, target)
            losses.append(float(result[0] if isinstance(result, (list, tuple)) else result))
        report["losses"][method] = losses
        prediction = model.predict(stamps, verbose=0)
        path = workdir / f"{backend}_{method}.keras"
        save_model(model, path)
        arrays = prediction if isinstance(prediction, dict) else {"output": prediction}
        np.savez(workdir / f"{backend}_{method}.npz", **{k: np.asarray(v) for k, v in arrays.items()})
        report.setdefault("shapes", {})[method] = {k: list(np.shape(v)) for k, v in arrays.items()}

    for other in previous:
        for method in models:
            model = load_model(workdir / f"{other}_{method}.keras", compile=False, expect=method)
            prediction = model.predict(stamps, verbose=0)
            arrays = prediction if isinstance(prediction, dict) else {"output": prediction}
            saved = np.load(workdir / f"{other}_{method}.npz")
            report["loaded"][f"{other}->{backend}:{method}"] = {
                key: float(np.max(np.abs(np.asarray(arrays[key]) - saved[key]) / (np.abs(saved[key]) + 1e-3)))
                for key in saved.files
            }
    print("REPORT " + json.dumps(report))
    '''
)


@pytest.fixture(scope="module")
def backend_reports(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("backends")
    script = workdir / "check_backend.py"
    script.write_text(BACKEND_SCRIPT)
    reports = {}
    for index, backend in enumerate(CHAIN):
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
        completed = subprocess.run(
            [sys.executable, str(script), backend, str(workdir), json.dumps(list(CHAIN[:index]))],
            capture_output=True, text=True, env=env, timeout=300,
        )
        lines = [line for line in completed.stdout.splitlines() if line.startswith("REPORT ")]
        reports[backend] = (
            json.loads(lines[-1][len("REPORT "):]) if completed.returncode == 0 and lines
            else {"error": completed.stderr[-3000:] + completed.stdout[-1000:]}
        )
    return reports


@pytest.mark.slow
@pytest.mark.parametrize("backend", CHAIN)
def test_build_train_predict_under_backend(backend_reports, backend):
    report = backend_reports[backend]
    assert "error" not in report, report.get("error")
    assert report["backend"] == backend
    for method, losses in report["losses"].items():
        assert np.all(np.isfinite(losses)), (method, losses)
        assert losses[-1] < losses[0], f"{method} loss did not decrease on a fixed batch: {losses}"
    assert report["shapes"]["blend2mask2flux"] == {"fluxes": [4, 2], "masks": [4, 128, 128, 2]}


@pytest.mark.slow
@pytest.mark.parametrize("saved_under, loaded_under", [("jax", "tensorflow"), ("jax", "torch"), ("tensorflow", "torch")])
def test_model_saved_under_one_backend_predicts_the_same_under_another(backend_reports, saved_under, loaded_under):
    report = backend_reports[loaded_under]
    assert "error" not in report, report.get("error")
    for method in ("blend2mask2flux",):
        differences = report["loaded"][f"{saved_under}->{loaded_under}:{method}"]
        assert differences, method
        for output, relative in differences.items():
            assert relative < 1e-5, f"{saved_under}->{loaded_under} {method}/{output}: relative difference {relative}"
