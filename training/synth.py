"""Training blends synthesised on the accelerator, with augmentations (issue 12).

The paper trained on one fixed set of 25,000 blends of noisy stamps.  Here the
networks see a new blend at every step, made from a *bank* of noiseless galaxy
models (PSF-convolved, before noise; ``blendphot make-sample --models-out``):

* pairs and companion shifts drawn by the project's own pairing rules
  (:func:`napari_blendphot.blend.pairing.draw_pairs`) at every batch;
* each galaxy independently turned by one of the 8 rotations/flips of the
  square, and moved by a sub-pixel offset (the central galaxy's light centre
  jitters around pixel [64, 64] as in real cut-outs; the companion's integer
  shift gets a fractional part);
* flux rescaling: a common factor for the pair (the blend gets brighter or
  fainter against the noise) and a small independent one per galaxy;
* a PSF variation per blend: an extra Gaussian blur of the whole blend (the
  bank's models already carry the mock's own per-galaxy PSF spread);
* fresh noise at every step: white or drizzle-like correlated background at a
  per-blend level around the level of a blend of two noisy stamps, plus the
  Poisson noise of the galaxies' light for a per-blend exposure time;
* (round 5, off by default) morphologies the mock under-represents:
  *compact components* -- unresolved nuclei and compact clumps, PSF-sized
  Gaussians added to a share of the galaxies -- and *outer-profile tapers* --
  a share of the galaxies lose their outer light beyond a few half-light
  radii (disk truncations, faint wings).  A stress test on mock blends
  (benchmarks/bench_robustness.py) showed the round-2 network 3x worse when
  20% of a galaxy's light sits in a central point source (flux MAPE 6.2% ->
  19.9%) and biased by +2.7% on galaxies tapered beyond 3 half-light radii
  (docs/training.md, "Round 5").

Everything after the parameter draw runs in ``keras.ops`` on the training
device (one bilinear resampling gather per galaxy does rotation, flip and
shift; noise from ``keras.random`` with a per-batch seed), so the CPU only
draws a few numbers per blend and the accelerator is never starved.  The batch
of epoch *e*, step *i* depends only on ``(seed, e, i)``.

Targets: the true total fluxes of both galaxies (light outside the stamp
counts, as in the catalogue) times their flux factors, times the share a taper
keeps, plus the compact components' light; the true masks (the bank's
central-segment masks, moved exactly like the light, nearest pixel).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from napari_blendphot.constants import STAMP_SIZE
from napari_blendphot.errors import InputError

#: Arrays a bank holds (``np.load`` of a ``.npz``): models float32 (G, 128, 128) (stored as
#: ``models_q`` integers x ``model_step``, training/bank.py), masks uint8 (G, 128, 128) central
#: segment, fluxes/mags/radii float64 (G,), ids int64 (G,).
BANK_KEYS = ("models", "masks", "fluxes", "mags", "radii", "ids")

#: The mock's white background rms per pixel of one stamp (e-/s), SPEC §3.
STAMP_RMS = 0.0106

#: The 8 symmetries of the square as (swap axes, flip rows, flip columns).
DIHEDRAL = tuple((swap, fy, fx) for swap in (0, 1) for fy in (0, 1) for fx in (0, 1))


@dataclass
class Augmentation:
    """What varies from one training blend to the next (defaults: docs/training.md).

    Attributes
    ----------
    dihedral : bool
        Each galaxy turned by one of the 8 rotations/flips.
    central_jitter_px : float
        The central galaxy's centre moves by up to this many pixels along
        each axis (uniform), fractional parts included.
    companion_subpixel : bool
        The companion's integer shift gets a uniform fraction in [-0.5, 0.5).
    pair_flux_mag : float
        Common flux factor ``10**(-0.4 u)``, ``u`` uniform in [-x, x] mag.
    galaxy_flux_mag : float
        Independent per-galaxy factor, same form.
    blur_sigma_px : tuple of float
        Extra Gaussian PSF blur of the blend, sigma uniform in this range (pixels).
    noise_rms : tuple of float
        Background rms per pixel (e-/s), log-uniform in this range.  A blend of
        two noisy stamps has sqrt(2) x 0.0106; one cut-out of an image 0.0106.
    correlated_fraction : float
        Share of blends with drizzle-like correlated background noise.
    correlation : tuple of float
        Strength ``a`` of the separable kernel ``[a, 1, a]`` (per axis), uniform.
    exposure_time_s : tuple of float
        Exposure time for the Poisson noise of the galaxies' light (log-uniform).
    compact_fraction : float
        Share of galaxies that get compact components (0 = off).
    compact_count : int
        Up to this many components per such galaxy (uniform 1..n); the first
        sits on the galaxy's centre (a nucleus) half of the time.
    compact_flux : tuple of float
        Their summed light as a share of the galaxy's, uniform in this range
        (split between them at random); it adds to the galaxy's true flux.
    compact_sigma_px : tuple of float
        Gaussian sigma of each component (pixels, uniform): the F160W PSF is
        ~1.3 px, larger values are barely resolved clumps.
    compact_reach : float
        Components lie within this many half-light radii of the centre.
    taper_fraction : float
        Share of galaxies whose outer light is tapered (0 = off).
    taper_radius : tuple of float
        Taper radius in half-light radii (log-uniform); the light is weighted
        by ``1 / (1 + (r / r_t)**6)`` and the true flux by the share it keeps.
    central_radius_power : float
        Centrals drawn with probability proportional to ``radius**p`` (0 =
        uniformly, as before): large galaxies are rare in the bank and the
        networks' errors grow with size (docs/results.md, matched sizes).
    """

    dihedral: bool = True
    central_jitter_px: float = 0.5
    companion_subpixel: bool = True
    pair_flux_mag: float = 0.5
    galaxy_flux_mag: float = 0.2
    blur_sigma_px: tuple = (0.0, 0.6)
    noise_rms: tuple = (STAMP_RMS * 0.9, STAMP_RMS * 2.0)
    correlated_fraction: float = 0.5
    correlation: tuple = (0.1, 0.6)
    exposure_time_s: tuple = (1500.0, 6000.0)
    compact_fraction: float = 0.0
    compact_count: int = 3
    compact_flux: tuple = (0.02, 0.4)
    compact_sigma_px: tuple = (1.0, 1.8)
    compact_reach: float = 1.5
    taper_fraction: float = 0.0
    taper_radius: tuple = (2.0, 8.0)
    central_radius_power: float = 0.0

    @classmethod
    def from_config(cls, given: dict | None) -> "Augmentation":
        given = dict(given or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(given) - known)
        if unknown:
            raise InputError("data.augmentation", f"unknown key(s) {unknown}", f"known: {sorted(known)}")
        for key, value in given.items():
            if isinstance(value, list):
                given[key] = tuple(value)
        return cls(**given)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def load_bank(path) -> dict:
    """Read a galaxy bank (``.npz``) and check its arrays."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            bank = {key: saved[key] for key in saved.files}
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read the galaxy bank: {exc}") from None
    if "models_q" in bank and "model_step" in bank:
        bank["models"] = (bank.pop("models_q") * float(bank.pop("model_step"))).astype(np.float32)
    missing = [k for k in BANK_KEYS if k not in bank]
    if missing:
        raise InputError(path, f"galaxy bank misses array(s) {missing}", "make it with `python -m training bank`")
    n = len(bank["models"])
    if bank["models"].shape[1:] != (STAMP_SIZE, STAMP_SIZE) or bank["masks"].shape != bank["models"].shape:
        raise InputError(path, f"models {bank['models'].shape} / masks {bank['masks'].shape}: expected (G, 128, 128)")
    for key in ("fluxes", "mags", "radii", "ids"):
        if bank[key].shape != (n,):
            raise InputError(path, f"{key} has shape {bank[key].shape}, expected ({n},)")
    bank["models"] = np.ascontiguousarray(bank["models"], np.float32)
    bank["masks"] = np.ascontiguousarray(bank["masks"] != 0, np.uint8)
    return bank


