"""scarlet2 (JAX) source models, initialised from the sep two-pass detections.

Optional: ``pip install 'napari-blendphot[scarlet2]'`` (scarlet2 and JAX).

Per blend, the ``sep`` method's two passes (SPEC §5; background subtracted,
its global rms as the noise) give the sources: their positions, fluxes and
second moments.  Each source becomes a single-band scarlet2
:class:`scarlet2.Source` with a :class:`scarlet2.SersicMorphology` (free
centre, effective radius, ellipticity and Sersic index), rendered through a
:class:`scarlet2.Observation` whose PSF is a Gaussian of ``psf_sigma`` pixels
(default 1.27: the F160W FWHM of 0.18", SPEC §2) and fitted by maximum
likelihood (``Observation.log_likelihood``, inverse-variance weights from
the rms) with Adam for ``n_steps`` steps.

Outputs:

* fluxes: each fitted model's flux within the stamp (the Sersic profile
  summed over a box the size of the stamp, before the PSF, which conserves
  flux), like the apertures of the other methods, which end at the edges too;
* errors: the amplitude errors of the fitted shapes, ``sqrt(diag(F^-1))``
  with ``F_ij = sum w m_i m_j`` over the rendered unit-flux models (the
  photon-noise error of forced photometry, correlated sources included);
* masks: the pixels where a source's rendered model exceeds the noise rms,
  valued by its share of the summed models (so > 0.5 where it dominates);
* sources are assigned to the two galaxies with
  :mod:`napari_blendphot.match.assign`, from the fitted centres and fluxes.

Speed: all blends with the same number of sources are fitted together,
``jax.vmap`` over a batch (one compilation per source count and batch
size) and ``jax.lax.scan`` over the Adam steps, on JAX's default device (a
GPU where JAX has one).  At most ``max_sources`` sources are modelled per
blend (the brightest).  A blend whose fit gives non-finite numbers is marked
not measured (``pass`` -2).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from napari_blendphot.constants import STAMP_SIZE
from napari_blendphot.deblend.base import BlendContext, DeblendOutput, ProgressCallback
from napari_blendphot.deblend.sep_baseline import (ASSIGNMENT_NOTE, PASS_NO_NOISE, PASS_SEP_ERROR, SepTwoPass,
                                                 _BatchOutputs, stamp_sized_pixel_stack, start_batch)
from napari_blendphot.errors import InputError
from napari_blendphot.match.assign import assign_detections

INSTALL_HINT = "pip install 'napari-blendphot[scarlet2]' (scarlet2 and JAX)"
#: Side of each source's profile box (odd), centred on the stamp: the stamp itself (and one
#: more row and column).  A box twice as wide would also count the light of a source beyond
#: the stamp's edges, at four times the cost of every step.
PROFILE_BOX = STAMP_SIZE + 1
#: Sersic index range of the fit.
SERSIC_MIN, SERSIC_MAX = 0.5, 6.0
SERSIC_START = 1.5
#: Largest |ellipticity| the fit may reach.
MAX_ELLIPTICITY = 0.95


def unavailable_reason() -> str | None:
    """Why the ``scarlet2`` method cannot run here (None if it can)."""
    missing = [name for name in ("scarlet2", "jax", "optax", "equinox") if importlib.util.find_spec(name) is None]
    if missing:
        return f"the optional package(s) {', '.join(missing)} are not installed; {INSTALL_HINT}"
    return None


@dataclass(frozen=True)
class Scarlet2Deblender:
    """scarlet2 Sersic models of the sep detections, fitted in batches.

    Parameters
    ----------
    psf_sigma : float
        Gaussian sigma (pixels) of the observed PSF.
    n_steps : int
        Adam steps of the fit.
    learning_rate : float
        Adam's step size (unconstrained parameters: pixels, log-radius, log-flux...).
    batch_size : int or None
        Blends fitted at once; None = 256 on a GPU, 16 on a CPU.
    max_sources : int
        Sources modelled per blend at most (the brightest sep detections).
    """

    psf_sigma: float = 1.27
    n_steps: int = 100
    learning_rate: float = 0.05
    batch_size: int | None = None
    max_sources: int = 4

    name: ClassVar[str] = "scarlet2"
    label: ClassVar[str] = "scarlet2 (models from the sep detections)"
    makes_masks: ClassVar[bool] = True
    # JAX and a fit that takes seconds: keep it in the worker process, away from the GUI.
    needs_worker: ClassVar[bool] = True

    def __post_init__(self):
        if not (isinstance(self.psf_sigma, (int, float)) and 0.3 < self.psf_sigma < 20):
            raise InputError("option psf_sigma", f"{self.psf_sigma!r} is not a PSF sigma in pixels (0.3-20)")
        if not (isinstance(self.n_steps, int) and self.n_steps >= 1):
            raise InputError("option n_steps", f"{self.n_steps!r} is not a positive number of steps")
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise InputError("option learning_rate", f"{self.learning_rate!r} is not a positive step size")
        if self.batch_size is not None and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise InputError("option batch_size", f"{self.batch_size!r} is not a positive number of blends")
        if not (isinstance(self.max_sources, int) and 2 <= self.max_sources <= 16):
            raise InputError("option max_sources", f"{self.max_sources!r} is not a number of sources (2-16)")

    def deblend(self, blends, context: BlendContext | None = None,
                progress: ProgressCallback | None = None) -> DeblendOutput:
        """Detect with sep, fit scarlet2 models, assign and measure both galaxies of every blend."""
        reason = unavailable_reason()
        if reason:
            raise InputError(f"method {self.name!r}", reason)
        blends, shifts, radii, out = start_batch(blends, context)
        n_blends = len(blends)
        detections = _detect(blends, out, self.max_sources)
        fitter = _fitter(float(self.psf_sigma), int(self.n_steps), float(self.learning_rate))
        batch = self.batch_size or (256 if fitter.on_gpu else 16)
        done = n_blends - len(detections)
        if progress is not None and done:
            progress(done, n_blends)
        by_count: dict[int, list[int]] = {}
        for index, found in detections.items():
            by_count.setdefault(len(found.flux), []).append(index)
        for count, indices in sorted(by_count.items()):
            for start in range(0, len(indices), batch):
                chunk = indices[start:start + batch]
                results = fitter.fit([detections[i] for i in chunk], count, batch)
                for index, result in zip(chunk, results):
                    found = detections[index]
                    if result is None:
                        out.pass_used[index] = PASS_SEP_ERROR
                        continue
                    self._assign(index, found, result, shifts, radii, out)
                done += len(chunk)
                if progress is not None:
                    progress(done, n_blends)
        extra = {"detection": out.detection, "n_sources": out.n_sources, "pass": out.pass_used,
                 "assignment": out.assignment}
        return DeblendOutput(self.name, out.fluxes, out.masks, extra, self._metadata(extra, fitter, batch),
                             out.flux_errors)

    @staticmethod
    def _assign(index, found, result, shifts, radii, out: _BatchOutputs) -> None:
        flux, error, centers, shares = result
        chosen = assign_detections(centers[:, 1], centers[:, 0], flux,
                                   companion_shift=None if shifts is None else shifts[index],
                                   central_radius=None if radii is None else radii[index])
        for slot, source in enumerate((chosen.central, chosen.companion)):
            if source >= 0:
                out.fluxes[index, slot] = flux[source]
                good = math.isfinite(error[source]) and error[source] > 0
                out.flux_errors[index, slot] = error[source] if good else math.nan
                out.masks[index, slot] = shares[source]
        out.detection[index] = chosen.detection
        out.n_sources[index] = found.n_found
        out.assignment[index] = int(chosen.used_truth)

    def _metadata(self, extra, fitter, batch) -> dict:
        passes = extra["pass"]
        return {
            "method": self.name,
            "label": self.label,
            "config": dataclasses.asdict(self),
            "batch_size_used": int(batch),
            "scarlet2_version": _version("scarlet2"),
            "jax_version": _version("jax"),
            "jax_device": fitter.device,
            "assignment_note": ASSIGNMENT_NOTE,
            "pass_codes": {"0": "sep cold pass", "1": "sep hot pass", "-1": "not run: stamp without noise (rms 0)",
                           "-2": "sep or the fit failed on this blend"},
            "detection_codes": {"-1": "none", "0": "only central", "1": "only companion", "2": "both",
                                "3": "more than two (two brightest assigned)"},
            "n_not_run": int((passes == PASS_NO_NOISE).sum()),
            "n_errors": int((passes == PASS_SEP_ERROR).sum()),
        }


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


@dataclass
class _Detections:
    """One blend's sep sources (at most max_sources, brightest first) and its noise."""

    data: np.ndarray
    rms: float
    y: np.ndarray
    x: np.ndarray
    flux: np.ndarray
    radius: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    n_found: int


