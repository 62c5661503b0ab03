"""The classical baseline: SExtractor's detection run through ``sep`` in two passes.

Boucaud et al. 2020 (SPEC §5) run a "cold" detection on every blend and, where
it finds a single source, a more aggressive "hot" one.  The sources found are
then assigned to the central and companion galaxies with the paper's rules
(:mod:`napari_blendphot.match.assign`), and each galaxy's flux is measured.

Differences from the paper's code, all switchable:

* ``subtract_background=True`` subtracts sep's background map before detection
  and photometry (the paper's code did not: ``False`` reproduces it).  The
  global rms is measured by ``sep.Background`` either way; thresholds are in
  units of it and it is the per-pixel error of the flux sums.  By default the
  background mesh is the whole 128-pixel stamp (``background_box=128``): the
  stamps are small sky-subtracted cutouts, so a constant level is the right
  model, it is not pulled up by a galaxy filling a 64-pixel mesh, and it costs
  half of SExtractor's default 64-pixel meshes (which ``background_box=64``
  gives, with a 3x3 mesh filter).
* ``photometry="auto"`` measures a FLUX_AUTO-like Kron flux (the usual
  SExtractor choice); ``"iso"`` is the isophotal sum over the source's
  segment (what the paper's code used).
* ``mask_other_segments=True``: for the Kron flux, pixels belonging to *other*
  detected sources (sep's segmentation map) are left out of the Kron radius
  and of the aperture sum.  Without it, the elliptical aperture of a blended
  galaxy swallows much of its neighbour (it roughly doubles the flux of
  close, similar pairs); with it, the part of a galaxy that lies in its
  neighbour's segment is lost instead, like SExtractor's ``MASK_TYPE BLANK``.
  The bias is far smaller that way, so it is the default.

Kron aperture (SExtractor's ``PHOT_AUTOPARAMS 2.5, 3.5``): the Kron radius is
measured within 6 times the source's isophotal ellipse; the aperture is the
ellipse scaled by ``max(2.5 * kron_radius, 3.5)`` and summed over whole pixels
(no sub-pixel sampling, as SExtractor's AUTO apertures; also the faster).  Where the Kron radius is
undefined (non-positive or not finite, e.g. a source with negative first
moment), the ellipse is degenerate, or the aperture would be smaller than a
circle of radius 1.75 px (the 3.5 px minimum diameter sep's documentation
recommends), a circular aperture of 1.75 px is summed instead.

Per blend outputs (``DeblendOutput.extra``):

``detection`` int8
    -1 nothing assigned, 0 only the central, 1 only the companion, 2 both,
    3 more than two sources found (the two brightest assigned).
``n_sources`` int16
    Number of sources in the pass whose result is kept (0 if none or failed).
``pass`` int8
    0 cold, 1 hot; -1 sep not run because the stamp has no noise (all-zero or
    constant: global rms 0); -2 sep raised an error on this blend.
``assignment`` int8
    1: the true companion position decided (paper's rules); 0: heuristic
    (central = closest to the centre, companion = brightest other).

Flux errors: the background noise only (the stamps carry no gain to add the
sources' Poisson noise): ``rms * sqrt(n)`` over the ``n`` pixels summed, for
the Kron sums (``sep.sum_ellipse(err=rms)``) and the isophotal ones (the
segment's ``npix``) alike.  They say nothing about deblending errors, which
dominate in blends: see :mod:`napari_blendphot.metrics.calibration`.

:class:`SepPaper` (registered as ``seppaper``) is the configuration of the
paper's code: no background subtraction, isophotal fluxes, sep's default
64-pixel background meshes for the rms.

Masks are the sep segments of the assigned sources, float32 0/1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import threading
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from napari_blendphot.constants import STAMP_SIZE
from napari_blendphot.deblend.base import BlendContext, DeblendOutput, ProgressCallback, check_blends
from napari_blendphot.errors import InputError
from napari_blendphot.match.assign import DETECTION_NONE, assign_detections

#: ``pass`` codes for blends sep could not process.
PASS_NO_NOISE = -1
PASS_SEP_ERROR = -2
#: Kron aperture settings (SExtractor defaults, see module docstring).
KRON_MEASURE_SCALE = 6.0
KRON_FACTOR = 2.5
KRON_MIN_RADIUS = 3.5
MIN_CIRCULAR_RADIUS = 1.75
#: Whole-pixel aperture sums (SExtractor's AUTO photometry does not sub-sample).
APERTURE_SUBPIX = 1
#: Below this many blends a process pool costs more than it saves.
PARALLEL_MIN_BLENDS = 256
#: How often (in blends) the serial loop reports progress.
PROGRESS_EVERY = 64

ASSIGNMENT_NOTE = ("assignment 1: detections matched to the true central (stamp centre) and companion "
                   "(centre + [dy, dx]) positions with the paper's rules; 0: heuristic without the truth, "
                   "central = detection closest to the centre, companion = brightest other detection")


@dataclass(frozen=True)
class SepPassParameters:
    """Detection settings of one sep pass.

    threshold : detection threshold in units of the global background rms.
    minarea : minimum number of pixels above threshold.
    deblend_cont : minimum contrast ratio for a branch to become a source.
    deblend_nthresh : number of deblending sub-thresholds.
    """

    threshold: float
    minarea: int
    deblend_cont: float
    deblend_nthresh: int = 64


#: The paper's passes (SPEC §5).
COLD_PASS = SepPassParameters(threshold=5.0, minarea=10, deblend_cont=0.01, deblend_nthresh=64)
HOT_PASS = SepPassParameters(threshold=4.0, minarea=6, deblend_cont=0.0001, deblend_nthresh=64)


@dataclass(frozen=True)
class SepTwoPass:
    """SExtractor-like two-pass detection and photometry with ``sep``.

    Parameters
    ----------
    subtract_background : bool
        Subtract sep's background map first (``False`` = the paper's code).
    background_box : int
        Side of sep's background meshes in pixels; 128 (default) = one mesh,
        a constant background per stamp.
    photometry : {"auto", "iso"}
        Kron (FLUX_AUTO-like) or isophotal flux.
    cold, hot : SepPassParameters
        The two passes; hot runs only where cold found exactly one source.
    mask_other_segments : bool
        Leave other sources' segment pixels out of Kron radii and sums.
    n_jobs : int or None
        Processes for large batches (None = all available cores; 1 = in-process).
        The pool is kept for later calls (see :mod:`~napari_blendphot.deblend.parallel`).

    Notes
    -----
    While it runs, sep's pixel stack is sized to one stamp
    (:func:`stamp_sized_pixel_stack`): same results, a third less time per
    ``sep.extract`` call than with sep's default stack.
    """

    subtract_background: bool = True
    photometry: str = "auto"
    background_box: int = 128
    cold: SepPassParameters = COLD_PASS
    hot: SepPassParameters = HOT_PASS
    mask_other_segments: bool = True
    n_jobs: int | None = 1

    name: ClassVar[str] = "sep"
    label: ClassVar[str] = "SEP two-pass, Kron FLUX_AUTO, MASK_TYPE BLANK"
    makes_masks: ClassVar[bool] = True
    needs_worker: ClassVar[bool] = False

    def __post_init__(self):
        if self.photometry not in ("auto", "iso"):
            raise InputError("option photometry", f"{self.photometry!r} is not a photometry mode",
                             "use 'auto' (Kron) or 'iso' (isophotal)")
        if not (isinstance(self.background_box, (int, np.integer)) and 8 <= self.background_box):
            raise InputError("option background_box", f"{self.background_box!r} is not a mesh size in pixels",
                             "use 128 (one mesh per stamp) or e.g. 64")
        if self.n_jobs is not None and (not isinstance(self.n_jobs, (int, np.integer)) or self.n_jobs < 1):
            raise InputError("option n_jobs", f"{self.n_jobs!r} is not a positive number of processes",
                             "use 1 for in-process, None for all cores")
        check_pass_settings(self)

    # ------------------------------------------------------------------ API
    def deblend(self, blends, context: BlendContext | None = None,
                progress: ProgressCallback | None = None) -> DeblendOutput:
        """Detect, assign and measure the two galaxies of every blend.

        Parameters
        ----------
        blends : array (N, 128, 128) or (128, 128)
            Any numeric dtype and byte order; NaN/inf refused.
        context : BlendContext, optional
            True companion shifts (and central radii) for the paper's assignment.
        progress : callable(done, total), optional
            Called as blends complete; raising from it cancels.
        """
        blends = check_blends(blends)
        shifts, radii = _context_arrays(context, len(blends))
        n_jobs = _resolve_jobs(self.n_jobs)
        if n_jobs > 1 and len(blends) >= PARALLEL_MIN_BLENDS:
            from napari_blendphot.deblend.parallel import deblend_in_processes

            output = deblend_in_processes(self, blends, context, n_jobs=n_jobs, progress=progress)
            output.metadata = self._metadata(output.extra)
            return output
        with stamp_sized_pixel_stack(blends.shape[1] * blends.shape[2]):
            return self._deblend_serial(blends, shifts, radii, progress)

    # ------------------------------------------------------------ internals
    def _deblend_serial(self, blends, shifts, radii, progress) -> DeblendOutput:
        n_blends = len(blends)
        out = _BatchOutputs(n_blends, blends.shape[1:])
        if shifts is not None:
            out.assignment[:] = np.isfinite(shifts).all(axis=1)
        # A constant stamp (all-zero padding, a blank cutout) has no noise to set a
        # threshold; sep.Background then reports rms 1.0 as a placeholder, so test
        # first (one pass over the batch instead of two reductions per stamp).
        flat = blends.reshape(n_blends, -1)
        constant = flat.min(axis=1) == flat.max(axis=1)
        out.pass_used[constant] = PASS_NO_NOISE
        for index in range(n_blends):
            if not constant[index]:
                shift = None if shifts is None else shifts[index]
                radius = None if radii is None else radii[index]
                self._measure_blend(blends[index], shift, radius, out, index)
            if progress is not None and ((index + 1) % PROGRESS_EVERY == 0 or index + 1 == n_blends):
                progress(index + 1, n_blends)
        extra = {
            "detection": out.detection,
            "n_sources": out.n_sources,
            "pass": out.pass_used,
            "assignment": out.assignment,
        }
        return DeblendOutput(self.name, out.fluxes, out.masks, extra, self._metadata(extra), out.flux_errors)

    def _background(self, stamp: np.ndarray):
        """sep's background of *stamp* and its global rms (the detection error)."""
        import sep

        background = sep.Background(stamp, bw=self.background_box, bh=self.background_box,
                                    fw=self._filter_size, fh=self._filter_size)
        return background, float(background.globalrms)

    def _subtracted(self, stamp: np.ndarray, background) -> np.ndarray:
        """The image the passes detect on: *stamp* minus its background, unless that is switched off."""
        if not self.subtract_background:
            return stamp
        if self._single_mesh:
            # One mesh: the background is a constant, a scalar subtraction (no map needed).
            return stamp - np.float32(background.globalback)
        return stamp - background.back(dtype=np.float32)

    def _measure_blend(self, stamp: np.ndarray, shift, radius, out: "_BatchOutputs", row: int) -> None:
        """Detect, assign and measure one (non-constant) blend into row *row* of *out*.

        *out* starts as "nothing found" (NaN fluxes, zero masks, detection -1,
        pass 0, assignment = whether a true shift is known), so the early exits
        only set what differs.
        """
        try:
            background, rms = self._background(stamp)
            if not (math.isfinite(rms) and rms > 0):
                out.pass_used[row] = PASS_NO_NOISE
                return
            data = self._subtracted(stamp, background)
            objects, segmap = self._extract(data, rms, self.cold)
            pass_used = 0
            if len(objects) == 1:
                objects, segmap = self._extract(data, rms, self.hot)
                pass_used = 1
            out.pass_used[row] = pass_used
            if len(objects) == 0:
                return
            if self.photometry == "auto":
                flux, flux_error = self._kron_flux(data, objects, segmap, rms)
            else:
                flux = objects["flux"].astype(np.float64)
                flux_error = rms * np.sqrt(objects["npix"].astype(np.float64))
        except Exception:  # sep signals every failure with a bare Exception; keep the batch going
            out.pass_used[row] = PASS_SEP_ERROR
            return

        chosen = assign_detections(objects["x"], objects["y"], flux, companion_shift=shift, central_radius=radius)
        for slot, source in enumerate((chosen.central, chosen.companion)):
            if source >= 0:
                out.fluxes[row, slot] = flux[source]
                out.flux_errors[row, slot] = flux_error[source]
                # Segment ids in sep's map are 1 + the source's row in ``objects``.
                _write_segment_mask(segmap, objects[source], source + 1, out.masks[row, slot])
        out.detection[row] = chosen.detection
        out.n_sources[row] = len(objects)
        out.assignment[row] = int(chosen.used_truth)

    @property
    def _single_mesh(self) -> bool:
        return self.background_box >= STAMP_SIZE

    @property
    def _filter_size(self) -> int:
        # A single mesh has no neighbours to filter with.
        return 1 if self._single_mesh else 3

    @staticmethod
    def _extract(data, rms, params: SepPassParameters):
        import sep

        return sep.extract(data, params.threshold, err=rms, minarea=params.minarea,
                           deblend_cont=params.deblend_cont, deblend_nthresh=params.deblend_nthresh,
                           segmentation_map=True)

    def _kron_flux(self, data, objects, segmap, rms):
        """FLUX_AUTO-like sums for all sources of one blend at once (vectorised over sources).

        The common case (every ellipse and Kron radius well defined) skips the
        placeholder arithmetic; the values passed to sep are the same either way.
        """
        import sep

        x, y = objects["x"], objects["y"]
        a, b, theta = objects["a"], objects["b"], objects["theta"]
        masking = {}
        if self.mask_other_segments:
            masking = {"seg_id": np.arange(1, len(objects) + 1, dtype=np.int32), "segmap": segmap}
        good_shape = (a > 0) & (b > 0) & np.isfinite(a) & np.isfinite(b)
        all_good_shapes = bool(good_shape.all())
        if all_good_shapes:
            a_safe, b_safe, theta_safe = a, b, theta
        else:
            # Degenerate ellipses get a placeholder shape; they are replaced by the circle below.
            a_safe = np.where(good_shape, a, 1.0)
            b_safe = np.where(good_shape, b, 1.0)
            theta_safe = np.where(good_shape, theta, 0.0)
        kron_radius, _ = sep.kron_radius(data, x, y, a_safe, b_safe, theta_safe, KRON_MEASURE_SCALE, **masking)
        defined = np.isfinite(kron_radius) & (kron_radius > 0)
        if all_good_shapes and defined.all():
            scale = np.maximum(KRON_FACTOR * kron_radius, KRON_MIN_RADIUS)
            use_circle = scale * np.sqrt(a * b) < MIN_CIRCULAR_RADIUS
        else:
            defined &= good_shape
            scale = np.where(defined, np.maximum(KRON_FACTOR * np.where(defined, kron_radius, 0.0), KRON_MIN_RADIUS),
                             1.0)
            use_circle = ~defined | (scale * np.sqrt(a_safe * b_safe) < MIN_CIRCULAR_RADIUS)
        flux, flux_error, _ = sep.sum_ellipse(data, x, y, a_safe, b_safe, theta_safe, scale, err=rms,
                                              subpix=APERTURE_SUBPIX, **masking)
        if use_circle.any():
            circle_masking = {}
            if masking:
                circle_masking = {"seg_id": masking["seg_id"][use_circle], "segmap": segmap}
            circle_flux, circle_error, _ = sep.sum_circle(data, x[use_circle], y[use_circle], MIN_CIRCULAR_RADIUS,
                                                          err=rms, subpix=APERTURE_SUBPIX, **circle_masking)
            flux = flux.copy()
            flux_error = flux_error.copy()
            flux[use_circle] = circle_flux
            flux_error[use_circle] = circle_error
        return np.asarray(flux, np.float64), np.asarray(flux_error, np.float64)

    def _metadata(self, extra: dict) -> dict:
        passes = extra["pass"]
        config = dataclasses.asdict(self)
        return {
            "method": self.name,
            "label": self.label,
            "config": config,
            "sep_version": _sep_version(),
            "assignment_note": ASSIGNMENT_NOTE,
            "pass_codes": {"0": "cold", "1": "hot", "-1": "not run: stamp without noise (rms 0)",
                           "-2": "sep raised an error"},
            "detection_codes": {"-1": "none", "0": "only central", "1": "only companion", "2": "both",
                                "3": "more than two (two brightest assigned)"},
            "n_not_run": int((passes == PASS_NO_NOISE).sum()),
            "n_sep_errors": int((passes == PASS_SEP_ERROR).sum()),
        }