@dataclass
class BatchPlan:
    """The numbers that fix one batch (drawn on the CPU, numpy only)."""

    central: np.ndarray         # (B,) bank rows
    companion: np.ndarray       # (B,)
    offsets: np.ndarray         # (B, 2, 2) float32 [galaxy, (dy, dx)] centre offsets from pixel 64
    dihedral: np.ndarray        # (B, 2) int32 codes 0..7
    flux_factors: np.ndarray    # (B, 2) float32
    blur_sigma: np.ndarray      # (B,) float32
    noise_rms: np.ndarray       # (B,) float32
    correlation: np.ndarray     # (B,) float32 (0 = white)
    inverse_exposure: np.ndarray  # (B,) float32 1/t
    noise_seed: np.ndarray      # (2,) uint32
    fluxes: np.ndarray          # (B, 2) float32 targets
    extra: dict = field(default_factory=dict)
    taper_radius: np.ndarray | None = None  # (B, 2) float32 pixels, inf = no taper
    points: np.ndarray | None = None        # (B, 2, K, 4) float32 (dy, dx, flux, sigma) about the galaxy centre

    def synthesis_options(self) -> dict:
        """The optional inputs of :func:`synthesize` this plan uses (none when the round-5 augmentations are off)."""
        return {k: v for k, v in (("taper_radius", self.taper_radius), ("points", self.points)) if v is not None}


