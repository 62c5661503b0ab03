"""Photometric calibration and pixel scale of a field image, and the training domain.

The networks were trained on CANDELS-like stamps: pixels in e-/s at the AB
zero point 25.96, 0.06"/px, white background noise of rms ~0.0106 e-/s
(:data:`TRAINING_NOISE_RMS`).  A field image may come in other units, at
another zero point and another pixel scale; this module says what the image
is (:class:`Calibration`, read from the header or given explicitly) so that
each stamp can be brought to the training domain and the fluxes taken back.

Zero point convention
---------------------
``Calibration.zero_point`` is the AB magnitude of one unit of the pixel values
*as stored*: ``mag = zero_point - 2.5 log10(sum of pixel values)``.  It comes
from, in this order:

1. an explicit option (``--zeropoint``);
2. a header zero point ``PHOTZP``, ``MAGZERO``, ``MAGZPT`` or ``ZP`` (taken to
   apply to the values as stored, whatever ``BUNIT`` says);
3. HST's ``PHOTFLAM`` and ``PHOTPLAM``: the AB zero point of a count rate,
   ``-2.5 log10(PHOTFLAM) - 5 log10(PHOTPLAM) - 2.408``; when ``BUNIT`` says
   counts (not per second) and ``EXPTIME`` is known, ``+ 2.5 log10(EXPTIME)``;
4. nothing: an **assumption**, recorded as such (``assumed=True``, a flag on
   every row, one warning line): the count rate is taken to be at 25.96 (the
   training data's), so ``zero_point = 25.96`` for a rate and
   ``25.96 + 2.5 log10(EXPTIME)`` for counts with an ``EXPTIME``.

The pixel scale comes from an explicit option, else the celestial WCS
(``astropy.wcs.utils.proj_plane_pixel_scales``), else ``PIXSCALE``/``PIXSCAL1``/
``SECPIX``, else it is assumed to be the training scale (0.06"), recorded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from napari_blendphot.constants import PIXEL_SCALE, ZERO_POINT
from napari_blendphot.errors import InputError

#: Background rms per pixel (e-/s) of the training stamps (the mock's CANDELS depth, SPEC §3).
TRAINING_NOISE_RMS = 0.0106
#: Resample when the image's pixel scale differs from the training scale by more than this fraction.
RESAMPLE_TOLERANCE = 0.05
#: Header keywords read as a zero point for the values as stored, in this order.
ZERO_POINT_KEYWORDS = ("PHOTZP", "MAGZERO", "MAGZPT", "ZP")
#: Header keywords read as a pixel scale (arcsec) when the image has no celestial WCS.
PIXEL_SCALE_KEYWORDS = ("PIXSCALE", "PIXSCAL1", "SECPIX")
#: ``BUNIT`` spellings (lower case, spaces removed) of counts accumulated over the exposure.
_COUNT_UNITS = {"count", "counts", "cts", "ct", "adu", "dn", "electron", "electrons", "e", "e-", "photons"}


def unit_is_rate(bunit: str) -> bool | None:
    """True for a per-second unit (``ELECTRONS/S``, ``counts/s``...), False for counts, None when unknown."""
    text = str(bunit or "").strip().lower().replace(" ", "")
    if not text:
        return None
    if text.endswith(("/s", "/sec", "/second", "s-1", "s**-1", "s^-1")):
        return True
    if text in _COUNT_UNITS:
        return False
    return None


def photflam_zero_point(photflam: float, photplam: float) -> float:
    """AB zero point of a count rate from HST's PHOTFLAM (erg/s/cm2/A per e-/s) and PHOTPLAM (A)."""
    return -2.5 * math.log10(photflam) - 5.0 * math.log10(photplam) - 2.408


