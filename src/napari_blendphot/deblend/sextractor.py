"""SExtractor itself: the ``source-extractor`` binary run in the paper's two passes.

The same protocol as :mod:`~napari_blendphot.deblend.sep_baseline` (SPEC §5:
a cold pass on every blend, a hot one where the cold pass found a single
source, detections assigned by :mod:`napari_blendphot.match.assign`), but the
detection, deblending and photometry are SExtractor's own (2.25 in Debian),
with its defaults where SPEC §5 says nothing:

* ``FILTER Y`` with SExtractor's ``default.conv`` (the 3x3 pyramid
  ``1 2 1 / 2 4 2 / 1 2 1``, which is also sep's default kernel);
* ``FLUX_AUTO`` with ``PHOT_AUTOPARAMS 2.5, 3.5`` and ``MASK_TYPE CORRECT``
  (pixels of other sources inside an aperture are replaced by their mirror
  image through the source's centre; the ``sep`` method blanks them, like
  ``MASK_TYPE BLANK``); ``CLEAN Y``, ``CLEAN_PARAM 1.0``; ``GAIN 0`` (the
  flux error is the background noise only, as sep's);
* the configuration (one ``.sex`` file per pass), the catalogue parameters
  and ``default.conv`` are written into a temporary folder for each call;
* the background is the ``sep`` method's: one constant per stamp
  (``sep.Background`` over the whole stamp), subtracted before SExtractor
  sees the pixels (``BACK_TYPE MANUAL``, ``BACK_VALUE 0``), and the stamp's
  global rms given as an rms map (``WEIGHT_TYPE MAP_RMS``), so thresholds are
  in units of the same rms as sep's.

Many stamps per call
--------------------
Starting the binary costs ~10 ms, as much as measuring a stamp, so up to
``max_stamps_per_call`` stamps are tiled into one mosaic image, each in a
cell of ``128 + gap`` pixels: stamps are separated by ``gap`` blank pixels
(value 0, the rms of the nearer stamp).  Detections are mapped back to their
stamp by position and the segmentation check-image is cut back into stamps.

Each stamp is therefore measured as if it lay alone in blank sky, provided
no source reads pixels outside its own cell.  That is checked for every
source found, from the catalogue: its isophotal bounding box (which a CLEAN
merger with a source of another stamp would stretch), the window of its
Kron-radius measurement (6 times its isophotal ellipse, SExtractor's
``KRON_NSIG``) and its Kron aperture (``KRON_RADIUS`` times that ellipse, or
the 1.75-pixel circle) must lie inside the cell.  Detection cannot link two
stamps: the filter spreads a stamp's light by one pixel, and the gap is at
least 4.  Stamps that fail the check (and every stamp whose cell a failing
source reached) are measured again in mosaics with a ``WIDE_GAP`` of 128
pixels, and those that still fail alone in a blank frame (64, then
``STANDALONE_MARGIN`` pixels); ``extra["tiling"]`` says which (0, 1, 2).  The
default gap of 32 pixels sends 1.4% of the mock test blends to the wide gap
and none to the frame (real galaxies: 11% and 0.4%; ``docs/results.md``).

SExtractor shares the pixels left over by its deblending between the
sources at random (``rand()`` in ``deblend_gatherup``), from one sequence
per run: a stamp's fluxes depend slightly on which stamps were measured
before it in the same mosaic.  docs/results.md states by how much.

Per-blend outputs (``DeblendOutput.extra``), as the ``sep`` method's:
``detection``, ``n_sources``, ``pass`` (0 cold, 1 hot, -1 stamp without
noise, -2 SExtractor failed on it), ``assignment``, plus ``tiling`` (how the
stamp was measured, above).  Flux errors
(``flux_errors``) are ``FLUXERR_AUTO``; masks are the assigned sources'
segments.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from napari_blendphot.constants import STAMP_SIZE
from napari_blendphot.deblend.base import BlendContext, DeblendOutput, ProgressCallback, check_blends
from napari_blendphot.deblend.sep_baseline import (ASSIGNMENT_NOTE, COLD_PASS, HOT_PASS, PASS_NO_NOISE,
                                                   PASS_SEP_ERROR, SepPassParameters, SepTwoPass, _BatchOutputs,
                                                   _context_arrays)
from napari_blendphot.errors import InputError
from napari_blendphot.match.assign import assign_detections

#: Names the binary goes by: Debian and conda-forge's 2.25+ builds, then older/upstream builds.
BINARY_NAMES = ("source-extractor", "sex")
#: Environment variable that points at a SExtractor binary elsewhere.
BINARY_ENV = "BLENDPHOT_SEXTRACTOR"
INSTALL_HINT = ("install SExtractor: 'apt-get install source-extractor' (Debian/Ubuntu) or "
                "'conda install -c conda-forge astromatic-source-extractor', or set "
                f"{BINARY_ENV} to its path")
#: SExtractor's MAG_AUTO analysis range, in units of the isophotal ellipse (KRON_NSIG).
KRON_WINDOW = 6.0
#: PHOT_AUTOPARAMS (Kron factor, minimum radius) and the circle used below the minimum (diameter 3.5).
KRON_FACTOR = 2.5
KRON_MIN_RADIUS = 3.5
MIN_CIRCULAR_RADIUS = 1.75
#: Blank pixels on each side of a stamp measured alone (its sources reached past their cell):
#: first try, then the most (a source whose reach leaves even that loses the pixels beyond).
FIRST_STANDALONE_MARGIN = 64
STANDALONE_MARGIN = 3 * STAMP_SIZE
#: Gap of the second round of mosaics (stamps whose sources reached beyond a normal cell),
#: and how many times fewer stamps such a mosaic holds.
WIDE_GAP = STAMP_SIZE
WIDE_CHUNK_DIVISOR = 4
#: Below this gap a filtered detection could bridge two stamps (3x3 filter: 1 pixel each side).
MIN_GAP = 4
#: Seconds allowed per call: start-up plus a generous time per stamp.
TIMEOUT_BASE = 60.0
TIMEOUT_PER_STAMP = 1.0

#: SExtractor's default.conv: the 3x3 pyramid kernel (normalised by SExtractor).
DEFAULT_CONV = "CONV NORM\n# 3x3 ``all-ground'' convolution mask with FWHM = 2 pixels.\n1 2 1\n2 4 2\n1 2 1\n"
#: Catalogue columns read back.
CATALOG_PARAMS = ("NUMBER", "X_IMAGE", "Y_IMAGE", "FLUX_AUTO", "FLUXERR_AUTO", "KRON_RADIUS",
                  "A_IMAGE", "B_IMAGE", "CXX_IMAGE", "CYY_IMAGE", "CXY_IMAGE",
                  "XMIN_IMAGE", "XMAX_IMAGE", "YMIN_IMAGE", "YMAX_IMAGE", "FLAGS")


def find_binary(binary: str | None = None) -> str | None:
    """Path of the SExtractor binary: *binary*, else ``$BLENDPHOT_SEXTRACTOR``, else the PATH; None if none."""
    candidates = [binary] if binary else ([os.environ[BINARY_ENV]] if os.environ.get(BINARY_ENV) else
                                          list(BINARY_NAMES))
    for candidate in candidates:
        path = shutil.which(candidate)
        if path and _binary_version(path):
            return path
    return None


@functools.lru_cache(maxsize=8)
def _binary_version(path: str) -> str:
    """SExtractor's version line of *path* ('' if it is not SExtractor or does not run)."""
    try:
        result = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    text = (result.stdout + result.stderr).strip()
    return text.splitlines()[0] if "extractor" in text.lower() else ""