@dataclass(frozen=True)
class SepPaper(SepTwoPass):
    """The paper's configuration of the two passes (Boucaud et al. 2020's "SExtractor").

    The paper's code ran sep without subtracting the background, measured the
    isophotal flux of each source (the sum over its deblended segment) and took
    the detection rms from ``sep.Background`` with its default 64-pixel meshes.
    Same detection passes and assignment as :class:`SepTwoPass`.
    """

    subtract_background: bool = False
    photometry: str = "iso"
    background_box: int = 64

    name: ClassVar[str] = "seppaper"
    label: ClassVar[str] = "SEP two-pass, paper set-up (isophotal, no background)"


@functools.lru_cache(maxsize=1)
def _sep_version() -> str:
    """sep's installed version (looked up once: it costs ~0.4 ms, per chunk and per single-blend call)."""
    from importlib import metadata as importlib_metadata

    return importlib_metadata.version("sep")


class _BatchOutputs:
    """The per-blend output arrays of a batch, initialised to "nothing found"."""

    def __init__(self, n_blends: int, stamp_shape: tuple):
        self.fluxes = np.full((n_blends, 2), np.nan)
        self.flux_errors = np.full((n_blends, 2), np.nan)
        self.masks = np.zeros((n_blends, 2) + tuple(stamp_shape), np.float32)
        self.detection = np.full(n_blends, DETECTION_NONE, np.int8)
        self.n_sources = np.zeros(n_blends, np.int16)
        self.pass_used = np.zeros(n_blends, np.int8)
        self.assignment = np.zeros(n_blends, np.int8)