def plan_batch(bank: dict, size: int, rng: np.random.Generator, augmentation: Augmentation,
               rule: str = "published", companions=None) -> BatchPlan:
    """Draw the pairs, shifts and augmentation parameters of one batch."""
    from napari_blendphot.blend.pairing import draw_pairs

    aug = augmentation
    weights = bank["radii"] ** aug.central_radius_power if aug.central_radius_power else None
    pairs = draw_pairs(bank["mags"], bank["radii"], size, rng, rule, companions=companions, central_weights=weights)
    offsets = np.zeros((size, 2, 2), np.float64)
    if aug.central_jitter_px > 0:
        offsets[:, 0] = rng.uniform(-aug.central_jitter_px, aug.central_jitter_px, (size, 2))
    offsets[:, 1, 0] = pairs.dy
    offsets[:, 1, 1] = pairs.dx
    if aug.companion_subpixel:
        offsets[:, 1] += rng.uniform(-0.5, 0.5, (size, 2))
    dihedral = rng.integers(0, 8, (size, 2)) if aug.dihedral else np.zeros((size, 2), np.int64)
    pair_mag = rng.uniform(-aug.pair_flux_mag, aug.pair_flux_mag, (size, 1)) if aug.pair_flux_mag else 0.0
    own_mag = rng.uniform(-aug.galaxy_flux_mag, aug.galaxy_flux_mag, (size, 2)) if aug.galaxy_flux_mag else 0.0
    factors = 10.0 ** (-0.4 * (np.zeros((size, 2)) + pair_mag + own_mag))
    blur = rng.uniform(aug.blur_sigma_px[0], aug.blur_sigma_px[1], size)
    log_rms = rng.uniform(math.log(aug.noise_rms[0]), math.log(aug.noise_rms[1]), size)
    correlated = rng.random(size) < aug.correlated_fraction
    strength = np.where(correlated, rng.uniform(aug.correlation[0], aug.correlation[1], size), 0.0)
    log_t = rng.uniform(math.log(aug.exposure_time_s[0]), math.log(aug.exposure_time_s[1]), size)
    seed = rng.integers(0, 2**32, 2, dtype=np.uint64).astype(np.uint32)
    true = np.column_stack([bank["fluxes"][pairs.central], bank["fluxes"][pairs.companion]]) * factors
    rows = np.column_stack([pairs.central, pairs.companion])
    # Drawn after everything above, and only when on, so that plans without them keep their bytes.
    taper_radius = points = None
    if aug.taper_fraction > 0:
        taper_radius, kept = _draw_tapers(bank, rows, rng, aug)
        true = true * kept
    if aug.compact_fraction > 0:
        points = _draw_compact(bank["radii"][rows], true, rng, aug)
        true = true + points[..., 2].sum(axis=-1)
    return BatchPlan(
        central=pairs.central.astype(np.int32), companion=pairs.companion.astype(np.int32),
        offsets=offsets.astype(np.float32), dihedral=dihedral.astype(np.int32),
        flux_factors=factors.astype(np.float32), blur_sigma=blur.astype(np.float32),
        noise_rms=np.exp(log_rms).astype(np.float32), correlation=strength.astype(np.float32),
        inverse_exposure=np.exp(-log_t).astype(np.float32), noise_seed=seed, fluxes=true.astype(np.float32),
        extra={"dy": pairs.dy, "dx": pairs.dx}, taper_radius=taper_radius, points=points,
    )