def unavailable_reason() -> str | None:
    """Why the ``sextractor`` method cannot run here (the registry's availability check); None if it can."""
    if find_binary() is None:
        where = os.environ.get(BINARY_ENV) or " or ".join(BINARY_NAMES)
        return f"the SExtractor binary ({where}) is not installed or does not run; {INSTALL_HINT}"
    return None


@dataclass(frozen=True)
class SExtractorTwoPass:
    """The paper's two passes with the SExtractor binary (FLUX_AUTO, MASK_TYPE CORRECT).

    Parameters
    ----------
    binary : str, optional
        Name or path of the binary (default ``$BLENDPHOT_SEXTRACTOR``, else
        ``source-extractor`` or ``sex`` on the PATH).
    gap : int
        Blank pixels between stamps in a mosaic (>= 4).
    max_stamps_per_call : int
        Stamps per mosaic, i.e. per SExtractor run.
    mask_type : {"CORRECT", "BLANK", "NONE"}
        SExtractor's MASK_TYPE for FLUX_AUTO (default: SExtractor's default).
    cold, hot : SepPassParameters
        The two passes (SPEC §5); ``deblend_nthresh`` is at most 64 in SExtractor.
    """

    binary: str | None = None
    gap: int = 32
    max_stamps_per_call: int = 256
    mask_type: str = "CORRECT"
    cold: SepPassParameters = COLD_PASS
    hot: SepPassParameters = HOT_PASS

    name: ClassVar[str] = "sextractor"
    label: ClassVar[str] = "SExtractor two-pass (FLUX_AUTO, MASK_TYPE CORRECT)"
    makes_masks: ClassVar[bool] = True
    needs_worker: ClassVar[bool] = False

    def __post_init__(self):
        if not (isinstance(self.gap, (int, np.integer)) and self.gap >= MIN_GAP):
            raise InputError("option gap", f"{self.gap!r} is not a gap of at least {MIN_GAP} pixels")
        if not (isinstance(self.max_stamps_per_call, (int, np.integer)) and self.max_stamps_per_call >= 1):
            raise InputError("option max_stamps_per_call", f"{self.max_stamps_per_call!r} is not a positive number")
        if str(self.mask_type).upper() not in ("CORRECT", "BLANK", "NONE"):
            raise InputError("option mask_type", f"{self.mask_type!r} is not a MASK_TYPE",
                             "use CORRECT (SExtractor's default), BLANK or NONE")
        for pass_name in ("cold", "hot"):
            params = getattr(self, pass_name)
            if not (params.threshold > 0 and params.minarea >= 1 and 0 <= params.deblend_cont <= 1
                    and 1 <= params.deblend_nthresh <= 64):
                raise InputError(f"option {pass_name}", f"invalid detection settings {params} "
                                 "(SExtractor allows 1-64 deblending thresholds)")

    # ------------------------------------------------------------------ API
    def deblend(self, blends, context: BlendContext | None = None,
                progress: ProgressCallback | None = None) -> DeblendOutput:
        """Detect, assign and measure both galaxies of every blend with SExtractor."""
        blends = check_blends(blends)
        shifts, radii = _context_arrays(context, len(blends))
        binary = find_binary(self.binary)
        if binary is None:
            raise InputError(f"method {self.name!r}", "the SExtractor binary is not installed or does not run",
                             INSTALL_HINT)
        n_blends = len(blends)
        out = _BatchOutputs(n_blends, blends.shape[1:])
        tiling = np.zeros(n_blends, np.int8)
        if shifts is not None:
            out.assignment[:] = np.isfinite(shifts).all(axis=1)
        data, rms = self._prepared(blends, out)
        todo = np.flatnonzero(out.pass_used == 0)
        with tempfile.TemporaryDirectory(prefix="blendphot-sextractor-") as folder:
            run = _Runner(Path(folder), binary, self)
            done = [0]

            def report(count):
                done[0] += count
                if progress is not None:
                    progress(min(done[0], n_blends), n_blends)

            cold = run.measure(data, rms, todo, self.cold, tiling, on_chunk=report)
            report(n_blends - len(todo))  # stamps without noise count as done
            single = [index for index in todo if cold[index] is not None and len(cold[index][0]) == 1]
            hot = run.measure(data, rms, np.asarray(single, dtype=np.int64), self.hot, tiling)
        for index in todo:
            found = cold[index]
            if index in hot:
                found = hot[index]
                out.pass_used[index] = 1
            if found is None:
                out.pass_used[index] = PASS_SEP_ERROR
                continue
            self._assign(index, found, shifts, radii, out)
        extra = {"detection": out.detection, "n_sources": out.n_sources, "pass": out.pass_used,
                 "assignment": out.assignment, "tiling": tiling}
        return DeblendOutput(self.name, out.fluxes, out.masks, extra, self._metadata(extra, binary),
                             out.flux_errors)

    # ------------------------------------------------------------ internals
    @staticmethod
    def _prepared(blends, out: _BatchOutputs):
        """Background-subtracted float32 stamps and their global rms (the ``sep`` method's background)."""
        background_step = SepTwoPass()
        data = np.empty_like(blends)
        rms = np.zeros(len(blends))
        flat = blends.reshape(len(blends), -1)
        constant = flat.min(axis=1) == flat.max(axis=1)
        out.pass_used[constant] = PASS_NO_NOISE
        for index in np.flatnonzero(~constant):
            try:
                background, value = background_step._background(blends[index])
            except Exception:  # sep signals failures with a bare Exception
                out.pass_used[index] = PASS_SEP_ERROR
                continue
            if not (math.isfinite(value) and value > 0):
                out.pass_used[index] = PASS_NO_NOISE
                continue
            data[index] = background_step._subtracted(blends[index], background)
            rms[index] = value
        return data, rms

    @staticmethod
    def _assign(index, found, shifts, radii, out: _BatchOutputs) -> None:
        catalog, segmap = found
        if len(catalog) == 0:
            return
        x = catalog["X_IMAGE"].astype(np.float64)
        y = catalog["Y_IMAGE"].astype(np.float64)
        flux = catalog["FLUX_AUTO"].astype(np.float64)
        error = catalog["FLUXERR_AUTO"].astype(np.float64)
        chosen = assign_detections(x, y, flux, companion_shift=None if shifts is None else shifts[index],
                                   central_radius=None if radii is None else radii[index])
        for slot, source in enumerate((chosen.central, chosen.companion)):
            if source >= 0:
                out.fluxes[index, slot] = flux[source] if math.isfinite(flux[source]) else math.nan
                good_error = math.isfinite(error[source]) and error[source] > 0
                out.flux_errors[index, slot] = error[source] if good_error else math.nan
                np.equal(segmap, int(catalog["NUMBER"][source]), out=out.masks[index, slot], casting="unsafe")
        out.detection[index] = chosen.detection
        out.n_sources[index] = len(catalog)
        out.assignment[index] = int(chosen.used_truth)

    def _metadata(self, extra: dict, binary: str) -> dict:
        passes = extra["pass"]
        return {
            "method": self.name,
            "label": self.label,
            "config": dataclasses.asdict(self),
            "sextractor_version": _binary_version(binary),
            "assignment_note": ASSIGNMENT_NOTE,
            "pass_codes": {"0": "cold", "1": "hot", "-1": "not run: stamp without noise (rms 0)",
                           "-2": "SExtractor failed on this stamp"},
            "detection_codes": {"-1": "none", "0": "only central", "1": "only companion", "2": "both",
                                "3": "more than two (two brightest assigned)"},
            "tiling_codes": {"0": f"mosaic with a {self.gap}-pixel gap",
                             "1": f"mosaic with a {max(WIDE_GAP, self.gap)}-pixel gap (a source reached beyond its "
                                  "first cell)",
                             "2": "alone in a blank frame (a source reached beyond even the wide cell)"},
            "n_not_run": int((passes == PASS_NO_NOISE).sum()),
            "n_errors": int((passes == PASS_SEP_ERROR).sum()),
            "n_wide_gap": int((extra["tiling"] == 1).sum()),
            "n_alone": int((extra["tiling"] == 2).sum()),
        }


