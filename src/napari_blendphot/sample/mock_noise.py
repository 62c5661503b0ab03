"""Noise of the mock sample, with numpy alone (so that it can be re-created anywhere).

Mock v2 stamps get (1) the Poisson noise of the source for an effective exposure
time and (2) a Gaussian background whose pixels are correlated like those of a
drizzled mosaic: white noise convolved with a small separable kernel
``[a, 1, a] x [a, 1, a]`` normalised to unit sum of squares, so that the per-pixel
rms stays the requested one while neighbouring pixels correlate with coefficient
``2 a / (1 + 2 a^2)`` (a = 0 is white noise).  ``make-sample`` adds the noise of
every v2 stamp with :func:`add_mock_noise`; the noise parameters of each galaxy
travel with the noiseless models (``--models-out``), so a training job on another
machine draws new noise of the same distribution with numpy only.

This module must not import anything but numpy.
"""

from __future__ import annotations

import numpy as np

#: Keys of the per-galaxy noise parameters (arrays with one entry per galaxy).
NOISE_PARAMETER_KEYS = ("noise_rms", "noise_kernel", "exposure_time")


def correlation_kernel(a: float) -> np.ndarray:
    """3x3 kernel ``[a, 1, a]`` outer itself, normalised so that white noise keeps its rms."""
    row = np.array([a, 1.0, a], dtype=np.float64)
    kernel = np.outer(row, row)
    return kernel / np.sqrt(np.sum(kernel**2))


def neighbour_correlation(kernel: np.ndarray) -> float:
    """Correlation coefficient of horizontally adjacent pixels of noise made with *kernel*."""
    kernel = np.asarray(kernel, dtype=np.float64)
    return float(np.sum(kernel[:, 1:] * kernel[:, :-1]) / np.sum(kernel**2))


def correlated_noise(shape, kernel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit-rms Gaussian noise of *shape* correlated by *kernel* (valid convolution of white noise)."""
    kernel = np.asarray(kernel, dtype=np.float64)
    ky, kx = kernel.shape
    ny, nx = shape
    white = rng.standard_normal((ny + ky - 1, nx + kx - 1))
    out = np.zeros((ny, nx), dtype=np.float64)
    for i in range(ky):
        for j in range(kx):
            if kernel[i, j] != 0.0:
                out += kernel[i, j] * white[i:i + ny, j:j + nx]
    return out / np.sqrt(np.sum(kernel**2))


def add_mock_noise(models, params, rng: np.random.Generator) -> np.ndarray:
    """Noisy stamps from noiseless *models*, as ``make-sample`` (mock v2) makes them.

    Parameters
    ----------
    models : (N, H, W) or (H, W) array
        Noiseless stamps in e-/s (PSF-convolved galaxies, neighbours included if wanted).
    params : mapping
        ``noise_rms`` (N,) background rms per pixel (e-/s); ``noise_kernel`` (N, 3, 3)
        correlation kernels (see :func:`correlation_kernel`); ``exposure_time`` (N,)
        seconds for the Poisson noise of the source, 0 or NaN for none.  Scalars (and a
        single (3, 3) kernel) apply to every stamp.
    rng : numpy.random.Generator
        Source of randomness; the stamps are processed in order, Poisson first then
        background, so the same generator state gives the same noise.

    Returns
    -------
    float32 array of the shape of *models*.
    """
    models = np.asarray(models)
    single = models.ndim == 2
    cube = models[None] if single else models
    n = len(cube)
    rms = np.broadcast_to(np.asarray(params["noise_rms"], np.float64), (n,))
    kernels = np.asarray(params["noise_kernel"], np.float64)
    kernels = np.broadcast_to(kernels, (n,) + kernels.shape[-2:])
    exposure = np.broadcast_to(np.asarray(params["exposure_time"], np.float64), (n,))
    out = np.empty(cube.shape, np.float32)
    for k in range(n):
        clean = cube[k].astype(np.float64)
        noisy = clean
        if np.isfinite(exposure[k]) and exposure[k] > 0:
            counts = np.clip(clean, 0.0, None) * exposure[k]
            noisy = clean + (rng.poisson(counts) - counts) / exposure[k]
        out[k] = noisy + rms[k] * correlated_noise(clean.shape, kernels[k], rng)
    return out[0] if single else out


def write_models(models: dict, path, provenance: dict | None = None):
    """Write the noiseless models and noise parameters of a mock (``keep_models``) to an .npz, atomically.

    Arrays: ``models``, ``neighbours`` (float32 (N, 128, 128)), ``ids``, ``noise_rms``,
    ``noise_kernel``, ``exposure_time``; ``provenance`` as a JSON string.  Compressed
    (``numpy.savez_compressed``); read with ``numpy.load`` and pass the loaded file as
    *params* to :func:`add_mock_noise`.
    """
    import json
    from pathlib import Path

    from napari_blendphot.atomic import atomic_output

    path = Path(path)
    arrays = {key: np.asarray(models[key]) for key in ("models", "neighbours", "ids") + NOISE_PARAMETER_KEYS}
    arrays["provenance"] = np.asarray(json.dumps(provenance or {}, sort_keys=True))
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    return path