#: Width (pixels) of the annuli of :func:`radial_profiles`: fine enough that a steep taper's weight is
#: constant across one (a 1-px annulus misjudged the kept light by up to 10% for tapers at 3 px).
PROFILE_STEP = 0.25


def _annuli():
    """Each pixel's annulus index about pixel [64, 64], and the mean radius of each annulus's pixels."""
    yy, xx = np.mgrid[:STAMP_SIZE, :STAMP_SIZE] - STAMP_SIZE // 2
    radius = np.hypot(yy, xx).ravel()
    ring = (radius / PROFILE_STEP).astype(np.int64)
    count = np.bincount(ring)
    mean = np.bincount(ring, weights=radius) / np.maximum(count, 1)
    return ring, mean


#: Mean pixel radius of each annulus (empty annuli hold no light, whatever their radius).
_RING, PROFILE_RADII = _annuli()


def radial_profiles(models: np.ndarray) -> np.ndarray:
    """Light of each model (G, 128, 128) in annuli of :data:`PROFILE_STEP` px about pixel [64, 64]."""
    profiles = np.empty((len(models), len(PROFILE_RADII)))
    for start in range(0, len(models), 256):  # in chunks: a whole bank in float64 would take ~1 GB
        chunk = np.asarray(models[start:start + 256], np.float64)
        profiles[start:start + len(chunk)] = [np.bincount(_RING, weights=image.ravel(), minlength=len(PROFILE_RADII))
                                              for image in chunk]
    return profiles


def taper_weight(radius, taper_radius):
    """The taper ``1 / (1 + (r / r_t)**6)``: ~1 inside r_t, half at r_t, gone by ~2 r_t (numpy or keras.ops)."""
    return 1.0 / (1.0 + (radius / taper_radius) ** 6)


def _draw_tapers(bank: dict, rows: np.ndarray, rng: np.random.Generator, aug: Augmentation):
    """Taper radii (B, 2) in pixels (inf = none) and the share of each galaxy's true flux they keep."""
    if "radial_profiles" not in bank:
        bank["radial_profiles"] = radial_profiles(bank["models"])  # once per bank (SynthBlends does it up front)
    on = rng.random(rows.shape) < aug.taper_fraction
    low, high = np.log(aug.taper_radius[0]), np.log(aug.taper_radius[1])
    radius = np.exp(rng.uniform(low, high, rows.shape)) * np.maximum(bank["radii"][rows], 1.0)
    radius = np.where(on, radius, np.inf)
    profiles = bank["radial_profiles"][rows]                                  # (B, 2, annuli)
    inside = profiles.sum(axis=-1)
    # Light beyond the stamp (catalogue flux - model sum) is weighted as at the stamp's edge.
    outside = np.maximum(bank["fluxes"][rows] - inside, 0.0)
    weights = taper_weight(PROFILE_RADII, radius[..., None])
    kept = ((profiles * weights).sum(axis=-1) + outside * taper_weight(STAMP_SIZE / 2, radius)) / (inside + outside)
    return radius.astype(np.float32), kept