def _finite_positive(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _finite(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass
class Calibration:
    """What a field image's pixel values mean (see the module docstring for the rules).

    Attributes
    ----------
    zero_point : float
        AB magnitude of one unit of the stored pixel values.
    zero_point_source : str
        ``"option"``, a header keyword (``"PHOTZP"``...), ``"PHOTFLAM+PHOTPLAM"`` or ``"assumed"``.
    pixel_scale_yx : (float, float)
        Arcsec per pixel along rows (y) and columns (x).
    pixel_scale_source : str
        ``"option"``, ``"WCS"``, a header keyword or ``"assumed"``.
    unit, exptime : the header's ``BUNIT`` (``""`` if none) and ``EXPTIME`` (None if none).
    notes : list of str
        How the numbers were obtained, one line each.
    """

    zero_point: float
    zero_point_source: str
    pixel_scale_yx: tuple
    pixel_scale_source: str
    unit: str = ""
    exptime: float | None = None
    notes: list = field(default_factory=list)

    @property
    def zero_point_assumed(self) -> bool:
        return self.zero_point_source == "assumed"

    @property
    def pixel_scale_assumed(self) -> bool:
        return self.pixel_scale_source == "assumed"

    @property
    def pixel_scale(self) -> float:
        """Mean arcsec per pixel (geometric mean of the two axes)."""
        return math.sqrt(self.pixel_scale_yx[0] * self.pixel_scale_yx[1])

    @property
    def flux_scale(self) -> float:
        """Multiply stored values by this to get fluxes at the training zero point (e-/s at 25.96)."""
        return 10.0 ** (0.4 * (ZERO_POINT - self.zero_point))

    @property
    def zoom_yx(self) -> tuple:
        """Training pixels per image pixel along (y, x): 1.0 when no resampling is needed."""
        return tuple(1.0 if not self.needs_resampling else scale / PIXEL_SCALE for scale in self.pixel_scale_yx)

    @property
    def needs_resampling(self) -> bool:
        return any(abs(scale / PIXEL_SCALE - 1.0) > RESAMPLE_TOLERANCE for scale in self.pixel_scale_yx)

    def with_overrides(self, zero_point: float | None = None, pixel_scale: float | None = None) -> "Calibration":
        """A copy with an explicit zero point and/or pixel scale (what the GUI's fields edit)."""
        result = Calibration(**{**asdict(self), "notes": list(self.notes)})
        if zero_point is not None:
            result.zero_point = check_zero_point(zero_point, "zero point")
            result.zero_point_source = "option"
        if pixel_scale is not None:
            scale = check_pixel_scale(pixel_scale, "pixel scale")
            result.pixel_scale_yx = (scale, scale)
            result.pixel_scale_source = "option"
        return result

    def as_dict(self) -> dict:
        """JSON-ready record (catalogue metadata and provenance)."""
        return {
            "zero_point": self.zero_point, "zero_point_source": self.zero_point_source,
            "zero_point_assumed": self.zero_point_assumed,
            "pixel_scale_arcsec": list(self.pixel_scale_yx), "pixel_scale_source": self.pixel_scale_source,
            "pixel_scale_assumed": self.pixel_scale_assumed, "bunit": self.unit, "exptime": self.exptime,
            "flux_scale_to_training": self.flux_scale, "training_zero_point": ZERO_POINT,
            "training_pixel_scale": PIXEL_SCALE, "resampled": self.needs_resampling,
            "zoom_yx": list(self.zoom_yx), "notes": list(self.notes),
        }


def check_zero_point(value, source: str) -> float:
    number = _finite(value)
    if number is None or not -10.0 < number < 60.0:
        raise InputError(source, f"{value!r} is not a usable AB zero point", "expected a number such as 25.96")
    return number


def check_pixel_scale(value, source: str) -> float:
    number = _finite_positive(value)
    if number is None or number > 3600.0:
        raise InputError(source, f"{value!r} is not a pixel scale in arcsec", "expected a positive number such as 0.06")
    return number


def read_calibration(header, source: str, wcs=None, zero_point=None, pixel_scale=None) -> Calibration:
    """The :class:`Calibration` of an image from its *header* (merged image + primary header).

    *zero_point* and *pixel_scale* (arcsec) override the header.  *wcs* is the
    image's celestial :class:`astropy.wcs.WCS` or None.  Never raises for a
    header without calibration: that is an assumption, recorded in the notes.
    """
    notes = []
    unit = str(header.get("BUNIT", "") or "").strip()
    exptime = _finite_positive(header.get("EXPTIME"))
    rate = unit_is_rate(unit)

    if zero_point is not None:
        zp, zp_source = check_zero_point(zero_point, "argument --zeropoint"), "option"
        notes.append(f"zero point {zp:.4f} given explicitly (applies to the values as stored)")
    else:
        zp = zp_source = None
        for keyword in ZERO_POINT_KEYWORDS:
            value = _finite(header.get(keyword))
            if value is not None:
                zp, zp_source = check_zero_point(value, f"{source}: header {keyword}"), keyword
                notes.append(f"zero point {zp:.4f} from {keyword} (applies to the values as stored)")
                break
        if zp is None:
            photflam, photplam = _finite_positive(header.get("PHOTFLAM")), _finite_positive(header.get("PHOTPLAM"))
            if photflam is not None and photplam is not None:
                zp = photflam_zero_point(photflam, photplam)
                zp_source = "PHOTFLAM+PHOTPLAM"
                if rate is False and exptime is not None:
                    notes.append(f"zero point {zp:.4f} of a count rate from PHOTFLAM/PHOTPLAM; BUNIT {unit!r} is "
                                 f"counts, so + 2.5 log10(EXPTIME {exptime:g})")
                    zp += 2.5 * math.log10(exptime)
                else:
                    how = "BUNIT says a rate" if rate else f"BUNIT {unit!r} taken as a rate (HST drizzled images are)"
                    notes.append(f"zero point {zp:.4f} from PHOTFLAM/PHOTPLAM ({how})")
        if zp is None:
            zp, zp_source = ZERO_POINT, "assumed"
            if rate is False and exptime is not None:
                zp += 2.5 * math.log10(exptime)
                notes.append(f"no zero point in the header: ASSUMED 25.96 for the count rate, i.e. {zp:.4f} for "
                             f"these {unit!r} with EXPTIME {exptime:g} (give --zeropoint)")
            else:
                notes.append("no zero point in the header (PHOTZP, MAGZERO, MAGZPT, ZP, PHOTFLAM+PHOTPLAM): "
                             "ASSUMED 25.96, the training data's, for the values as stored (give --zeropoint)")

    if pixel_scale is not None:
        scale = check_pixel_scale(pixel_scale, "argument --pixel-scale")
        scales, scale_source = (scale, scale), "option"
    else:
        scales = scale_source = None
        if wcs is not None:
            from astropy.wcs.utils import proj_plane_pixel_scales

            try:
                x_scale, y_scale = (float(v) * 3600.0 for v in proj_plane_pixel_scales(wcs)[:2])
            except Exception:  # a WCS astropy parses but cannot evaluate
                x_scale = y_scale = float("nan")
            if all(math.isfinite(v) and v > 0 for v in (x_scale, y_scale)):
                scales, scale_source = (y_scale, x_scale), "WCS"
        if scales is None:
            for keyword in PIXEL_SCALE_KEYWORDS:
                value = _finite_positive(header.get(keyword))
                if value is not None:
                    scale = check_pixel_scale(value, f"{source}: header {keyword}")
                    scales, scale_source = (scale, scale), keyword
                    break
        if scales is None:
            scales, scale_source = (PIXEL_SCALE, PIXEL_SCALE), "assumed"
            notes.append(f"no pixel scale (no celestial WCS, no {'/'.join(PIXEL_SCALE_KEYWORDS)}): ASSUMED "
                         f"{PIXEL_SCALE}\"/px, the training scale (give --pixel-scale)")
    calibration = Calibration(zp, zp_source, tuple(float(s) for s in scales), scale_source, unit, exptime, notes)
    if calibration.needs_resampling:
        zoom = calibration.zoom_yx
        notes.append(f"pixel scale {scales[0]:.4g}x{scales[1]:.4g}\" ({scale_source}) differs from the training "
                     f"{PIXEL_SCALE}\" by more than {RESAMPLE_TOLERANCE:.0%}: stamps are resampled "
                     f"(x{zoom[0]:.3f}, x{zoom[1]:.3f} training pixels per image pixel, flux conserved)")
    return calibration
