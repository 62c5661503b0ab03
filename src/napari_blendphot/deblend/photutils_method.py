"""photutils' segmentation deblender in the paper's two passes.

The SPEC §5 protocol with photutils instead of sep: per blend, the ``sep``
method's background (one constant per stamp, its global rms as the noise) is
subtracted, the stamp is convolved with SExtractor's default 3x3 pyramid
kernel (``default.conv``, normalised to unit sum), and

* ``detect_sources(convolved, threshold * rms, minarea)`` (8-connected)
  finds the segments and ``deblend_sources(convolved, ..., n_levels=64,
  contrast=deblend_cont, mode="exponential")`` splits them: the cold pass
  (5 rms, 10 pixels, contrast 0.01), then the hot pass (4 rms, 6 pixels,
  0.0001) where the cold one found a single source;
* ``SourceCatalog`` measures each source's Kron flux and its error on the
  unconvolved stamp with SExtractor's settings: ``kron_params=(2.5, 1.4,
  1.75)`` (Kron factor 2.5, minimum scaled radius 3.5 = 2.5 x 1.4, a 1.75-pixel
  circle below that) and ``aperture_mask_method="correct"`` (the neighbours'
  pixels replaced by their mirror image, SExtractor's MASK_TYPE CORRECT);
  centroids and shapes come from the convolved stamp, as photutils advises.

Sources are assigned with :mod:`napari_blendphot.match.assign`.  The error
image is the global rms everywhere (background noise only, like sep's and
SExtractor's with GAIN 0).  A blend on which photutils raises is marked
not measured (``pass`` -2) and the batch goes on.

Per-blend extras as the ``sep`` method's: ``detection``, ``n_sources``,
``pass`` (0 cold, 1 hot, -1 stamp without noise, -2 failed), ``assignment``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import inspect
import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from napari_blendphot.deblend.base import BlendContext, DeblendOutput, ProgressCallback
from napari_blendphot.deblend.sep_baseline import (ASSIGNMENT_NOTE, COLD_PASS, HOT_PASS, PASS_NO_NOISE,
                                                 PASS_SEP_ERROR, PROGRESS_EVERY, SepPassParameters, SepTwoPass,
                                                 _BatchOutputs, check_pass_settings, start_batch)
from napari_blendphot.errors import InputError
from napari_blendphot.match.assign import assign_detections

INSTALL_HINT = "pip install 'photutils>=2.0'"
#: SExtractor's PHOT_AUTOPARAMS 2.5, 3.5 and its 1.75-pixel circle, in photutils' terms.
KRON_PARAMS = (2.5, 1.4, 1.75)
#: SExtractor's default.conv, normalised to unit sum (sep's default kernel too).
DEFAULT_KERNEL = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0


def unavailable_reason() -> str | None:
    """Why the ``photutils`` method cannot run here (None if it can)."""
    if importlib.util.find_spec("photutils") is None:
        return f"the photutils package is not installed; {INSTALL_HINT}"
    return None


@functools.lru_cache(maxsize=1)
def _keywords() -> dict:
    """photutils' keyword names (3.0 renamed npixels -> n_pixels, nlevels -> n_levels, ...)."""
    from photutils.segmentation import deblend_sources

    new = "n_pixels" in inspect.signature(deblend_sources).parameters
    return {"pixels": "n_pixels" if new else "npixels", "levels": "n_levels" if new else "nlevels",
            "mask_method": "aperture_mask_method" if new else "apermask_method"}


@functools.lru_cache(maxsize=1)
def _photutils_version() -> str:
    from importlib import metadata

    return metadata.version("photutils")