def _draw_compact(radii: np.ndarray, fluxes: np.ndarray, rng: np.random.Generator, aug: Augmentation):
    """Compact components (B, 2, K, 4): offset dy, dx from the galaxy centre, flux (e-/s), sigma (px)."""
    shape = radii.shape
    k = int(aug.compact_count)
    on = rng.random(shape) < aug.compact_fraction
    count = rng.integers(1, k + 1, shape)
    share = rng.uniform(aug.compact_flux[0], aug.compact_flux[1], shape)
    split = rng.dirichlet(np.ones(k), shape)                                 # (B, 2, K)
    used = np.arange(k) < count[..., None]
    split = np.where(used, split, 0.0)
    split = split / split.sum(axis=-1, keepdims=True)
    distance = np.sqrt(rng.random(shape + (k,))) * aug.compact_reach * np.maximum(radii[..., None], 1.0)
    nucleus = rng.random(shape) < 0.5
    distance[..., 0] = np.where(nucleus, 0.0, distance[..., 0])
    angle = rng.uniform(0.0, 2 * np.pi, shape + (k,))
    sigma = rng.uniform(aug.compact_sigma_px[0], aug.compact_sigma_px[1], shape + (k,))
    flux = np.where(on[..., None], fluxes[..., None] * share[..., None] * split, 0.0)
    return np.stack([distance * np.sin(angle), distance * np.cos(angle), flux, sigma], axis=-1).astype(np.float32)