class _Runner:
    """Runs SExtractor on mosaics of stamps inside one temporary folder."""

    def __init__(self, folder: Path, binary: str, method: SExtractorTwoPass):
        self.folder = folder
        self.binary = binary
        self.method = method
        (folder / "default.conv").write_text(DEFAULT_CONV)
        (folder / "catalog.param").write_text("\n".join(CATALOG_PARAMS) + "\n")
        self.calls = 0

    # -------------------------------------------------------------- passes
    def measure(self, data, rms, indices, params: SepPassParameters, tiling, on_chunk=None) -> dict:
        """``{stamp index: (catalogue rows in stamp coordinates, segmentation stamp) or None (failed)}``.

        Stamps go into mosaics with the method's gap; those whose sources read
        beyond their cell go into mosaics with a wide gap, and those that still
        do are measured alone.  *tiling* records which (0, 1, 2).
        """
        results: dict = {}
        gap = int(self.method.gap)
        wide_gap = max(WIDE_GAP, gap)
        step = self.method.max_stamps_per_call
        wide = []
        for start in range(0, len(indices), step):
            chunk = [int(i) for i in indices[start:start + step]]
            found, redo = self._mosaic(data, rms, chunk, params, gap)
            results.update(found)
            wide += redo
            if on_chunk is not None:
                on_chunk(len(chunk))
        wide_step = max(1, step // WIDE_CHUNK_DIVISOR)
        for start in range(0, len(wide), wide_step):
            chunk = wide[start:start + wide_step]
            found, redo = self._mosaic(data, rms, chunk, params, wide_gap)
            results.update(found)
            tiling[chunk] = 1
            for index in redo:
                results[index] = self._alone(data[index], rms[index], params)
                tiling[index] = 2
        return results

    def _mosaic(self, data, rms, chunk, params, gap: int):
        """Measure the stamps of *chunk* in one mosaic: (results by stamp, stamps to measure again)."""
        cell = STAMP_SIZE + gap
        n_cols = int(math.ceil(math.sqrt(len(chunk))))
        n_rows = int(math.ceil(len(chunk) / n_cols))
        height, width = n_rows * cell - gap, n_cols * cell - gap
        image = np.zeros((height, width), np.float32)
        noise = np.full((height, width), float(rms[chunk].max()), np.float32)
        before, after = gap // 2, gap - gap // 2
        origins = []
        for k, index in enumerate(chunk):
            y0, x0 = (k // n_cols) * cell, (k % n_cols) * cell
            origins.append((y0, x0))
            image[y0:y0 + STAMP_SIZE, x0:x0 + STAMP_SIZE] = data[index]
            noise[max(0, y0 - before):y0 + STAMP_SIZE + after, max(0, x0 - before):x0 + STAMP_SIZE + after] = rms[index]
        try:
            catalog, segmap = self._run(image, noise, params)
        except _RunFailed:
            # Isolate the stamp SExtractor chokes on: measure each again.
            return {}, list(chunk)
        found = {index: [] for index in chunk}
        redo = set()
        y_mosaic = catalog["Y_IMAGE"] - 1.0
        x_mosaic = catalog["X_IMAGE"] - 1.0
        rows = np.clip(np.floor((y_mosaic + before) / cell).astype(int), 0, n_rows - 1)
        cols = np.clip(np.floor((x_mosaic + before) / cell).astype(int), 0, n_cols - 1)
        for row_index, (r, c) in enumerate(zip(rows, cols)):
            k = r * n_cols + c
            if k >= len(chunk):  # a detection in an empty cell cannot happen (zeros); be safe
                redo.update(chunk)
                continue
            y0, x0 = origins[k]
            bounds = (y0 - before, y0 + STAMP_SIZE + after - 1, x0 - before, x0 + STAMP_SIZE + after - 1)
            reach = _reach(catalog[row_index])
            if not _inside(reach, bounds):
                redo.add(chunk[k])
                redo.update(chunk[j] for j, (oy, ox) in enumerate(origins) if _touches(reach, oy, ox, before, after))
            found[chunk[k]].append(row_index)
        results = {}
        for k, index in enumerate(chunk):
            if index in redo:
                continue
            y0, x0 = origins[k]
            results[index] = (_to_stamp(catalog[found[index]], y0, x0),
                              np.ascontiguousarray(segmap[y0:y0 + STAMP_SIZE, x0:x0 + STAMP_SIZE]))
        return results, sorted(redo)

    def _alone(self, stamp, rms, params):
        """One stamp in a blank frame; None if SExtractor fails on it.

        The frame is first ``FIRST_STANDALONE_MARGIN`` pixels wide (at least the
        gap) and widened to ``STANDALONE_MARGIN`` if a source's reach leaves it.
        """
        for margin in (max(FIRST_STANDALONE_MARGIN, int(self.method.gap)), STANDALONE_MARGIN):
            size = STAMP_SIZE + 2 * margin
            image = np.zeros((size, size), np.float32)
            image[margin:margin + STAMP_SIZE, margin:margin + STAMP_SIZE] = stamp
            try:
                catalog, segmap = self._run(image, np.full((size, size), rms, np.float32), params)
            except _RunFailed:
                return None
            x, y = catalog["X_IMAGE"] - 1.0, catalog["Y_IMAGE"] - 1.0
            inside = ((x >= margin - 0.5) & (x < margin + STAMP_SIZE - 0.5)
                      & (y >= margin - 0.5) & (y < margin + STAMP_SIZE - 0.5))
            catalog = catalog[inside]
            frame = (0, size - 1, 0, size - 1)
            if all(_inside(_reach(row), frame) for row in catalog):
                break
        return (_to_stamp(catalog, margin, margin),
                np.ascontiguousarray(segmap[margin:margin + STAMP_SIZE, margin:margin + STAMP_SIZE]))

    def _run(self, image, noise, params: SepPassParameters):
        """Run the binary once: (catalogue as a numpy record array, segmentation map int32)."""
        from astropy.io import fits

        self.calls += 1
        folder = self.folder
        paths = {name: folder / f"{name}.fits" for name in ("image", "rms", "catalog", "segmentation")}
        for name in ("catalog", "segmentation"):
            paths[name].unlink(missing_ok=True)
        fits.PrimaryHDU(image).writeto(paths["image"], overwrite=True)
        fits.PrimaryHDU(noise).writeto(paths["rms"], overwrite=True)
        method = self.method
        settings = {
            "CATALOG_NAME": paths["catalog"], "CATALOG_TYPE": "FITS_1.0",
            "PARAMETERS_NAME": folder / "catalog.param",
            "DETECT_TYPE": "CCD", "THRESH_TYPE": "RELATIVE",
            "DETECT_THRESH": params.threshold, "ANALYSIS_THRESH": params.threshold,
            "DETECT_MINAREA": params.minarea,
            "DEBLEND_NTHRESH": params.deblend_nthresh, "DEBLEND_MINCONT": params.deblend_cont,
            "FILTER": "Y", "FILTER_NAME": folder / "default.conv",
            "CLEAN": "Y", "CLEAN_PARAM": 1.0, "MASK_TYPE": str(method.mask_type).upper(),
            "PHOT_AUTOPARAMS": f"{KRON_FACTOR},{KRON_MIN_RADIUS}",
            "SATUR_LEVEL": 1e20, "GAIN": 0.0, "MAG_ZEROPOINT": 0.0,
            "BACK_TYPE": "MANUAL", "BACK_VALUE": 0.0, "BACKPHOTO_TYPE": "GLOBAL",
            "WEIGHT_TYPE": "MAP_RMS", "WEIGHT_IMAGE": paths["rms"],
            "CHECKIMAGE_TYPE": "SEGMENTATION", "CHECKIMAGE_NAME": paths["segmentation"],
            "MEMORY_PIXSTACK": max(300000, image.size), "MEMORY_OBJSTACK": 20000,
            "NTHREADS": 1, "VERBOSE_TYPE": "QUIET", "WRITE_XML": "N",
        }
        # One configuration file per pass, written once into the run's folder (the file names in it
        # are the folder's fixed ones); MEMORY_PIXSTACK grows with the mosaic, so it stays on the line.
        pixstack = settings.pop("MEMORY_PIXSTACK")
        config = folder / (f"pass-{params.threshold:g}-{params.minarea}-{params.deblend_cont:g}"
                           f"-{params.deblend_nthresh}.sex")
        if not config.is_file():
            config.write_text("".join(f"{key:<16} {value}\n" for key, value in settings.items()))
        command = [self.binary, str(paths["image"]), "-c", str(config), "-MEMORY_PIXSTACK", str(pixstack)]
        timeout = TIMEOUT_BASE + TIMEOUT_PER_STAMP * image.size / STAMP_SIZE ** 2
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=folder)
        except (OSError, subprocess.SubprocessError) as exc:
            raise _RunFailed(str(exc)) from None
        if result.returncode != 0 or not paths["catalog"].is_file() or not paths["segmentation"].is_file():
            raise _RunFailed(result.stderr.strip()[-500:])
        try:
            with fits.open(paths["catalog"], memmap=False) as hdus:
                table = hdus[1].data
                catalog = np.empty(0 if table is None else len(table), [(key, np.float64) for key in CATALOG_PARAMS])
                for key in CATALOG_PARAMS:
                    if table is not None:
                        catalog[key] = table[key]
            with fits.open(paths["segmentation"], memmap=False) as hdus:
                segmap = np.asarray(hdus[0].data, dtype=np.int32)
        except Exception as exc:  # a truncated or malformed output: treat as a failed run
            raise _RunFailed(f"unreadable output: {exc}") from None
        if segmap.shape != image.shape:
            raise _RunFailed(f"segmentation map of shape {segmap.shape} for an image of {image.shape}")
        return catalog, segmap


class _RunFailed(Exception):
    """SExtractor exited with an error, timed out or wrote nothing readable."""


def _ellipse_extent(row, scale: float):
    """Half-widths (dx, dy) of the ellipse ``cxx x^2 + cyy y^2 + cxy x y <= scale^2`` (SExtractor's bounds)."""
    cxx, cyy, cxy = row["CXX_IMAGE"], row["CYY_IMAGE"], row["CXY_IMAGE"]
    dx = cxx - cxy * cxy / (4.0 * cyy) if cyy > 0 else 0.0
    dy = cyy - cxy * cxy / (4.0 * cxx) if cxx > 0 else 0.0
    dx = scale / math.sqrt(dx) if dx > 0 else math.inf
    dy = scale / math.sqrt(dy) if dy > 0 else math.inf
    return dx, dy


def _reach(row):
    """Bounding box (ymin, ymax, xmin, xmax; 0-based mosaic pixels) of every pixel a source's measurement reads.

    The isophotal box, the Kron-radius window and the Kron aperture.  A source
    whose Kron radius is not reported (SExtractor writes 0 when the flux is not
    positive, hiding the aperture it used) gets an infinite reach, so its stamp
    is measured alone.
    """
    x, y = row["X_IMAGE"] - 1.0, row["Y_IMAGE"] - 1.0
    ymin, ymax = row["YMIN_IMAGE"] - 1.0, row["YMAX_IMAGE"] - 1.0
    xmin, xmax = row["XMIN_IMAGE"] - 1.0, row["XMAX_IMAGE"] - 1.0
    a, b = row["A_IMAGE"], row["B_IMAGE"]
    kron = row["KRON_RADIUS"]
    if KRON_WINDOW * math.sqrt(max(a * b, 0.0)) > 0:
        halves = [_ellipse_extent(row, KRON_WINDOW)]
    else:
        halves = [(0.0, 0.0)]
    if kron > 0:
        halves.append(_ellipse_extent(row, kron))
    elif row["FLUX_AUTO"] > 0:
        halves.append((MIN_CIRCULAR_RADIUS, MIN_CIRCULAR_RADIUS))
    else:
        return (-math.inf, math.inf, -math.inf, math.inf)
    for dx, dy in halves:
        # SExtractor's loops run over RINT(m - d) ... RINT(m + d): one pixel of slack covers the rounding.
        ymin, ymax = min(ymin, y - dy - 1), max(ymax, y + dy + 1)
        xmin, xmax = min(xmin, x - dx - 1), max(xmax, x + dx + 1)
    return ymin, ymax, xmin, xmax


def _inside(reach, bounds) -> bool:
    ymin, ymax, xmin, xmax = reach
    by0, by1, bx0, bx1 = bounds
    return ymin >= by0 and ymax <= by1 and xmin >= bx0 and xmax <= bx1


def _touches(reach, y0, x0, before, after) -> bool:
    """Whether *reach* overlaps the cell of the stamp at (y0, x0)."""
    ymin, ymax, xmin, xmax = reach
    return not (ymax < y0 - before or ymin > y0 + STAMP_SIZE + after - 1
                or xmax < x0 - before or xmin > x0 + STAMP_SIZE + after - 1)


def _to_stamp(catalog, y0: int, x0: int):
    """Catalogue rows with positions in the stamp's 0-based pixel coordinates (sep's convention)."""
    rows = np.array(catalog, copy=True)
    rows["X_IMAGE"] -= x0 + 1.0
    rows["Y_IMAGE"] -= y0 + 1.0
    for key in ("XMIN_IMAGE", "XMAX_IMAGE"):
        rows[key] -= x0 + 1.0
    for key in ("YMIN_IMAGE", "YMAX_IMAGE"):
        rows[key] -= y0 + 1.0
    return rows
