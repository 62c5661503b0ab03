"""Under JAX, blend2flux's outputs and gradients do not depend on the max-pooling implementation.

Runs in a subprocess: Keras/JAX must not load in this pytest process (see
tests/keras_inprocess/README.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import numpy as np, jax, keras
    from napari_blendphot.models.networks import build_blend2flux
    from napari_blendphot.models.losses import flux_mape

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    stamps = rng.normal(0.0, 0.01, (4, 32, 32)) + 3.0 * np.exp(-((yy - 16) ** 2 + (xx - 14) ** 2) / 6.0)
    stamps = stamps.astype("float32")
    truth = np.abs(rng.normal(300.0, 50.0, (4, 2))).astype("float32")
    grads, outputs = {}, {}
    for pooling in ("window", "reshape"):
        keras.utils.set_random_seed(1)
        # Small stamps and one level keep JAX's compilation short; every layer kind is there.
        model = build_blend2flux(filters=4, depth=1, dense_widths=(8,), stamp_size=32, pooling=pooling)
        if pooling == "reshape":
            model.set_weights(reference_weights)
        else:
            reference_weights = model.get_weights()
        def loss(trainable):
            outputs, _ = model.stateless_call(trainable, [v.value for v in model.non_trainable_variables], stamps)
            return jax.numpy.mean(flux_mape(truth, outputs))
        grads[pooling] = jax.grad(loss)([v.value for v in model.trainable_variables])
        outputs[pooling] = np.asarray(model(stamps))
    np.testing.assert_allclose(outputs["window"], outputs["reshape"], rtol=1e-5)
    for a, b in zip(grads["window"], grads["reshape"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)
    print("same gradients", len(grads["window"]))
""")


def test_reshape_pooling_gives_the_same_outputs_and_gradients_under_jax():
    environment = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run([sys.executable, "-c", SCRIPT], env=environment, capture_output=True, text=True,
                               timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "same gradients 10" in completed.stdout, completed.stdout  # 5 layers with kernel + bias