# ---------------------------------------------------------------------------
# The synthesis itself, in keras.ops (runs on the training device)
# ---------------------------------------------------------------------------
def _galaxy_grid(offsets):
    """Output pixel coordinates (B, H, W) y and x about one galaxy's centre (offsets (B, 2))."""
    from keras import ops

    grid = ops.arange(STAMP_SIZE, dtype="float32") - float(STAMP_SIZE // 2)
    gy = ops.reshape(grid, (1, -1, 1)) - ops.reshape(offsets[:, 0], (-1, 1, 1)) + ops.zeros((1, 1, STAMP_SIZE))
    gx = ops.reshape(grid, (1, 1, -1)) - ops.reshape(offsets[:, 1], (-1, 1, 1)) + ops.zeros((1, STAMP_SIZE, 1))
    return gy, gx


def _source_coordinates(offsets, dihedral):
    """Where each output pixel reads from in the (centred) galaxy model, (B, H, W) y and x."""
    from keras import ops

    centre = float(STAMP_SIZE // 2)
    gy, gx = _galaxy_grid(offsets)
    # Undo the symmetry: output = model transformed by (swap, flip y, flip x) applied last to first.
    code = ops.reshape(dihedral, (-1, 1, 1))
    flip_x = ops.cast(code % 2, "float32")
    flip_y = ops.cast((code // 2) % 2, "float32")
    swap = ops.cast(code // 4, "float32")
    gx = gx * (1.0 - 2.0 * flip_x)
    gy = gy * (1.0 - 2.0 * flip_y)
    sy = swap * gx + (1.0 - swap) * gy
    sx = swap * gy + (1.0 - swap) * gx
    return sy + centre, sx + centre


def _resample(images, sy, sx, order: int):
    """Bilinear (order 1) or nearest (order 0) samples of *images* (B, H, W) at (sy, sx); zero outside."""
    from keras import ops

    size = STAMP_SIZE
    batch = ops.shape(images)[0]
    flat = ops.reshape(images, (batch, size * size))

    def tap(yi, xi):
        inside = (yi >= 0) & (yi <= size - 1) & (xi >= 0) & (xi <= size - 1)
        index = ops.cast(ops.clip(yi, 0, size - 1) * size + ops.clip(xi, 0, size - 1), "int32")
        values = ops.take_along_axis(flat, ops.reshape(index, (batch, size * size)), axis=1)
        return ops.reshape(values, (batch, size, size)) * ops.cast(inside, flat.dtype)

    if order == 0:
        return tap(ops.floor(sy + 0.5), ops.floor(sx + 0.5))
    y0, x0 = ops.floor(sy), ops.floor(sx)
    wy, wx = sy - y0, sx - x0
    return ((1 - wy) * (1 - wx) * tap(y0, x0) + (1 - wy) * wx * tap(y0, x0 + 1)
            + wy * (1 - wx) * tap(y0 + 1, x0) + wy * wx * tap(y0 + 1, x0 + 1))


def _separable(images, weights):
    """Convolve each image with its own separable kernel: weights (B, 2r+1), along rows then columns."""
    from keras import ops

    size = STAMP_SIZE
    radius = (int(weights.shape[-1]) - 1) // 2
    padded = ops.pad(images, [[0, 0], [radius, radius], [0, 0]])
    out = 0.0
    for k in range(2 * radius + 1):
        out = out + ops.reshape(weights[:, k], (-1, 1, 1)) * padded[:, k:k + size, :]
    padded = ops.pad(out, [[0, 0], [0, 0], [radius, radius]])
    out = 0.0
    for k in range(2 * radius + 1):
        out = out + ops.reshape(weights[:, k], (-1, 1, 1)) * padded[:, :, k:k + size]
    return out


def _compact_light(gy, gx, points):
    """Sum of normalised Gaussians (B, H, W); points (B, K, 4) = (dy, dx, flux, sigma) about the centre."""
    from keras import ops

    light = 0.0
    for k in range(int(points.shape[1])):
        dy, dx, flux, sigma = (ops.reshape(points[:, k, i], (-1, 1, 1)) for i in range(4))
        r2 = ops.square(gy - dy) + ops.square(gx - dx)
        light = light + flux * ops.exp(-0.5 * r2 / ops.square(sigma)) / (2.0 * math.pi * ops.square(sigma))
    return light


def synthesize(models, masks, central, companion, offsets, dihedral, flux_factors, blur_sigma, noise_rms,
               correlation, inverse_exposure, noise_seed, taper_radius=None, points=None):
    """Noisy blends (B, H, W) and their true masks (B, H, W, 2) from a plan (keras.ops tensors).

    *taper_radius* (B, 2) and *points* (B, 2, K, 4) are the optional round-5
    augmentations (:class:`BatchPlan`); None leaves them out.
    """
    import keras
    from keras import ops

    galaxies, targets = [], []
    for role, rows in enumerate((central, companion)):
        image = ops.take(models, rows, axis=0)
        mask = ops.cast(ops.take(masks, rows, axis=0), "float32")
        sy, sx = _source_coordinates(offsets[:, role], dihedral[:, role])
        light = _resample(image, sy, sx, order=1) * ops.reshape(flux_factors[:, role], (-1, 1, 1))
        if taper_radius is not None or points is not None:
            gy, gx = _galaxy_grid(offsets[:, role])
            if taper_radius is not None:
                light = light * taper_weight(ops.sqrt(ops.square(gy) + ops.square(gx)),
                                             ops.reshape(taper_radius[:, role], (-1, 1, 1)))
            if points is not None:
                light = light + _compact_light(gy, gx, points[:, role])
        galaxies.append(light)
        targets.append(_resample(mask, sy, sx, order=0))
    clean = galaxies[0] + galaxies[1]
    # PSF variation: one extra Gaussian blur of the whole blend (sigma 0 = identity).
    taps = ops.arange(-3, 4, dtype="float32")
    sigma = ops.reshape(ops.maximum(blur_sigma, 1e-3), (-1, 1))
    kernel = ops.exp(-0.5 * ops.square(taps[None, :] / sigma))
    clean = _separable(clean, kernel / ops.sum(kernel, axis=1, keepdims=True))
    # Background: white, or drizzle-like [a, 1, a] per axis normalised to unit variance.
    shape = ops.shape(clean)
    white = keras.random.normal(shape, seed=noise_seed)
    a = ops.reshape(correlation, (-1, 1))
    kernel = ops.concatenate([a, ops.ones_like(a), a], axis=1) / ops.sqrt(1.0 + 2.0 * ops.square(a))
    background = _separable(white, kernel) * ops.reshape(noise_rms, (-1, 1, 1))
    shot = keras.random.normal(shape, seed=noise_seed + 1) * ops.sqrt(
        ops.maximum(clean, 0.0) * ops.reshape(inverse_exposure, (-1, 1, 1)))
    blends = clean + background + shot
    return blends, ops.stack(targets, axis=-1)


def compiled_synthesize():
    """:func:`synthesize`, jit-compiled under JAX (the training backend on GPUs).

    JAX takes the noise seed as a (2,) tensor, so one compilation serves every
    batch; the other backends take integer seeds (``keras.random``'s rule) and
    run eagerly (they serve tests and CPU runs, where the network dominates).
    """
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(synthesize)

    def eager(*args, **options):
        *rest, seed = args
        seed = np.asarray(seed, np.uint64)
        return synthesize(*rest, int((seed[0] << np.uint64(16)) ^ seed[-1]) % (2**31 - 2), **options)

    return eager


class SynthBlends:
    """Training batches made on the device from a galaxy bank (a ``training/data.py`` source).

    Parameters
    ----------
    bank : dict
        From :func:`load_bank` (the training galaxies only).
    blends_per_epoch, batch_size, seed, targets
        As for :class:`training.data.StreamBlends`.
    augmentation : Augmentation
    rule : str
        Shift rule of :mod:`napari_blendphot.blend.pairing`.
    """

    def __init__(self, bank: dict, blends_per_epoch: int, batch_size: int, seed: int, targets=("fluxes",),
                 augmentation: Augmentation | None = None, rule: str = "published"):
        from keras import ops

        from napari_blendphot.blend.pairing import MAX_DMAG, CompanionTable

        self.bank = bank
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.targets = tuple(targets)
        self.augmentation = augmentation or Augmentation()
        self.rule = rule
        self.steps_per_epoch = int(blends_per_epoch) // self.batch_size
        if self.steps_per_epoch == 0:
            raise InputError("data.blends_per_epoch", f"{blends_per_epoch} is less than one batch")
        self._companions = CompanionTable(bank["mags"], MAX_DMAG)
        if self.augmentation.taper_fraction > 0 and "radial_profiles" not in bank:
            # Before the data workers' threads start drawing plans.
            bank["radial_profiles"] = radial_profiles(bank["models"])
        # The bank lives on the device for the whole run.
        self._models = ops.convert_to_tensor(bank["models"])
        self._masks = ops.convert_to_tensor(bank["masks"])
        self._synthesize = compiled_synthesize()

    def plan(self, epoch: int, index: int) -> BatchPlan:
        rng = np.random.default_rng([self.seed, int(epoch), 3, int(index)])
        return plan_batch(self.bank, self.batch_size, rng, self.augmentation, self.rule, self._companions)

    def make(self, plan: BatchPlan):
        """``(blends, masks)`` device tensors of a plan."""
        return self._synthesize(self._models, self._masks, plan.central, plan.companion, plan.offsets,
                                plan.dihedral, plan.flux_factors, plan.blur_sigma, plan.noise_rms,
                                plan.correlation, plan.inverse_exposure, plan.noise_seed,
                                **plan.synthesis_options())

    def batch(self, epoch: int, index: int):
        plan = self.plan(epoch, index)
        blends, masks = self.make(plan)
        y = {}
        if "fluxes" in self.targets:
            y["fluxes"] = plan.fluxes
        if "masks" in self.targets:
            y["masks"] = masks
        return blends, y

    def epoch_batches(self, epoch: int):
        for index in range(self.steps_per_epoch):
            yield lambda index=index: self.batch(epoch, index)

    def fixed_set(self, n: int, seed: int):
        """*n* blends made once with their own seed (validation), as numpy arrays, plus their plans' extras."""
        from keras import ops

        rng = np.random.default_rng([int(seed), 11])
        xs, fluxes, masks = [], [], []
        for start in range(0, n, self.batch_size):
            size = min(self.batch_size, n - start)
            plan = plan_batch(self.bank, size, rng, self.augmentation, self.rule, self._companions)
            blends, target = self.make(plan)
            xs.append(ops.convert_to_numpy(blends))
            fluxes.append(plan.fluxes)
            if "masks" in self.targets:
                masks.append(ops.convert_to_numpy(target).astype(np.uint8))
        y = {}
        if "fluxes" in self.targets:
            y["fluxes"] = np.concatenate(fluxes)
        if "masks" in self.targets:
            y["masks"] = np.concatenate(masks)
        return np.concatenate(xs).astype(np.float32), y
