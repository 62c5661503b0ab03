"""Assign a detector's sources to the central and the companion galaxy of a blend.

The rules follow Boucaud et al. 2020 (SPEC §5), with the truth known from the
blend catalogue: the central galaxy sits on the stamp centre ``(64, 64)``, the
companion at ``(64 + dy, 64 + dx)``.

* two sources: each goes to a distinct true galaxy, choosing the pairing with
  the smaller summed distance (the Hungarian solution of the 2x2 problem), so
  two sources never claim the same galaxy;
* one source: central if it lies within ``0.5 * R_central`` of the stamp
  centre, companion otherwise (without ``R_central``, the nearer true
  position decides);
* more than two: the two brightest are kept and paired as above;
* none: nothing is assigned.

Without the truth (``companion_shift`` unknown) a heuristic stands in: the
central galaxy is the source closest to the stamp centre, the companion the
brightest of the others.  The result says which of the two rules was used.

Coordinates are sep's: ``x`` is the column, ``y`` the row, pixel centres at
integers.  Everything here is plain numpy so it can be tested on synthetic
detection lists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from napari_blendphot.constants import CENTER

#: ``detection`` flag values (the paper's published column, plus -1).
DETECTION_NONE = -1
DETECTION_CENTRAL_ONLY = 0
DETECTION_COMPANION_ONLY = 1
DETECTION_BOTH = 2
DETECTION_MORE_THAN_TWO = 3

#: Fraction of the central galaxy's effective radius within which a single
#: source counts as the central galaxy (paper's rule).
SINGLE_SOURCE_RADIUS_FRACTION = 0.5


@dataclass(frozen=True)
class Assignment:
    """Which detected source is which galaxy, for one blend.

    Attributes
    ----------
    central, companion : int
        Index of the source in the detection list, or -1 when unassigned.
    detection : int
        The paper's flag: -1 none, 0 only central, 1 only companion,
        2 both, 3 more than two sources found (the two brightest assigned).
    used_truth : bool
        True when the true companion position decided; False for the heuristic.
    """

    central: int
    companion: int
    detection: int
    used_truth: bool


def _truth_shift(companion_shift):
    """``(dy, dx)`` as floats, or None when the shift is missing or not finite."""
    if companion_shift is None:
        return None
    shift = np.asarray(companion_shift, dtype=np.float64)
    if shift.shape != (2,):
        return None
    dy, dx = shift.tolist()
    return (dy, dx) if math.isfinite(dy) and math.isfinite(dx) else None


def assign_detections(x, y, flux, companion_shift=None, central_radius=None,
                      center: tuple[float, float] = (CENTER, CENTER)) -> Assignment:
    """Assign the sources found in one blend to its central and companion galaxy.

    Parameters
    ----------
    x, y : array_like, shape (M,)
        Source centroids (column, row) in pixels.
    flux : array_like, shape (M,)
        Source fluxes; used to keep the two brightest when M > 2 and by the
        heuristic.
    companion_shift : array_like (2,), optional
        True ``[dy, dx]`` of the companion relative to the centre.  None (or
        non-finite) selects the heuristic.
    central_radius : float, optional
        Effective radius of the central galaxy in pixels, for the one-source rule.
    center : (row, column)
        Position of the central galaxy, the stamp centre by default.

    Returns
    -------
    Assignment
    """
    x, y, flux = _as_list(x), _as_list(y), _as_list(flux)
    if not len(x) == len(y) == len(flux):
        raise ValueError(f"x, y and flux must be 1-D of one length, got {len(x)}, {len(y)}, {len(flux)}")
    # Plain Python floats: SEP calls this once per blend on a handful of sources, where
    # numpy's per-call overhead would cost more than the arithmetic.
    n_found = len(x)
    shift = _truth_shift(companion_shift)
    if n_found == 0:
        return Assignment(-1, -1, DETECTION_NONE, shift is not None)
    if shift is None:
        return _assign_heuristic(x, y, flux, center)

    cy, cx = float(center[0]), float(center[1])
    dy, dx = shift
    companion_y, companion_x = cy + dy, cx + dx

    if n_found == 1:
        distance_to_centre = math.hypot(x[0] - cx, y[0] - cy)
        radius = math.nan if central_radius is None else float(central_radius)
        if math.isfinite(radius) and radius > 0:
            is_central = distance_to_centre <= SINGLE_SOURCE_RADIUS_FRACTION * radius
        else:
            # No radius: the nearer true position decides (ties go to the central).
            is_central = distance_to_centre <= math.hypot(x[0] - companion_x, y[0] - companion_y)
        if is_central:
            return Assignment(0, -1, DETECTION_CENTRAL_ONLY, True)
        return Assignment(-1, 0, DETECTION_COMPANION_ONLY, True)

    if n_found == 2:
        first, second = 0, 1
        flag = DETECTION_BOTH
    else:
        # Two brightest; sorted() is stable, so ties keep detection order (reproducible).
        # NaN fluxes rank last.
        ranked = sorted(range(n_found), key=lambda i: -flux[i] if flux[i] == flux[i] else math.inf)
        first, second = ranked[0], ranked[1]
        flag = DETECTION_MORE_THAN_TWO

    def to_central(i):
        return math.hypot(x[i] - cx, y[i] - cy)

    def to_companion(i):
        return math.hypot(x[i] - companion_x, y[i] - companion_y)

    # The 2x2 assignment problem: keep the pairing with the smaller summed distance.
    if to_central(first) + to_companion(second) <= to_central(second) + to_companion(first):
        return Assignment(first, second, flag, True)
    return Assignment(second, first, flag, True)


def _as_list(values) -> list:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim > 1:
        raise ValueError(f"detections must be 1-D, got shape {array.shape}")
    return array.reshape(-1).tolist()


def _assign_heuristic(x, y, flux, center) -> Assignment:
    """Central = closest to the centre; companion = brightest of the others."""
    n_found = len(x)
    cy, cx = float(center[0]), float(center[1])
    central = min(range(n_found), key=lambda i: math.hypot(x[i] - cx, y[i] - cy))
    if n_found == 1:
        return Assignment(central, -1, DETECTION_CENTRAL_ONLY, False)
    others = [i for i in range(n_found) if i != central]
    companion = max(others, key=lambda i: flux[i] if flux[i] == flux[i] else -math.inf)
    flag = DETECTION_BOTH if n_found == 2 else DETECTION_MORE_THAN_TWO
    return Assignment(central, companion, flag, False)