def _detect(blends, out: _BatchOutputs, max_sources: int) -> dict:
    """sep's two passes on every blend: {index: _Detections} for the blends with sources."""
    sep_method = SepTwoPass()
    flat = blends.reshape(len(blends), -1)
    constant = flat.min(axis=1) == flat.max(axis=1)
    out.pass_used[constant] = PASS_NO_NOISE
    found = {}
    with stamp_sized_pixel_stack(blends.shape[1] * blends.shape[2]):
        for index in np.flatnonzero(~constant):
            try:
                background, rms = sep_method._background(blends[index])
                if not (math.isfinite(rms) and rms > 0):
                    out.pass_used[index] = PASS_NO_NOISE
                    continue
                data = sep_method._subtracted(blends[index], background)
                objects, _ = sep_method._extract(data, rms, sep_method.cold)
                if len(objects) == 1:
                    objects, _ = sep_method._extract(data, rms, sep_method.hot)
                    out.pass_used[index] = 1
            except Exception:  # sep signals failures with a bare Exception
                out.pass_used[index] = PASS_SEP_ERROR
                continue
            if len(objects) == 0:
                continue
            order = np.argsort(-objects["flux"], kind="stable")[:max_sources]
            kept = objects[order]
            a, b = np.maximum(kept["a"], 0.5), np.maximum(kept["b"], 0.5)
            q2 = (b / a) ** 2
            modulus = np.clip((1 - q2) / (1 + q2), 0.0, 0.8)
            # sep's theta is counter-clockwise from +x; scarlet2's ellipticity is in (y, x) pixels.
            e1 = -modulus * np.cos(2 * kept["theta"])
            e2 = -modulus * np.sin(2 * kept["theta"])
            found[int(index)] = _Detections(np.asarray(data, np.float32), float(rms),
                                            kept["y"].astype(np.float64), kept["x"].astype(np.float64),
                                            np.maximum(kept["flux"].astype(np.float64), 10 * rms),
                                            1.18 * np.sqrt(a * b), e1, e2, int(len(objects)))
    return found