def _write_segment_mask(segmap: np.ndarray, source_row, segment_id: int, mask_out: np.ndarray) -> None:
    """Set *mask_out* (all zeros on entry) to 1 on the pixels of segment *segment_id*.

    Only the source's bounding box is written: sep fills the segmentation map,
    the box (``xmin``...``ymax``) and ``npix`` from the same pixel list, so the
    segment lies inside the box.  That is checked (the box must hold ``npix``
    segment pixels) and the whole map compared otherwise.  Writing a box instead
    of the full 128 x 128 slot leaves most pages of a large, mostly empty mask
    array untouched, which is where the time went.
    """
    y0, y1 = int(source_row["ymin"]), int(source_row["ymax"]) + 1
    x0, x1 = int(source_row["xmin"]), int(source_row["xmax"]) + 1
    window = segmap[y0:y1, x0:x1] == segment_id
    if np.count_nonzero(window) == int(source_row["npix"]):
        mask_out[y0:y1, x0:x1] = window
    else:
        np.equal(segmap, segment_id, out=mask_out, casting="unsafe")


_pixel_stack_lock = threading.Lock()
_pixel_stack_users = 0
_pixel_stack_saved = None


@contextlib.contextmanager
def stamp_sized_pixel_stack(n_pixels: int):
    """Size sep's pixel stack to one stamp while the block runs, then restore it.

    ``sep.extract`` allocates its pixel stack (``sep.get_extract_pixstack()``
    entries, 300,000 by default) and links every entry into a free list on each
    call: ~0.25 ms of a ~0.8 ms cold pass on a 128 x 128 stamp goes to that
    alone.  A stamp never has more than ``n_pixels`` pixels above threshold and
    sep fails only when all but one entry are in use, so ``n_pixels + 2``
    entries give the same results without the waste (and without depending on
    whatever stack size the process had set).  The setting is process-wide:
    nested and concurrent users share it under a lock and the first value is
    restored when the last one leaves.  sep calls made meanwhile by unrelated
    code on images larger than a stamp could overflow it.
    """
    import sep

    global _pixel_stack_users, _pixel_stack_saved
    needed = int(n_pixels) + 2
    with _pixel_stack_lock:
        if _pixel_stack_users == 0:
            _pixel_stack_saved = sep.get_extract_pixstack()
            sep.set_extract_pixstack(needed)
        elif sep.get_extract_pixstack() < needed:
            sep.set_extract_pixstack(needed)
        _pixel_stack_users += 1
    try:
        yield
    finally:
        with _pixel_stack_lock:
            _pixel_stack_users -= 1
            if _pixel_stack_users == 0:
                sep.set_extract_pixstack(_pixel_stack_saved)
                _pixel_stack_saved = None