@dataclass(frozen=True)
class PhotutilsTwoPass:
    """photutils detect_sources + deblend_sources + SourceCatalog Kron fluxes, two passes.

    Parameters
    ----------
    cold, hot : SepPassParameters
        Thresholds (x rms), minimum areas, contrasts and number of levels of the two passes.
    aperture_mask_method : {"correct", "mask", "none"}
        How the neighbours' pixels inside a Kron aperture are treated
        (default ``"correct"``: SExtractor's MASK_TYPE CORRECT).
    """

    cold: SepPassParameters = COLD_PASS
    hot: SepPassParameters = HOT_PASS
    aperture_mask_method: str = "correct"

    name: ClassVar[str] = "photutils"
    label: ClassVar[str] = "photutils (segmentation + deblending, Kron flux)"
    makes_masks: ClassVar[bool] = True
    needs_worker: ClassVar[bool] = False

    def __post_init__(self):
        if self.aperture_mask_method not in ("correct", "mask", "none"):
            raise InputError("option aperture_mask_method", f"{self.aperture_mask_method!r} is not a mask method",
                             "use 'correct', 'mask' or 'none'")
        check_pass_settings(self)

    def deblend(self, blends, context: BlendContext | None = None,
                progress: ProgressCallback | None = None) -> DeblendOutput:
        """Detect, deblend, assign and measure both galaxies of every blend."""
        reason = unavailable_reason()
        if reason:
            raise InputError(f"method {self.name!r}", reason)
        blends, shifts, radii, out = start_batch(blends, context)
        n_blends = len(blends)
        background_step = SepTwoPass()
        flat = blends.reshape(n_blends, -1)
        constant = flat.min(axis=1) == flat.max(axis=1)
        out.pass_used[constant] = PASS_NO_NOISE
        with warnings.catch_warnings():
            # "No sources were found" and friends: a blend without sources is an outcome, not a warning.
            warnings.simplefilter("ignore")
            for index in range(n_blends):
                if not constant[index]:
                    shift = None if shifts is None else shifts[index]
                    radius = None if radii is None else radii[index]
                    self._measure_blend(background_step, blends[index], shift, radius, out, index)
                if progress is not None and ((index + 1) % PROGRESS_EVERY == 0 or index + 1 == n_blends):
                    progress(index + 1, n_blends)
        extra = {"detection": out.detection, "n_sources": out.n_sources, "pass": out.pass_used,
                 "assignment": out.assignment}
        return DeblendOutput(self.name, out.fluxes, out.masks, extra, self._metadata(extra), out.flux_errors)

    def _measure_blend(self, background_step, stamp, shift, radius, out: _BatchOutputs, row: int) -> None:
        from scipy.ndimage import convolve

        try:
            background, rms = background_step._background(stamp)
            if not (math.isfinite(rms) and rms > 0):
                out.pass_used[row] = PASS_NO_NOISE
                return
            data = np.asarray(background_step._subtracted(stamp, background), dtype=np.float64)
            # Zero beyond the edges, as SExtractor's and sep's filtering.
            convolved = convolve(data, DEFAULT_KERNEL, mode="constant", cval=0.0)
            segments = self._segment(convolved, rms, self.cold)
            pass_used = 0
            if segments is not None and segments.nlabels == 1:
                segments = self._segment(convolved, rms, self.hot)
                pass_used = 1
            out.pass_used[row] = pass_used
            if segments is None or segments.nlabels == 0:
                return
            catalog = self._catalog(data, convolved, segments, rms)
            x = np.asarray(catalog.xcentroid, dtype=np.float64)
            y = np.asarray(catalog.ycentroid, dtype=np.float64)
            flux = np.asarray(catalog.kron_flux, dtype=np.float64)
            error = np.asarray(catalog.kron_fluxerr, dtype=np.float64)
            labels = np.asarray(catalog.label)
        except Exception:  # photutils raises various errors on odd stamps; keep the batch going
            out.pass_used[row] = PASS_SEP_ERROR
            return
        chosen = assign_detections(x, y, flux, companion_shift=shift, central_radius=radius)
        for slot, source in enumerate((chosen.central, chosen.companion)):
            if source >= 0:
                out.fluxes[row, slot] = flux[source] if math.isfinite(flux[source]) else math.nan
                good_error = math.isfinite(error[source]) and error[source] > 0
                out.flux_errors[row, slot] = error[source] if good_error else math.nan
                np.equal(segments.data, labels[source], out=out.masks[row, slot], casting="unsafe")
        out.detection[row] = chosen.detection
        out.n_sources[row] = len(labels)
        out.assignment[row] = int(chosen.used_truth)

    @staticmethod
    def _segment(convolved, rms, params: SepPassParameters):
        """Deblended segmentation image of one pass, or None when nothing is detected."""
        from photutils.segmentation import deblend_sources, detect_sources

        names = _keywords()
        segments = detect_sources(convolved, params.threshold * rms, **{names["pixels"]: params.minarea},
                                  connectivity=8)
        if segments is None:
            return None
        return deblend_sources(convolved, segments, **{names["pixels"]: params.minarea,
                                                       names["levels"]: params.deblend_nthresh},
                               contrast=params.deblend_cont, mode="exponential", connectivity=8,
                               progress_bar=False)

    def _catalog(self, data, convolved, segments, rms):
        from photutils.segmentation import SourceCatalog

        return SourceCatalog(data, segments, convolved_data=convolved, error=np.full(data.shape, rms),
                             kron_params=KRON_PARAMS, **{_keywords()["mask_method"]: self.aperture_mask_method})

    def _metadata(self, extra: dict) -> dict:
        passes = extra["pass"]
        return {
            "method": self.name,
            "label": self.label,
            "config": dataclasses.asdict(self),
            "photutils_version": _photutils_version(),
            "kron_params": list(KRON_PARAMS),
            "assignment_note": ASSIGNMENT_NOTE,
            "pass_codes": {"0": "cold", "1": "hot", "-1": "not run: stamp without noise (rms 0)",
                           "-2": "photutils raised an error on this blend"},
            "detection_codes": {"-1": "none", "0": "only central", "1": "only companion", "2": "both",
                                "3": "more than two (two brightest assigned)"},
            "n_not_run": int((passes == PASS_NO_NOISE).sum()),
            "n_errors": int((passes == PASS_SEP_ERROR).sum()),
        }