@functools.lru_cache(maxsize=4)
def _fitter(psf_sigma: float, n_steps: int, learning_rate: float) -> "_BatchFitter":
    return _BatchFitter(psf_sigma, n_steps, learning_rate)


class _BatchFitter:
    """Builds the scarlet2 scene templates and the jitted, vmapped fit (one per source count and batch)."""

    def __init__(self, psf_sigma: float, n_steps: int, learning_rate: float):
        import jax

        jax.config.update("jax_enable_x64", False)
        self.psf_sigma = psf_sigma
        self.n_steps = n_steps
        self.learning_rate = learning_rate
        self.on_gpu = jax.default_backend() in ("gpu", "cuda", "rocm")
        devices = jax.devices()
        self.device = f"{jax.default_backend()}: {devices[0].device_kind}" if devices else jax.default_backend()
        self._compiled: dict = {}
        self._templates: dict = {}

    # ------------------------------------------------------------ templates
    def _template(self, count: int):
        """(scene, observation) with *count* Sersic sources, matched; only their leaves vary per blend."""
        if count in self._templates:
            return self._templates[count]
        import jax.numpy as jnp
        import scarlet2

        scarlet2.set_validation(False)
        half = 12
        yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
        psf = np.exp(-(yy ** 2 + xx ** 2) / (2 * self.psf_sigma ** 2))
        psf = (psf / psf.sum())[None].astype(np.float32)
        shape = (1, STAMP_SIZE, STAMP_SIZE)
        observation = scarlet2.Observation(jnp.zeros(shape), jnp.ones(shape), psf=scarlet2.ArrayPSF(jnp.asarray(psf)))
        frame = scarlet2.Frame.from_observations(observation)
        observation.match(frame)
        centre = jnp.array([STAMP_SIZE / 2.0, STAMP_SIZE / 2.0])
        with scarlet2.Scene(frame) as scene:
            for _ in range(count):
                # Every source's box is centred on the stamp (identical structure for vmap);
                # its position is the profile's offset from that centre.
                morphology = scarlet2.SersicMorphology(jnp.array(SERSIC_START), jnp.array(2.0),
                                                       ellipticity=jnp.zeros(2), shape=(PROFILE_BOX, PROFILE_BOX))
                scarlet2.Source(centre, jnp.ones(1), morphology)
        self._templates[count] = (scene, observation)
        return scene, observation

    def _compiled_fit(self, count: int, batch: int):
        key = (count, batch)
        if key in self._compiled:
            return self._compiled[key]
        import equinox as eqx
        import jax
        import jax.numpy as jnp
        import optax

        scene, observation = self._template(count)
        sources = lambda s: s.sources  # noqa: E731

        def leaves(s):
            return ([src.center for src in sources(s)] + [src.spectrum for src in sources(s)]
                    + [src.morphology.size for src in sources(s)] + [src.morphology.ellipticity for src in sources(s)]
                    + [src.morphology.n for src in sources(s)])

        def constrained(u):
            size = jnp.exp(u["log_size"])
            radius = jnp.sqrt(jnp.sum(u["e"] ** 2, axis=-1, keepdims=True) + 1e-12)
            ellipticity = u["e"] * (MAX_ELLIPTICITY * jnp.tanh(radius) / radius)
            n = SERSIC_MIN + (SERSIC_MAX - SERSIC_MIN) * jax.nn.sigmoid(u["n"])
            return u["center"], jnp.exp(u["log_flux"]), size, ellipticity, n

        def build(u):
            centers, fluxes, sizes, ellipticities, indices = constrained(u)
            unit = eqx.tree_at(leaves, scene, [centers[k] for k in range(count)] + [jnp.ones(1)] * count
                               + [sizes[k] for k in range(count)] + [ellipticities[k] for k in range(count)]
                               + [indices[k] for k in range(count)])
            # Unit-flux profiles: the amplitude is the total flux over the profile box.
            norms = jnp.stack([src.morphology(delta_center=src.center - jnp.array(src.bbox.center[-2:]))
                               .sum() for src in unit.sources])
            spectra = fluxes / norms
            fitted = eqx.tree_at(lambda s: [src.spectrum for src in s.sources], unit,
                                 [spectra[k][None] for k in range(count)])
            return fitted, unit

        def fit_one(u0, data, weights):
            obs = eqx.tree_at(lambda o: (o.data, o.weights), observation, (data[None], weights[None]))

            def loss(u):
                fitted, _ = build(u)
                return 0.5 * jnp.sum(obs.weights * (obs.render(fitted()) - obs.data) ** 2)

            optimizer = optax.adam(self.learning_rate)
            value_and_grad = jax.value_and_grad(loss)

            def step(carry, _):
                u, state = carry
                value, grad = value_and_grad(u)
                updates, state = optimizer.update(grad, state, u)
                return (optax.apply_updates(u, updates), state), value

            (u, _), history = jax.lax.scan(step, (u0, optimizer.init(u0)), None, length=self.n_steps)
            fitted, unit = build(u)
            # The template's sources have amplitude 1 (a profile that is 1 at the effective radius):
            # divided by their sums, the rendered models carry unit flux.
            norms = jnp.stack([src.morphology(delta_center=src.center - jnp.array(src.bbox.center[-2:])).sum()
                               for src in unit.sources])
            rendered = jnp.stack([obs.render(unit.evaluate_source(src))[0] for src in unit.sources])
            rendered = rendered / norms[:, None, None]
            fluxes = jnp.exp(u["log_flux"])
            fisher = jnp.einsum("kyx,jyx->kj", rendered * obs.weights[0], rendered)
            errors = jnp.sqrt(jnp.diag(jnp.linalg.inv(fisher)))
            models = rendered * fluxes[:, None, None]
            return fluxes, errors, u["center"], models, history[-1]

        compiled = jax.jit(jax.vmap(fit_one))
        self._compiled[key] = compiled
        return compiled

    # ------------------------------------------------------------------ fit
    def fit(self, detections: list, count: int, batch: int) -> list:
        """Fit a list of blends with *count* sources each: per blend (fluxes, errors, centres, mask shares) or None."""
        import jax.numpy as jnp

        compiled = self._compiled_fit(count, batch)
        n_real = len(detections)
        padded = detections + [detections[-1]] * (batch - n_real)
        start = {
            "center": np.stack([np.column_stack([d.y, d.x]) for d in padded]).astype(np.float32),
            "log_flux": np.log(np.stack([d.flux for d in padded])).astype(np.float32),
            "log_size": np.log(np.maximum(np.stack([d.radius for d in padded]), 0.5)).astype(np.float32),
            "e": np.stack([np.column_stack([d.e1, d.e2]) for d in padded]).astype(np.float32),
            "n": np.full((batch, count), math.log((SERSIC_START - SERSIC_MIN) / (SERSIC_MAX - SERSIC_START)),
                         np.float32),
        }
        data = np.stack([d.data for d in padded])
        weights = np.stack([np.full(d.data.shape, 1.0 / d.rms ** 2, np.float32) for d in padded])
        fluxes, errors, centers, models, final_loss = (np.asarray(a, dtype=np.float64) for a in compiled(
            {key: jnp.asarray(value) for key, value in start.items()}, jnp.asarray(data), jnp.asarray(weights)))
        results = []
        for i, found in enumerate(detections):
            if not (np.isfinite(fluxes[i]).all() and np.isfinite(centers[i]).all() and np.isfinite(final_loss[i])):
                results.append(None)
                continue
            total = models[i].sum(axis=0)
            shares = np.where(models[i] > found.rms, models[i] / np.where(total > 0, total, 1.0), 0.0)
            results.append((fluxes[i], np.where(np.isfinite(errors[i]), errors[i], np.nan), centers[i],
                            shares.astype(np.float32)))
        return results