def _resolve_jobs(n_jobs) -> int:
    if n_jobs is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
    return int(n_jobs)


def check_pass_settings(method) -> None:
    """The ``cold`` and ``hot`` detection settings of a two-pass method are valid, else one line naming the pass."""
    for pass_name in ("cold", "hot"):
        params = getattr(method, pass_name)
        if not (params.threshold > 0 and params.minarea >= 1 and 0 <= params.deblend_cont <= 1
                and params.deblend_nthresh >= 1):
            raise InputError(f"option {pass_name}", f"invalid detection settings {params}")


def start_batch(blends, context: BlendContext | None):
    """(checked blends, shifts, radii, empty per-blend outputs) at the start of a two-galaxy batch.

    Shared by the detection-based methods (photutils, scarlet2): the
    outputs' assignment flags are set where the companion's shift is known.
    """
    blends = check_blends(blends)
    shifts, radii = _context_arrays(context, len(blends))
    out = _BatchOutputs(len(blends), blends.shape[1:])
    if shifts is not None:
        out.assignment[:] = np.isfinite(shifts).all(axis=1)
    return blends, shifts, radii, out


def _context_arrays(context: BlendContext | None, n_blends: int):
    """Validated (shifts (N, 2) float or None, radii (N,) float or None)."""
    if context is None:
        return None, None
    shifts = radii = None
    if context.companion_shift is not None:
        shifts = np.asarray(context.companion_shift, dtype=np.float64)
        if shifts.ndim == 1 and shifts.shape == (2,) and n_blends == 1:
            shifts = shifts[None]
        if shifts.shape != (n_blends, 2):
            raise InputError("context.companion_shift", f"shape {shifts.shape}, expected ({n_blends}, 2) [dy, dx]")
    if context.central_radius is not None:
        radii = np.asarray(context.central_radius, dtype=np.float64).reshape(-1)
        if radii.shape != (n_blends,):
            raise InputError("context.central_radius", f"{radii.size} values for {n_blends} blends")
    return shifts, radii
